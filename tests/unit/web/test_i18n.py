"""German first: every text the web pages show has a German translation, and numbers and
dates are formatted as German offices write them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from urbanstack.runtime.web import i18n

ROOT = Path(i18n.__file__).resolve().parents[1]  # runtime/
METHODS = [("**/templates/**.html", "jinja2.ext:babel_extract"), ("web/**.py", "python"), ("hubs/**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "false"}}
# Pages City Tools contribute to the hubs (urbanstack.toolkit.pages) use the same catalogue.
TOOLS_ROOT = ROOT.parent / "urbanstack"
TOOLS_METHODS = [("citytools/**/templates/**.html", "jinja2.ext:babel_extract"), ("citytools/**.py", "python"),
                 ("toolkit/**.py", "python")]
TOOLS_OPTIONS = {"citytools/**/templates/**.html": OPTIONS["**/templates/**.html"]}


def _message_ids() -> dict[str, str]:
    found = {}
    for root, methods, options in ((ROOT, METHODS, OPTIONS), (TOOLS_ROOT, TOOLS_METHODS, TOOLS_OPTIONS)):
        for filename, _lineno, message, _comments, _context in extract_from_dir(
                str(root), methods, options_map=options, keywords={"_": None, "gettext": None, "N_": None}):
            for text in (message if isinstance(message, tuple) else (message,)):
                if text:
                    found.setdefault(text, filename)
    return found


def test_every_text_of_the_pages_has_a_german_translation():
    with (i18n.LOCALE_DIR / "de" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        german = {message.id: message.string for message in read_po(handle, locale="de") if message.id}
    ids = _message_ids()
    assert len(ids) > 50, "the extraction found too few texts; is the template method map right?"
    missing = {text: where for text, where in ids.items() if not german.get(text)}
    assert not missing, "texts without German translation (add them to locale/de/LC_MESSAGES/messages.po):\n" + \
        "\n".join(f"  {where}: {text!r}" for text, where in sorted(missing.items(), key=lambda i: i[1]))


def test_numbers_and_times_are_german_by_default_and_english_on_request():
    at = datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)  # 03:30 summer time in Berlin
    assert i18n.format_number(1234.5, "de") == "1.234,5"
    assert i18n.format_number(1234.5, "en") == "1,234.5"
    assert i18n.format_datetime(at, "de") == "29.03.2026 03:30"
    assert i18n.language(None) == "de"
    assert i18n.language("en") == "en" and i18n.language("fr", "en") == "en" and i18n.language("xx") == "de"


def test_numbers_and_german_times_read_exactly_as_babel_writes_them():
    """Tables of a year of hourly values are formatted without Babel (it was most of a
    dashboard's server time); what people read must not change."""
    import random
    from datetime import datetime, timedelta, timezone

    from babel import dates, numbers

    from urbanstack.runtime.web import i18n

    rng = random.Random(7)
    values = [0, -0.0, 0.004, -0.004, 0.005, 1, -1, 12.5, 1234.5678, -1234.5, 999999.995, 0.1 + 0.2, 10**12,
              1e14 + 0.25, 3e17, float("nan"), float("inf")]
    values += [rng.uniform(-1e6, 1e6) for _ in range(3000)] + [rng.randint(-10**9, 10**9) for _ in range(500)]
    for lang in ("de", "en"):
        for digits in (0, 1, 2, 3):
            for value in values:
                assert i18n.format_number(value, lang, digits) == numbers.format_decimal(
                    round(float(value), digits), locale=i18n.BABEL_LOCALES[lang], decimal_quantization=False), \
                    (lang, digits, value)
    assert i18n.format_number(1234.5, "de") == "1.234,5" and i18n.format_number(1234.5, "en") == "1,234.5"
    start = datetime(2025, 3, 29, tzinfo=timezone.utc)  # over both changes of daylight saving time
    for hour in range(0, 24 * 220, 5):
        at = start + timedelta(hours=hour, minutes=hour % 60, seconds=hour % 11)
        for style, pattern in (("short", "dd.MM.yyyy HH:mm"), ("long", "dd.MM.yyyy HH:mm:ss")):
            assert i18n.format_datetime(at, "de", style) == dates.format_datetime(
                i18n.local_time(at), pattern, tzinfo=i18n.TIME_ZONE, locale="de_DE")
    assert i18n.format_datetime(datetime(2026, 12, 5, 16, 3, tzinfo=timezone.utc), "de") == "05.12.2026 17:03"


def test_a_text_in_two_languages_shows_the_pages_and_marks_the_other_with_its_language(tmp_path):
    """City Tools' descriptions (spec.description in English, spec.descriptionDe in German): a page
    shows its own language's text; where only the other exists, the element says which (WCAG 3.1.2)."""
    from urbanstack.runtime.web.rendering import Renderer

    both = {"de": "Beobachtet Pegel.", "en": "Watches gauges."}
    assert i18n.localized(both, "de") == ("Beobachtet Pegel.", None)
    assert i18n.localized(both, "en") == ("Watches gauges.", None)
    assert i18n.localized({"en": "Watches gauges."}, "de") == ("Watches gauges.", "en")
    assert i18n.localized({"de": "Beobachtet Pegel."}, "en") == ("Beobachtet Pegel.", "de")
    assert i18n.localized({}, "de") == ("", None)

    (tmp_path / "page.html").write_text('{% import "macros/text.html" as text %}{{ text.localized(texts) }}')
    renderer = Renderer([tmp_path])
    assert renderer.render("page.html", "de", texts=both) == "<p>Beobachtet Pegel.</p>"
    assert renderer.render("page.html", "en", texts=both) == "<p>Watches gauges.</p>"
    assert renderer.render("page.html", "de", texts={"en": "Watches <gauges>."}) == \
        '<p lang="en">Watches &lt;gauges&gt;.</p>'
    assert renderer.render("page.html", "de", texts={}) == ""
