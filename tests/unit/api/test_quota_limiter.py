"""The query quota's sliding window and who is counted, with a clock the test moves."""

import pytest

from urbanstack.runtime.api.auth import Principal
from urbanstack.runtime.api.quota import QueryQuota, QuotaExceeded, SlidingWindow, client_network


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _caller(tenant: str) -> Principal:
    return Principal(tenant=tenant, roles=frozenset(), subject="u")


def test_window_admits_the_limit_then_says_when_the_oldest_query_leaves():
    clock = Clock(3600.0 * 100)  # at a slot boundary
    window = SlidingWindow(clock=clock)
    assert [window.acquire("k", 3) for _ in range(3)] == [None, None, None]
    clock.now += 10
    assert window.acquire("k", 3) == pytest.approx(3590)
    clock.now += 3589
    assert window.acquire("k", 3) == pytest.approx(1)
    clock.now += 1
    assert window.acquire("k", 3) is None
    assert window.used("k") == 1


def test_window_slides_rather_than_resetting_every_hour():
    clock = Clock(0.0)
    window = SlidingWindow(clock=clock)
    assert window.acquire("k", 2) is None           # minute 0
    clock.now = 30 * 60
    assert window.acquire("k", 2) is None           # minute 30
    clock.now = 61 * 60
    assert window.acquire("k", 2) is None           # the first left; minute 30 still counts
    assert window.acquire("k", 2) == pytest.approx(29 * 60)  # until minute 90


def test_refused_queries_do_not_count():
    clock = Clock(0.0)
    window = SlidingWindow(clock=clock)
    window.acquire("k", 1)
    for _ in range(100):
        assert window.acquire("k", 1) is not None
    clock.now = 3600
    assert window.acquire("k", 1) is None


def test_keys_are_bounded():
    window = SlidingWindow(max_keys=3, clock=Clock())
    for key in "abcde":
        window.acquire(key, 5)
    assert [window.used(key) for key in "abcde"] == [0, 0, 1, 1, 1]


def test_tenants_are_counted_separately_by_their_plan():
    limits = {"guetersloh": 2, "bielefeld": 5}
    quota = QueryQuota(limits.get, 0, window=SlidingWindow(clock=Clock()))
    quota.charge(_caller("guetersloh"), "10.0.0.1")
    quota.charge(_caller("guetersloh"), "10.0.0.2")
    with pytest.raises(QuotaExceeded) as refused:
        quota.charge(_caller("guetersloh"), "10.0.0.3")
    assert refused.value.label == "guetersloh" and refused.value.retry_after >= 1
    assert "'guetersloh' has used its quota of 2 queries per hour" in str(refused.value)
    for _ in range(5):
        quota.charge(_caller("bielefeld"), "10.0.0.1")


def test_unknown_municipality_gets_the_default_plan():
    quota = QueryQuota(lambda slug: None, 0, window=SlidingWindow(clock=Clock()))
    for _ in range(2000):  # the small plan
        quota.charge(_caller("neu"), None)
    with pytest.raises(QuotaExceeded, match="2000 queries per hour"):
        quota.charge(_caller("neu"), None)


def test_anonymous_callers_are_limited_per_address():
    quota = QueryQuota(lambda slug: 100, 2, window=SlidingWindow(clock=Clock()))
    quota.charge(None, "192.0.2.1")
    quota.charge(None, "192.0.2.1")
    with pytest.raises(QuotaExceeded, match="without a token from this address: at most 2 per hour") as refused:
        quota.charge(None, "192.0.2.1")
    assert refused.value.label == "anonymous"
    quota.charge(None, "192.0.2.2")
    quota.charge(_caller("guetersloh"), "192.0.2.1")  # a token counts against the municipality instead


def test_anonymous_limit_zero_means_none():
    quota = QueryQuota(lambda slug: 1, 0, window=SlidingWindow(clock=Clock()))
    for _ in range(50):
        quota.charge(None, "192.0.2.1")
    with pytest.raises(ValueError, match="0 for no limit"):
        QueryQuota(lambda slug: 1, -1)


def test_ipv6_callers_are_counted_per_64():
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_network("192.0.2.7") == "192.0.2.7"
    assert client_network(None) == "unknown"


def test_several_queries_are_admitted_all_or_none():
    clock = Clock(3600.0 * 100)
    window = SlidingWindow(clock=clock)
    assert window.acquire("k", 10, 7) is None
    assert window.acquire("k", 10, 4) == pytest.approx(3600)  # would make 11: none counted
    assert window.used("k") == 7
    assert window.acquire("k", 10, 3) is None and window.used("k") == 10


def test_a_request_larger_than_the_whole_quota_is_told_so():
    quota = QueryQuota(lambda slug: 5, 600)
    with pytest.raises(QuotaExceeded, match="asks for 700 data queries at once, more than the 600 queries per hour "
                                            "without a token allow"):
        quota.charge(None, "192.0.2.1", 700)
    with pytest.raises(QuotaExceeded, match="more than the 5 queries per hour of municipality 'gue' allow"):
        quota.charge(_caller("gue"), None, 6)
    quota.charge(_caller("gue"), None, 5)  # nothing was counted by the refusals
