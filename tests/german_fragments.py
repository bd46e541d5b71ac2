"""Until the lead merges the hubs' German fragments (runtime/hubs/*/locale_*.po) into the
catalogue, tests load them on top of it, so German texts can be asserted now."""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

from urbanstack.runtime.web import i18n

HUBS = Path(i18n.__file__).resolve().parents[1] / "hubs"


def with_german_fragments() -> None:
    german = i18n.translations("de")
    for po in sorted(HUBS.glob("*/locale_*.po")):
        with po.open("rb") as handle:
            catalog = read_po(handle, locale="de")
        for message in catalog:
            if message.id and message.string and isinstance(message.id, str):
                german._catalog.setdefault(message.id, message.string)
