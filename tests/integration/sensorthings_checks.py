"""Shared checks of the SensorThings interface: every route a private entity could leak through."""

from __future__ import annotations

from urllib.parse import quote

ENTITY_SETS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties",
               "Observations", "FeaturesOfInterest")
NAVIGATION = {
    "Things": ("Locations", "HistoricalLocations", "Datastreams"),
    "Locations": ("Things", "HistoricalLocations"),
    "HistoricalLocations": ("Thing", "Locations"),
    "Datastreams": ("Thing", "Sensor", "ObservedProperty", "Observations"),
    "Sensors": ("Datastreams",),
    "FeaturesOfInterest": ("Observations",),
    "Observations": ("Datastream", "FeatureOfInterest"),
}


def literal(value) -> str:
    return str(value) if isinstance(value, int) else "'" + quote(str(value).replace("'", "''"), safe="-_.") + "'"


def private_entities(client, headers, dataset: str) -> dict[str, list]:
    """Ids of every entity of ``dataset`` (owner/tool/name) as its owner sees them."""
    found: dict[str, list] = {}
    for entity_set in ("Things", "Sensors", "Datastreams"):
        body = client.get(f"/v1.1/{entity_set}", headers=headers, params={"$top": "10000"}).json()
        found[entity_set] = [e["@iot.id"] for e in body["value"] if e["properties"]["dataset"] == dataset]
    for entity_set in ("Locations", "FeaturesOfInterest"):
        body = client.get(f"/v1.1/{entity_set}", headers=headers, params={"$top": "10000"}).json()
        found[entity_set] = [e["@iot.id"] for e in body["value"] if e["properties"]["dataset"] == dataset]
    historical, observations = [], []
    for thing in found["Things"]:
        historical += [e["@iot.id"] for e in client.get(f"/v1.1/Things({thing})/HistoricalLocations",
                                                          headers=headers).json()["value"]]
    for stream in found["Datastreams"][:3]:
        observations += [e["@iot.id"] for e in client.get(f"/v1.1/Datastreams({stream})/Observations",
                                                            headers=headers, params={"$top": "2"}).json()["value"]]
    found["HistoricalLocations"], found["Observations"] = historical, observations
    assert found["Things"] and found["Datastreams"] and found["Observations"], found
    return found


def assert_invisible(client, headers, private: dict[str, list], private_values: set) -> int:
    """No route shows any of ``private`` to this caller: single entities and their navigation
    answer 404, collections (also expanded) leave them out, Observations never carry their values.
    Returns the number of requests made."""
    requests = 0
    ids = {i for values in private.values() for i in values}
    for entity_set, values in private.items():
        for value in values:
            for suffix in ("", *(f"/{nav}" for nav in NAVIGATION.get(entity_set, ()))):
                response = client.get(f"/v1.1/{entity_set}({literal(value)}){suffix}", headers=headers)
                requests += 1
                assert response.status_code == 404, (entity_set, value, suffix, response.text[:300])
                # Word for word what an id that never existed gets.
                fake = 1
                unknown = client.get(f"/v1.1/{entity_set}({literal(fake)}){suffix}", headers=headers)
                assert response.text.replace(literal(value), "?") == unknown.text.replace(literal(fake), "?")
    for entity_set in ENTITY_SETS:
        body = client.get(f"/v1.1/{entity_set}", headers=headers, params={"$top": "10000"}).json()
        requests += 1
        assert not ids & {e["@iot.id"] for e in body["value"]}, entity_set
        if entity_set == "Observations":
            assert not private_values & {e["result"] for e in body["value"]}
    expanded = client.get("/v1.1/Things", headers=headers, params={
        "$top": "10000", "$expand": "Locations,HistoricalLocations,Datastreams($expand=Sensor,ObservedProperty,"
                                    "Observations($top=1000))"})
    requests += 1
    text = expanded.text
    for value in ids:
        assert f'"@iot.id":{value},' not in text and f'"@iot.id":"{value}"' not in text
    observed = client.get("/v1.1/ObservedProperties", headers=headers,
                          params={"$expand": "Datastreams($top=10000;$expand=Observations($top=1000))"})
    requests += 1
    for value in ids:
        assert f'"@iot.id":{value},' not in observed.text
    return requests
