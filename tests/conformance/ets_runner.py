"""What the OGC conformance runs share (``sta_ets.py``, ``features_ets.py``): the suite's all-in-one
jar from Maven into the cache, the API app on 127.0.0.1 at a free port, one run of the suite with
the machine's Java against it, and the suite's TestNG report read into counts and lines."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import uvicorn

from urbanstack import warehouse as wh
from urbanstack.devplatform import maven
from urbanstack.runtime.api import create_app
from urbanstack.settings import Settings


def suite_jar(settings: Settings, coordinates: str, name: str) -> Path:
    """The jar of ``coordinates`` (group:artifact:version:jar:classifier) in ``<cache>/<name>/<version>``,
    fetched with Maven the first time; a failed fetch raises RuntimeError with Maven's message."""
    _group, artifact, version, _, classifier = coordinates.split(":")
    target = settings.cache_dir / name / version / f"{artifact}-{version}-{classifier}.jar"
    if not target.exists():
        work = settings.cache_dir / name / "maven"
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(maven._POM.format(artifact=name, dependencies=""))
        lib = target.parent / "lib.partial"
        shutil.rmtree(lib, ignore_errors=True)
        maven._run([maven._mvn(), "-B", "-q", "dependency:copy", f"-Dartifact={coordinates}",
                    f"-DoutputDirectory={lib}"], work, f"fetching {coordinates}")
        (lib / target.name).rename(target)
        shutil.rmtree(lib, ignore_errors=True)
    return target


def need_java() -> None:
    if shutil.which("java") is None:
        raise SystemExit("Java is needed to run the conformance suite (it is installed with the platform's Kafka)")


def serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise SystemExit("the API did not start")
    return server, thread, port


@dataclass(frozen=True)
class SuiteRun:
    results: Path       # the suite's testng-results.xml
    seconds: float


@dataclass
class Hooks:
    """What a harness adds around the served app: a wrapper (ASGI), a step once it listens (the
    port), and its own cleanup after the suite ran."""
    wrap: Callable = lambda app: app
    started: Callable[[int], None] = lambda port: None
    close: Callable[[], None] = lambda: None


def run_suite(settings: Settings, prefix: str, world: Callable, jar: Path, path: str,
              entries: dict[str, str], extra_args: tuple[str, ...] = (),
              hooks: Callable[[object], Hooks] | None = None) -> SuiteRun:
    """Serves the API over a fresh embedded warehouse that ``world(client)`` fills (it returns the
    catalogue), runs ``jar`` with a test-run-props.xml of ``iut`` (the API's ``path``) and
    ``entries``, and returns where the suite's report is; its output goes to ``suite.log`` beside it.
    ``hooks(app)``: what the harness adds around the app (see :class:`Hooks`)."""
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    client = wh.connect(f"chdb://{work / 'warehouse'}")
    app = create_app(settings, world(client), client, keycloak_url="http://127.0.0.1:9/unused",
                     audience="{tenant}-api")
    around = hooks(app) if hooks is not None else Hooks()
    try:
        server, thread, port = serve(around.wrap(app))
    except BaseException:
        around.close()
        raise
    try:
        around.started(port)
        props = work / "test-run-props.xml"
        # No DOCTYPE: the parser would fetch its DTD from the internet.
        props.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<properties version="1.0">\n'
                         f'  <entry key="iut">http://127.0.0.1:{port}{path}</entry>\n'
                         + "".join(f'  <entry key="{key}">{value}</entry>\n' for key, value in entries.items())
                         + '</properties>\n')
        began = time.monotonic()
        args = [arg.format(work=work) for arg in extra_args]   # e.g. ("-o", "{work}/results")
        run = subprocess.run(["java", f"-Duser.home={work}", "-jar", str(jar), *args, str(props)], cwd=work,
                             capture_output=True, text=True, timeout=1800)
        seconds = time.monotonic() - began
    finally:
        server.should_exit = True
        thread.join(10)
        around.close()
    (work / "suite.log").write_text(run.stdout + run.stderr)
    found = sorted(work.rglob("testng-results.xml"))
    if not found:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        raise SystemExit(f"the suite wrote no testng-results.xml (exit {run.returncode}); log: {work / 'suite.log'}")
    return SuiteRun(found[-1], seconds)


def tally(results: Path, counted: Callable[[ET.Element], bool] = lambda method: True,
          defects: dict[tuple[str, str], str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Counts by status (PASS, FAIL, SKIP) of the test methods ``counted`` keeps, and a line for each
    that did not pass. ``defects``: failures of the suite itself, not of the service — (test name,
    text in its failure message) -> why; such failures are also counted as ``DEFECT``."""
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0, "DEFECT": 0}
    lines = []
    for method in ET.parse(results).getroot().iter("test-method"):
        if method.get("is-config") == "true" or not counted(method):
            continue
        status = method.get("status")
        counts[status] = counts.get(status, 0) + 1
        if status != "PASS":
            message = method.find("./exception/message")
            full = (message.text or "").strip() if message is not None and message.text else ""
            first = full.splitlines()[0][:300] if full else ""
            why = next((why for (name, marker), why in (defects or {}).items()
                        if name == method.get("name") and marker in full), None)
            if status == "FAIL" and why:
                counts["DEFECT"] += 1
                detail = full.splitlines()[1][:200] if len(full.splitlines()) > 1 else first
                lines.append(f"{status} {method.get('name')} (a defect of the suite: {why}): {detail}")
            else:
                lines.append(f"{status} {method.get('name')}: {first}")
    return counts, lines


def print_failures(failures: list[str], results: Path) -> None:
    for line in failures:
        print("  " + line)
    print(f"full report: {results}")
