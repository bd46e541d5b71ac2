"""The tool kit's pages mechanism without a platform: what a tool may declare, how the hubs find
and render its templates, and Pegel-Warnung's and Passantenfrequenz's contributions. The pages
against the real warehouse, Keycloak and Chromium are in tests/browser/test_tool_pages_browser.py,
the dashboard installation against the real operator in tests/integration/test_gov_tools.py."""

from pathlib import Path

import pytest

from urbanstack.citytools.pegel_warnung import PegelWarnung, pages as pegel_pages
from urbanstack.toolkit import pages
from urbanstack.toolkit.pages import DashboardTemplate, Page, ToolPages

from test_pegel_warnung import context, hydrograph


def _build(ctx):
    return {}


def test_a_tool_declares_pages_the_hubs_can_address_and_is_told_what_is_wrong():
    with pytest.raises(ValueError, match="page hub"):
        Page(hub="admin", title="x", template="x.html", build=_build)
    with pytest.raises(ValueError, match="page path"):
        Page(hub="gov", title="x", template="x.html", build=_build, path="../etc")
    with pytest.raises(ValueError, match="page role"):
        Page(hub="gov", title="x", template="x.html", build=_build, role="root")
    with pytest.raises(ValueError, match="two gov pages"):
        ToolPages(name="t", templates=Path("."), pages=(Page(hub="gov", title="a", template="a", build=_build),
                                                          Page(hub="gov", title="b", template="b", build=_build)))
    with pytest.raises(ValueError, match="dashboard key"):
        DashboardTemplate(key="Not OK", title="x", spec=lambda m, t: {})
    declared = ToolPages(name="t", templates=Path("."), pages=(
        Page(hub="gov", title="a", template="a.html", build=_build),
        Page(hub="citizen", title="c", template="c.html", build=_build, path="archiv")))
    assert declared.page("gov").template == "a.html" and declared.page("citizen") is None
    assert declared.page("citizen", "archiv").title == "c"
    assert declared.template_name(declared.page("gov")) == "t:a.html"


def test_the_registry_knows_the_built_in_tools_and_what_tests_register():
    assert pages.pages_for("pegel-warnung") is pegel_pages.PAGES
    assert pages.pages_for("passantenfrequenz-wetter").dashboards[0].key == "passanten-wetter"
    assert pages.pages_for("no-such-tool") is None
    pages.register("broken-tool", "urbanstack.no_such_module:PAGES")
    assert pages.pages_for("broken-tool") is None          # logged, and the hub keeps working
    pages.register("pw-test", pegel_pages.PAGES)
    try:
        assert pages.pages_for("pw-test") is pegel_pages.PAGES
        assert pages.template_folders()["pegel_warnung"] == pegel_pages.PAGES.templates
    finally:
        pages.unregister("pw-test")


def test_the_passantenfrequenz_dashboard_is_a_valid_gov_hub_dashboard_of_the_municipalitys_datasets():
    from urbanstack.runtime.hubs.gov.dashboards import parse_spec

    template = pages.pages_for("passantenfrequenz-wetter").dashboards[0]
    spec = parse_spec(template.spec("guetersloh", "passantenfrequenz-wetter"))
    joins = [p.join for p in spec.panels if p.join is not None]
    assert {(j.left.dataset, j.left.fields[0], j.right.dataset, j.right.fields[0]) for j in joins} == {
        ("guetersloh/passantenfrequenz-wetter/pedestrian_counts", "pedestrians",
         "guetersloh/passantenfrequenz-wetter/weather", "temperature"),
        ("guetersloh/passantenfrequenz-wetter/pedestrian_counts", "pedestrians",
         "guetersloh/passantenfrequenz-wetter/weather", "precipitation")}
    assert {d for p in spec.panels for d in p.datasets()} <= {"guetersloh/passantenfrequenz-wetter/pedestrian_counts",
                                                            "guetersloh/passantenfrequenz-wetter/weather"}


class _Row:
    def __init__(self, warning):
        self.observed_at, self.sensor_id, self.lon, self.lat = (warning.observed_at, warning.sensor_id,
                                                                  warning.lon, warning.lat)
        self.values = tuple(warning.fields.get(name) for name in FIELDS)


FIELDS = ["level", "msg_type", "identifier", "gauge_owner", "gauge", "station_name", "water_level", "threshold", "cap"]


def _warnings():
    from prometheus_client import CollectorRegistry

    tool = PegelWarnung(context(), CollectorRegistry())
    return [w for w, _ in tool.handle(hydrograph())]


def test_pegel_warnung_shows_current_warnings_per_gauge_with_the_caps_affected_area():
    produced = _warnings()
    assert [w.fields["level"] for w in produced] == ["warning", "alarm", "all_clear"]
    area = pegel_pages.affected_area(produced[0].fields["cap"])
    assert area.startswith("Umkreis von 5 km um den Pegel Gütersloh Dalke")
    assert pegel_pages.affected_area("<alert>not closed") == ""
    assert pegel_pages.affected_area('<!DOCTYPE x [<!ENTITY a "b">]><alert/>') == ""

    class Ctx:   # what PageContext gives build(): rows newest first
        incomplete = False

        def __init__(self, rows):
            self.rows = rows

        def readable(self, dataset):
            return True

        def latest(self, dataset, limit):
            return self.rows[:limit]

        def fields(self, dataset):
            return FIELDS

        def municipality_name(self, slug):
            return {"guetersloh": "Gütersloh"}[slug]

    rows = [_Row(w) for w in reversed(produced)]
    everything = pegel_pages.staff_page(Ctx(rows))
    assert [m["level"] for m in everything["messages"]] == ["all_clear", "alarm", "warning"]
    assert everything["current"] == []                  # the newest message of the gauge is the all-clear
    assert everything["messages"][0]["owner_name"] == "Gütersloh"
    assert len(everything["points"]) == 1               # one gauge on the map
    rising = pegel_pages.citizen_page(Ctx(rows[1:]))      # before the all-clear: the alarm is current
    assert [(m["level"], m["area"][:10]) for m in rising["current"]] == [("alarm", "Umkreis vo")]
    assert rising["points_current"]


def test_the_hubs_render_a_tools_template_inside_their_layout_in_german(tmp_path):
    import json

    from urbanstack.runtime.web.rendering import Assets, Renderer

    produced = _warnings()
    (tmp_path / "dist").mkdir()   # no front-end build needed: the map is drawn without its basemap
    (tmp_path / "dist" / "manifest.json").write_text(json.dumps({"hub.css": "hub.css"}))
    renderer = Renderer([Path(pages.__file__).resolve().parents[2] / "runtime" / "hubs" / "citizen" / "templates"],
                        Assets(tmp_path))
    at = produced[1].observed_at
    data = {"readable": True, "incomplete": False, "current": [{"level": "alarm", "level_text": pegel_pages.LEVEL_TEXT["alarm"],
                                           "station": "Gütersloh Dalke", "gauge_owner": "guetersloh",
                                           "owner_name": "Gütersloh", "at": at, "water_level": 250.0,
                                           "threshold": 170.0, "area": "Umkreis von 5 km"}],
            "messages": [], "points": [{"id": "g/1", "name": "Dalke", "lon": 8.38, "lat": 51.9, "at": at}]}

    class Municipality:
        slug = "rheda-wiedenbrueck"

    html = renderer.render(pegel_pages.PAGES.template_name(pegel_pages.PAGES.page("citizen")), "de", data=data,
                           municipality=Municipality())
    assert "Hochwasseralarm: Pegel Gütersloh Dalke (Gütersloh)" in html
    assert "Betroffenes Gebiet" in html and "Umkreis von 5 km" in html and "Schwelle 170 cm" in html
    assert "<svg" in html and "<script" not in html
