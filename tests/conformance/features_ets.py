"""Runs the OGC API – Features conformance test suite (``versions.FEATURES_ETS``) against ``/ogcapi``:
``make conformance-features``.

The same sample warehouse as the SensorThings run (``sta_ets.sample_world``: three open-data
pedestrian counters with a day of readings) behind the API app on 127.0.0.1 at a free port. The
suite's all-in-one jar is ``--jar`` (or ``URBANSTACK_FEATURES_ETS_JAR``) when given, else it is
fetched from Maven Central into the cache (``URBANSTACK_CACHE_DIR``); it runs with the machine's Java.
Prints the counts and every test that did not pass, with the path of the suite's report, and exits 0
when no test failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from sta_ets import sample_world, serve

from urbanstack import versions
from urbanstack import warehouse as wh
from urbanstack.devplatform import maven
from urbanstack.runtime.api import create_app
from urbanstack.settings import Settings


def suite_jar(settings: Settings, given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"no suite jar at {path}")
        return path
    group, artifact, version, _, classifier = versions.FEATURES_ETS.split(":")
    target = settings.cache_dir / "features-ets" / version / f"{artifact}-{version}-{classifier}.jar"
    if not target.exists():
        work = settings.cache_dir / "features-ets" / "maven"
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(maven._POM.format(artifact="features-ets", dependencies=""))
        lib = target.parent / "lib.partial"
        shutil.rmtree(lib, ignore_errors=True)
        try:
            maven._run([maven._mvn(), "-B", "-q", "dependency:copy", f"-Dartifact={versions.FEATURES_ETS}",
                        f"-DoutputDirectory={lib}"], work, f"fetching {versions.FEATURES_ETS}")
        except RuntimeError as error:
            raise SystemExit(f"{error}\nThe suite could not be fetched from the Maven repository this machine "
                             "reaches; build it (mvn package in its source tree gives the -aio jar) and pass "
                             "--jar PATH or URBANSTACK_FEATURES_ETS_JAR") from None
        (lib / target.name).rename(target)
        shutil.rmtree(lib, ignore_errors=True)
    return target


def summary(results: Path) -> tuple[dict[str, int], list[str]]:
    root = ET.parse(results).getroot()
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    lines = []
    for method in root.iter("test-method"):
        if method.get("is-config") == "true":
            continue
        status = method.get("status")
        counts[status] = counts.get(status, 0) + 1
        if status != "PASS":
            message = method.find("./exception/message")
            text = (message.text or "").strip().splitlines()[0][:300] if message is not None and message.text else ""
            lines.append(f"{status} {method.get('name')}: {text}")
    return counts, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jar", default=os.environ.get("URBANSTACK_FEATURES_ETS_JAR"),
                        help="the suite's -aio jar (default: fetched from Maven Central)")
    args = parser.parse_args()
    settings = Settings.from_env()
    if shutil.which("java") is None:
        raise SystemExit("Java is needed to run the conformance suite (it is installed with the platform's Kafka)")
    jar = suite_jar(settings, args.jar)
    work = Path(tempfile.mkdtemp(prefix="features-ets-"))
    client = wh.connect(f"chdb://{work / 'warehouse'}")
    app = create_app(settings, sample_world(client), client, keycloak_url="http://127.0.0.1:9/unused",
                     audience="{tenant}-api")
    server, thread, port = serve(app)
    try:
        props = work / "test-run-props.xml"
        # No DOCTYPE: the parser would fetch its DTD from the internet.
        props.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<properties version="1.0">\n'
                         f'  <entry key="iut">http://127.0.0.1:{port}/ogcapi</entry>\n'
                         '  <entry key="noofcollections">-1</entry>\n</properties>\n')
        began = time.monotonic()
        run = subprocess.run(["java", f"-Duser.home={work}", "-jar", str(jar), "-o", str(work / "results"),
                              str(props)], cwd=work, capture_output=True, text=True, timeout=1800)
        seconds = time.monotonic() - began
    finally:
        server.should_exit = True
        thread.join(10)
    (work / "suite.log").write_text(run.stdout + run.stderr)
    found = sorted(work.rglob("testng-results.xml"))
    if not found:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        raise SystemExit(f"the suite wrote no testng-results.xml (exit {run.returncode}); log: {work / 'suite.log'}")
    counts, failures = summary(found[-1])
    print(f"{jar.name} against /ogcapi: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped in {seconds:.0f} s")
    for line in failures:
        print("  " + line)
    print(f"full report: {found[-1]}")
    return 0 if counts["FAIL"] == 0 and counts["PASS"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
