"""German first, English second.

Message ids in templates and code are English; ``locale/de/LC_MESSAGES/messages.po``
holds the German text. The catalogues are compiled in memory at start-up (no build step
for ``.mo`` files). A page's language comes from an explicit choice (``?lang=en``, kept in
the session where there is one) and is German otherwise; dates and numbers follow it
(de-DE: ``05.12.2026 17:03``, ``1.234,5``), always in Europe/Berlin time.
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

from babel import Locale, dates, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = ("de", "en")
DEFAULT_LANGUAGE = "de"
BABEL_LOCALES = {"de": "de_DE", "en": "en_GB"}
TIME_ZONE = ZoneInfo("Europe/Berlin")
LOCALE_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    """Marks a message id for the catalogue where it is defined; it is translated where it is shown."""
    return message


def language(requested: str | None, remembered: str | None = None) -> str:
    """The page language: an explicit, known request wins, then what the session remembers, then German."""
    for candidate in (requested, remembered):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE


@lru_cache(maxsize=None)
def translations(lang: str) -> NullTranslations:
    po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return NullTranslations()  # English: the message ids are the English text
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


# Separators (group, decimal) of the languages whose numbers are formatted without Babel: a data
# table of a year of hourly values has ~9,000 cells, and Babel's format_decimal costs ~60 µs each.
# tests/unit/web/test_i18n.py checks that both give the same text.
_SEPARATORS = {"de": str.maketrans({",": ".", ".": ","}), "en": None}
_FAST_LIMIT = 1e15  # beyond this, floats print in other digits than Babel's Decimal


def localized(texts: Mapping[str, str], lang: str) -> tuple[str, str | None]:
    """A text from ``texts`` (by language) for a page in ``lang``: (text, None) when it is in the
    page's language; else the other language's, German first, with that language to mark the
    element with (WCAG 3.1.2, language of parts); ("", None) when there is none."""
    if texts.get(lang):
        return texts[lang], None
    other = next((code for code in (*LANGUAGES, *sorted(texts)) if texts.get(code)), None)
    return (texts[other], other) if other else ("", None)


def format_number(value: float | int | None, lang: str, digits: int = 2) -> str:
    if value is None:
        return "–"
    number = round(float(value), digits)
    if lang in _SEPARATORS and math.isfinite(number) and abs(number) < _FAST_LIMIT and 0 <= digits <= 6:
        text = f"{number:,.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        table = _SEPARATORS[lang]
        return text.translate(table) if table else text
    return numbers.format_decimal(number, locale=BABEL_LOCALES[lang], decimal_quantization=False)


def local_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(TIME_ZONE)


def format_datetime(value: datetime | None, lang: str, style: str = "short") -> str:
    if value is None:
        return "–"
    if lang == "de":  # strftime gives Babel's text for these all-numeric patterns, ~30 times faster
        return local_time(value).strftime({"short": "%d.%m.%Y %H:%M", "long": "%d.%m.%Y %H:%M:%S"}[style])
    pattern = style
    return dates.format_datetime(local_time(value), pattern, tzinfo=TIME_ZONE, locale=BABEL_LOCALES[lang])


def format_date(value: datetime | None, lang: str) -> str:
    if value is None:
        return "–"
    return dates.format_date(local_time(value), "dd.MM.yyyy" if lang == "de" else "medium",
                             locale=BABEL_LOCALES[lang])


def locale_name(lang: str) -> str:
    return Locale.parse(BABEL_LOCALES[lang]).get_language_name(BABEL_LOCALES[lang])
