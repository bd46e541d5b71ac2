"""The Amtlicher Gemeindeschlüssel (AGS) and the municipality directory.

An AGS has no check digit, so its format proves little: ``05754008`` is
Gütersloh, ``05754009`` is nothing. Where Destatis' municipality directory is
available (path in ``URBANSTACK_MUNICIPALITY_DIRECTORY``) an AGS must also name
a real Gemeinde, and the directory supplies the official name and population.

The directory is the publisher's data and is never part of this repository;
the loader reads the derived CSV format (``ags,ars,name,…,is_gemeinde,…,
population,…``) from wherever the operator points it.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from urbanstack.settings import FIELDS, Settings

AGS_PATTERN = r"^(0[1-9]|1[0-6])[0-9]{6}$"
DIRECTORY_ENV = FIELDS["municipality_directory"].env

LAENDER = {
    "01": "Schleswig-Holstein", "02": "Hamburg", "03": "Niedersachsen", "04": "Bremen",
    "05": "Nordrhein-Westfalen", "06": "Hessen", "07": "Rheinland-Pfalz", "08": "Baden-Württemberg",
    "09": "Bayern", "10": "Saarland", "11": "Berlin", "12": "Brandenburg",
    "13": "Mecklenburg-Vorpommern", "14": "Sachsen", "15": "Sachsen-Anhalt", "16": "Thüringen",
}


class AgsError(ValueError):
    """An AGS that is malformed or names no municipality; the message says what to fix."""


def format_error(ags: str) -> str | None:
    """Why ``ags`` is not a well-formed AGS, or None if it is."""
    if not re.fullmatch(r"[0-9]+", ags or ""):
        return f"AGS must consist of 8 digits, got {ags!r}"
    if len(ags) != 8:
        hint = " (did a leading zero get lost?)" if len(ags) == 7 else ""
        return f"AGS must have 8 digits, got {ags!r}{hint}"
    if ags[:2] not in LAENDER:
        return f"AGS must start with a Land code 01–16, got {ags[:2]!r} in {ags!r}"
    return None


def check_format(ags: str) -> str:
    if (problem := format_error(ags)) is not None:
        raise AgsError(problem)
    return ags


@dataclass(frozen=True)
class DirectoryEntry:
    ags: str
    name: str
    kind: str
    is_gemeinde: bool
    population: int

    @property
    def land(self) -> str:
        return LAENDER[self.ags[:2]]

    @property
    def display_name(self) -> str:
        """``Gütersloh`` for ``Gütersloh, Stadt``: the suffix is a legal status, not the name."""
        return self.name.split(",", 1)[0].strip()


class MunicipalityDirectory:
    """Entries of the directory by AGS."""

    def __init__(self, entries: dict[str, DirectoryEntry], source: str):
        self._entries = entries
        self.source = source

    @classmethod
    def load(cls, path: Path | str) -> "MunicipalityDirectory":
        path = Path(path)
        try:
            # gzip: the whole directory fits into one ConfigMap (1 MiB) in a cluster
            handle = (gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz"
                      else path.open(encoding="utf-8", newline=""))
        except OSError as exc:
            raise FileNotFoundError(
                f"municipality directory {str(path)!r} cannot be read ({exc.strerror}); "
                f"fix {DIRECTORY_ENV} or unset it to check the AGS format only") from None
        with handle:
            reader = csv.DictReader(handle)
            missing = {"ags", "name", "kind", "is_gemeinde", "population"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"municipality directory {str(path)!r} lacks the columns {sorted(missing)}")
            entries = {
                row["ags"]: DirectoryEntry(
                    ags=row["ags"], name=row["name"], kind=row["kind"],
                    is_gemeinde=row["is_gemeinde"] == "1", population=int(row["population"] or 0))
                for row in reader
            }
        return cls(entries, str(path))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ags: str) -> DirectoryEntry | None:
        return self._entries.get(ags)

    def lookup(self, ags: str) -> DirectoryEntry:
        """The Gemeinde with this AGS; AgsError if there is none."""
        check_format(ags)
        entry = self._entries.get(ags)
        if entry is None:
            raise AgsError(f"AGS {ags!r} is not in the municipality directory ({self.source}); "
                           f"check the digits against the Gemeindeverzeichnis")
        if not entry.is_gemeinde:
            raise AgsError(f"AGS {ags!r} is {entry.name!r} ({entry.kind}), not a Gemeinde; "
                           f"only municipalities can be tenants")
        return entry


def load_directory(settings: Settings) -> MunicipalityDirectory | None:
    """The directory named by URBANSTACK_MUNICIPALITY_DIRECTORY, or None when it is unset."""
    path = settings.municipality_directory
    return _load_cached(str(Path(path).expanduser().resolve())) if path else None


@lru_cache(maxsize=4)
def _load_cached(path: str) -> MunicipalityDirectory:
    return MunicipalityDirectory.load(path)
