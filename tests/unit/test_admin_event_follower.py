"""The drift sweep's reading of Keycloak admin events (operator/provisioners/identity.py): every
event after the cursor is read once, pages are followed, and only the operator's own writes are
taken for its own (same admin user *and* inside a write window of that tenant)."""

from __future__ import annotations

from urbanstack.operator.provisioners.identity import (ADMIN_EVENTS_PAGE, OWN_WRITE_SLACK_MS,
                                                       AdminEventFollower)


def _event(at: int, path: str, user: str = "operator") -> dict:
    return {"time": at, "operationType": "DELETE", "resourcePath": path, "authDetails": {"userId": user}}


class Realm:
    """Keycloak's admin-events endpoint: events at or after ``dateFrom``, oldest first, paged."""

    def __init__(self, events):
        self.events = sorted(events, key=lambda e: e["time"])
        self.calls = 0

    def read(self, since: int, first: int, size: int):
        self.calls += 1
        return [e for e in self.events if e["time"] >= since][first:first + size]


def test_each_event_is_read_once_even_when_several_share_the_newest_millisecond():
    follower = AdminEventFollower()
    follower.started_ms = 1000
    realm = Realm([_event(1000, "clients/a"), _event(1500, "clients/b"), _event(1500, "clients/c")])
    assert [e["resourcePath"] for e in follower.new_events("r", realm.read)] == ["clients/a", "clients/b",
                                                                               "clients/c"]
    assert follower.new_events("r", realm.read) == []          # dateFrom is inclusive: nothing twice
    realm.events.append(_event(1500, "clients/d"))
    realm.events.append(_event(1600, "clients/e"))
    assert [e["resourcePath"] for e in follower.new_events("r", realm.read)] == ["clients/d", "clients/e"]


def test_events_before_the_operator_started_are_not_read():
    follower = AdminEventFollower()
    follower.started_ms = 5000
    assert follower.new_events("r", Realm([_event(4999, "clients/old")]).read) == []


def test_pages_are_followed():
    follower = AdminEventFollower()
    follower.started_ms = 0
    realm = Realm([_event(i, f"clients/{i}") for i in range(ADMIN_EVENTS_PAGE * 2 + 3)])
    assert len(follower.new_events("r", realm.read)) == ADMIN_EVENTS_PAGE * 2 + 3
    assert realm.calls == 3


def test_own_writes_are_the_same_user_inside_a_window_of_that_tenant():
    follower = AdminEventFollower()
    follower.wrote("verl", 10_000, 11_000)
    assert follower.ours(_event(10_500, "clients/x"), "operator", "verl")
    assert follower.ours(_event(11_000 + OWN_WRITE_SLACK_MS, "clients/x"), "operator", "verl")
    # Later, or another tenant, or another person: a change the sweep must look at.
    assert not follower.ours(_event(11_001 + OWN_WRITE_SLACK_MS, "clients/x"), "operator", "verl")
    assert not follower.ours(_event(10_500, "clients/x"), "operator", "guetersloh")
    assert not follower.ours(_event(10_500, "clients/x", user="someone"), "operator", "verl")
    assert not follower.ours(_event(10_500, "clients/x"), None, "verl")   # own id unknown: never ours
    # Realm-wide events (no tenant): any window of ours.
    assert follower.ours(_event(10_500, "authentication/flows"), "operator", None)
