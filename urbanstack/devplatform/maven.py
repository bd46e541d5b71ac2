"""Fetch Java components from Maven Central with the machine's Maven."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.urbanstack.local</groupId>
  <artifactId>{artifact}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""

_DEPENDENCY = """    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>{extra}
    </dependency>"""


def _dependency_xml(coordinate: str) -> str:
    parts = coordinate.split(":")
    group, artifact, version = parts[0], parts[1], parts[2]
    extra = f"\n      <type>{escape(parts[3])}</type>" if len(parts) > 3 else ""
    return _DEPENDENCY.format(group=escape(group), artifact=escape(artifact),
                              version=escape(version), extra=extra)


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise RuntimeError("Maven (mvn) is needed to fetch Kafka and Keycloak; "
                           "install it with 'apt-get install maven' and retry")
    return mvn


def _run(cmd: list[str], workdir: Path, what: str) -> None:
    log_path = workdir / "maven.log"
    with open(log_path, "ab") as log:
        result = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}); see {log_path}")


@contextlib.contextmanager
def _exclusive(target: Path):
    """One fetch of ``target`` at a time across processes (checkouts share the cache): a second
    `dev up` waits, then finds the folder the first one finished (True) instead of swapping it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield target.exists()


def copy_dependencies(workdir: Path, coordinates: list[str], lib_dir: Path) -> None:
    """Resolve ``coordinates`` with their transitive dependencies into ``lib_dir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    deps = "\n".join(_dependency_xml(c) for c in coordinates)
    (workdir / "pom.xml").write_text(_POM.format(artifact=workdir.name.replace(".", "-"), dependencies=deps))
    with _exclusive(lib_dir) as done:
        if done:
            return
        partial = lib_dir.with_name(lib_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run([_mvn(), "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
              f"-DoutputDirectory={partial}"], workdir, f"resolving {', '.join(coordinates)}")
        partial.rename(lib_dir)


def unpack(workdir: Path, coordinate: str, target: Path) -> None:
    """Unpack an archive artifact (``group:artifact:version:zip``) into ``target``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pom.xml").write_text(_POM.format(artifact=workdir.name.replace(".", "-"), dependencies=""))
    with _exclusive(target) as done:
        if done:
            return
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run([_mvn(), "-B", "-q", "dependency:unpack", f"-Dartifact={coordinate}",
              f"-DoutputDirectory={partial}"], workdir, f"unpacking {coordinate}")
        partial.rename(target)
