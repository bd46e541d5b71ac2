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

``--frost URL`` times the same request strings against a FROST-Server in the same run (the
side-by-side anchor; bench/frost_anchor.py builds, starts and fills one: when URL is that
anchor's, its Observations are first reloaded to end at the same minute as ours). FROST is
reached over HTTP on 127.0.0.1 with one keep-alive connection; our API in-process.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from counter_world import EXTENT, REF, SENSORS, bench, line, print_table, rest_latest, sta_extent, timed
from fastapi.testclient import TestClient
from procstat import read_stat


def anchor_state(root: str) -> dict | None:
    """bench/frost_anchor.py's state when ``root`` is the FROST it started, else None."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import frost_anchor

    state = frost_anchor.home(frost_anchor.VERSION) / "run" / "state.json"
    if state.exists() and frost_anchor.json.loads(state.read_text())["url"] == root:
        return frost_anchor.json.loads(state.read_text())
    return None


def reload_frost(root: str, end: datetime) -> None:
    if anchor_state(root):
        import frost_anchor

        frost_anchor.load(frost_anchor.VERSION, end)
    else:
        print(f"{root} is not bench/frost_anchor.py's FROST: its data is timed as it is")


def server_cpu(state: dict | None):
    """CPU seconds of FROST's JVM and of every process of its PostgreSQL cluster (the postmaster and
    its backends), read from /proc; None for a FROST this bench did not start."""
    if state is None:
        return lambda: None
    def used(pid: int) -> tuple[int, float]:
        _, ppid, cpu = read_stat(f"/proc/{pid}/stat")
        return ppid, cpu

    def total() -> float:
        seconds = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid, cpu = used(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if int(entry.name) in (state["tomcat_pid"], state["pg_pid"]) or ppid == state["pg_pid"]:
                seconds += cpu
        return seconds

    return total


def frost_results(root: str, first_page: str, runs: int) -> list[str]:
    """The same request strings against FROST-Server (nextLinks are followed as FROST writes them)."""
    cpu = server_cpu(anchor_state(root))
    with httpx.Client(timeout=120) as frost:
        def get(url: str) -> dict:
            response = frost.get(url if url.startswith("http") else root + url)
            assert response.status_code == 200, response.text[:300]
            return response.json()

        def extent_page() -> None:
            body = get(first_page)
            assert len(body["value"]) == 100 and all(len(s["Observations"]) == 1 for t in body["value"]
                                                     for s in t["Datastreams"])

        def extent() -> None:
            url, things = first_page, 0
            while url:
                body = get(url)
                things += len(body["value"])
                url = body.get("@iot.nextLink")
            assert things == SENSORS, things

        streams = get("/v1.1/Datastreams?$filter=name%20eq%20%27pedestrians%20%E2%80%93%20s042%27")["value"]
        chart_url = (f"/v1.1/Datastreams({streams[0]['@iot.id']})/Observations?$filter=(resultTime%20gt%20now()%20"
                     "sub%20duration%27PT24H%27)&$orderby=phenomenonTime%20asc")

        def chart() -> None:
            body = get(chart_url)
            assert len(body["value"]) == 96 and "@iot.nextLink" not in body, len(body["value"])

        return [line("FROST extent, first page: 100 Things, latest Observation expanded", timed(extent_page, runs, cpu)),
                line("FROST extent: 500 Things, latest Observation expanded (5 pages)", timed(extent, runs, cpu)),
                line("FROST 24-hour chart of one Datastream", timed(chart, runs, cpu))]


def main() -> None:
    run = bench(__doc__.splitlines()[0], "sta-bench-", lambda parser: parser.add_argument(
        "--frost", metavar="URL", default=None, help="FROST-Server root (…/FROST-Server) to time the same requests against"))
    if run.args.frost:
        reload_frost(run.args.frost.rstrip("/"), run.end)
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

        results = [
            line("STA extent, first page: 100 Things, latest Observation expanded", timed(extent_page, run.runs)),
            line("STA extent: 500 Things, latest Observation expanded (5 pages)",
                 timed(lambda: sta_extent(api), run.runs)),
            line("REST: observations of the last 15 min in the bbox", timed(lambda: rest_latest(api, run.end), run.runs)),
            line("STA 24-hour chart of one Datastream", timed(chart, run.runs)),
            line("REST: 24 hours of one sensor", timed(chart_rest, run.runs))]
        if run.args.frost:
            results += frost_results(run.args.frost.rstrip("/"), EXTENT, run.runs)
    print_table(results)


if __name__ == "__main__":
    main()
