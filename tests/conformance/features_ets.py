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
import sys
from pathlib import Path

import ets_runner
from sta_ets import sample_world

from urbanstack import versions
from urbanstack.settings import Settings


def suite_jar(settings: Settings, given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"no suite jar at {path}")
        return path
    try:
        return ets_runner.suite_jar(settings, versions.FEATURES_ETS, "features-ets")
    except RuntimeError as error:
        raise SystemExit(f"{error}\nThe suite could not be fetched from the Maven repository this machine "
                         "reaches; build it (mvn package in its source tree gives the -aio jar) and pass "
                         "--jar PATH or URBANSTACK_FEATURES_ETS_JAR") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jar", default=os.environ.get("URBANSTACK_FEATURES_ETS_JAR"),
                        help="the suite's -aio jar (default: fetched from Maven Central)")
    args = parser.parse_args()
    settings = Settings.from_env()
    ets_runner.need_java()
    jar = suite_jar(settings, args.jar)
    run = ets_runner.run_suite(settings, "features-ets", sample_world, jar, "/ogcapi", {"noofcollections": "-1"},
                               extra_args=("-o", "{work}/results"))
    counts, failures = ets_runner.tally(run.results)
    print(f"{jar.name} against /ogcapi: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped in {run.seconds:.0f} s")
    ets_runner.print_failures(failures, run.results)
    return 0 if counts["FAIL"] == 0 and counts["PASS"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
