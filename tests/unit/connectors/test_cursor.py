from datetime import datetime, timedelta, timezone

import pytest

from urbanstack.runtime.connectors.cursor import FileCursorStore, advance, newer_than_cursor
from urbanstack.runtime.events import Observation

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def event(sensor, hours):
    return Observation(tenant="x", dataset="water_levels", source="pegelonline", sensor_id=sensor,
                       observed_at=T0 + timedelta(hours=hours), fields={"water_level": 1.0})


def test_nothing_is_emitted_twice(tmp_path):
    store = FileCursorStore(tmp_path / "state" / "cursors.json")
    first = [event("a", 0), event("a", 1), event("b", 0)]
    assert newer_than_cursor(first, store) == first
    advance(store, first)
    second = [event("a", 1), event("a", 2), event("b", 0), event("c", 0)]
    assert newer_than_cursor(second, store) == [event("a", 2), event("c", 0)]
    reopened = FileCursorStore(tmp_path / "state" / "cursors.json")
    assert reopened.get("x/pegelonline/a") == T0 + timedelta(hours=1)


def test_cursor_never_moves_back_and_leaves_no_temporary_files(tmp_path):
    store = FileCursorStore(tmp_path / "c.json")
    store.set("k", T0 + timedelta(hours=5))
    store.set("k", T0)
    assert store.get("k") == T0 + timedelta(hours=5)
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_corrupt_cursor_file_is_reported(tmp_path):
    (tmp_path / "c.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt"):
        FileCursorStore(tmp_path / "c.json").get("k")
