"""SensorThings tenant rules with real Keycloak tokens: the tenants of test_api_keycloak.py
(identity exactly as the operator provisions it), a Gütersloh viewer and a Bielefeld viewer.
Bielefeld's token and anonymous callers cannot reach Gütersloh's private dataset through any
SensorThings route; Bielefeld reads what Gütersloh shares with it."""

from __future__ import annotations

import pytest
from sensorthings_checks import assert_invisible, private_entities
from test_api import PEDESTRIANS, PEGEL
from test_api_keycloak import client, gue_viewer, tenants, world  # noqa: F401 - fixtures
from test_identity_provisioner import _add_viewer

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def headers(tenants, gue_viewer):  # noqa: F811 - fixtures
    bi_viewer = _add_viewer(tenants.admin, tenants.bi)
    return {"gue": {"Authorization": f"Bearer {tenants.token(tenants.gue, *gue_viewer)}"},
            "bi": {"Authorization": f"Bearer {tenants.token(tenants.bi, *bi_viewer)}"}}


def test_bielefeld_and_anonymous_cannot_see_guetersloh_private_data(client, world, headers):  # noqa: F811
    weather = private_entities(client, headers["gue"], f"{world.gue}/{PEDESTRIANS}/weather")
    private_values = {5.0 + h / 2 for h in range(24) if h % 2}
    assert assert_invisible(client, headers["bi"], weather, private_values) > 50
    assert assert_invisible(client, {}, weather, private_values) > 50


def test_real_tokens_read_own_and_shared_data(client, world, headers):  # noqa: F811
    def datasets(caller):
        body = client.get("/v1.1/Things", headers=caller, params={"$top": "1000"}).json()
        return {t["properties"]["dataset"] for t in body["value"]}

    public = f"{world.gue}/{PEDESTRIANS}/pedestrian_counts"
    assert datasets({}) == {public}
    assert datasets(headers["gue"]) == {public, f"{world.gue}/{PEDESTRIANS}/weather",
                                        f"{world.gue}/{PEGEL}/water_levels"}
    assert datasets(headers["bi"]) == {public, f"{world.gue}/{PEGEL}/water_levels",
                                       f"{world.bi}/{PEDESTRIANS}/pedestrian_counts",
                                       f"{world.bi}/{PEDESTRIANS}/weather", f"{world.bi}/{PEGEL}/water_levels"}
    levels = client.get("/v1.1/Datastreams", headers=headers["bi"], params={
        "$filter": f"properties/dataset eq '{world.gue}/{PEGEL}/water_levels' and properties/field eq 'water_level'",
        "$expand": "Observations($orderby=phenomenonTime asc)"}).json()["value"]
    assert [o["result"] for o in levels[0]["Observations"]] == [100.0 + h for h in range(6)]
    tampered = headers["bi"]["Authorization"][:-4] + "AAAA"
    assert client.get("/v1.1/Things", headers={"Authorization": tampered}).status_code == 401
