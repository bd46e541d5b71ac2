"""Memory of each local-platform service: current RSS and peak (VmHWM) of the
process tree we started, summed. Run after `urbanstack dev up` and a test run:

    .venv/bin/python bench/platform_footprint.py
"""

from __future__ import annotations

from pathlib import Path

from urbanstack.devplatform import platform, processes
from urbanstack.settings import Settings


def _children(pid: int) -> list[int]:
    result = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            result += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return result


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def _kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def main() -> None:
    settings = Settings.from_env()
    total_rss = total_peak = 0
    print(f"{'service':26} {'RSS MiB':>8} {'peak MiB':>9}")
    for name in platform.SERVICE_NAMES:
        managed = processes.find(name, settings.run_dir)
        if managed is None:
            print(f"{name:26} {'not running':>18}")
            continue
        pids = _tree(managed.pid)
        rss = sum(_kib(p, "VmRSS") for p in pids) / 1024
        peak = sum(_kib(p, "VmHWM") for p in pids) / 1024
        total_rss += rss
        total_peak += peak
        print(f"{name:26} {rss:8.0f} {peak:9.0f}")
    print(f"{'total':26} {total_rss:8.0f} {total_peak:9.0f}")


if __name__ == "__main__":
    main()
