"""OGC API – Features tenant rules with real Keycloak tokens: the tenants of test_api_keycloak.py
(identity exactly as the operator provisions it), a Gütersloh viewer and a Bielefeld viewer.
Bielefeld's token and anonymous callers cannot reach Gütersloh's private weather through any
/ogcapi route, also not with OWSLib over HTTP; Bielefeld reads its own collections."""

from __future__ import annotations

import pytest
from served_app import serving
from test_api import PEDESTRIANS, PEGEL
from test_api_keycloak import client, gue_viewer, tenants, world  # noqa: F401 - fixtures
from test_identity_provisioner import _add_viewer

from urbanstack.runtime.api import create_app

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def headers(tenants, gue_viewer):  # noqa: F811 - fixtures
    bi_viewer = _add_viewer(tenants.admin, tenants.bi)
    return {"gue": {"Authorization": f"Bearer {tenants.token(tenants.gue, *gue_viewer)}"},
            "bi": {"Authorization": f"Bearer {tenants.token(tenants.bi, *bi_viewer)}"}}


def test_bielefeld_and_anonymous_cannot_see_guetersloh_private_weather(client, world, headers):  # noqa: F811
    weather = f"{world.gue}.{PEDESTRIANS}.weather"
    routes = (f"/ogcapi/collections/{weather}", f"/ogcapi/collections/{weather}/items",
              f"/ogcapi/collections/{weather}/items?datetime=../2100-01-01T00:00:00Z",
              f"/ogcapi/collections/{weather}/items/dwd-01303")
    for route in routes:
        assert client.get(route, headers=headers["gue"]).status_code == 200, route   # the owner reads it
    for caller in ({}, headers["bi"]):
        listed = {c["id"] for c in client.get("/ogcapi/collections", headers=caller).json()["collections"]}
        assert weather not in listed
        for route in routes:
            answer = client.get(route, headers=caller)
            assert answer.status_code == 404 and "dwd-01303" not in answer.text, route


def test_real_tokens_list_own_shared_and_open_collections(client, world, headers):  # noqa: F811
    def listed(caller):
        return {c["id"] for c in client.get("/ogcapi/collections", headers=caller).json()["collections"]}

    public = f"{world.gue}.{PEDESTRIANS}.pedestrian_counts"
    assert listed({}) == {public}
    assert listed(headers["gue"]) == {public, f"{world.gue}.{PEDESTRIANS}.weather"}   # water levels: no positions
    assert listed(headers["bi"]) == {public, f"{world.bi}.{PEDESTRIANS}.pedestrian_counts",
                                     f"{world.bi}.{PEDESTRIANS}.weather", f"{world.bi}.{PEGEL}.water_levels"}
    tampered = headers["bi"]["Authorization"][:-4] + "AAAA"
    assert client.get("/ogcapi/collections", headers={"Authorization": tampered}).status_code == 401


def test_owslib_with_a_real_bielefeld_token(platform, world, tenants, warehouse, headers):  # noqa: F811
    import owslib.ogcapi
    from owslib.ogcapi.features import Features

    app = create_app(platform, world.catalogue, warehouse, keycloak_url=platform.keycloak_url,
                     audience="{tenant}-api")
    saved = dict(owslib.ogcapi.REQUEST_HEADERS)   # OWSLib keeps a client's headers for all later clients
    try:
        with serving(app, platform) as base:
            service = Features(f"{base}/ogcapi/", headers=headers["bi"])
            levels = f"{world.bi}.{PEGEL}.water_levels"
            assert levels in service.feature_collections()
            assert [f["properties"]["water_level"] for f in service.collection_items(levels)["features"]] == [705.0]
            with pytest.raises(RuntimeError, match="not visible"):
                service.collection_items(f"{world.gue}.{PEDESTRIANS}.weather")
    finally:
        owslib.ogcapi.REQUEST_HEADERS.clear()
        owslib.ogcapi.REQUEST_HEADERS.update(saved)
