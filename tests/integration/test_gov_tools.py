"""Gov Hub City Tools and data access against the real kube-apiserver of the local platform:
a gov-admin switches pegel-warnung on by server-side apply as the hub's own identity, the
real operator makes the municipality Ready, the hub then lists the tool's datasets; roles,
tenants, CSRF, field-manager conflicts and the operator's share rules are enforced.

The hub runs in this process (TestClient) with a real metadata store (SQLite), the real
Catalogue/QueryEngine over the session's chDB, and the operator in a thread, as in
test_operator.py. Municipalities get unique names and are deleted (deletionPolicy Delete)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from pathlib import Path

import kubernetes
import pytest
from fastapi.testclient import TestClient
from hub_sessions import signed_in_cookie
from kubernetes.client.rest import ApiException

from operator_harness import (ROOT, Cluster, OperatorThread, example, is_ready, operator_kubeconfig,
                              unique_municipality, use_operator_identity)
from urbanstack.operator import rbac

pytestmark = pytest.mark.platform

M = "municipalities"
TOOL = "pegel-warnung"
ADMIN = ("gov-admin", "gov-editor", "gov-viewer")


def gov_hub_api(platform) -> kubernetes.client.ApiClient:
    """The hub's own identity: its kubeconfig where dev up wrote it; on a platform started before
    that identity existed, the admin impersonating the hub's user (RBAC then decides for that user
    exactly as for its token)."""
    from urbanstack.devplatform import bootstrap

    admin = kubernetes.config.new_client_from_config(config_file=str(platform.kubeconfig))
    client = kubernetes.dynamic.DynamicClient(admin)
    for manifest in bootstrap.manifests():  # the role and binding as dev bootstrap installs them
        if manifest["metadata"]["name"] == rbac.GOV_HUB_CLUSTER_ROLE_NAME:
            client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"]).server_side_apply(
                body=manifest, name=manifest["metadata"]["name"], field_manager=bootstrap.FIELD_MANAGER,
                force_conflicts=True)
    kubeconfig = platform.state_dir / "kube" / "govhub.kubeconfig"
    if kubeconfig.exists():
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        try:
            kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object("urbanstack.io", "v1alpha1", M,
                                                                               limit=1)
            return api
        except ApiException as error:
            if error.status != 401:  # 401: the running API server has not loaded this token yet
                raise
    api = kubernetes.config.new_client_from_config(config_file=str(platform.kubeconfig))
    api.set_default_header("Impersonate-User", rbac.GOV_HUB_USER)
    return api


def _without_hub_fields(body: dict) -> dict:
    """An ops manifest that leaves spec.tools and spec.shares to the Gov Hub."""
    body = copy.deepcopy(body)
    body["spec"].pop("tools", None)
    body["spec"].pop("shares", None)
    body["spec"]["deletionPolicy"] = "Delete"
    return body


@dataclasses.dataclass
class World:
    cluster: Cluster
    hub_api: kubernetes.client.ApiClient
    app: object
    store: object
    catalogue: object
    refresh: object
    gue: str
    other: str


@pytest.fixture(scope="module")
def world(platform, warehouse, kube_api, tmp_path_factory):
    from urbanstack import serve
    from urbanstack.operator import handlers
    from urbanstack.operator.ags import MunicipalityDirectory
    from urbanstack.operator.backends import Backends
    from urbanstack.runtime.api import Catalogue
    from urbanstack.runtime.api.query import QueryEngine
    from urbanstack.runtime.hubs.gov import create_gov_hub
    from urbanstack.runtime.hubs.gov.kube import GovKube
    from urbanstack.runtime.store import open_store
    from urbanstack.runtime.web.oidc import Keycloak
    from urbanstack.runtime.web.rendering import Assets

    cluster = Cluster(kube_api)
    for tool in ("citytool-passantenfrequenz-wetter.yaml", "citytool-pegel-warnung.yaml"):
        cluster.apply("citytools", example(tool))
    gue = _without_hub_fields(unique_municipality("municipality-guetersloh.yaml", "gvt"))
    other = _without_hub_fields(unique_municipality("municipality-bielefeld.yaml", "gvb"))
    other["spec"]["tools"] = []  # set by its creator: the hub does not own this municipality's tools
    cluster.apply(M, gue)
    cluster.apply(M, other)

    use_operator_identity(platform)
    settings = dataclasses.replace(platform, drift_interval=5.0)
    backends = Backends.from_settings(settings, warehouse_client=warehouse,
                                      kube=kubernetes.config.new_client_from_config(
                                          config_file=operator_kubeconfig(platform)))
    handlers.configure(settings, backends,
                       MunicipalityDirectory.load(ROOT / "tests" / "fixtures" / "municipalities.derived.csv"))
    runner = OperatorThread().start()

    runtime_custom = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(platform.state_dir / "kube" / "runtime.kubeconfig")))
    catalogue = Catalogue()

    def refresh():  # what serve's catalogue loop does every 10 s
        serve.refresh_catalogue(catalogue, runtime_custom)

    refresh()
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('govstore') / 'store.db'}")
    store.upgrade()
    hub_api = gov_hub_api(platform)
    app = create_gov_hub(platform, catalogue, QueryEngine(warehouse, catalogue), store,
                         Keycloak(platform.keycloak_url, None), extras={"kube": GovKube(hub_api)})
    assets = tmp_path_factory.mktemp("assets")
    (assets / "dist").mkdir()
    (assets / "dist" / "manifest.json").write_text(json.dumps({"hub.js": "hub.js", "hub.css": "hub.css"}))
    if not (Path(Assets().static_dir) / "dist" / "manifest.json").exists():  # the front-end bundle is built apart
        app.state.hub.renderer.assets.static_dir = assets
    try:
        yield World(cluster, hub_api, app, store, catalogue, refresh, gue["metadata"]["name"],
                    other["metadata"]["name"])
    finally:
        for body in (gue, other):
            cluster.delete(M, body["metadata"]["name"])
        try:
            for body in (gue, other):
                cluster.wait_gone(M, body["metadata"]["name"], timeout=180)
        finally:
            runner.stop()


def _client(world: World, tenant: str, roles, subject: str = "admin-1", name: str = "Erika Admin"):
    cookie, token, csrf = signed_in_cookie(world.store, tenant, roles, subject=subject, name=name)
    client = TestClient(world.app, raise_server_exceptions=True, follow_redirects=False)
    client.cookies.set(cookie, token)
    return client, csrf


def _spec(world: World, slug: str) -> dict:
    return world.cluster.get(M, slug)["spec"]


def _errors(html: str) -> str:
    return " ".join(re.findall(r'role="alert"[^>]*>([^<]+)<', html))


def test_the_hub_identity_may_patch_municipalities_but_not_delete_them_or_read_secrets(world):
    custom = kubernetes.client.CustomObjectsApi(world.hub_api)
    core = kubernetes.client.CoreV1Api(world.hub_api)
    assert custom.get_cluster_custom_object("urbanstack.io", "v1alpha1", M, world.gue)["metadata"]["name"] == world.gue
    custom.list_cluster_custom_object("urbanstack.io", "v1alpha1", "citytools")
    refused = [
        lambda: custom.delete_cluster_custom_object("urbanstack.io", "v1alpha1", M, world.gue),
        lambda: core.list_namespaced_secret("kube-system"),
        # urbanstack-ingest is readable by name (the upload page's role); no other Secret is.
        lambda: core.read_namespaced_secret("urbanstack-credentials", f"muni-{world.gue}"),
        lambda: core.list_namespaced_secret(f"muni-{world.gue}"),
        lambda: core.list_secret_for_all_namespaces(),
        lambda: custom.create_cluster_custom_object("urbanstack.io", "v1alpha1", M, {
            "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": "gvt-never"},
            "spec": {"displayName": "x", "ags": "05754008", "admins": ["a@b.example.org"]}}),
        lambda: custom.patch_cluster_custom_object_status("urbanstack.io", "v1alpha1", M, world.gue,
                                                          {"status": {"phase": "Ready"}}),
        lambda: custom.patch_cluster_custom_object("urbanstack.io", "v1alpha1", "citytools", TOOL,
                                                   {"spec": {"version": "9.9.9"}}),
    ]
    for call in refused:
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403
    assert world.cluster.get(M, world.gue) is not None


def test_editors_viewers_other_tenants_and_missing_csrf_change_nothing(world):
    before = _spec(world, world.gue)
    for roles in (("gov-editor", "gov-viewer"), ("gov-viewer",)):
        client, csrf = _client(world, world.gue, roles, subject=f"s-{roles[0]}")
        assert client.get(f"/gov/{world.gue}/tools").status_code == 200  # they may look
        assert client.post(f"/gov/{world.gue}/tools/{TOOL}/on", data={"csrf_token": csrf}).status_code == 403
        assert client.post(f"/gov/{world.gue}/data/shares", data={"csrf_token": csrf}).status_code == 403
        assert client.get(f"/gov/{world.gue}/audit").status_code == 403
        page = client.get(f"/gov/{world.gue}/tools").text
        assert f"/gov/{world.gue}/tools/{TOOL}/on" not in page  # no admin forms shown
    stranger, csrf = _client(world, world.other, ADMIN, subject="other-admin")
    for path in (f"tools/{TOOL}/on", "data/shares"):
        answer = stranger.post(f"/gov/{world.gue}/{path}", data={"csrf_token": csrf, "dataset": f"{TOOL}/water_levels",
                                                                  "public": "on", "licence": "dl-de/zero-2-0"})
        assert answer.status_code in (401, 403, 404)
    assert stranger.get(f"/gov/{world.gue}/tools").status_code == 303  # to sign-in for that municipality
    admin, csrf = _client(world, world.gue, ADMIN)
    missing = admin.post(f"/gov/{world.gue}/tools/{TOOL}/on", data={"settings": ""})
    assert missing.status_code == 403 and "reload" in missing.text
    wrong = admin.post(f"/gov/{world.gue}/tools/{TOOL}/on", data={"csrf_token": "forged"})
    assert wrong.status_code == 403
    assert _spec(world, world.gue) == before


def test_admin_switches_on_pegel_warnung_and_sees_it_become_ready_with_its_datasets(world):
    admin, csrf = _client(world, world.gue, ADMIN)
    bad = admin.post(f"/gov/{world.gue}/tools/{TOOL}/on?lang=en", data={"csrf_token": csrf, "settings": "{warn: 1"})
    assert bad.status_code == 422 and "not valid JSON" in bad.text and 'aria-invalid="true"' in bad.text
    assert "tools" not in _spec(world, world.gue)

    answer = admin.post(f"/gov/{world.gue}/tools/{TOOL}/on",
                        data={"csrf_token": csrf, "settings": '{"warnLevelCm": 180, "alarmLevelCm": 240}'})
    assert answer.status_code == 303, answer.text
    live = world.cluster.get(M, world.gue)
    assert live["spec"]["tools"] == [{"name": TOOL, "settings": {"warnLevelCm": 180, "alarmLevelCm": 240}}]
    hub_entry = [e for e in live["metadata"]["managedFields"] if e["manager"] == rbac.GOV_HUB_FIELD_MANAGER]
    assert hub_entry and hub_entry[0]["operation"] == "Apply"
    assert {"f:tools", "f:shares"} <= set(hub_entry[0]["fieldsV1"]["f:spec"])

    status = admin.get(f"/gov/{world.gue}/tools/status?lang=en")
    assert status.status_code == 200
    assert 'data-refresh-seconds="5"' in status.text and f'hx-get="/gov/{world.gue}/tools/status"' in status.text
    page = admin.get(f"/gov/{world.gue}/tools?lang=en")
    assert 'class="refresh-toggle"' in page.text and 'aria-controls="tool-status"' in page.text

    world.cluster.wait_for(M, world.gue, is_ready, timeout=240, what="Ready after switching on pegel-warnung")
    fragment = admin.get(f"/gov/{world.gue}/tools/status?lang=en").text
    assert "has applied the latest change" in fragment and "ready, datasets: water_levels" in fragment
    page = admin.get(f"/gov/{world.gue}/tools?lang=en").text
    assert f"<code>{world.gue}/{TOOL}/water_levels</code>" in page
    world.refresh()  # the catalogue's next round; then the start page lists the dataset too
    start = admin.get(f"/gov/{world.gue}/?lang=en").text
    assert "water_levels" in start and "Pegel-Warnung" in start

    entries = world.store.audit.list(world.gue)
    assert [(e.action, e.target, e.actor_name) for e in entries] == [("tool.on", TOOL, "Erika Admin")]


def test_settings_are_edited_and_a_tool_with_shares_is_not_switched_off(world):
    admin, csrf = _client(world, world.gue, ADMIN)
    saved = admin.post(f"/gov/{world.gue}/tools/{TOOL}/settings", data={"csrf_token": csrf,
                                                                         "settings": '{"warnLevelCm": 200}'})
    assert saved.status_code == 303
    assert _spec(world, world.gue)["tools"] == [{"name": TOOL, "settings": {"warnLevelCm": 200}}]
    not_object = admin.post(f"/gov/{world.gue}/tools/{TOOL}/settings?lang=en", data={"csrf_token": csrf,
                                                                                      "settings": "[1, 2]"})
    assert not_object.status_code == 422 and "JSON object" in not_object.text
    assert _spec(world, world.gue)["tools"][0]["settings"] == {"warnLevelCm": 200}
    assert world.store.audit.list(world.gue)[0].action == "tool.settings"


def test_shares_are_written_and_what_the_operator_would_refuse_is_refused_with_its_reason(world):
    admin, csrf = _client(world, world.gue, ADMIN)
    world.refresh()
    dataset = f"{TOOL}/water_levels"
    before = _spec(world, world.gue)
    cases = [
        ({"public": "on"}, "needs licence: dl-de/zero-2-0"),
        ({"municipalities": [world.gue]}, "cannot share with itself"),
        ({"municipalities": ["gvt-nowhere"]}, "No municipality of this name exists"),
        ({}, "names nobody"),
        ({"public": "on", "licence": "cc-by-4.0"}, "dl-de/zero-2-0"),
    ]
    for fields, reason in cases:
        answer = admin.post(f"/gov/{world.gue}/data/shares?lang=en",
                            data={"csrf_token": csrf, "dataset": dataset, **fields})
        assert answer.status_code == 422, (fields, answer.text[:300])
        assert reason in _errors(answer.text), (fields, _errors(answer.text))
        assert 'aria-describedby="share-error"' in answer.text
    unknown = admin.post(f"/gov/{world.gue}/data/shares?lang=en",
                         data={"csrf_token": csrf, "dataset": "passantenfrequenz-wetter/weather", "public": "on",
                               "licence": "dl-de/zero-2-0"})
    assert unknown.status_code == 422 and "not one of them" in unknown.text  # that tool is not switched on
    assert _spec(world, world.gue) == before

    shared = admin.post(f"/gov/{world.gue}/data/shares",
                        data={"csrf_token": csrf, "dataset": dataset, "municipalities": [world.other]})
    assert shared.status_code == 303
    assert _spec(world, world.gue)["shares"] == [{"tool": TOOL, "dataset": "water_levels", "public": False,
                                                  "municipalities": [world.other]}]
    again = admin.post(f"/gov/{world.gue}/data/shares",
                       data={"csrf_token": csrf, "dataset": dataset, "municipalities": [world.other]})
    assert again.headers["location"].endswith("data?done=unchanged")
    public = admin.post(f"/gov/{world.gue}/data/shares", data={
        "csrf_token": csrf, "dataset": dataset, "municipalities": [world.other], "public": "on",
        "licence": "dl-de/zero-2-0"})
    assert public.status_code == 303
    assert _spec(world, world.gue)["shares"] == [{"tool": TOOL, "dataset": "water_levels", "public": True,
                                                  "licence": "dl-de/zero-2-0", "municipalities": [world.other]}]
    page = admin.get(f"/gov/{world.gue}/data?lang=en").text
    assert "Datenlizenz Deutschland – Zero – Version 2.0" in page and 'href="https://www.govdata.de/dl-de/zero-2-0"' in page
    assert "Change log" in page and "Shared" in page
    # switching the tool off while its data is shared is refused, as the operator's plan would
    off = admin.post(f"/gov/{world.gue}/tools/{TOOL}/off?lang=en", data={"csrf_token": csrf})
    assert off.status_code == 422 and "Remove these shares" in off.text
    assert _spec(world, world.gue)["tools"][0]["name"] == TOOL
    assert [e.action for e in world.store.audit.list(world.gue)][:2] == ["share.set", "share.set"]

    # the partner sees it read-only once the catalogue has the share
    world.refresh()
    partner, _ = _client(world, world.other, ("gov-viewer",), subject="partner")
    view = partner.get(f"/gov/{world.other}/data?lang=en").text
    assert "water_levels" in view and "Shared with us" in view and "data/shares" not in view

    removed = admin.post(f"/gov/{world.gue}/data/shares/remove", data={"csrf_token": csrf, "dataset": dataset})
    assert removed.status_code == 303 and _spec(world, world.gue)["shares"] == []
    audit = admin.get(f"/gov/{world.gue}/audit?lang=en").text
    assert "Stopped sharing" in audit and "Switched on" in audit


def test_a_field_another_manager_owns_is_not_taken_over_silently(world):
    """The other municipality's spec.tools was set by whoever created it (like kubectl apply by ops)."""
    admin, csrf = _client(world, world.other, ADMIN, subject="other-admin")
    world.refresh()
    answer = admin.post(f"/gov/{world.other}/tools/{TOOL}/on?lang=en", data={"csrf_token": csrf})
    assert answer.status_code == 409
    message = _errors(answer.text)
    assert "spec.tools" in message and "also managed by" in message and "OpenAPI-Generator" in message
    assert _spec(world, world.other)["tools"] == []
    assert world.store.audit.list(world.other) == []


def test_the_operators_status_writes_do_not_turn_a_change_into_a_conflict_but_a_spec_change_does(world):
    """The operator bumps resourceVersion (status, annotations) every drift check; only someone
    else's spec change between reading and writing is a conflict the staff member must see."""
    from urbanstack.runtime.hubs.gov.kube import GovKube, StaleObject

    kube = GovKube(world.hub_api)
    live = kube.municipality(world.gue)
    spec = live["spec"]
    world.cluster.custom.patch_cluster_custom_object(
        "urbanstack.io", "v1alpha1", M, world.gue,
        {"metadata": {"annotations": {"test.urbanstack.io/touched": str(time.time())}}})
    assert kube.municipality(world.gue)["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"]
    applied = kube.apply(live, tools=spec.get("tools") or [], shares=spec.get("shares") or [])
    assert applied["metadata"]["generation"] == live["metadata"]["generation"]

    live = kube.municipality(world.gue)
    world.cluster.patch_spec(M, world.gue, {"displayName": live["spec"]["displayName"] + " (geändert)"})
    try:
        with pytest.raises(StaleObject):
            kube.apply(live, tools=[], shares=[])
        assert _spec(world, world.gue).get("tools") == live["spec"].get("tools")  # nothing was switched off
    finally:
        world.cluster.patch_spec(M, world.gue, {"displayName": live["spec"]["displayName"]})


def test_pegel_warnungs_page_shows_the_municipalitys_warnings_and_nobody_elses(world, warehouse):
    """The page Pegel-Warnung contributes (urbanstack.toolkit.pages) over the table the operator made."""
    from datetime import datetime, timedelta, timezone

    from prometheus_client import CollectorRegistry

    from urbanstack.citytools.pegel_warnung import PegelWarnung
    from urbanstack.operator import naming
    from urbanstack.runtime.events import Observation
    from urbanstack.settings import Settings
    from urbanstack.toolkit import ToolContext
    from urbanstack.toolkit.streams import Reading

    # The test before changed the spec: wait for the operator (its tables, and "ready" on the City Tools page).
    world.cluster.wait_for(M, world.gue, is_ready, timeout=240, what="Ready again")
    world.refresh()
    viewer, _ = _client(world, world.gue, ("gov-viewer",), subject="viewer-pw")
    empty = viewer.get(f"/gov/{world.gue}/tools/{TOOL}/")
    assert empty.status_code == 200 and "noch keine Meldung ausgelöst" in empty.text

    ctx = ToolContext(municipality=world.gue, ags="", tool=TOOL, client_id=naming.tool_client(world.gue, TOOL),
                      settings={"warnLevelCm": 200, "alarmLevelCm": 260}, platform=Settings.from_env({}),
                      kafka_username=naming.kafka_user(world.gue))
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    readings = [Reading(world.gue, "t", 0, i, Observation(
        tenant=world.gue, dataset="water_levels", source="test", sensor_id="gt-dalke",
        observed_at=start + timedelta(minutes=10 * i), fields={"water_level": float(level), "station_name": "Dalke"},
        lon=8.3853, lat=51.9069)) for i, level in enumerate((150, 190, 210, 230))]
    (warning,) = [w for w, _ in PegelWarnung(ctx, CollectorRegistry()).handle(readings)]
    columns = ["event_id", "source", "sensor_id", "observed_at", "lon", "lat", *warning.fields]
    warehouse.insert(f"{naming.database(world.gue)}.{naming.table(TOOL, 'warnings')}",
                     [[warning.event_id, warning.source, warning.sensor_id, warning.observed_at, warning.lon,
                       warning.lat, *warning.fields.values()]], column_names=columns)
    page = viewer.get(f"/gov/{world.gue}/tools/{TOOL}/?lang=en").text
    assert "Flood warning" in page and warning.fields["identifier"] in page and "threshold 200 cm" in page
    assert "Umkreis von 5 km um den Pegel Dalke" in page and 'id="warnings-map"' in page
    tools = viewer.get(f"/gov/{world.gue}/tools?lang=en").text
    assert f'href="/gov/{world.gue}/tools/{TOOL}/"' in tools

    # The other municipality has not switched the tool on: no page; its session gets none of Gütersloh's.
    other, _ = _client(world, world.other, ADMIN, subject="other-viewer")
    assert other.get(f"/gov/{world.other}/tools/{TOOL}/").status_code == 404
    assert other.get(f"/gov/{world.gue}/tools/{TOOL}/").status_code == 303   # to Gütersloh's sign-in
    assert viewer.get(f"/gov/{world.gue}/tools/{TOOL}/nope").status_code == 404


def test_switching_on_passantenfrequenz_installs_its_dashboard_once_and_keeps_staffs_edits(world):
    from urbanstack.runtime.store import Actor

    pf = "passantenfrequenz-wetter"
    admin, csrf = _client(world, world.gue, ADMIN)
    answer = admin.post(f"/gov/{world.gue}/tools/{pf}/on", data={"csrf_token": csrf})
    assert answer.status_code == 303 and answer.headers["location"].endswith(f"done=on_with_dashboards#tool-{pf}")
    assert "Dashboard ist angelegt" in admin.get(answer.headers["location"]).text

    def installed():
        overview = world.store.dashboards.overview(world.gue, "admin-1")
        return [d for d in overview.mine + overview.editable + overview.municipality if d.title.startswith("Passanten")]

    (dashboard,) = installed()
    stored = world.store.dashboards.get(dashboard.id)
    joined = {(p["join"]["right"]["dataset"], p["join"]["right"]["fields"][0]) for p in stored.spec["panels"]
              if p.get("join")}
    assert joined == {(f"{world.gue}/{pf}/weather", "temperature"), (f"{world.gue}/{pf}/weather", "precipitation")}
    assert stored.owner_name == "Erika Admin"
    view = admin.get(f"/gov/{world.gue}/dashboards/{dashboard.id}")
    assert view.status_code == 200 and "Passanten und Temperatur je Stunde" in view.text

    # Staff edit it; switching on again (also after off) installs nothing and keeps the edit.
    edited = dict(stored.spec, panels=stored.spec["panels"][1:])
    world.store.dashboards.save(dashboard.id, stored.version, "Passanten (unsere Fassung)", edited,
                                Actor("editor-1", "Max Editor"))
    again = admin.post(f"/gov/{world.gue}/tools/{pf}/on", data={"csrf_token": csrf})
    assert again.headers["location"].endswith(f"done=on#tool-{pf}")
    off = admin.post(f"/gov/{world.gue}/tools/{pf}/off", data={"csrf_token": csrf})
    assert off.status_code == 303, off.text[:300]
    on = admin.post(f"/gov/{world.gue}/tools/{pf}/on", data={"csrf_token": csrf})
    assert on.headers["location"].endswith(f"done=on#tool-{pf}")
    (kept,) = installed()
    assert kept.id == dashboard.id and kept.title == "Passanten (unsere Fassung)"
    assert world.store.dashboards.get(dashboard.id).spec == edited
    actions = [e.action for e in world.store.audit.list(world.gue)]
    assert actions.count("dashboard.install") == 1
    # Another municipality got nothing.
    assert world.store.dashboards.overview(world.other, "x").municipality == []


def test_status_writes_that_never_stop_end_in_a_conflict_after_three_tries(world):
    """An operator that writes status between every read and write of the hub: the hub tries three
    times on a fresh resourceVersion, then tells the user (StaleObject), and has changed nothing."""
    from urbanstack.runtime.hubs.gov.kube import STATUS_RETRIES, GovKube, StaleObject

    def touch():
        world.cluster.custom.patch_cluster_custom_object(
            "urbanstack.io", "v1alpha1", M, world.gue,
            {"metadata": {"annotations": {"test.urbanstack.io/touched": str(time.time_ns())}}})

    class RacedKube(GovKube):
        tries = 0

        def municipality(self, slug):
            found = super().municipality(slug)
            touch()           # the operator's write lands between the hub's read and its apply
            return found

        def _apply(self, *args):
            RacedKube.tries += 1
            return super()._apply(*args)

    kube = RacedKube(world.hub_api)
    live = kube.municipality(world.gue)
    with pytest.raises(StaleObject):
        kube.apply(live, tools=[], shares=[])
    assert RacedKube.tries == STATUS_RETRIES + 1 == 3
    assert _spec(world, world.gue).get("tools") == live["spec"].get("tools")   # nothing was switched off
