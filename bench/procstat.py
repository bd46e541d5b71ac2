"""CPU time of a process or thread from /proc (Linux), for the benchmarks that measure it."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def read_stat(path: str | Path) -> tuple[str, int, float]:
    """(name, parent pid, user + system CPU seconds) of ``/proc/<pid>/stat`` or
    ``/proc/<pid>/task/<tid>/stat``; the name may hold spaces and parentheses, so the fields
    are split after its last ``)``."""
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return stat[stat.index("(") + 1:stat.rindex(")")], int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
