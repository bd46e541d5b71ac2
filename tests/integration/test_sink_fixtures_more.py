"""The rest of the real sample files (``../shared/fixtures``, see its PROVENANCE.md)
through their connector, Kafka and the sink into the tenant's tables: Bright Sky
JSON, DWD CDC product files and zip archives, the LoRaWAN uplinks, the other two
Hamburg SensorThings responses, the municipal statistics (Köln, Hamburg, Berlin)
and the Meteostat workbook (docs/connectors.md: "Meteostat XLSX exports go through
the upload parser").

Per file: every record read from the source is either stored or in the DLQ with
a reason, and a few values are read straight from the source file here (json,
csv, zipfile, openpyxl; never through the connector) and compared with what a
query of the warehouse returns, with the unit of the column and the UTC time.
``test_sink_fixtures.py`` covers hystreet, the DWD POI CSV, PEGELONLINE and the
Radzählnetz SensorThings file.
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import io
import json
import re
import secrets
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import openpyxl
import pytest
import yaml

import sink_harness as harness
from urbanstack.devplatform import kafka
from urbanstack.operator.models import parse_citytool, parse_municipality
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.streaming import StreamingProvisioner
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.connectors import ParseResult, lorawan, sensorthings, tabular, weather
from urbanstack.runtime.connectors.tabular import TableMapping, TableOptions
from urbanstack.runtime.producer import Publisher
from urbanstack.runtime.sink import Sink, SinkConfig

pytestmark = pytest.mark.platform

UTC = timezone.utc
BERLIN_TZ = ZoneInfo("Europe/Berlin")
EXAMPLE_TOOL = "passantenfrequenz-wetter"
TOOL = "stichproben"
LORAWAN = ["tts_v3_uplink_decentlab_dl-pr26.json", "tts_v3_uplink_yobiiq_sd1001.json",
           "tts_v3_uplink_bosch_parking_lot_sensor.json", "tts_v3_uplink_milesight_em300-th_tti_packetbroker.json",
           "chirpstack_v4_uplink_yobiiq_sd1001.json", "chirpstack_v4_uplink_decentlab_dl-pr26.json",
           "chirpstack_v4_uplink_milesight_em300-th.json"]
# None of the samples has a decoded payload. What a tenant would configure per device for the
# built-in codecs: the anonymised TTS envelopes carry no version_ids, so their codec is pinned; the
# ChirpStack Yobiiq's device profile "SD1001" names its model; the Decentlab samples carry
# Decentlab's documentation payload, documented for a 0–1 bar device (its range is given once, for
# ChirpStack, and left out for TTS: then the pressure is not stored). The ChirpStack Milesight
# ("Chirpstack default device profile", no tags) is left unidentified: it stays in the DLQ.
LORAWAN_CONFIG = {
    "tts_v3_uplink_decentlab_dl-pr26.json": {"codec": "decentlab-dl-pr26"},
    "tts_v3_uplink_yobiiq_sd1001.json": {"codec": "yobiiq-sd1001"},
    "tts_v3_uplink_bosch_parking_lot_sensor.json": {"codec": "bosch-tps110"},
    "tts_v3_uplink_milesight_em300-th_tti_packetbroker.json": {"codec": "milesight-em300-th"},
    "chirpstack_v4_uplink_yobiiq_sd1001.json": {},
    "chirpstack_v4_uplink_decentlab_dl-pr26.json": {"codec": "decentlab-dl-pr26", "pressure_range": (0.0, 1.0)},
    "chirpstack_v4_uplink_milesight_em300-th.json": {},
}
LORAWAN_UNDECODED = ["chirpstack_v4_uplink_milesight_em300-th.json"]
BERLIN = "municipal_statistics/berlin_SB_A01-05-00_2024h02_BE.xlsx"
BERLIN_AREA = "Bezirk Bezirk (alt) Ortsteil (s.Karte/Grafik 6) (column 2)"
BERLIN_T5_LABEL = "Bezirk — Alter von … bis unter … Jahren"
HAMBURG_CSV = "municipal_statistics/hamburg_Daten_fuer_die_Stadtteilprofile_2014_authorexport.csv"
HAMBURG_XLSX = "municipal_statistics/hamburg_Daten_fuer_die_Stadtteilprofile_2014.xlsx"
METEOSTAT = "weather/meteostat_hourly_2023-03-23_to_24_export.xlsx"
KOELN = "municipal_statistics/koeln_2012_Altersgruppen_{}.csv"
KOELN_STICHTAG = date(2012, 12, 31)
HAMBURG_STICHTAG = date(2013, 12, 31)
BERLIN_STICHTAG = date(2024, 12, 31)


def _persons(name: str, required: bool = False, type_: str = "UInt32") -> dict:
    return {"name": name, "type": type_, "unit": "persons", "required": required}


def _weather_fields() -> list[dict]:
    tool = yaml.safe_load((harness.EXAMPLES / f"citytool-{EXAMPLE_TOOL}.yaml").read_text())
    return next(d for d in tool["spec"]["datasets"] if d["name"] == "weather")["fields"]


# The datasets the example tools lack, in a test tool of its own (built like SENSORS_TOOL).
SAMPLES_TOOL = {
    "apiVersion": "urbanstack.io/v1alpha1", "kind": "CityTool", "metadata": {"name": TOOL},
    "spec": {"displayName": "Stichproben", "description": "Datasets for the sample files the example tools lack.",
             "version": "0.1.0", "owner": "guetersloh", "audience": "gov",
             "datasets": [
                 # The CDC .txt files are the members of the zips, which go to the example's weather
                 # dataset; a dataset of their own keeps the two copies apart.
                 {"name": "weather_files", "fields": _weather_fields()},
                 {"name": "bike_sharing", "fields": [{"name": "bikes", "type": "UInt32", "required": True}]},
                 {"name": "ev_charging", "fields": [{"name": "zustand", "type": "String", "required": True}]},
                 {"name": "population_by_age", "fields": [
                     {"name": "name", "type": "String"}, _persons("residents", True), _persons("age_0_2"),
                     _persons("age_80_plus")]},
                 {"name": "district_profiles", "fields": [
                     _persons("population", True), {"name": "area", "type": "Float64", "unit": "km²"},
                     {"name": "share_under_18", "type": "Float64", "unit": "%"},
                     _persons("net_migration", type_="Int32")]},
                 {"name": "residents_by_marital_status", "fields": [_persons("residents", True), _persons("single")]},
                 {"name": "residents_by_age", "fields": [_persons("residents", True), _persons("under_6")]},
                 # The LoRaWAN samples' decoded fields, with the units of the example tools (raumklima:
                 # temperature °C, humidity %, battery V).
                 {"name": "lorawan", "fields": [
                     {"name": "temperature", "type": "Float64", "unit": "°C"},
                     {"name": "humidity", "type": "Float64", "unit": "%"},
                     {"name": "battery", "type": "Float64", "unit": "V"},
                     {"name": "battery_level", "type": "Float64", "unit": "%"},
                     {"name": "pressure", "type": "Float64", "unit": "bar"},
                     {"name": "occupied", "type": "UInt8"},
                     {"name": "mains_power", "type": "UInt8"}]},
             ]},
}


def provision(admin_config: dict, warehouse) -> harness.Tenant:
    """The harness's throwaway tenant plus the samples tool, by the operator's plan and provisioners.
    The samples go back to 2012: a retention of 20 years keeps the warehouse from dropping them."""
    manifest, catalogue = harness.new_tenant("fx", retention_days=7_300)
    manifest["spec"]["tools"].append({"name": TOOL})
    catalogue.append(parse_citytool(copy.deepcopy(SAMPLES_TOOL)))
    desired = plan(parse_municipality(manifest), catalogue)
    password = secrets.token_urlsafe(18)
    ensure(StreamingProvisioner(admin_config), desired.streaming, {desired.streaming.password_key: password})
    ensure(WarehouseProvisioner(lambda: warehouse, embedded=True), desired.warehouse, {})
    return harness.Tenant(slug=desired.slug, password=password, desired=desired, manifest=manifest)


@dataclass
class Case:
    tool: str
    result: ParseResult
    records: int            # records in the source file, counted here without the connector
    datasets: set[str] = field(default_factory=set)

    def __post_init__(self):
        self.datasets = {e.dataset for e in self.result.events}


# Independent readers of the source files ---------------------------------------------

def cdc_rows(text: str) -> dict[str, dict[str, str]]:
    """A CDC produkt file by MESS_DATUM: header names → stripped cells."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = [h.strip() for h in lines[0].split(";")]
    rows = [dict(zip(header, (c.strip() for c in line.split(";")))) for line in lines[1:]]
    return {row["MESS_DATUM"]: row for row in rows}


def zip_member(data: bytes, prefix: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next(n for n in archive.namelist() if n.startswith(prefix))
        return archive.read(name).decode("latin-1")


def sheet_rows(data: bytes, sheet: str | None = None) -> list[tuple]:
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        return list((workbook[sheet] if sheet else workbook.worksheets[0]).iter_rows(values_only=True))
    finally:
        workbook.close()


def non_blank(rows: list[tuple], first: int) -> int:
    """Rows from spreadsheet row ``first`` on with any value (what an import must account for)."""
    return sum(1 for row in rows[first - 1:] if any(c is not None and str(c).strip() for c in row))


def csv_records(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(data.decode("utf-8")), delimiter=delimiter) if row]


def local_midnight_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=BERLIN_TZ).astimezone(UTC)


def utc_text(instant: datetime | str) -> str:
    """How toString(observed_at) shows an instant: UTC, milliseconds."""
    if isinstance(instant, str):
        instant = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# The flow -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow(platform, warehouse, shared_fixtures):
    """Parse every sample, publish, run the sink until it caught up; hand out tenant and cases."""
    admin_config = kafka.admin_config(platform)
    tenant = provision(admin_config, warehouse)
    slug = tenant.slug
    read = lambda name: (shared_fixtures / name).read_bytes()  # noqa: E731
    cases: dict[str, Case] = {}

    def add(name: str, tool: str, result: ParseResult, records: int) -> None:
        cases[name] = Case(tool, result, records)

    # Weather: Bright Sky, CDC zips → the example's weather dataset; the CDC .txt → weather_files.
    for name in ("weather/brightsky_api_current_weather_feldberg_2022-07-24.json",
                 "weather/brightsky_api_weather_arnstein_2024-10-26.json"):
        body = json.loads(read(name))
        add(name, EXAMPLE_TOOL, weather.parse_brightsky(read(name), slug),
            1 if isinstance(body["weather"], dict) else len(body["weather"]))
    for name in ("weather/brightsky_dwd_10minutenwerte_SOLAR_01766_akt.zip",
                 "weather/brightsky_dwd_observations_recent_FF_akt.zip"):
        add(name, EXAMPLE_TOOL, weather.parse_dwd_cdc_zip(read(name), slug),
            len(cdc_rows(zip_member(read(name), "produkt_"))))
    for name in ("weather/dwd_produkt_zehn_min_sd_20211209_20230611_01766.txt",
                 "weather/dwd_produkt_ff_stunde_20180915_20200317_04911.txt"):
        result = weather.parse_dwd_cdc(read(name), slug)
        result.events = [_dataset(e, "weather_files") for e in result.events]
        add(name, TOOL, result, len(cdc_rows(read(name).decode("latin-1"))))
    add(METEOSTAT, EXAMPLE_TOOL, tabular.import_table(read(METEOSTAT), slug, TableMapping(
        dataset="weather", sensor_id="meteostat-hamburg", timestamp_column="time", timezone="UTC",
        fields={"temp": "temperature", "dwpt": "dew_point", "rhum": "relative_humidity", "prcp": "precipitation",
                "wdir": "wind_direction", "pres": "pressure_msl", "tsun": "sunshine"},
        units={"temperature": "°C", "dew_point": "°C", "relative_humidity": "%", "precipitation": "mm",
               "wind_direction": "°", "pressure_msl": "hPa", "sunshine": "min"}, source="meteostat")),
        len(sheet_rows(read(METEOSTAT))) - 1)

    # LoRaWAN: one uplink per file.
    for name in LORAWAN:
        add(f"lorawan/{name}", TOOL, lorawan.parse_uplink(read(f"lorawan/{name}"), slug, **LORAWAN_CONFIG[name]), 1)

    # SensorThings: the two Hamburg responses test_sink_fixtures.py leaves out.
    name = "sensorthings/iot_hamburg_v1.0_StadtRad_datastreams_observations.json"
    body = json.loads(read(name))
    add(name, TOOL, sensorthings.parse_observations(read(name), slug, "bike_sharing", field="bikes"),
        sum(len(stream["Observations"]) for stream in body["value"]))
    name = "sensorthings/iot_hamburg_v1.0_E-Ladestationen_things_expanded.json"
    body = json.loads(read(name))
    add(name, TOOL, sensorthings.parse_observations(read(name), slug, "ev_charging"),
        sum(len(s["Observations"]) for thing in body["value"] for s in thing["Datastreams"]))

    # Municipal statistics.
    for part, sensor, label in (("Insgesamt", "Stadt Köln", "Stadt Köln"), ("Stadtbezirk", "Nr.", "Stadtbezirk"),
                                ("Stadtteil", "Nr.", "Stadtteil")):
        name = KOELN.format(part)
        add(name, TOOL, tabular.import_table(read(name), slug, TableMapping(
            dataset="population_by_age", sensor_column=sensor, reference_date=KOELN_STICHTAG,
            fields={label: "name", "Einwohner insgesamt": "residents", "0 - 2": "age_0_2",
                    "80 u. älter": "age_80_plus"},
            units={"residents": "persons", "age_0_2": "persons", "age_80_plus": "persons"},
            source=f"statistik-koeln-{part.lower()}")), len(csv_records(read(name))) - 1)
    hamburg = {"Bevölkerung": "population", "Fläche in km²": "area",
               "Anteil der unter 18-Jährigen in %": "share_under_18", "Wanderungssaldo": "net_migration"}
    hamburg_units = {"population": "persons", "net_migration": "persons"}
    add(HAMBURG_CSV, TOOL, tabular.import_table(read(HAMBURG_CSV), slug, TableMapping(
        dataset="district_profiles", sensor_column="Stadtgebiet", reference_date=HAMBURG_STICHTAG, fields=hamburg,
        units=hamburg_units, source="statistik-hamburg-csv")), len(csv_records(read(HAMBURG_CSV), ";")) - 1)
    add(HAMBURG_XLSX, TOOL, tabular.import_table(read(HAMBURG_XLSX), slug, TableMapping(
        dataset="district_profiles", sensor_column="Stadtgebiet", reference_date=HAMBURG_STICHTAG, fields=hamburg,
        units=hamburg_units, source="statistik-hamburg-xlsx")), non_blank(sheet_rows(read(HAMBURG_XLSX)), 5))
    add(f"{BERLIN}#T5", TOOL, tabular.import_table(read(BERLIN), slug, TableMapping(
        dataset="residents_by_marital_status", sensor_column=BERLIN_T5_LABEL, reference_date=BERLIN_STICHTAG,
        fields={"Insgesamt": "residents", "ledig": "single"}, units={"residents": "persons", "single": "persons"},
        source="statistik-berlin-t5"), sheet="T5"), non_blank(sheet_rows(read(BERLIN), "T5"), 8))
    for sheet in ("T11", "T12", "T13"):
        add(f"{BERLIN}#{sheet}", TOOL, tabular.import_table(read(BERLIN), slug, TableMapping(
            dataset="residents_by_age", sensor_column=BERLIN_AREA, reference_date=BERLIN_STICHTAG,
            fields={"Insgesamt": "residents", "unter 6": "under_6"},
            units={"residents": "persons", "under_6": "persons"}, source=f"statistik-berlin-{sheet.lower()}"),
            options=TableOptions(sheet=sheet, header_row=4, header_rows=2)),
            non_blank(sheet_rows(read(BERLIN), sheet), 6))

    with Publisher(admin_config) as publisher:
        for case in cases.values():
            publisher.publish(case.result, tenant=slug, tool=case.tool)
    group = f"test-sink-fixtures-more-{slug}"
    sink = Sink(admin_config, warehouse, SinkConfig(group_id=group, topic_pattern=rf"^{slug}\.[^.]+\.[^.]+$",
                                                    batch_rows=5_000, batch_seconds=0.3))
    topics = sorted({tenant.topic(case.tool, dataset) for case in cases.values() for dataset in case.datasets})
    sink.start()
    try:
        harness.drain(sink, admin_config, group, topics, timeout=180)
    finally:
        sink.close()
    rejections = sum(len(case.result.rejected) for case in cases.values())
    dead = harness.read_topic(admin_config, tenant.dlq, rejections + sink.metrics.totals["dlq"])
    try:
        yield tenant, cases, sink, dead
    finally:
        harness.deprovision(admin_config, warehouse, tenant)


def _dataset(event, dataset):
    return dataclasses.replace(event, dataset=dataset)


def table(tenant, tool: str, dataset: str) -> str:
    return f"`{tenant.database}`.`{tool.replace('-', '_')}__{dataset}`"


def query(warehouse, tenant, tool: str, dataset: str, columns: str, where: str, **parameters) -> list[tuple]:
    order = "" if re.match(r"(count|uniq|DISTINCT)", columns) else " ORDER BY observed_at"
    return warehouse.query(f"SELECT {columns} FROM {table(tenant, tool, dataset)} FINAL WHERE {where}{order}",
                           parameters=parameters).result_rows


def units(warehouse, tenant, tool: str, dataset: str) -> dict[str, str]:
    """Column → unit, as the operator declared it in the column comment (``… [m/s]``)."""
    rows = warehouse.query("SELECT name, comment FROM system.columns WHERE database = {db:String} AND "
                           "table = {t:String}", parameters={"db": tenant.database,
                                                             "t": f"{tool.replace('-', '_')}__{dataset}"}).result_rows
    return {name: m.group(1) for name, comment in rows if (m := re.search(r"\[([^\]]*)\]$", comment or ""))}


def sink_dead_ids(dead) -> Counter:
    """event_id of every record the sink sent to the DLQ (a batch row is written as its single event)."""
    found: Counter = Counter()
    for message in dead:
        if harness.headers(message).get("stage") == "sink":
            found[json.loads(message.value()).get("event_id")] += 1
    return found


# Accounting --------------------------------------------------------------------------------

def test_every_record_read_is_stored_or_dead_lettered(flow, warehouse):
    tenant, cases, sink, dead = flow
    killed = sink_dead_ids(dead)
    for name, case in cases.items():
        ids = [e.event_id for e in case.result.events]
        assert len(set(ids)) == len(ids), f"{name}: two events share an event_id, one would replace the other"
        stored = sum(warehouse.command(
            f"SELECT count() FROM {table(tenant, case.tool, dataset)} WHERE has({{ids:Array(String)}}, event_id)",
            parameters={"ids": [e.event_id for e in case.result.events if e.dataset == dataset]})
            for dataset in case.datasets)
        sink_dead = sum(killed[i] for i in ids)
        assert len(case.result.events) + len(case.result.rejected) == case.records, name
        assert (stored, sink_dead) == (len(ids), 0), name
    published = sum(len(case.result.events) for case in cases.values())
    assert sink.metrics.totals["in"] == published and sink.metrics.totals["dlq"] == 0


def test_connector_rejections_reach_the_dlq_with_reason(flow):
    _tenant, cases, _sink, dead = flow
    expected = Counter((case.tool, r.where, r.reason) for case in cases.values() for r in case.result.rejected)
    got = Counter((h["tool"], h["where"], h["error"]) for h in map(harness.headers, dead) if h["stage"] == "connector")
    assert got == expected and sum(expected.values()) > 0


# Weather -------------------------------------------------------------------------------------

def test_brightsky_current_weather(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    body = json.loads((shared_fixtures / "weather/brightsky_api_current_weather_feldberg_2022-07-24.json").read_bytes())
    record = body["weather"]
    station = next(s for s in body["sources"] if s["id"] == record["source_id"])
    [row] = query(warehouse, tenant, EXAMPLE_TOOL, "weather",
                  "sensor_id, toString(observed_at), temperature, wind_speed, sunshine, lon, lat",
                  "source = 'brightsky' AND sensor_id = {s:String}", s=station["dwd_station_id"])
    assert row[1] == utc_text(record["timestamp"]) and row[2] == record["temperature"]
    assert row[3] == pytest.approx(record["wind_speed_10"] / 3.6, abs=0.01)  # km/h (units=dwd) → m/s
    assert row[4] == record["sunshine_60"] and row[5:] == (station["lon"], station["lat"])
    declared = units(warehouse, tenant, EXAMPLE_TOOL, "weather")
    assert (declared["temperature"], declared["wind_speed"], declared["sunshine"]) == ("°C", "m/s", "min")


def test_brightsky_weather_local_offsets_across_dst(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    body = json.loads((shared_fixtures / "weather/brightsky_api_weather_arnstein_2024-10-26.json").read_bytes())
    station = body["sources"][0]["dwd_station_id"]
    rows = dict(query(warehouse, tenant, EXAMPLE_TOOL, "weather", "toString(observed_at), (temperature, wind_speed)",
                      "source = 'brightsky' AND sensor_id = {s:String}", s=station))
    assert len(rows) == len(body["weather"]) == 50
    # 02:00 twice on 27 October 2024: first summer time (00:00Z), then winter time (01:00Z).
    for stamp in ("2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"):
        record = next(r for r in body["weather"] if r["timestamp"] == stamp)
        temperature, wind = rows[utc_text(stamp)]
        assert temperature == record["temperature"] and wind == pytest.approx(record["wind_speed"] / 3.6, abs=0.01)
    assert utc_text("2024-10-27T02:00:00+02:00") == "2024-10-27 00:00:00.000"


@pytest.mark.parametrize("name, tool, dataset", [
    ("weather/brightsky_dwd_10minutenwerte_SOLAR_01766_akt.zip", EXAMPLE_TOOL, "weather"),
    ("weather/dwd_produkt_zehn_min_sd_20211209_20230611_01766.txt", TOOL, "weather_files"),
])
def test_dwd_cdc_ten_minute_solar(flow, warehouse, shared_fixtures, name, tool, dataset):
    tenant, *_ = flow
    data = (shared_fixtures / name).read_bytes()
    rows = cdc_rows(zip_member(data, "produkt_") if name.endswith(".zip") else data.decode("latin-1"))
    source = rows["202306091200"]
    [(when, solar, sunshine)] = query(warehouse, tenant, tool, dataset, "toString(observed_at), solar, sunshine",
                                      "sensor_id = '01766' AND observed_at = '2023-06-09 12:00:00'")
    assert when == "2023-06-09 12:00:00.000"  # MESS_DATUM is UTC
    assert solar == pytest.approx(float(source["GS_10"]) / 360, abs=1e-4)  # J/cm² → kWh/m²
    assert sunshine == pytest.approx(float(source["SD_10"]) * 60, abs=1e-3)  # hours → minutes
    declared = units(warehouse, tenant, tool, dataset)
    assert (declared["solar"], declared["sunshine"]) == ("kWh/m²", "min")
    [(n,)] = query(warehouse, tenant, tool, dataset, "count()", "sensor_id = '01766'")
    assert n == len(rows) == 288


@pytest.mark.parametrize("name, tool, dataset", [
    ("weather/brightsky_dwd_observations_recent_FF_akt.zip", EXAMPLE_TOOL, "weather"),
    ("weather/dwd_produkt_ff_stunde_20180915_20200317_04911.txt", TOOL, "weather_files"),
])
def test_dwd_cdc_hourly_wind(flow, warehouse, shared_fixtures, name, tool, dataset):
    tenant, *_ = flow
    data = (shared_fixtures / name).read_bytes()
    rows = cdc_rows(zip_member(data, "produkt_") if name.endswith(".zip") else data.decode("latin-1"))
    stored = dict(query(warehouse, tenant, tool, dataset,
                        "toString(observed_at), (wind_speed, wind_direction, lon, lat)", "sensor_id = '04911'"))
    assert len(stored) == len(rows) == 10
    first = rows["2018091501"]
    assert stored["2018-09-15 01:00:00.000"][:2] == (float(first["F"]), float(first["D"]))
    gap = next(k for k, r in rows.items() if r["F"] == "-999")  # a missing value in the source
    assert stored[utc_text(datetime.strptime(gap, "%Y%m%d%H").replace(tzinfo=UTC))][:2] == (None, float(rows[gap]["D"]))
    if name.endswith(".zip"):  # the position of the current site: the last row of the metadata member
        lines = zip_member(data, "Metadaten_Geographie").splitlines()
        *_, current = [line.split(";") for line in lines if line.strip()]
        assert stored["2018-09-15 01:00:00.000"][2:] == (float(current[3]), float(current[2]))
    else:
        assert stored["2018-09-15 01:00:00.000"][2:] == (None, None)
    assert units(warehouse, tenant, tool, dataset)["wind_speed"] == "m/s"  # CDC F is m/s already


def test_meteostat_workbook(flow, warehouse, shared_fixtures):
    """Meteostat's time cells are text without a zone; its exports are UTC. Its wspd is km/h and
    the upload parser does not convert units, so wind speed is not mapped (the sink would refuse it)."""
    tenant, *_ = flow
    header, *rows = sheet_rows((shared_fixtures / METEOSTAT).read_bytes())
    row = dict(zip(header, next(r for r in rows if r[0] == "2023-03-23 02:00:00")))
    [stored] = query(warehouse, tenant, EXAMPLE_TOOL, "weather",
                     "toString(observed_at), temperature, precipitation, pressure_msl, wind_direction",
                     "sensor_id = 'meteostat-hamburg' AND observed_at = '2023-03-23 02:00:00'")
    assert stored == ("2023-03-23 02:00:00.000", row["temp"], row["prcp"], row["pres"], row["wdir"])
    [(n,)] = query(warehouse, tenant, EXAMPLE_TOOL, "weather", "count()", "sensor_id = 'meteostat-hamburg'")
    assert n == len(rows) == 48


# LoRaWAN ---------------------------------------------------------------------------------------

def lorawan_expected(name: str, body: dict) -> tuple[str, str, dict]:
    """(sensor, UTC time, fields) read from the sample with base64 and struct, by the vendors'
    documented layouts for these exact frames (never through the connector)."""
    if name.startswith("tts"):
        uplink = body["uplink_message"]
        sensor, at, raw = body["end_device_ids"]["device_id"], uplink["received_at"], uplink["frm_payload"]
    else:
        sensor, at, raw = body["deviceInfo"]["devEui"].lower(), body["time"], body["data"]
    raw = base64.b64decode(raw)
    if "milesight" in name:      # 01 75 <battery %> 03 67 <int16 LE, 0.1 °C> 04 68 <0.5 %RH>
        assert raw[0:2] == b"\x01\x75" and raw[3:5] == b"\x03\x67" and raw[7:9] == b"\x04\x68"
        fields = {"battery_level": raw[2], "temperature": struct.unpack("<h", raw[5:7])[0] / 10,
                  "humidity": raw[9] / 2}
    elif "decentlab" in name:    # v2, id, flags 0b11, pressure word, temperature word, battery mV (big endian)
        version, _device, flags, p_raw, t_raw, mv = struct.unpack(">BHHHHH", raw)
        assert (version, flags) == (2, 3)
        fields = {"temperature": (t_raw - 384) * 0.003125 - 50, "battery": mv / 1000}
        if "pressure_range" in LORAWAN_CONFIG[name]:
            low, high = LORAWAN_CONFIG[name]["pressure_range"]
            fields["pressure"] = (p_raw - 16384) / 32768 * (high - low) + low
    elif "bosch" in name:        # port 2 heartbeat: occupancy bit, int8 °C
        assert body["uplink_message"]["f_port"] == 2
        fields = {"occupied": raw[0] & 1, "temperature": struct.unpack("b", raw[1:2])[0]}
    else:                        # Yobiiq port 50: ... FF 0B <power event: 0 mains off, 1 on> at the end
        assert raw[-3:-1] == b"\xff\x0b"
        fields = {"mains_power": raw[-1]}
    return sensor, utc_text(at), fields


def test_lorawan_decoded_uplinks_are_stored(flow, warehouse, shared_fixtures):
    """The built-in codecs turn the raw payloads into rows: values, units of the columns and UTC times
    match what the vendors' layouts give for the bytes in the sample files."""
    tenant, cases, _sink, _dead = flow
    columns = ["temperature", "humidity", "battery", "battery_level", "pressure", "occupied", "mains_power"]
    assert {k: v for k, v in units(warehouse, tenant, TOOL, "lorawan").items() if k in columns} == {
        "temperature": "°C", "humidity": "%", "battery": "V", "battery_level": "%", "pressure": "bar"}
    decoded = [name for name in LORAWAN if name not in LORAWAN_UNDECODED]
    for name in decoded:
        body = json.loads((shared_fixtures / "lorawan" / name).read_bytes())
        sensor, at, fields = lorawan_expected(name, body)
        (event,) = cases[f"lorawan/{name}"].result.events
        # The anonymised TTS envelopes of Milesight and Bosch share the device id: the time tells them apart.
        rows = query(warehouse, tenant, TOOL, "lorawan", "toString(observed_at), " + ", ".join(columns),
                     "sensor_id = {s:String} AND source = {src:String} AND observed_at = {t:DateTime64(3, 'UTC')}",
                     s=sensor, src=event.source, t=at)
        assert len(rows) == 1 and rows[0][0] == at, name
        stored = dict(zip(columns, rows[0][1:]))
        assert {k: v for k, v in stored.items() if v is not None} == pytest.approx(fields), name
    [(n,)] = query(warehouse, tenant, TOOL, "lorawan", "count()", "1")
    assert n == len(decoded) == 6
    # What the samples say, in words: the Milesight room is at 30.8 °C and 50.5 %, the Bosch bay is
    # taken at 18 °C, the Decentlab probe is at 25.67 °C and -0.0117 bar on 3.199 V, the smoke detector
    # reports its mains power off.
    [(t, h)] = query(warehouse, tenant, TOOL, "lorawan", "temperature, humidity", "battery_level = 92")
    assert (t, h) == (30.8, 50.5)
    [(p,)] = query(warehouse, tenant, TOOL, "lorawan", "pressure", "pressure IS NOT NULL")
    assert p == pytest.approx(-0.01171875)


def test_lorawan_unidentified_uplink_is_dead_lettered_whole(flow, shared_fixtures):
    """An uplink with no decoded payload whose device names no built-in codec (no pin, profile
    "Chirpstack default device profile") is in the DLQ unchanged, with the reason."""
    _tenant, cases, _sink, dead = flow
    uplinks = [m for m in dead
               if harness.headers(m)["stage"] == "connector" and harness.headers(m)["where"] == "uplink"]
    bodies = [json.loads(m.value()) for m in uplinks]
    for name in LORAWAN_UNDECODED:
        source = json.loads((shared_fixtures / "lorawan" / name).read_bytes())
        assert not cases[f"lorawan/{name}"].result.events
        assert bodies.count(source) == 1, name
        error = harness.headers(uplinks[bodies.index(source)])["error"]
        assert source["deviceInfo"]["devEui"] in error and "codec" in error and "built-in codecs" in error
    assert len(uplinks) == len(LORAWAN_UNDECODED)


# SensorThings ------------------------------------------------------------------------------------

def test_sensorthings_datastreams_with_observations(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    body = json.loads((shared_fixtures / "sensorthings/iot_hamburg_v1.0_StadtRad_datastreams_observations.json")
                      .read_bytes())
    streams = {str(s["@iot.id"]): s for s in body["value"]}
    for sensor in ("218", sorted(streams)[-1]):
        newest = streams[sensor]["Observations"][0]
        [row] = query(warehouse, tenant, TOOL, "bike_sharing", "toString(observed_at), bikes",
                      "sensor_id = {s:String} AND observed_at = {t:DateTime64(3, 'UTC')}", s=sensor,
                      t=utc_text(newest["phenomenonTime"]))
        assert row == (utc_text(newest["phenomenonTime"]), newest["result"])
    [(n, sensors)] = query(warehouse, tenant, TOOL, "bike_sharing", "count(), uniqExact(sensor_id)", "1")
    assert (n, sensors) == (sum(len(s["Observations"]) for s in streams.values()), len(streams))


def test_sensorthings_things_with_locations_and_text_results(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    body = json.loads((shared_fixtures / "sensorthings/iot_hamburg_v1.0_E-Ladestationen_things_expanded.json")
                      .read_bytes())
    found = [(thing, stream, obs) for thing in body["value"] for stream in thing["Datastreams"]
             for obs in stream["Observations"]]
    thing, stream, obs = next(f for f in found if f[2]["@iot.id"] == 343263358)
    lon, lat = thing["Locations"][0]["location"]["geometry"]["coordinates"]
    rows = query(warehouse, tenant, TOOL, "ev_charging", "toString(observed_at), zustand, lon, lat",
                 "sensor_id = {s:String}", s=str(stream["@iot.id"]))
    assert (utc_text(obs["phenomenonTime"]), obs["result"], lon, lat) in rows
    # An observation with an empty result is not stored (it is in the DLQ).
    _thing, empty_stream, empty = next(f for f in found if f[2]["result"] == "")
    assert not query(warehouse, tenant, TOOL, "ev_charging", "zustand",
                     "sensor_id = {s:String} AND observed_at = {t:DateTime64(3, 'UTC')}",
                     s=str(empty_stream["@iot.id"]), t=utc_text(empty["phenomenonTime"]))
    [(n,)] = query(warehouse, tenant, TOOL, "ev_charging", "count()", "1")
    assert n == sum(1 for f in found if f[2]["result"] != "") == 460


# Municipal statistics -------------------------------------------------------------------------------

@pytest.mark.parametrize("part, sensor, label", [
    ("Insgesamt", "Köln insgesamt", "Stadt Köln"), ("Stadtbezirk", "3", "Stadtbezirk"),
    ("Stadtteil", "101", "Stadtteil")])
def test_koeln_age_groups(flow, warehouse, shared_fixtures, part, sensor, label):
    tenant, *_ = flow
    header, *rows = csv_records((shared_fixtures / KOELN.format(part)).read_bytes())
    key = "Nr." if "Nr." in header else label
    source = dict(zip(header, next(r for r in rows if r[header.index(key)] == sensor)))
    [row] = query(warehouse, tenant, TOOL, "population_by_age",
                  "toString(observed_at), name, residents, age_0_2, age_80_plus",
                  "source = {src:String} AND sensor_id = {s:String}", src=f"statistik-koeln-{part.lower()}", s=sensor)
    # The reference date is a local date: midnight in Köln is 23:00 UTC the day before.
    assert row == (utc_text(local_midnight_utc(KOELN_STICHTAG)), source[label], int(source["Einwohner insgesamt"]),
                   int(source["0 - 2"]), int(source["80 u. älter"]))
    assert row[0] == "2012-12-30 23:00:00.000"
    assert units(warehouse, tenant, TOOL, "population_by_age")["residents"] == "persons"


def _hamburg_csv(shared_fixtures) -> dict[str, list[dict[str, str]]]:
    header, *rows = csv_records((shared_fixtures / HAMBURG_CSV).read_bytes(), ";")
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_name.setdefault(row[0].strip(), []).append(dict(zip((h.strip() for h in header), row)))
    return by_name


def _number(text: str) -> float:
    """The author export's numbers: space thousands, decimal comma, '-  23'."""
    return float(text.replace(" ", "").replace(",", "."))


def test_hamburg_csv_numbers_and_units(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    source = _hamburg_csv(shared_fixtures)["Hamburg-Altstadt"][0]
    [row] = query(warehouse, tenant, TOOL, "district_profiles",
                  "toString(observed_at), population, area, share_under_18, net_migration",
                  "source = 'statistik-hamburg-csv' AND sensor_id = 'Hamburg-Altstadt'")
    assert row == (utc_text(local_midnight_utc(HAMBURG_STICHTAG)), _number(source["Bevölkerung"]),
                   _number(source["Fläche in km²"]), _number(source["Anteil der unter 18-Jährigen in %"]),
                   _number(source["Wanderungssaldo"]))
    assert row[4] < 0  # "-  23" in the file
    declared = units(warehouse, tenant, TOOL, "district_profiles")
    assert (declared["area"], declared["share_under_18"], declared["population"]) == ("km²", "%", "persons")


def test_hamburg_quarter_is_not_replaced_by_the_district_of_the_same_name(flow, warehouse, shared_fixtures):
    """Stadtteil Eimsbüttel and Bezirk Eimsbüttel share a name: the quarter (first) is stored, the
    district total is refused with a reason instead of silently overwriting it."""
    tenant, cases, *_ = flow
    quarter, district = _hamburg_csv(shared_fixtures)["Eimsbüttel"]
    for source_name, name in (("statistik-hamburg-csv", HAMBURG_CSV), ("statistik-hamburg-xlsx", HAMBURG_XLSX)):
        rows = query(warehouse, tenant, TOOL, "district_profiles", "population",
                     "source = {src:String} AND sensor_id = 'Eimsbüttel'", src=source_name)
        assert rows == [(_number(quarter["Bevölkerung"]),)]
        assert any("'Eimsbüttel'" in r.reason and "is already row" in r.reason for r in cases[name].result.rejected)
    assert _number(district["Bevölkerung"]) != _number(quarter["Bevölkerung"])


def test_hamburg_workbook(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    rows = sheet_rows((shared_fixtures / HAMBURG_XLSX).read_bytes())
    names = rows[2]  # row 3 holds the column names under the group row
    for area in ("HafenCity", "Hamburg"):
        source = dict(zip(names, next(r for r in rows if r[0] == area)))
        [stored] = query(warehouse, tenant, TOOL, "district_profiles", "population, area, net_migration",
                         "source = 'statistik-hamburg-xlsx' AND sensor_id = {s:String}", s=area)
        assert stored == (source["Bevölkerung"], pytest.approx(source["Fläche in km²"]), source["Wanderungssaldo"])


def test_berlin_marital_status_sheet(flow, warehouse, shared_fixtures):
    tenant, *_ = flow
    rows = sheet_rows((shared_fixtures / BERLIN).read_bytes(), "T5")
    mitte = next(r for r in rows if r[0] == "Mitte")
    young = next(r for r in rows if isinstance(r[0], str) and r[0].strip() == "18 - 25")  # first: Deutsche
    stored = dict(query(warehouse, tenant, TOOL, "residents_by_marital_status", "sensor_id, (residents, single)",
                        "sensor_id IN ('Mitte', '18 - 25')"))
    assert stored == {"Mitte": (mitte[1], mitte[2]), "18 - 25": (young[1], young[2])}
    [(when,)] = query(warehouse, tenant, TOOL, "residents_by_marital_status", "DISTINCT toString(observed_at)", "1")
    assert when == utc_text(local_midnight_utc(BERLIN_STICHTAG)) == "2024-12-30 23:00:00.000"


@pytest.mark.parametrize("sheet", ["T11", "T12", "T13"])
def test_berlin_ortsteile_sheets(flow, warehouse, shared_fixtures, sheet):
    tenant, cases, *_ = flow
    rows = sheet_rows((shared_fixtures / BERLIN).read_bytes(), sheet)
    for area in ("Moabit", "Hansaviertel"):
        source = next(r for r in rows if r[1] == area)  # B: Ortsteil, C: Insgesamt, D: unter 6
        stored = query(warehouse, tenant, TOOL, "residents_by_age", "toString(observed_at), residents, under_6",
                       "source = {src:String} AND sensor_id = {s:String}", src=f"statistik-berlin-{sheet.lower()}",
                       s=area)
        assert stored == [("2024-12-30 23:00:00.000", source[2], source[3])]
    [(n,)] = query(warehouse, tenant, TOOL, "residents_by_age", "count()", "source = {src:String}",
                   src=f"statistik-berlin-{sheet.lower()}")
    assert n == len(cases[f"{BERLIN}#{sheet}"].result.events) > 90
