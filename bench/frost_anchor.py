"""FROST-Server beside our SensorThings API: the side-by-side anchor of bench/sensorthings_latency.py.

FROST-Server's own artifacts are not served by the registries this machine reaches, so it is
built from a source tree of a release (brought in by whoever runs this, e.g. the search tool's
``fetch`` of FraunhoferIOSB/FROST-Server, then ``git --git-dir <mirror> archive v2.4.2 | tar -x
-C ~/.cache/urbanstack/frost/2.4.2/src``). Nothing of it lives in this repository.

    .venv/bin/python bench/frost_anchor.py build --source ~/.cache/urbanstack/frost/2.4.2/src
    .venv/bin/python bench/frost_anchor.py up     # PostgreSQL+PostGIS, Tomcat 9 with FROST, Things
    .venv/bin/python bench/frost_anchor.py load   # 30 days of Observations ending now (SQL)
    .venv/bin/python bench/frost_anchor.py down [--purge]

``build`` runs Maven on the source tree (tests and the spotless check skipped: its formatter
is downloaded from a site this machine does not reach; a tree without ``.git`` is committed to a
local repository first, since FROST reads its version from git metadata at start-up) and keeps the war and the JDBC drivers
in ``~/.cache/urbanstack/frost/<version>``; Tomcat 9 (FROST 2.x is a javax-servlet web app) comes
from Maven Central. ``up`` starts a PostgreSQL 15 cluster of its own (Debian's
``postgresql-15-postgis-3``) on 127.0.0.1, lets FROST create its schema
(``persistence.autoUpdateDatabase``), adds the two indexes FROST's deployment guide recommends
(Observations by Datastream and phenomenonTime; Locations' geometry) and creates the benchmark's
500 Things over FROST's own API: each with a Location and two Datastreams (pedestrians,
temperature) named as in our API ("pedestrians – s042"). ``load`` posts one Observation per
Datastream through the API (FROST then creates the FeatureOfInterest from the Location), then
replaces all Observations by the benchmark's 1.44M rows with one INSERT … SELECT in SQL (the API
takes hours for that) and sets the Datastreams' time ranges as FROST's triggers would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from urbanstack.devplatform import maven, system_user  # noqa: E402

VERSION = "2.4.2"
TOMCAT = "org.apache.tomcat:tomcat:9.0.96:tar.gz"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
HTTP_PORT, PG_PORT = 18380, 25432
SENSORS, STEP, DAYS = 500, 900, 30  # as bench/sensorthings_latency.py
FIELDS = {"pedestrians": ("persons", "persons"), "temperature": ("degree Celsius", "°C")}


def home(version: str) -> Path:
    return Path(os.environ.get("URBANSTACK_CACHE_DIR", "~/.cache/urbanstack")).expanduser() / "frost" / version


def cluster_dir(version: str) -> Path:
    """PostgreSQL refuses root; as root the cluster lives where Debian's postgres user may write."""
    if system_user.as_root():
        return Path("/var/lib/postgresql/urbanstack-frost-bench") / version
    return home(version) / "postgres"


def _run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed (exit {result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    return result


# ---- build -------------------------------------------------------------------------------------

def build(source: Path, version: str) -> None:
    target = home(version)
    target.mkdir(parents=True, exist_ok=True)
    pom = (source / "pom.xml").read_text()
    found = re.search(r"<artifactId>FROST-ServerParent</artifactId>\s*<version>([^<]+)</version>", pom)
    if not found or found.group(1) != version:
        raise SystemExit(f"{source} is not FROST-Server {version} (pom says {found and found.group(1)})")
    if not (source / ".git").exists():  # FROST reads its version from git metadata at start-up
        for command in (["git", "init", "-q"], ["git", "add", "-A"],
                        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm",
                         f"FROST-Server {version} release source"], ["git", "tag", f"v{version}"]):
            _run(command, "recording the source tree in git", cwd=source)
    began = time.monotonic()
    log = target / "build.log"
    with open(log, "w") as out:
        result = subprocess.run(
            ["mvn", "-B", "-DskipTests", "-Dspotless.check.skip=true",
             "-Dspotless.apply.skip=true", "-pl", "FROST-Server.HTTP", "-am", "package"],
            cwd=source, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"Maven build failed (exit {result.returncode}); see {log}")
    built = source / "FROST-Server.HTTP" / "target"
    shutil.copy2(built / f"FROST-Server.HTTP-{version}.war", target / "FROST-Server.war")
    drivers = target / "drivers"
    shutil.rmtree(drivers, ignore_errors=True)
    shutil.copytree(built / "docker_deps", drivers)  # PostgreSQL and PostGIS JDBC, as FROST's image adds
    maven.unpack(target / "tomcat-fetch", TOMCAT, target / "tomcat")
    print(f"built FROST-Server {version} in {time.monotonic() - began:.0f} s: {target / 'FROST-Server.war'}")


# ---- up / down ---------------------------------------------------------------------------------

def _state(version: str) -> dict:
    path = home(version) / "run" / "state.json"
    if not path.exists():
        raise SystemExit(f"FROST-Server {version} is not up: run 'bench/frost_anchor.py up' first")
    return json.loads(path.read_text())


def _postgres_up(version: str, password: str, port: int, log) -> int:
    cluster = cluster_dir(version)
    data = cluster / "data"
    cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
    system_user.own(cluster, "postgres")
    if not (data / "PG_VERSION").exists():
        pwfile = cluster / "pw"
        system_user.write_private(pwfile, password + "\n", "postgres")
        try:
            _run(system_user.command_as("postgres", [
                str(PG_BIN / "initdb"), "-D", str(data), "--username=postgres", f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]), "initdb", cwd=cluster)
        finally:
            pwfile.unlink(missing_ok=True)
    server = subprocess.Popen(system_user.command_as("postgres", [
        str(PG_BIN / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
        "-c", f"unix_socket_directories={cluster}", "-c", "shared_buffers=512MB", "-c", "max_connections=60",
        "-c", "max_wal_size=4GB"]), cwd=cluster, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(120):
        if subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0:
            return server.pid
        if server.poll() is not None:
            raise SystemExit(f"PostgreSQL exited with {server.returncode}; see {log.name}")
        time.sleep(0.5)
    raise SystemExit("PostgreSQL did not accept connections within 60 s")


def _connect(state: dict, database: str = "frost", autocommit: bool = True):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=state["pg_port"], user="postgres", password=state["password"],
                           dbname=database, autocommit=autocommit)


def _tomcat_base(version: str, base: Path, port: int) -> None:
    tomcat = next((home(version) / "tomcat").glob("apache-tomcat-*"))
    shutil.rmtree(base, ignore_errors=True)
    for folder in ("logs", "temp", "work", "webapps"):
        (base / folder).mkdir(parents=True)
    shutil.copytree(tomcat / "conf", base / "conf")
    server_xml = (base / "conf" / "server.xml").read_text()
    server_xml = server_xml.replace('<Server port="8005"', '<Server port="-1"')
    server_xml = server_xml.replace('<Connector port="8080"', f'<Connector address="127.0.0.1" port="{port}"')
    (base / "conf" / "server.xml").write_text(server_xml)
    with zipfile.ZipFile(home(version) / "FROST-Server.war") as war:
        war.extractall(base / "webapps" / "FROST-Server")


def up(version: str, http_port: int, pg_port: int) -> None:
    run_dir = home(version) / "run"
    if (run_dir / "state.json").exists():
        raise SystemExit(f"already up ({run_dir / 'state.json'}); 'down' first")
    run_dir.mkdir(parents=True, exist_ok=True)
    password_file = cluster_dir(version) / "bench-password"
    password = password_file.read_text().strip() if password_file.exists() else secrets.token_urlsafe(18)
    state = {"version": version, "pg_port": pg_port, "http_port": http_port, "password": password,
             "url": f"http://127.0.0.1:{http_port}/FROST-Server"}
    began = time.monotonic()
    with open(run_dir / "postgres.log", "ab") as log:
        state["pg_pid"] = _postgres_up(version, password, pg_port, log)
    system_user.write_private(password_file, password, "root")
    (run_dir / "state.json").write_text(json.dumps(state))
    with _connect(state, "postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'frost'").fetchone():
            conn.execute("CREATE DATABASE frost")
    with _connect(state) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    base = run_dir / "tomcat"
    _tomcat_base(version, base, http_port)
    tomcat = next((home(version) / "tomcat").glob("apache-tomcat-*"))
    classpath = [tomcat / "bin" / "bootstrap.jar", tomcat / "bin" / "tomcat-juli.jar"]
    env = dict(os.environ, serviceRootUrl=state["url"], persistence_db_driver="org.postgresql.Driver",
               persistence_db_url=f"jdbc:postgresql://127.0.0.1:{pg_port}/frost", persistence_db_username="postgres",
               persistence_db_password=password, persistence_autoUpdateDatabase="true",
               persistence_db_conn_max="20", persistence_slowQueryThreshold="0")
    java = Path(os.environ.get("FROST_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")) / "bin" / "java"
    # Tomcat's common loader takes the JDBC drivers from lib/ of the base, as in FROST's image.
    shutil.copytree(home(version) / "drivers", base / "lib")
    with open(run_dir / "tomcat.log", "ab") as log:
        server = subprocess.Popen([
            str(java), "-Xmx1g", f"-Dcatalina.home={tomcat}", f"-Dcatalina.base={base}",
            f"-Djava.io.tmpdir={base / 'temp'}", f"-Djava.util.logging.config.file={base / 'conf' / 'logging.properties'}",
            "-Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager",
            "-cp", ":".join(map(str, classpath)), "org.apache.catalina.startup.Bootstrap", "start"],
            cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state["tomcat_pid"] = server.pid
    (run_dir / "state.json").write_text(json.dumps(state))
    _wait_for_schema(state, server)
    with _connect(state) as conn:  # FROST's deployment guide: docs/deployment/db_performance.md
        conn.execute('CREATE INDEX IF NOT EXISTS "OBS-DS_ID-PHTIME_SE-O_ID" ON "OBSERVATIONS" USING btree '
                     '("DATASTREAM_ID", "PHENOMENON_TIME_START" ASC, "PHENOMENON_TIME_END" ASC, "ID" ASC) '
                     'WHERE ("DATASTREAM_ID" IS NOT NULL)')
        conn.execute('CREATE INDEX IF NOT EXISTS "LOCATIONS_GEOM" ON "LOCATIONS" USING gist ("GEOM")')
    _create_things(state)
    print(f"FROST-Server {version} up at {state['url']} in {time.monotonic() - began:.0f} s "
          f"(PostgreSQL on 127.0.0.1:{pg_port}; logs in {run_dir})")


def _wait_for_schema(state: dict, server: subprocess.Popen) -> None:
    """FROST updates its schema when the first request reaches the web app."""
    deadline = time.monotonic() + 180
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"Tomcat exited with {server.returncode}; see tomcat.log")
            try:
                response = http.get(f"{state['url']}/v1.1/Things?$top=1")
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
    raise SystemExit(f"FROST did not answer /v1.1/Things within 180 s; see {home(state['version']) / 'run'}")


def _create_things(state: dict) -> None:
    url = f"{state['url']}/v1.1"
    with httpx.Client(timeout=60) as http:
        if http.get(f"{url}/Things?$top=1&$count=true").json().get("@iot.count", 0) >= SENSORS:
            return
        sensor = _post(http, f"{url}/Sensors", {"name": "counter", "description": "open-data counter",
                                                  "encodingType": "text/plain", "metadata": "bench"})
        properties = {field: _post(http, f"{url}/ObservedProperties", {
            "name": field, "definition": f"urn:urbanstack:bench:{field}", "description": field}) for field in FIELDS}
        for i in range(SENSORS):
            name = f"s{i:03d}"
            _post(http, f"{url}/Things", {
                "name": name, "description": f"counter {name}",
                "Locations": [{"name": name, "description": f"position of {name}", "encodingType": "application/geo+json",
                               "location": {"type": "Point", "coordinates": [8.3 + i / 2000, 51.9 + (i % 7) / 100]}}],
                "Datastreams": [{
                    "name": f"{field} – {name}", "description": f"{field} of {name}",
                    "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                    "unitOfMeasurement": {"name": unit, "symbol": symbol, "definition": ""},
                    "Sensor": {"@iot.id": sensor}, "ObservedProperty": {"@iot.id": properties[field]}}
                    for field, (unit, symbol) in FIELDS.items()]})


def _post(http: httpx.Client, url: str, body: dict):
    response = http.post(url, json=body)
    if response.status_code != 201:
        raise SystemExit(f"POST {url} answered {response.status_code}: {response.text[:500]}")
    return int(response.headers["location"].rsplit("(", 1)[1].rstrip(")"))


def down(version: str, purge: bool) -> None:
    run_dir = home(version) / "run"
    state_file = run_dir / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        for key in ("tomcat_pid", "pg_pid"):  # only the processes 'up' started, by their id
            pid = state.get(key)
            if not pid:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(60):
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
        state_file.unlink()
    if purge:
        shutil.rmtree(cluster_dir(version), ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"FROST-Server {version} down{' and purged' if purge else ''}")


# ---- load --------------------------------------------------------------------------------------

def load(version: str, end: datetime) -> None:
    """The benchmark's Observations ending at ``end``, as bench/sensorthings_latency.py writes them:
    reading k of sensor s at ``end - 30 days + (k+1)·15 min`` with n = k·500 + s, pedestrians
    ``n % 397`` and temperature ``10 + 10·sin(n / 8640)``."""
    state = _state(version)
    url = f"{state['url']}/v1.1"
    began = time.monotonic()
    with _connect(state) as conn:
        conn.execute('TRUNCATE "OBSERVATIONS"')
        conn.execute('UPDATE "DATASTREAMS" SET "PHENOMENON_TIME_START" = NULL, "PHENOMENON_TIME_END" = NULL, '
                     '"RESULT_TIME_START" = NULL, "RESULT_TIME_END" = NULL')
    with httpx.Client(timeout=60) as http:  # one per Datastream: FROST makes the FeatureOfInterest
        streams = http.get(f"{url}/Datastreams?$select=id,name&$top=10000").json()["value"]
        assert len(streams) == SENSORS * len(FIELDS), len(streams)
        for stream in streams:
            _post(http, f"{url}/Datastreams({stream['@iot.id']})/Observations",
                  {"phenomenonTime": end.isoformat(), "resultTime": end.isoformat(), "result": 0})
    rows = SENSORS * DAYS * 86_400 // STEP
    start = end - timedelta(days=DAYS)
    with _connect(state, autocommit=False) as conn:
        template = conn.execute('SELECT * FROM "OBSERVATIONS" LIMIT 1')
        columns = [c.name for c in template.description]
        generated = {"ID", "PHENOMENON_TIME_START", "PHENOMENON_TIME_END", "RESULT_TIME", "RESULT_NUMBER",
                     "RESULT_STRING", "DATASTREAM_ID", "FEATURE_ID"}
        kept = [c for c in columns if c not in generated]  # as FROST wrote them for a numeric result
        conn.execute("CREATE TEMP TABLE bench_streams ON COMMIT DROP AS "
                     'SELECT DISTINCT ON (d."ID") d."ID" AS datastream, o."FEATURE_ID" AS feature, '
                     """split_part(d."NAME", ' – ', 1) AS field, substr(split_part(d."NAME", ' – ', 2), 2)::int AS sensor """
                     'FROM "DATASTREAMS" d JOIN "OBSERVATIONS" o ON o."DATASTREAM_ID" = d."ID"')
        conn.execute(f'CREATE TEMP TABLE bench_template ON COMMIT DROP AS SELECT '
                     f'{", ".join(_q(c) for c in kept)} FROM "OBSERVATIONS" LIMIT 1')
        conn.execute('ALTER TABLE "OBSERVATIONS" DISABLE TRIGGER USER')  # per-row Datastream updates
        conn.execute('TRUNCATE "OBSERVATIONS"')
        conn.execute(
            f'INSERT INTO "OBSERVATIONS" ("PHENOMENON_TIME_START", "PHENOMENON_TIME_END", "RESULT_TIME", '
            f'"RESULT_NUMBER", "RESULT_STRING", "DATASTREAM_ID", "FEATURE_ID"{"".join(", " + _q(c) for c in kept)}) '
            f"SELECT v.t, v.t, v.t, v.result, v.result::text, s.datastream, s.feature"
            f'{"".join(", tp." + _q(c) for c in kept)} '
            f"FROM generate_series(0, {rows - 1}) AS g(n) "
            f"JOIN bench_streams s ON s.sensor = g.n %% {SENSORS} "
            f"CROSS JOIN bench_template tp "
            f"CROSS JOIN LATERAL (SELECT %(start)s::timestamptz + make_interval(secs => (g.n / {SENSORS}) * {STEP} "
            f"+ {STEP}) AS t, CASE s.field WHEN 'pedestrians' THEN (g.n %% 397)::float8 "
            f"ELSE 10 + 10 * sin(g.n / 8640.0) END AS result) AS v", {"start": start})
        conn.execute('ALTER TABLE "OBSERVATIONS" ENABLE TRIGGER USER')
        conn.execute('UPDATE "DATASTREAMS" d SET "PHENOMENON_TIME_START" = r.first, "PHENOMENON_TIME_END" = r.last, '
                     '"RESULT_TIME_START" = r.first, "RESULT_TIME_END" = r.last FROM (SELECT "DATASTREAM_ID" AS id, '
                     'min("PHENOMENON_TIME_START") AS first, max("PHENOMENON_TIME_START") AS last FROM "OBSERVATIONS" '
                     'GROUP BY 1) r WHERE d."ID" = r.id')
        conn.commit()
    with _connect(state) as conn:
        conn.execute('VACUUM ANALYZE "OBSERVATIONS"')
        conn.execute('VACUUM ANALYZE "DATASTREAMS"')
        count = conn.execute('SELECT count(*) FROM "OBSERVATIONS"').fetchone()[0]
    print(f"FROST: {count:,} Observations ending {end.isoformat()} loaded in {time.monotonic() - began:.0f} s")


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=VERSION)
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build")
    build_cmd.add_argument("--source", type=Path, required=True, help="an unpacked FROST-Server release tree")
    up_cmd = commands.add_parser("up")
    up_cmd.add_argument("--port", type=int, default=HTTP_PORT)
    up_cmd.add_argument("--pg-port", type=int, default=PG_PORT)
    load_cmd = commands.add_parser("load")
    load_cmd.add_argument("--end", help="ISO time of the last Observation (default: now, to the minute)")
    down_cmd = commands.add_parser("down")
    down_cmd.add_argument("--purge", action="store_true", help="also delete the cluster and Tomcat's folder")
    args = parser.parse_args()
    if args.command == "build":
        build(args.source.expanduser().resolve(), args.version)
    elif args.command == "up":
        up(args.version, args.port, args.pg_port)
    elif args.command == "load":
        end = (datetime.fromisoformat(args.end) if args.end
               else datetime.now(timezone.utc).replace(second=0, microsecond=0))
        load(args.version, end)
    else:
        down(args.version, args.purge)


if __name__ == "__main__":
    main()
