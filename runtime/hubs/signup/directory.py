"""Finding a municipality in the Destatis directory by name or AGS, with Kreis and Land.

Names repeat (21 municipalities contain "Neustadt"), so every hit carries its Kreis
and Land. The Gemeinden come from the derived CSV (``URBANSTACK_MUNICIPALITY_DIRECTORY``);
the Kreis names from Destatis' GV-ISys workbook (``URBANSTACK_DISTRICT_DIRECTORY``, the
``AuszugGV…xlsx`` the CSV is derived from; its rows of Satzart 40 are the Kreise) —
without it a Kreis is shown by its key.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from urbanstack.operator.ags import LAENDER, DirectoryEntry, MunicipalityDirectory, load_directory

MAX_HITS = 20


@dataclass(frozen=True)
class Place:
    ags: str
    name: str          # display name (without ", Stadt")
    official_name: str
    kreis: str
    land: str
    population: int


def _fold(text: str) -> str:
    text = text.lower().translate(str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


@lru_cache(maxsize=4)
def district_names(path: str) -> dict[str, str]:
    """Kreis key (first five digits of the AGS) → name, from the GV-ISys workbook or a CSV ``kreis,name``."""
    source = Path(path)
    names: dict[str, str] = {}
    if source.suffix.lower() == ".csv":
        import csv

        with source.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                names[row["kreis"]] = row["name"]
        return names
    import openpyxl

    book = openpyxl.load_workbook(source, read_only=True)
    try:
        for sheet in book.worksheets:
            for row in sheet.iter_rows(values_only=True):
                if row and str(row[0] or "").strip() == "40" and len(row) > 7 and row[2] and row[4]:
                    key = f"{row[2]}{row[3] or ''}{row[4]}"
                    if len(key) == 5 and key.isdigit():
                        names[key] = str(row[7]).strip()
    finally:
        book.close()
    return names


class Directory:
    """Search over the Gemeinden of a MunicipalityDirectory."""

    def __init__(self, directory: MunicipalityDirectory, districts: dict[str, str] | None = None):
        self._directory = directory
        self._districts = districts or {}
        self._index = [(entry, _fold(entry.name)) for entry in directory._entries.values() if entry.is_gemeinde]

    @property
    def source(self) -> str:
        return self._directory.source

    def place(self, entry: DirectoryEntry) -> Place:
        kreis_key = entry.ags[:5]
        kreis = self._districts.get(kreis_key) or f"Kreis {kreis_key}"
        return Place(ags=entry.ags, name=entry.display_name, official_name=entry.name, kreis=kreis,
                     land=LAENDER.get(entry.ags[:2], ""), population=entry.population)

    def get(self, ags: str) -> Place | None:
        entry = self._directory.get(ags)
        return self.place(entry) if entry is not None and entry.is_gemeinde else None

    def search(self, query: str, limit: int = MAX_HITS) -> list[Place]:
        """By AGS (all 8 digits, or the start of one) or by name (every word, any order);
        names that start with the query first, then by population."""
        query = (query or "").strip()
        if not query:
            return []
        if re.fullmatch(r"[0-9]{2,8}", query):
            hits = [entry for entry, _ in self._index if entry.ags.startswith(query)]
        else:
            words = _fold(query).split()
            if not words:
                return []
            hits = [entry for entry, folded in self._index if all(word in folded for word in words)]
            first = _fold(query)
            hits.sort(key=lambda entry: (not _fold(entry.name).startswith(first), -entry.population))
        return [self.place(entry) for entry in hits[:limit]]


def load(settings) -> Directory | None:
    directory = load_directory(settings)
    if directory is None:
        return None
    path = getattr(settings, "district_directory", "")
    return Directory(directory, district_names(str(Path(path).expanduser().resolve())) if path else None)
