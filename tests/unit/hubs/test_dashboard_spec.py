"""The dashboard spec, the view from the URL and the Markdown of text panels: what a clerk
types is either accepted or refused with a message that names the panel and the field."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from starlette.datastructures import QueryParams

from urbanstack.runtime.hubs.gov.dashboards import (SpecError, form_to_spec, parse_spec, render_markdown,
                                                    spec_to_form, view_state)

REF = "guetersloh/passantenfrequenz-wetter/pedestrian_counts"
WEATHER = "guetersloh/passantenfrequenz-wetter/weather"


def test_a_join_and_a_text_panel_round_trip_through_the_builder_form():
    spec = {"range": "30d", "refresh_seconds": 300, "panels": [
        {"type": "timeseries", "title": "P × T", "bucket": "day",
         "join": {"left": {"dataset": REF, "fields": ["pedestrians"], "aggregate": "sum"},
                  "right": {"dataset": WEATHER, "fields": ["temperature", "precipitation"], "aggregate": "avg"}}},
        {"type": "text", "title": "Hinweis", "text": "**fett**"}]}
    parsed = parse_spec(spec)
    assert parsed.panels[0].datasets() == [REF, WEATHER]
    again = form_to_spec(spec_to_form(parsed.model_dump(exclude_none=True)), "30d", "300")
    assert parse_spec(again) == parsed


@pytest.mark.parametrize("panel, message", [
    ({"type": "timeseries", "title": "Leer", "dataset": REF}, "panel 1 (Leer): choose at least one field"),
    ({"type": "bar", "dataset": "nur/zwei", "fields": ["x"]}, "panel 1, field 'dataset': String should match"),
    ({"type": "kpi", "title": "K", "dataset": REF, "fields": ["x"], "aggregate": "median"},
     "panel 1 (K), field 'aggregate': Input should be"),
    ({"type": "table", "title": "T", "dataset": REF, "fields": ["x"], "bucket": "year"},
     "panel 1 (T), field 'bucket': Input should be"),
    ({"type": "map", "title": "M", "join": {"left": {"dataset": REF, "fields": ["x"]},
                                           "right": {"dataset": WEATHER, "fields": ["y"]}}},
     "panel 1 (M): a map panel needs one dataset (no join)"),
    ({"type": "text", "title": "Leer"}, "panel 1 (Leer): a text panel needs text"),
    ({"type": "pie", "title": "Kuchen"}, "panel 1 (Kuchen), field 'type': Input should be"),
    ({"type": "timeseries", "title": "F", "dataset": REF, "fields": ["DROP TABLE"]},
     "panel 1 (F), field 'fields': 'DROP TABLE' is not a field name"),
])
def test_bad_panels_are_refused_naming_panel_and_field(panel, message):
    with pytest.raises(SpecError) as refused:
        parse_spec({"panels": [panel]})
    assert any(m.startswith(message) for m in refused.value.messages), refused.value.messages


def test_refresh_faster_than_30_seconds_is_refused():
    with pytest.raises(SpecError, match="refresh at most every 30 seconds"):
        parse_spec({"panels": [], "refresh_seconds": 5})


def test_view_from_dates_presets_and_filters():
    now = datetime(2026, 3, 10, 12, 30, tzinfo=timezone.utc)
    view = view_state(QueryParams("from=2026-03-02&to=2026-03-03&sensor=a,b&sensor=c&bbox=8.3,51.8,8.5,52"), now=now)
    assert view.start == datetime(2026, 3, 1, 23, tzinfo=timezone.utc)
    assert view.end == datetime(2026, 3, 3, 23, tzinfo=timezone.utc)
    assert view.sensors == ("a", "b", "c") and view.bbox == (8.3, 51.8, 8.5, 52.0) and not view.errors
    assert view.query() == "from=2026-03-02&to=2026-03-03&sensor=a&sensor=b&sensor=c&bbox=8.3%2C51.8%2C8.5%2C52"
    preset = view_state(QueryParams("range=24h"), now=now)
    assert preset.end == datetime(2026, 3, 10, 13, tzinfo=timezone.utc) and (preset.end - preset.start).days == 1
    bad = view_state(QueryParams("from=2026-03-05&to=2026-03-01&bbox=1,2,3&range=2y"), default_preset="30d", now=now)
    assert bad.preset == "30d" and bad.bbox is None and len(bad.errors) == 3


def test_markdown_is_sanitised():
    html = render_markdown("# Titel\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](https://a.example/) "
                           "[z](relative/path) ![img](https://a.example/i.png)\n\n<a href=\"https://evil\">roh</a>")
    assert "<script" not in html and 'href="javascript' not in html and "<img" not in html
    assert "<h2>Titel</h2>" in html and 'href="https://a.example/"' in html and 'href="relative/path"' in html
    assert '<a href="https://evil">' not in html and "&lt;a href" in html
