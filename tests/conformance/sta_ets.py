"""Runs the OGC conformance test suite for SensorThings (``versions.STA_ETS``) against this
service: ``make conformance-sta``.

A fresh embedded warehouse gets one municipality with the example CityTool
"Passantenfrequenz & Wetter", whose pedestrian counts are open data (read without a token,
as the suite reads) and hold a day of readings of three counters. The API app serves on
127.0.0.1 at a free port; the suite's all-in-one jar comes from Maven Central into the cache
(``URBANSTACK_CACHE_DIR``) and runs with the machine's Java. The script prints the counts and
every test that did not pass, with the path of the suite's full report, and exits 0 when every
test of the levels asked for (``--level``, default 1 = Sensing Core) passed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import ets_runner
import yaml

from urbanstack import versions
from urbanstack.operator import naming
from urbanstack.operator.models import Municipality, parse_citytool
from urbanstack.operator.plan import plan
from urbanstack.operator.provisioners.base import ensure
from urbanstack.operator.provisioners.warehouse import WarehouseProvisioner
from urbanstack.runtime.api import Catalogue
from urbanstack.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOOL = "passantenfrequenz-wetter"


def suite_jar(settings: Settings) -> Path:
    return ets_runner.suite_jar(settings, versions.STA_ETS, "sta-ets")


def sample_world(warehouse_client, empty: bool = False) -> Catalogue:
    tool = parse_citytool(yaml.safe_load((ROOT / "examples" / f"citytool-{TOOL}.yaml").read_text()))
    municipality = Municipality.model_validate({
        "apiVersion": "urbanstack.io/v1alpha1", "kind": "Municipality", "metadata": {"name": "guetersloh"},
        "spec": {"displayName": "Gütersloh", "ags": "05754008", "admins": ["admin@guetersloh.example.org"],
                 "tools": [{"name": TOOL}],
                 "shares": [{"tool": TOOL, "dataset": "pedestrian_counts", "public": True,
                             "licence": "dl-de/zero-2-0"}]}})
    ensure(WarehouseProvisioner(lambda: warehouse_client, embedded=True), plan(municipality, [tool]).warehouse, {})
    if empty:
        return Catalogue([municipality], [tool])
    start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    rows = []
    for sensor, (lon, lat) in (("berliner-strasse", (8.383, 51.906)), ("koenigstrasse", (8.389, 51.909)),
                               ("kolbeplatz", (8.380, 51.904))):
        for step in range(96):
            rows.append([f"{sensor}-{step}", "hystreet", sensor, start + dt.timedelta(minutes=15 * step), lon, lat,
                         (step * 37) % 400, sensor])
    warehouse_client.insert(f"{naming.database('guetersloh')}.{naming.table(TOOL, 'pedestrian_counts')}", rows,
                            column_names=["event_id", "source", "sensor_id", "observed_at", "lon", "lat",
                                          "pedestrians", "location_name"])
    return Catalogue([municipality], [tool])


def report(results: Path, level: int) -> tuple[int, int, int, list[str]]:
    """(passed, failed, skipped, lines) of the tests of conformance levels up to ``level``; the suite
    lists the higher levels as skipped."""
    def counted(method) -> bool:
        groups = method.get("groups") or ""
        return groups.startswith("level-") and int(groups[6:]) <= level

    counts, lines = ets_runner.tally(results, counted)
    return counts["PASS"], counts["FAIL"], counts["SKIP"], lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, choices=(1, 2, 3), default=1,
                        help="test the conformance classes up to: 1 Sensing Core, 2 Create-Update-Delete, "
                             "3 Filtering Extension (levels 2 and 3 first delete every entity and create their own)")
    parser.add_argument("--empty", action="store_true",
                        help="a municipality without readings (no entities): levels 2 and 3 then find nothing to "
                             "delete and go on to create their own entities")
    args = parser.parse_args()
    settings = Settings.from_env()
    ets_runner.need_java()
    run = ets_runner.run_suite(settings, "sta-ets", lambda client: sample_world(client, args.empty),
                               suite_jar(settings), "/v1.1", {"ics": str(args.level)})
    passed, failed, skipped, failures = report(run.results, args.level)
    print(f"{versions.STA_ETS} against /v1.1, conformance levels 1-{args.level}: {passed} passed, "
          f"{failed} failed, {skipped} skipped in {run.seconds:.0f} s")
    ets_runner.print_failures(failures, run.results)
    return 0 if failed == 0 and skipped == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
