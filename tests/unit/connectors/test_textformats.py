from datetime import date, datetime, timezone

import pytest

from urbanstack.runtime.connectors.textformats import (
    LocalClock, decode_text, field_name, parse_datetime, parse_german_date, parse_number,
)


@pytest.mark.parametrize("text, expected", [
    ("1.234,5", 1234.5), (" 1 675    ", 1675), ("9,7", 9.7), ("-  23    ", -23), ("−4", -4),
    ("289 876", 289876), (".", None), ("-", None), ("–", None), ("---", None), ("0", 0),
])
def test_german_numbers(text, expected):
    assert parse_number(text) == expected


def test_english_numbers_and_non_numbers():
    assert parse_number("1,234.5", decimal=".") == 1234.5
    assert parse_number("-999", decimal=".") == -999
    for text in ("0 - 2", "12.5", "abc", "1.23"):
        with pytest.raises(ValueError):
            parse_number(text)


def test_dates():
    assert parse_german_date("31.12.2024") == date(2024, 12, 31)
    assert parse_german_date("06.04.20") == date(2020, 4, 6)
    assert parse_datetime("31.12.2024 23:15") == datetime(2024, 12, 31, 23, 15)
    assert parse_datetime("2022-05-01 00:00:00 +0200").utcoffset().total_seconds() == 7200


def test_local_clock_across_both_dst_changes():
    clock = LocalClock()
    first = clock.to_utc(datetime(2024, 10, 27, 2, 0), key="a")
    second = clock.to_utc(datetime(2024, 10, 27, 2, 0), key="a")
    assert (first, second) == (datetime(2024, 10, 27, 0, 0, tzinfo=timezone.utc),
                               datetime(2024, 10, 27, 1, 0, tzinfo=timezone.utc))
    assert clock.to_utc(datetime(2024, 10, 27, 2, 0), key="b") == first
    assert clock.to_utc(datetime(2024, 3, 31, 3, 0)) == datetime(2024, 3, 31, 1, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="does not exist"):
        clock.to_utc(datetime(2024, 3, 31, 2, 30))


def test_decode_text_detects_encodings():
    assert decode_text("Fußgänger".encode("latin-1")) == ("Fußgänger", "cp1252")
    assert decode_text("\ufeffFußgänger".encode("utf-8")) == ("Fußgänger", "utf-8")


def test_field_name():
    assert field_name("Fläche (km²)") == "flaeche_km2"
    assert field_name("0 - 2") == "v_0_2"
