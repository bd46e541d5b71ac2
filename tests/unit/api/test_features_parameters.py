"""The OGC API – Features query parameters and content negotiation, without a warehouse: what a
client's bbox, datetime and Accept header mean, and which of them are refused (400) or cannot
be served (406)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from urbanstack.runtime.api.features import GEOJSON, JSON, _accepts, in_bbox, parse_bbox, parse_datetime
from urbanstack.runtime.api.query import EARLIEST, LATEST, QueryError

UTC = timezone.utc


def test_datetime_instants_dates_and_open_intervals():
    noon = datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert parse_datetime("2026-03-02T12:00:00Z") == (noon, noon)
    assert parse_datetime("2026-03-02T13:00:00+01:00") == (noon, noon)
    assert parse_datetime("2026-03-02") == (datetime(2026, 3, 2, tzinfo=UTC),
                                            datetime(2026, 3, 2, 23, 59, 59, 999_000, tzinfo=UTC))
    assert parse_datetime("../2026-03-02T12:00:00Z") == (EARLIEST, noon)
    assert parse_datetime("/2026-03-02T12:00:00Z") == (EARLIEST, noon)
    assert parse_datetime("2026-03-02T12:00:00Z/..") == (noon, LATEST)
    assert parse_datetime("2026-03-02T12:00:00Z/") == (noon, LATEST)
    assert parse_datetime("../..") is None
    # Outside the warehouse's years: an interval that matches nothing (start after end), never an error.
    for far in ("1900-01-01T00:00:00Z", "9999-12-31", "2200-01-01T00:00:00Z/..", "0001-01-01/1960-01-01"):
        start, end = parse_datetime(far)
        assert start > end, far


@pytest.mark.parametrize("bad", ["yesterday", "2026-03-02T12:00:00", "..", "", "a/b/c",
                                 "2026-03-03T00:00:00Z/2026-03-02T00:00:00Z", "2026-13-01"])
def test_datetime_refusals_name_the_parameter(bad):
    with pytest.raises(QueryError) as refused:
        parse_datetime(bad)
    assert refused.value.status == 400 and "datetime" in refused.value.message


def test_bbox_with_heights_and_across_the_antimeridian():
    assert parse_bbox("8.38,51.9,8.39,51.91") == (8.38, 51.9, 8.39, 51.91)
    assert parse_bbox("8.38,51.9,0,8.39,51.91,120") == (8.38, 51.9, 8.39, 51.91)
    across = parse_bbox("177,65,-177,70")
    assert in_bbox(179.5, 66, across) and in_bbox(-178, 66, across)
    assert not in_bbox(0, 66, across) and not in_bbox(179.5, 64, across)
    assert in_bbox(8.38, 51.9, parse_bbox("8.38,51.9,8.39,51.91"))   # edges included
    for bad in ("1,2,3", "1,2,3,4,5", "a,b,c,d", "8,52,9,51", "-181,0,0,1", "0,-91,1,0", "inf,0,1,1", "0,0,190,1"):
        with pytest.raises(QueryError) as refused:
            parse_bbox(bad)
        assert refused.value.status == 400 and "bbox" in refused.value.message, bad


def test_accept_headers_choose_the_served_type_or_none():
    offered = (GEOJSON, JSON)
    assert _accepts(None, offered) == GEOJSON
    assert _accepts("application/json", offered) == JSON
    assert _accepts("application/geo+json;q=0.5, application/json", offered) == JSON
    assert _accepts("text/html,application/xhtml+xml,*/*;q=0.8", offered) == GEOJSON
    assert _accepts("application/*", offered) == GEOJSON
    assert _accepts("text/html", offered) is None
    assert _accepts("application/json;q=0, text/html", offered) is None
    assert _accepts("application/vnd.oai.openapi+json;version=3.0",
                    ("application/vnd.oai.openapi+json;version=3.0", JSON)) == \
        "application/vnd.oai.openapi+json;version=3.0"
