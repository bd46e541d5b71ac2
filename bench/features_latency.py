"""OGC API – Features latency against the REST API's and SensorThings' equivalents, in the same run,
on the SensorThings benchmark's data (``counter_world.py``: 500 counters, two fields every 15 minutes
for 30 days, 1.44M rows, embedded warehouse, open data, no token, API in-process).

    .venv/bin/python bench/features_latency.py [--runs 20] [--path <chdb dir>]

1. All 500 sensors with their latest reading in a bbox, one page (``limit=500``).
2. The same as of 12 hours ago (``datetime=../<now-12h>``: the latest reading up to then; reads
   up to 29.5 days of the table).
3. The same within the last hour (``datetime=<now-1h>/..``).
Baselines: REST ``/observations`` of the last 15 minutes in the bbox (500 rows), and SensorThings'
Masterportal extent request (Things with the latest Observation expanded, all 500 in 5 pages).
"""

from __future__ import annotations

from datetime import timedelta

from counter_world import (BBOX, DATASET, SENSORS, SLUG, TOOL_NAME, bench, line, print_table, rest_latest,
                           sta_extent, timed)
from fastapi.testclient import TestClient


def main() -> None:
    run = bench(__doc__.splitlines()[0], "features-bench-")
    items = f"/ogcapi/collections/{SLUG}.{TOOL_NAME}.{DATASET}/items"
    with TestClient(run.app) as api:
        def features(**extra) -> None:
            response = api.get(items, params={"bbox": BBOX, "limit": 500, **extra})
            assert response.status_code == 200, response.text[:300]
            body = response.json()
            assert body["numberReturned"] == SENSORS and all(f["properties"]["pedestrians"] is not None
                                                            for f in body["features"]), body["numberMatched"]

        as_of = (run.end - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
        last_hour = (run.end - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print_table([
            line("Features: 500 sensors in a bbox, latest reading (one page)", timed(features, run.runs)),
            line("Features: the same as of 12 h ago (datetime=../t)",
                 timed(lambda: features(datetime=f"../{as_of}"), run.runs)),
            line("Features: the same within the last hour (datetime=t/..)",
                 timed(lambda: features(datetime=f"{last_hour}/.."), run.runs)),
            line("REST: observations of the last 15 min in the bbox", timed(lambda: rest_latest(api, run.end), run.runs)),
            line("STA: 500 Things, latest Observation expanded (5 pages)", timed(lambda: sta_extent(api), run.runs))])


if __name__ == "__main__":
    main()
