"""SensorThings latency against the REST API's equivalent, in the same run: 500 counters with
two fields every 15 minutes for the last 30 days (1.44M rows) in the embedded warehouse, open
data (no token, as Masterportal reads), the API in-process (ASGI); data and measuring in
``counter_world.py``.

    .venv/bin/python bench/sensorthings_latency.py [--runs 20] [--path <chdb dir>]

1. Masterportal's extent request: Things in a polygon with Locations and the latest Observation
   of every Datastream expanded, its first page (100 Things) and following @iot.nextLink until
   all 500 Things are read (5 pages) — against REST ``/observations`` of the last 15 minutes in
   the same bbox (one page of 500 rows).
2. Masterportal's 24-hour chart of one Datastream — against REST ``/observations`` of that
   sensor over 24 hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from counter_world import EXTENT, REF, bench, line, print_table, rest_latest, sta_extent, timed
from fastapi.testclient import TestClient


def main() -> None:
    run = bench(__doc__.splitlines()[0], "sta-bench-")
    with TestClient(run.app) as api:
        def extent_page() -> None:
            body = api.get(EXTENT).json()
            assert len(body["value"]) == 100 and all(len(s["Observations"]) == 1 for t in body["value"]
                                                     for s in t["Datastreams"])

        streams = api.get("/v1.1/Datastreams", params={"$filter": "name eq 'pedestrians – s042'"}).json()["value"]
        chart_url = (f"/v1.1/Datastreams({streams[0]['@iot.id']})/Observations?$filter=(resultTime%20gt%20now()%20"
                     "sub%20duration%27PT24H%27)&$orderby=phenomenonTime%20asc")

        def chart() -> None:
            body = api.get(chart_url).json()
            assert len(body["value"]) == 96 and "@iot.nextLink" not in body, len(body["value"])

        def chart_rest() -> None:
            response = api.get(f"/api/v1/datasets/{REF}/observations", params={
                "sensor_id": "s042", "from": (datetime.now(timezone.utc) - timedelta(hours=24)).isoformat(),
                "field": "pedestrians"})
            assert response.status_code == 200 and len(response.json()["rows"]) == 96, response.text[:300]

        print_table([
            line("STA extent, first page: 100 Things, latest Observation expanded", timed(extent_page, run.runs)),
            line("STA extent: 500 Things, latest Observation expanded (5 pages)",
                 timed(lambda: sta_extent(api), run.runs)),
            line("REST: observations of the last 15 min in the bbox", timed(lambda: rest_latest(api, run.end), run.runs)),
            line("STA 24-hour chart of one Datastream", timed(chart, run.runs)),
            line("REST: 24 hours of one sensor", timed(chart_rest, run.runs))])


if __name__ == "__main__":
    main()
