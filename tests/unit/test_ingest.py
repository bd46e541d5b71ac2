"""Ingest pieces that need no service: our event JSON/NDJSON, webhook keys, the daily
quota, source declarations, the runtime's RBAC rule, and fetching with retries from a
local HTTP server on 127.0.0.1 (a stand-in for the public APIs, unreachable here)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from urbanstack.operator import rbac
from urbanstack.operator.models import SpecError, parse_municipality
from urbanstack.runtime.api import Catalogue
from urbanstack.runtime.ingest.pull import FetchError, PullScheduler, check_public, source_from_dict
from urbanstack.runtime.ingest.push import IngestError, parse_events, table_mapping
from urbanstack.runtime.ingest.tenants import DailyQuota, QuotaExceeded, key_matches, tenant_of_key
from urbanstack.runtime.producer import DLQ_RECORDS_PER_CALL

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "connectors"


def municipality(**spec) -> dict:
    return {"apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": "guetersloh"},
            "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": ["a@guetersloh.de"],
                     "tools": [{"name": "pegel-warnung"}], **spec}}


def test_event_json_array_and_ndjson_take_tenant_and_dataset_from_the_caller():
    record = {"source": "app", "sensor_id": "s1", "observed_at": "2024-10-27T01:00:00+02:00",
              "fields": {"temperature": 9.5}, "units": {"temperature": "°C"}}
    one = parse_events(json.dumps(record).encode(), "guetersloh", "weather")
    assert [(e.tenant, e.dataset, e.observed_at.hour) for e in one.events] == [("guetersloh", "weather", 23)]
    many = parse_events(json.dumps([record, {**record, "sensor_id": "s2"}]).encode(), "guetersloh", "weather")
    assert len(many.events) == 2 and not many.rejected
    lines = "\n".join([json.dumps(record), "", "{broken", json.dumps({**record, "tenant": "bielefeld"}),
                       json.dumps({**record, "dataset": "other"}), json.dumps({**record, "fields": {}})])
    mixed = parse_events(lines.encode(), "guetersloh", "weather")
    assert len(mixed.events) == 1
    reasons = {r.where: r.reason for r in mixed.rejected}
    assert "not valid JSON" in reasons["line 3"]
    assert "credential belongs to 'guetersloh'" in reasons["line 4"]
    assert "sent to dataset 'weather'" in reasons["line 5"]
    assert "at least one field" in reasons["line 6"]


def test_more_records_than_one_request_may_carry_are_refused_naming_the_limit():
    """Counted while decoding (NDJSON and arrays alike), rejected records included, so
    a body of a million `{}` lines is refused at the first record over the limit."""
    for body in (b"{}\n" * 11, b"[" + b",".join([b"{}"] * 11) + b"]"):
        with pytest.raises(IngestError) as refused:
            parse_events(body, "guetersloh", "weather", max_records=10)
        assert refused.value.status == 413 and "at most 10 are accepted per request" in refused.value.message
    exactly = parse_events(b"{}\r\n" * 10 + b"\n\n", "guetersloh", "weather", max_records=10)
    assert len(exactly.rejected) == 10 and exactly.rejected[-1].where == "line 10"
    assert len(parse_events(b"[" + b",".join([b"{}"] * 10) + b"]", "guetersloh", "weather",
                            max_records=10).rejected) == 10


def test_only_rejections_the_dlq_receives_one_by_one_keep_their_record():
    many = DLQ_RECORDS_PER_CALL + 5
    result = parse_events(b"{}\n" * many, "guetersloh", "weather")
    assert len(result.rejected) == many
    assert all(r.record == {} for r in result.rejected[:DLQ_RECORDS_PER_CALL])
    assert all(r.record is None for r in result.rejected[DLQ_RECORDS_PER_CALL:])
    assert result.rejected[-1].where == f"line {many}"


def test_a_broken_array_is_one_rejection_and_deep_nesting_is_not_a_crash():
    record = {"source": "app", "sensor_id": "s1", "observed_at": "2024-10-27T01:00:00Z", "fields": {"t": 1.0}}
    broken = parse_events(f"[{json.dumps(record)}, {{broken]".encode(), "guetersloh", "weather")
    assert not broken.events and [r.where for r in broken.rejected] == ["document"]
    assert "not valid JSON" in broken.rejected[0].reason
    trailing = parse_events(f"[{json.dumps(record)}] x".encode(), "guetersloh", "weather")
    assert not trailing.events and "Extra data" in trailing.rejected[0].reason
    assert parse_events(b"[]", "guetersloh", "weather").rejected == []
    deep = parse_events(b"[" * 100_000 + b"]" * 100_000, "guetersloh", "weather")
    assert [r.reason for r in deep.rejected] == ["not valid JSON: nested too deeply"]
    deep_line = parse_events(json.dumps(record).encode() + b"\n" + b"[" * 100_000, "guetersloh", "weather")
    assert len(deep_line.events) == 1 and "line 2" in [r.where for r in deep_line.rejected]


def test_webhook_keys_name_their_tenant_and_compare_exactly():
    assert tenant_of_key("bad-oeynhausen.abc") == "bad-oeynhausen"
    assert tenant_of_key("no-dot") is None and tenant_of_key("Bad.x") is None and tenant_of_key("a.") is None
    assert key_matches("guetersloh.secret", "guetersloh.secret")
    assert not key_matches("guetersloh.secret", "guetersloh.secreT")
    assert not key_matches("guetersloh.secret", None) and not key_matches("", "")


def test_daily_quota_refuses_the_whole_request_and_says_when_to_retry():
    now = [datetime(2024, 10, 27, 23, 0, tzinfo=timezone.utc)]
    quota = DailyQuota(clock=lambda: now[0])
    quota.reserve("guetersloh", 8, 10)
    with pytest.raises(QuotaExceeded) as refused:
        quota.reserve("guetersloh", 3, 10)
    assert 3600 <= refused.value.retry_after <= 3601 and quota.used("guetersloh") == 8
    quota.reserve("bielefeld", 10, 10)  # per tenant
    quota.release("guetersloh", 8)
    assert quota.used("guetersloh") == 0
    quota.reserve("guetersloh", 10, 10)
    now[0] = datetime(2024, 10, 28, 0, 0, 1, tzinfo=timezone.utc)
    quota.reserve("guetersloh", 10, 10)  # a new UTC day


def test_sources_are_validated_against_the_enabled_tools():
    source = {"name": "pegel-ems", "connector": "pegelonline", "url": "https://www.pegelonline.wsv.de/x",
              "tool": "pegel-warnung", "dataset": "water_levels", "params": {"lat": 51.9, "dwd": True}}
    parsed = parse_municipality(municipality(sources=[source]))
    assert parsed.spec.sources[0].params == {"lat": "51.9", "dwd": "true"}
    assert parsed.spec.sources[0].interval_seconds == 900
    for change, message in (({"tool": "passantenfrequenz-wetter"}, "not enabled"),
                            ({"intervalSeconds": 30}, "greater than or equal to 60"),
                            ({"connector": "ftp"}, "connector"), ({"url": "file:///etc/passwd"}, "url")):
        with pytest.raises(SpecError, match=message):
            parse_municipality(municipality(sources=[{**source, **change}]))
    with pytest.raises(SpecError, match="more than once"):
        parse_municipality(municipality(sources=[source, source]))


def test_the_runtime_may_get_only_the_ingest_secret():
    role = rbac.runtime_cluster_role()
    secret_rules = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                             "resourceNames": [rbac.INGEST_SECRET]}]


def test_sources_may_not_reach_link_local_or_private_addresses():
    with pytest.raises(FetchError, match="may not use"):
        check_public("169.254.169.254", allow_private=True)
    with pytest.raises(FetchError, match="non-public"):
        check_public("127.0.0.1", allow_private=False)
    check_public("127.0.0.1", allow_private=True)


def test_upload_mapping_from_query_parameters():
    mapping = table_mapping("population", ["Einwohner=residents", "Fläche (km²)"], "Stadtteil", None, None,
                            datetime(2024, 12, 31).date(), "Europe/Berlin", ["residents=persons"])
    assert mapping.fields == {"Einwohner": "residents", "Fläche (km²)": "Fläche (km²)"}
    assert mapping.units == {"residents": "persons"}


class Flaky:
    """Answers ``fail`` requests with the given status, then with ``body``."""

    def __init__(self, body: bytes, status: int = 500, fail: int = 0):
        self.body, self.status, self.fail, self.paths = body, status, fail, []
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                flaky.paths.append(self.path)
                if flaky.fail:
                    flaky.fail -= 1
                    self.send_error(flaky.status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(flaky.body)))
                self.end_headers()
                self.wfile.write(flaky.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pegel_upstream():
    server = Flaky((FIXTURES / "pegelonline_stations_with_measurements.json").read_bytes())
    yield server
    server.close()


def scheduler(**kwargs) -> PullScheduler:
    return PullScheduler(Catalogue(), publishers=None, credentials=None, cursors=None,
                         allow_private_networks=True, backoff=0.0, sleep=lambda _: None, **kwargs)


def test_fetch_retries_server_errors_but_not_client_errors(pegel_upstream):
    source = source_from_dict("guetersloh", {"name": "p", "connector": "pegelonline",
                                             "url": f"{pegel_upstream.url}/stations.json", "tool": "pegel-warnung",
                                             "dataset": "pegel", "params": {"ids": "a6ee8177"}})
    pull = scheduler(retries=3)
    pegel_upstream.fail = 2
    data = pull.fetch(source)
    assert len(pegel_upstream.paths) == 3 and "includeTimeseries=true" in pegel_upstream.paths[-1]
    result = pull.parse(source, data)
    assert {e.dataset for e in result.events} == {"pegel"}  # the source's dataset, not the connector's
    pegel_upstream.fail, pegel_upstream.status = 5, 404
    with pytest.raises(FetchError, match="HTTP 404 .*check the source's url"):
        pull.fetch(source)
    assert len(pegel_upstream.paths) == 4
    pegel_upstream.fail, pegel_upstream.status = 5, 503
    with pytest.raises(FetchError, match=r"HTTP 503 .*tried 3 times") as failed:
        pull.fetch(source)
    assert "ids=" not in str(failed.value)
