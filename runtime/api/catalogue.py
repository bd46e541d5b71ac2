"""What datasets exist, who owns them and who else may read them.

The catalogue is built from the same ``Municipality`` and ``CityTool`` objects
the operator reconciles, so the API never needs its own copy of a schema: a
dataset is ``(owner, tool, dataset)``, its fields and units come from the
CityTool, its audience from the owner's ``spec.shares``. The query engine
checks every field name a caller sends against this catalogue before it goes
anywhere near SQL.

``Catalogue.replace`` swaps the whole view at once (readers never see half an
update); whoever watches the Kubernetes API calls it on every change.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable

from urbanstack.operator import naming
from urbanstack.operator.models import PUBLIC_LICENCE, CityTool, ColumnType, Municipality

NUMERIC_TYPES = frozenset({
    ColumnType.uint8, ColumnType.uint16, ColumnType.uint32, ColumnType.uint64, ColumnType.int8,
    ColumnType.int16, ColumnType.int32, ColumnType.int64, ColumnType.float32, ColumnType.float64,
})


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: str
    unit: str | None
    description: str
    required: bool

    @property
    def numeric(self) -> bool:
        return ColumnType(self.type) in NUMERIC_TYPES


@dataclass(frozen=True)
class DatasetInfo:
    owner: str
    tool: str
    name: str
    display_name: str
    description: str
    fields: tuple[FieldInfo, ...]
    shared_with: tuple[str, ...]
    public: bool
    licence: str | None
    retention_days: int
    database: str
    table: str

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.tool}/{self.name}"

    def field(self, name: str) -> FieldInfo | None:
        return next((field for field in self.fields if field.name == name), None)


class Catalogue:
    """An in-memory, thread-safe view of every dataset the platform serves."""

    def __init__(self, municipalities: Iterable[Municipality] = (), tools: Iterable[CityTool] = ()):
        self._lock = threading.Lock()
        self._datasets: dict[tuple[str, str, str], DatasetInfo] = {}
        self._municipalities: dict[str, Municipality] = {}
        self._tools: dict[str, CityTool] = {}
        self.version = 0   # counts changes of content (a refresh that finds nothing new keeps it)
        self.replace(municipalities, tools)

    def replace(self, municipalities: Iterable[Municipality], tools: Iterable[CityTool]) -> None:
        municipalities = {m.slug: m for m in municipalities}
        tools = {tool.name: tool for tool in tools}
        datasets = {}
        for municipality in municipalities.values():
            for info in _datasets_of(municipality, tools):
                datasets[(info.owner, info.tool, info.name)] = info
        with self._lock:
            if (municipalities, datasets, tools) != (self._municipalities, self._datasets, self._tools):
                self.version += 1
            self._municipalities, self._datasets, self._tools = municipalities, datasets, tools

    def get(self, owner: str, tool: str, dataset: str) -> DatasetInfo | None:
        return self._datasets.get((owner, tool, dataset))

    def datasets(self) -> list[DatasetInfo]:
        return sorted(self._datasets.values(), key=lambda info: (info.owner, info.tool, info.name))

    def municipality(self, slug: str) -> Municipality | None:
        return self._municipalities.get(slug)

    def municipalities(self) -> list[Municipality]:
        return sorted(self._municipalities.values(), key=lambda municipality: municipality.slug)

    def tool(self, name: str) -> CityTool | None:
        return self._tools.get(name)

    def tools(self) -> list[CityTool]:
        return sorted(self._tools.values(), key=lambda tool: tool.name)


def _datasets_of(municipality: Municipality, tools: dict[str, CityTool]) -> list[DatasetInfo]:
    spec = municipality.spec
    result = []
    for enabled in spec.tools:
        tool = tools.get(enabled.name)
        if tool is None:  # not applied yet: the operator reports it, the API just does not list it
            continue
        for dataset in tool.spec.datasets:
            shares = [share for share in spec.shares if share.tool == tool.name and share.dataset == dataset.name]
            shared_with = sorted({slug for share in shares for slug in share.municipalities})
            public = any(share.public for share in shares)
            fields = tuple(FieldInfo(name=f.name, type=ColumnType(f.type).value, unit=f.unit,
                                     description=f.description, required=f.required) for f in dataset.fields)
            result.append(DatasetInfo(
                owner=municipality.slug, tool=tool.name, name=dataset.name, display_name=tool.spec.display_name,
                description=dataset.description, fields=fields, shared_with=tuple(shared_with), public=public,
                licence=PUBLIC_LICENCE if public else None,
                retention_days=spec.retention_days or dataset.retention_days,
                database=naming.database(municipality.slug), table=naming.table(tool.name, dataset.name)))
    return result
