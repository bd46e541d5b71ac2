import io
import zipfile
from datetime import datetime, timezone

import pytest

from urbanstack.runtime.connectors import weather


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def at(result, when):
    return next(e for e in result.events if e.observed_at == when)


def test_dwd_poi(shared):
    result = weather.parse_dwd_poi(shared("weather/brightsky_dwd_poi_observations_current_01049.csv"), "x")
    assert len(result.events) == 25 and not result.rejected
    event = at(result, utc(2020, 4, 5, 20))
    assert event.sensor_id == "01049"
    assert event.fields["temperature"] == -3.8 and event.units["temperature"] == "°C"
    assert event.fields["dew_point"] == -5.3
    assert event.fields["pressure_msl"] == 1020.8 and event.fields["relative_humidity"] == 89
    assert event.fields["precipitation"] == 0.1
    assert event.fields["wind_speed"] == pytest.approx(7 / 3.6, abs=0.01)  # 7 km/h
    assert event.units["wind_speed"] == "m/s" and event.fields["wind_direction"] == 170
    assert event.fields["cloud_cover"] is None  # '---'


def test_dwd_poi_bad_row_is_rejected():
    data = (b"surface observations;Parameter description;dry_bulb_temperature_at_2_meter_above_ground\n"
            b"01049;Unit;Grad C\nDatum;Uhrzeit (UTC);Temperatur (2m)\n06.04.20;08:00;-3,1\n"
            b"06.04.20;25:00;1,0\n06.04.20;09:00;---\n")
    result = weather.parse_dwd_poi(data, "x")
    assert [e.fields["temperature"] for e in result.events] == [-3.1]
    assert [r.where for r in result.rejected] == ["row 5", "row 6"]


def test_dwd_cdc_zip_hourly_wind(shared):
    result = weather.parse_dwd_cdc_zip(shared("weather/brightsky_dwd_observations_recent_FF_akt.zip"), "x")
    assert len(result.events) == 10 and not result.rejected
    first = at(result, utc(2018, 9, 15, 1))
    assert first.fields == {"wind_speed": 1.7, "wind_direction": 140}
    assert first.sensor_id == "04911" and (first.lon, first.lat) == (12.5597, 48.8275)
    assert at(result, utc(2019, 4, 20, 21)).fields == {"wind_speed": None, "wind_direction": 90}


def test_dwd_cdc_ten_minute_solar(shared):
    result = weather.parse_dwd_cdc(shared("weather/dwd_produkt_zehn_min_sd_20211209_20230611_01766.txt"), "x")
    assert len(result.events) == 288 and not result.rejected
    event = at(result, utc(2023, 6, 9, 12, 0))
    assert event.fields["sunshine"] == pytest.approx(0.167 * 60, abs=0.001)  # hours → minutes
    assert event.fields["solar"] == pytest.approx(50.0 / 360, abs=1e-4)  # GS_10 J/cm² → kWh/m²
    assert event.units == {"sunshine": "min", "solar": "kWh/m²"}


def test_dwd_cdc_missing_and_bad_rows(own):
    result = weather.parse_dwd_cdc(own("dwd_produkt_tu_stunde_sample.txt"), "x")
    assert [(e.observed_at, e.fields["temperature"]) for e in result.events] == [
        (utc(2024, 1, 1, 0), 4.2), (utc(2024, 1, 1, 2), -1.5)]
    assert [r.where for r in result.rejected] == ["line 3", "line 5"]
    assert "-999" in result.rejected[0].reason and "MESS_DATUM" in result.rejected[1].reason


def test_dwd_cdc_zip_without_product():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Metadaten_Geographie_00001.txt", "x")
    result = weather.parse_dwd_cdc_zip(buffer.getvalue(), "x")
    assert not result.events and "no produkt_" in result.rejected[0].reason


def test_brightsky_weather_across_dst(shared):
    result = weather.parse_brightsky(shared("weather/brightsky_api_weather_arnstein_2024-10-26.json"), "x")
    assert len(result.events) == 50 and not result.rejected
    assert len({e.event_id for e in result.events}) == 50
    summer = at(result, utc(2024, 10, 27, 0))   # 02:00+02:00
    winter = at(result, utc(2024, 10, 27, 1))   # 02:00+01:00
    assert (summer.fields["temperature"], winter.fields["temperature"]) == (9.8, 10.6)
    assert summer.fields["wind_speed"] == 2.5 and winter.fields["wind_speed"] == 2.0  # 9.0 / 7.2 km/h
    assert summer.sensor_id == "00191" and summer.metadata["station_name"] == "Arnstein-Müdesheim"
    assert summer.metadata["fallback_stations"]["wind_speed"] == "02597"


def test_brightsky_current_weather(shared):
    result = weather.parse_brightsky(shared("weather/brightsky_api_current_weather_feldberg_2022-07-24.json"), "x")
    (event,) = result.events
    assert event.observed_at == utc(2022, 7, 24, 15, 30) and event.sensor_id == "01346"
    assert event.fields["temperature"] == 32.1 and event.fields["sunshine"] == 36.0
    assert event.fields["wind_speed"] == pytest.approx(6.1 / 3.6, abs=0.01)
    assert (event.lon, event.lat) == (8.00382, 47.8749)


def test_brightsky_si_units_and_unknown_source():
    data = (b'{"weather": [{"timestamp": "2024-01-01T00:00:00+00:00", "source_id": 1, "temperature": 273.15,'
            b' "wind_speed": 2.0, "pressure_msl": 101300, "sunshine": 1800},'
            b' {"timestamp": "2024-01-01T01:00:00+00:00", "source_id": 9, "temperature": 274}],'
            b' "sources": [{"id": 1, "dwd_station_id": "01766"}]}')
    result = weather.parse_brightsky(data, "x", units="si")
    assert result.events[0].fields == {"temperature": 0.0, "wind_speed": 2.0, "pressure_msl": 1013.0,
                                       "sunshine": 30.0}
    assert "source_id 9" in result.rejected[0].reason
