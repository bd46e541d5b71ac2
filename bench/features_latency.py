"""OGC API – Features latency against the REST API's and SensorThings' equivalents, in the same run,
on the SensorThings benchmark's data (500 counters, two fields every 15 minutes for 30 days, 1.44M
rows, embedded warehouse, open data, no token, API in-process).

    .venv/bin/python bench/features_latency.py [--runs 20] [--path <chdb dir>]

1. All 500 sensors with their latest reading in a bbox, one page (``limit=500``).
2. The same as of 12 hours ago (``datetime=../<now-12h>``: the latest reading up to then; reads
   up to 29.5 days of the table).
3. The same within the last hour (``datetime=<now-1h>/..``).
Baselines: REST ``/observations`` of the last 15 minutes in the bbox (500 rows), and SensorThings'
Masterportal extent request (Things with the latest Observation expanded, all 500 in 5 pages).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sensorthings_latency import DATASET, POLYGON, SENSORS, SLUG, TOOL, TOOL_NAME, TOWN, line, prepare, timed

from urbanstack import warehouse as wh
from urbanstack.runtime.api import Catalogue, create_app
from urbanstack.settings import Settings

BBOX = "8.0,51.0,9.0,52.5"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", default=None)
    args = parser.parse_args()
    client = wh.connect(f"chdb://{args.path or tempfile.mkdtemp(prefix='features-bench-')}")
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    prepare(client, end)
    app = create_app(Settings.from_env(), Catalogue([TOWN], [TOOL]), client, keycloak_url="http://keycloak.invalid",
                     audience="{tenant}-api")
    ref = f"{SLUG}/{TOOL_NAME}/{DATASET}"
    items = f"/ogcapi/collections/{SLUG}.{TOOL_NAME}.{DATASET}/items"
    with TestClient(app) as api:
        def features(**extra) -> None:
            response = api.get(items, params={"bbox": BBOX, "limit": 500, **extra})
            assert response.status_code == 200, response.text[:300]
            body = response.json()
            assert body["numberReturned"] == SENSORS and all(f["properties"]["pedestrians"] is not None
                                                            for f in body["features"]), body["numberMatched"]

        as_of = (end - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
        last_hour = (end - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def rest() -> None:
            response = api.get(f"/api/v1/datasets/{ref}/observations", params={
                "bbox": BBOX, "from": (end - timedelta(minutes=14)).isoformat(),
                "to": (end + timedelta(minutes=1)).isoformat(), "limit": 10000})
            assert response.status_code == 200 and len(response.json()["rows"]) == SENSORS, response.text[:300]

        def sta() -> None:
            url = (f"/v1.1/Things?$filter=st_intersects(Locations/location,geography'{POLYGON}')"
                   "&$expand=Locations,Datastreams/Observations($orderby=phenomenonTime%20desc;$top=1)")
            things = 0
            while url:
                body = api.get(url).json()
                things += len(body["value"])
                url = body.get("@iot.nextLink", "").replace("http://testserver", "")
            assert things == SENSORS, things

        results = [line("Features: 500 sensors in a bbox, latest reading (one page)", timed(features, args.runs)),
                   line("Features: the same as of 12 h ago (datetime=../t)",
                        timed(lambda: features(datetime=f"../{as_of}"), args.runs)),
                   line("Features: the same within the last hour (datetime=t/..)",
                        timed(lambda: features(datetime=f"{last_hour}/.."), args.runs)),
                   line("REST: observations of the last 15 min in the bbox", timed(rest, args.runs)),
                   line("STA: 500 Things, latest Observation expanded (5 pages)", timed(sta, args.runs))]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| request | runs | p50 | p95 |\n|---|---|---|---|")
    print("\n".join(results))


if __name__ == "__main__":
    main()
