"""A world for the Citizen Hub's tests: Gütersloh publishes its pedestrian counts and water
levels and keeps its weather to itself; Bielefeld publishes nothing. Readings are in chDB."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import yaml

from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue

ROOT = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
TOOL = "passantenfrequenz-wetter"
PEGEL = "pegel-warnung"
DIRECTORY = ROOT / "tests" / "fixtures" / "municipalities.derived.csv"


def _tool(name: str):
    return parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{name}.yaml").read_text()))


class CitizenWorld:
    """Gütersloh publishes its pedestrian counts and water levels; its weather is shared with
    nobody. Bielefeld publishes nothing."""

    def __init__(self, warehouse):
        suffix = uuid.uuid4().hex[:6]
        self.gue, self.bi = f"guetersloh-c{suffix}", f"bielefeld-c{suffix}"
        tools = [_tool(TOOL), _tool(PEGEL)]
        self.municipalities = [
            Municipality.model_validate({
                "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": self.gue},
                "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": ["opendata@guetersloh.example"],
                         "tools": [{"name": TOOL}, {"name": PEGEL}],
                         "shares": [{"tool": TOOL, "dataset": "pedestrian_counts", "public": True,
                                     "licence": "dl-de/zero-2-0"},
                                    {"tool": PEGEL, "dataset": "water_levels", "public": True,
                                     "licence": "dl-de/zero-2-0"}]}}),
            Municipality.model_validate({
                "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": self.bi},
                "spec": {"displayName": "Bielefeld", "ags": "05711000", "admins": ["it@bielefeld.example"],
                         "tools": [{"name": TOOL}]}}),
        ]
        self.catalogue = Catalogue(self.municipalities, tools)
        provisioner = WarehouseProvisioner(lambda: warehouse, embedded=True)
        for municipality in self.municipalities:
            ensure(provisioner, plan(municipality, tools).warehouse, {})
        self.warehouse = warehouse
        # Pedestrians: two counters every 15 minutes for 10 days (1,920 readings).
        self.pedestrians = []
        for sensor, (lon, lat) in (("g-berliner", (8.383, 51.906)), ("g-koenig", (8.389, 51.909))):
            for step in range(10 * 24 * 4):
                self.pedestrians.append({
                    "event_id": f"{sensor}-{step}", "source": "hystreet", "sensor_id": sensor,
                    "observed_at": T0 + dt.timedelta(minutes=15 * step), "lon": lon, "lat": lat,
                    "pedestrians": (step * 7) % 500, "location_name": sensor})
        self._insert(self.gue, TOOL, "pedestrian_counts", self.pedestrians)
        self._insert(self.gue, TOOL, "weather", [
            {"event_id": f"w-{h}", "source": "dwd", "sensor_id": "dwd-01303", "observed_at": T0 + dt.timedelta(hours=h),
             "lon": 8.38, "lat": 51.90, "temperature": 5.0, "precipitation": 0.0} for h in range(24)])
        self._insert(self.gue, PEGEL, "water_levels", [
            {"event_id": f"p-{h}", "source": "pegelonline", "sensor_id": "dalke", "observed_at":
             T0 + dt.timedelta(hours=h), "lon": None, "lat": None, "water_level": 100.0 + h, "station_name": "Dalke"}
            for h in range(6)])

    def _insert(self, slug, tool, dataset, rows):
        columns = list(rows[0])
        self.warehouse.insert(f"{naming.database(slug)}.{naming.table(tool, dataset)}",
                              [[row[c] for c in columns] for row in rows], column_names=columns)

    def count(self, slug, tool, dataset, start=None, end=None) -> int:
        where = ""
        params = {}
        if start is not None:
            where = " WHERE observed_at >= {s:DateTime64(3, 'UTC')} AND observed_at < {e:DateTime64(3, 'UTC')}"
            params = {"s": start, "e": end}
        table = f"`{naming.database(slug)}`.`{naming.table(tool, dataset)}`"
        return self.warehouse.query(f"SELECT count() FROM {table} FINAL{where}", parameters=params).result_rows[0][0]


