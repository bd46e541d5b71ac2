"""Start, find and stop the local platform's processes.

Each started process is recorded in ``<state>/run/<name>.json`` with its pid and
kernel start time. A process is ours only if both still match, so ``down`` never
signals a process that merely reused the pid, nor anything it did not start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Managed:
    name: str
    pid: int
    start_ticks: int
    command: list[str]
    log: str


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 22 (starttime); the command name in parentheses may contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _record_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def start(name: str, command: list[str], *, run_dir: Path, log_path: Path,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Managed:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True, close_fds=True,
        )
    ticks = _start_ticks(proc.pid) or 0
    managed = Managed(name, proc.pid, ticks, command, str(log_path))
    _record_path(run_dir, name).write_text(json.dumps(asdict(managed)))
    return managed


def find(name: str, run_dir: Path) -> Managed | None:
    """The running process we started under ``name``, or None."""
    path = _record_path(run_dir, name)
    try:
        managed = Managed(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if _start_ticks(managed.pid) != managed.start_ticks:
        return None
    return managed


def is_alive(managed: Managed) -> bool:
    return _start_ticks(managed.pid) == managed.start_ticks


def stop(name: str, run_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the process group we started; True if something was stopped."""
    managed = find(name, run_dir)
    _record_path(run_dir, name).unlink(missing_ok=True)
    if managed is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(managed.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(managed.pid)
            if not is_alive(managed):
                return True
            time.sleep(0.2)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def log_tail(log_path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(log_path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text[-lines:])
