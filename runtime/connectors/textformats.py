"""Shared reading of German-flavoured text data: encodings, numbers, dates and
local wall-clock times. Used by the CSV-based connectors and the upload parser."""

from __future__ import annotations

import codecs
import io
import re
from datetime import date, datetime, timezone
from typing import Any, BinaryIO, Callable, Sequence
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
REPLACEMENT_CHAR = "\ufffd"

# Markers German statistics offices and exports use for "no value".
MISSING_MARKERS = frozenset({"", ".", "-", "–", "—", "x", "X", "...", "…", "---", "/", "k.A.", "n/a", "NA"})

_NEGATIVE = "[-−–]"
# A number with optional grouping (a first group never starts with 0: "0.125" is no thousands
# grouping), per decimal mark.
_NUMBER = {decimal: re.compile(
    rf"({_NEGATIVE})?\s*([1-9]\d{{0,2}}(?:{grouping}\d{{3}})+|\d+)(?:{re.escape(decimal)}(\d+))?(?:[eE]([-+]?\d+))?")
    for decimal, grouping in ((",", "[. \u00a0\u202f']"), (".", "[, \u00a0\u202f']"))}


def decode_text(data: bytes | str) -> tuple[str, str]:
    """Decode bytes as UTF-8 (with or without BOM), UTF-16 with a BOM (Excel's "Unicode
    text") or, failing that, Windows-1252/Latin-1.

    Returns the text and the encoding used. Latin-1 never fails, so any byte
    string can be read; a text with U+FFFD characters was damaged before it
    reached us, which callers report as a warning.
    """
    if isinstance(data, str):
        return data, "str"
    encoding = sniff_encoding(io.BytesIO(data))
    return data.decode(encoding), ENCODING_NAMES.get(encoding, encoding)


# How an encoding is reported: "utf-8-sig" is UTF-8 to a person.
ENCODING_NAMES = {"utf-8-sig": "utf-8"}
_CHUNK = 1 << 20


def sniff_encoding(stream: BinaryIO) -> str:
    """The codec that reads the whole ``stream``, decided from a byte-order mark or by
    decoding it chunk by chunk (bounded memory): UTF-8, else Windows-1252, else Latin-1.
    The stream is left at its start."""
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return codec
    for codec in ("utf-8", "cp1252"):
        decoder = codecs.getincrementaldecoder(codec)()
        try:
            while chunk := stream.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return codec
        except UnicodeDecodeError:
            continue
        finally:
            stream.seek(0)
    return "latin-1"


def parse_number(text: str, decimal: str = ",") -> int | float | None:
    """Parse a German (``decimal=","``) or English (``"."``) formatted number.

    Accepts ``1.234,5``, ``1 675``, ``9,7``, ``-  23``, ``−4``; returns ``None``
    for missing markers. Raises ``ValueError`` for anything else, so callers
    decide whether a cell is text.
    """
    cleaned = text.strip()
    if cleaned in MISSING_MARKERS:
        return None
    match = _NUMBER[decimal].fullmatch(cleaned)
    if not match:
        raise ValueError(f"not a number: {text!r}")
    sign, whole, fraction, exponent = match.groups()
    digits = whole if whole.isdigit() else re.sub(r"\D", "", whole)
    if fraction is None and exponent is None:
        value: int | float = int(digits)
    else:
        value = float(f"{digits}.{fraction or '0'}e{exponent or '0'}")
    return -value if sign else value


def parse_german_date(text: str) -> date:
    """``31.12.2024``, ``31.12.24`` or ISO ``2024-12-31``."""
    cleaned = text.strip()
    match = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})", cleaned)
    if match:
        day, month, year = (int(g) for g in match.groups())
        if len(match.group(3)) == 2:
            year += 2000 if year < 70 else 1900
        return date(year, month, day)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cleaned):
        return date.fromisoformat(cleaned)
    raise ValueError(f"not a date: {text!r}")


def parse_datetime(text: str) -> datetime:
    """Date and time in German or ISO notation; the result is naive unless the
    text carries a zone (``Z``, ``+02:00``, ``+0200``)."""
    cleaned = text.strip()
    match = re.fullmatch(r"(\d{1,2}\.\d{1,2}\.\d{2,4})[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*Uhr)?", cleaned)
    if match:
        day = parse_german_date(match.group(1))
        return datetime(day.year, day.month, day.day, int(match.group(2)), int(match.group(3)),
                        int(match.group(4) or 0))
    # "2022-05-01 00:00:00 +0200": fromisoformat does not accept the space before the offset.
    cleaned = re.sub(r"\s+([+-]\d{2}:?\d{2})$", r"\1", cleaned)
    try:
        return datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"not a date and time: {text!r}") from None


class LocalClock:
    """Turns local wall-clock times of one time zone into UTC.

    In the autumn hour that occurs twice the first occurrence (per key, usually
    the sensor) is summer time and the second is winter time, which is how
    hourly exports list them. A wall-clock time skipped in spring does not
    exist and raises ``ValueError``.
    """

    def __init__(self, zone: ZoneInfo = BERLIN):
        self.zone = zone
        self._seen: set[tuple[str, datetime]] = set()

    def to_utc(self, naive: datetime, key: str = "") -> datetime:
        if naive.tzinfo is not None:
            return naive.astimezone(timezone.utc)
        first = naive.replace(tzinfo=self.zone, fold=0)
        roundtrip = first.astimezone(timezone.utc).astimezone(self.zone).replace(tzinfo=None)
        if roundtrip != naive:
            raise ValueError(f"{naive:%Y-%m-%d %H:%M} does not exist in {self.zone.key} "
                             "(the clocks skip this hour when summer time starts)")
        if first.utcoffset() != naive.replace(tzinfo=self.zone, fold=1).utcoffset():
            fold = 1 if (key, naive) in self._seen else 0
            self._seen.add((key, naive))
            return naive.replace(tzinfo=self.zone, fold=fold).astimezone(timezone.utc)
        return first.astimezone(timezone.utc)


_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss",
                                  "Ä": "ae", "Ö": "oe", "Ü": "ue", "²": "2", "³": "3"})


def field_name(label: str) -> str:
    """A field name from a free-text label: ``"Fläche (km²)"`` → ``"flaeche_km2"``."""
    name = re.sub(r"[^a-z0-9]+", "_", label.translate(_TRANSLITERATION).lower()).strip("_")
    if not name:
        return "value"
    return f"v_{name}" if name[0].isdigit() else name


def realigned(row: list[Any], total: int, parts: Sequence[int],
              number: Callable[[Any], int | float | None]) -> list[Any] | None:
    """``row`` read one column to the left from ``parts[0]`` on, or None.

    Some exports (hystreet's, Moers July 2022) leave the first of adjacent part columns
    (``… Richtung Neumarkt``, ``… Richtung Neuer Wall``) empty and shift every later value
    one column to the right, dropping the last. That is only trusted when the shifted
    parts add up to the ``total`` column; the realigned row ends with an empty cell.
    """
    first, last = parts[0], parts[-1]
    if first >= len(row) or str(row[first] or "").strip() or last + 1 >= len(row):
        return None
    try:
        expected = number(row[total])
        values = [number(row[p + 1]) for p in parts]
    except ValueError:
        return None
    if expected is None or any(v is None for v in values) or sum(values) != expected:
        return None
    return row[:first] + row[first + 1:] + [""]
