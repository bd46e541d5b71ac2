"""Every real sample file flows through its connector, Kafka and the sink into the
tenant's table, with the values, units and UTC timestamps of the source."""

from __future__ import annotations

from pathlib import Path

import pytest

import sink_harness as harness
from urbanstack.devplatform import kafka
from urbanstack.runtime.connectors import hystreet, pegelonline, sensorthings, weather
from urbanstack.runtime.producer import Publisher
from urbanstack.runtime.sink import Sink, SinkConfig

pytestmark = pytest.mark.platform

OWN = Path(__file__).resolve().parents[1] / "fixtures" / "connectors"
PEDESTRIANS = ("passantenfrequenz-wetter", "pedestrian_counts")
WEATHER = ("passantenfrequenz-wetter", "weather")
WATER = ("pegel-warnung", "water_levels")
BICYCLES = ("verkehrszaehlung", "bicycle_counts")


@pytest.fixture(scope="module")
def flow(platform, warehouse, shared_fixtures):
    """Parse and publish every sample, run the sink until it caught up, hand out the tenant."""
    admin_config = kafka.admin_config(platform)
    # The samples are years old: a retention of 730 days would have the warehouse drop them at once
    # (and 36,500 days overflow the TTL's DateTime, which drops them too).
    tenant = harness.provision(admin_config, warehouse, retention_days=3_650)
    slug = tenant.slug
    read = lambda name: (shared_fixtures / name).read_bytes()  # noqa: E731
    stations, _ = pegelonline.parse_stations(read("water_levels/pegelonline_v2_stations_2014-04.json"))
    parsed = {
        "hystreet-json": (PEDESTRIANS, hystreet.parse_measurements(
            read("pedestrian/hystreet_limburg_148_measurements-0a2a0d.json"), slug)),
        "hystreet-json-children-only": (PEDESTRIANS, hystreet.parse_measurements(
            read("pedestrian/hystreet_limburg_148_measurements-4b0a1f.json"), slug)),
        "hystreet-csv": (PEDESTRIANS, hystreet.parse_csv_export(
            read("pedestrian/besucherzahlen-moers-juni-2022-stundlich.csv"), slug)),
        "dwd-poi": (WEATHER, weather.parse_dwd_poi(read("weather/brightsky_dwd_poi_observations_current_01049.csv"),
                                                   slug)),
        "pegelonline-stations": (WATER, pegelonline.parse_stations_with_measurements(
            (OWN / "pegelonline_stations_with_measurements.json").read_bytes(), slug)),
        "pegelonline-current": (WATER, pegelonline.parse_measurements(
            read("water_levels/pegelonline_v2_currentmeasurement_openhab.json"), slug, stations[0])),
        "sensorthings": (BICYCLES, sensorthings.parse_observations(
            read("sensorthings/iot_hamburg_v1.1_HamburgerRadzaehlnetz_things_latest_observation.json"), slug,
            "bicycle_counts", field="bicycles")),
    }
    with Publisher(admin_config) as publisher:
        for (tool, _dataset), result in parsed.values():
            publisher.publish(result, tenant=slug, tool=tool)
    group = f"test-sink-fixtures-{slug}"
    sink = Sink(admin_config, warehouse, SinkConfig(group_id=group, topic_pattern=rf"^{slug}\.[^.]+\.[^.]+$",
                                                    batch_rows=500, batch_seconds=0.3))
    sink.start()
    try:
        harness.drain(sink, admin_config, group, [tenant.topic(*key) for key in (PEDESTRIANS, WEATHER, WATER,
                                                                                 BICYCLES)])
    finally:
        sink.close()
    yield tenant, parsed, sink
    harness.deprovision(admin_config, warehouse, tenant)


def query(warehouse, tenant, key, columns: str, where: str) -> list[tuple]:
    table = f"`{tenant.database}`.`{key[0].replace('-', '_')}__{key[1]}`"
    return warehouse.query(f"SELECT {columns} FROM {table} FINAL WHERE {where}").result_rows


def count(warehouse, tenant, key) -> int:
    return warehouse.command(f"SELECT count() FROM `{tenant.database}`.`{key[0].replace('-', '_')}__{key[1]}`")


def test_every_event_is_stored_or_dead_lettered(platform, flow, warehouse):
    tenant, parsed, sink = flow
    published = sum(len(result.events) for _key, result in parsed.values())
    stored = sum(count(warehouse, tenant, key) for key in (PEDESTRIANS, WEATHER, WATER, BICYCLES))
    connector_rejections = sum(len(result.rejected) for _key, result in parsed.values())
    dead = harness.read_topic(kafka.admin_config(platform), tenant.dlq,
                              connector_rejections + sink.metrics.totals["dlq"])
    sink_dead = [m for m in dead if harness.headers(m)["stage"] == "sink"]
    assert sink.metrics.totals["in"] == published == stored + len(sink_dead)
    # Only the response filtered to children lacks the required total; the sink says so.
    reasons = {harness.headers(m)["error"] for m in sink_dead}
    assert reasons == {"fields.pedestrians: required, but missing"}
    assert len(sink_dead) == len(parsed["hystreet-json-children-only"][1].events)
    assert len(dead) - len(sink_dead) == connector_rejections


def test_hystreet_json(flow, warehouse):
    tenant, _parsed, _sink = flow
    rows = query(warehouse, tenant, PEDESTRIANS,
                 "toString(observed_at), pedestrians, pedestrians_ltr, pedestrians_rtl, adults, children, "
                 "location_name, source", "sensor_id = '148' AND observed_at = '2025-02-20 14:00:00'")
    assert rows == [("2025-02-20 14:00:00.000", 1301, 694, 607, 1250, 51, "Werner-Senger-Straße", "hystreet")]


def test_hystreet_csv_local_times_become_utc(flow, warehouse):
    tenant, _parsed, _sink = flow
    [(n,)] = query(warehouse, tenant, PEDESTRIANS, "count()", "source = 'hystreet-csv'")
    assert n == 720
    rows = query(warehouse, tenant, PEDESTRIANS, "pedestrians, pedestrians_ltr, pedestrians_rtl, adults, children, "
                 "location_name", "source = 'hystreet-csv' AND observed_at = '2022-06-15 10:00:00'")  # 12:00 CEST
    assert rows == [(1429, 694, 735, 1371, 58, "Steinstraße, Moers")]


def test_dwd_poi_units_converted(flow, warehouse):
    tenant, _parsed, _sink = flow
    [row] = query(warehouse, tenant, WEATHER, "sensor_id, temperature, dew_point, pressure_msl, relative_humidity, "
                  "precipitation, wind_speed, wind_direction, cloud_cover",
                  "observed_at = '2020-04-05 20:00:00'")
    assert row[:6] + row[7:] == ("01049", -3.8, -5.3, 1020.8, 89.0, 0.1, 170.0, None)
    assert row[6] == pytest.approx(7 / 3.6, abs=0.01)  # 7 km/h in the source, stored in m/s
    units = dict(warehouse.query(
        "SELECT name, comment FROM system.columns WHERE database = {db:String} AND table = 'passantenfrequenz_wetter__weather'",
        parameters={"db": tenant.database}).result_rows)
    assert units["wind_speed"].endswith("[m/s]") and units["temperature"].endswith("[°C]")


def test_pegelonline(flow, warehouse):
    tenant, parsed, _sink = flow
    rows = query(warehouse, tenant, WATER, "toString(observed_at), water_level, discharge, station_name, water_name",
                 "station_name = 'KÖLN'")
    assert rows == [("2024-10-27 01:30:00.000", 231.0, 1530.0, "KÖLN", "RHEIN")]
    station = parsed["pegelonline-current"][1].events[0].sensor_id
    rows = query(warehouse, tenant, WATER, "toString(observed_at), water_level, station_name",
                 f"sensor_id = '{station}'")
    assert rows == [("2021-08-01 14:00:00.000", 238.0, "EITZE")]  # 16:00+02:00


def test_sensorthings(flow, warehouse):
    tenant, parsed, _sink = flow
    [(n,)] = query(warehouse, tenant, BICYCLES, "count()", "1")
    assert n == 97
    rows = query(warehouse, tenant, BICYCLES, "toString(observed_at), bicycles, lon, lat", "sensor_id = '11796'")
    source = next(e for e in parsed["sensorthings"][1].events if e.sensor_id == "11796")
    assert rows == [("2022-06-14 10:00:00.000", 60, source.lon, source.lat)]  # 10:00Z, start of the interval
