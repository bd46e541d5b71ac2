"""What the catalogue says about a dataset beyond its CityTool definition: title, themes,
keywords, update frequency, formats, spatial reference.

The CityTool CRD has no theme, keyword or frequency fields (yet), so these are derived:
themes from words in the tool's and dataset's names and descriptions (EU data-theme
vocabulary), keywords from the same words, frequency "continuous" (sensor data arrive as
they are measured). Spatial coverage is the owning municipality (its AGS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from urbanstack.runtime.api.catalogue import DatasetInfo
from urbanstack.runtime.web.i18n import N_

DATA_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"
FREQUENCY = "http://publications.europa.eu/resource/authority/frequency/"
LANGUAGE = "http://publications.europa.eu/resource/authority/language/"
MUNICIPALITY_KEY = "http://dcat-ap.de/def/politicalGeocoding/municipalityKey/"
LEVEL_MUNICIPALITY = "http://dcat-ap.de/def/politicalGeocoding/Level/municipality"

THEMES = {
    "AGRI": N_("Agriculture, fisheries, forestry and food"),
    "ECON": N_("Economy and finance"),
    "EDUC": N_("Education, culture and sport"),
    "ENER": N_("Energy"),
    "ENVI": N_("Environment"),
    "GOVE": N_("Government and public sector"),
    "HEAL": N_("Health"),
    "JUST": N_("Justice, legal system and public safety"),
    "REGI": N_("Regions and cities"),
    "SOCI": N_("Population and society"),
    "TECH": N_("Science and technology"),
    "TRAN": N_("Transport"),
}
_THEME_WORDS = (
    ("TRAN", ("pedestrian", "passant", "traffic", "verkehr", "bike", "bicycle", "rad", "parking", "parken",
              "bus", "train", "transport", "mobility", "mobilität")),
    ("ENVI", ("weather", "wetter", "temperature", "air", "luft", "water", "wasser", "pegel", "river", "noise",
              "lärm", "climate", "klima", "rain", "precipitation", "flood", "hochwasser")),
    ("ENER", ("energy", "energie", "power", "strom", "solar", "heat", "wärme")),
    ("SOCI", ("population", "bevölkerung", "resident", "einwohner")),
    ("HEAL", ("health", "gesundheit")),
    ("EDUC", ("school", "schule", "library", "bibliothek", "sport")),
    ("ECON", ("budget", "haushalt", "retail", "handel", "economy", "wirtschaft")),
)


@dataclass(frozen=True)
class Format:
    key: str            # the download's ?format=
    label: str
    media_type: str
    file_type: str      # EU file-type code
    extension: str


FORMATS = (
    Format("csv", "CSV", "text/csv", "CSV", "csv"),
    Format("json", "JSON", "application/json", "JSON", "json"),
    Format("geojson", "GeoJSON", "application/geo+json", "GEOJSON", "geojson"),
)
FORMAT_BY_KEY = {f.key: f for f in FORMATS}


def _text(dataset: DatasetInfo) -> str:
    return " ".join((dataset.tool, dataset.name, dataset.display_name, dataset.description,
                     *(f"{f.name} {f.description}" for f in dataset.fields))).casefold().replace("_", " ")


def themes(dataset: DatasetInfo) -> tuple[str, ...]:
    """EU data-theme codes, first match first; ``REGI`` (regions and cities) when nothing matches."""
    own = f"{dataset.name} {dataset.description}".casefold().replace("_", " ")
    found = [code for code, words in _THEME_WORDS if any(re.search(rf"\b{re.escape(w)}", own) for w in words)]
    if not found:
        text = _text(dataset)
        found = [code for code, words in _THEME_WORDS if any(re.search(rf"\b{re.escape(w)}", text) for w in words)]
    return tuple(found[:2]) or ("REGI",)


def keywords(dataset: DatasetInfo) -> tuple[str, ...]:
    words = [dataset.display_name, *dataset.name.split("_"), *(f.name.replace("_", " ") for f in dataset.fields)]
    seen: dict[str, str] = {}
    for word in words:
        word = word.strip()
        if len(word) >= 3 and word.casefold() not in seen:
            seen[word.casefold()] = word
    return tuple(seen.values())[:12]


def title(dataset: DatasetInfo) -> str:
    """``Passantenfrequenz & Wetter: pedestrian counts``."""
    return f"{dataset.display_name}: {dataset.name.replace('_', ' ')}"


def matches(dataset: DatasetInfo, query: str) -> bool:
    """Every word of ``query`` occurs in the dataset's names, description, fields or keywords."""
    text = _text(dataset) + " " + " ".join(keywords(dataset)).casefold()
    return all(word in text for word in query.casefold().split())


def political_geocoding(ags: str) -> str:
    return MUNICIPALITY_KEY + ags
