"""Progress lines for long CLI work: a spinner with elapsed time on a terminal,
one line per step (and a heartbeat every 30 s) when output goes to a log."""

from __future__ import annotations

import sys
import threading
import time

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Step:
    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._start = 0.0

    def update(self, label: str) -> None:
        self.label = label
        if not self._tty:
            self._write(f"  … {label}\n")

    def __enter__(self) -> "Step":
        self._start = time.monotonic()
        if not self._tty:
            self._write(f"  … {self.label}\n")
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        elapsed = time.monotonic() - self._start
        mark = "✔" if exc_type is None else "✘"
        clear = "\r\x1b[2K" if self._tty else ""
        self._write(f"{clear}  {mark} {self.label} ({elapsed:.0f} s)\n")

    def _tick(self) -> None:
        frame = 0
        last_heartbeat = time.monotonic()
        while not self._stop.wait(0.1 if self._tty else 1.0):
            elapsed = time.monotonic() - self._start
            if self._tty:
                self._write(f"\r\x1b[2K  {_FRAMES[frame % len(_FRAMES)]} {self.label} ({elapsed:.0f} s)")
                frame += 1
            elif time.monotonic() - last_heartbeat >= 30:
                last_heartbeat = time.monotonic()
                self._write(f"  … still {self.label} ({elapsed:.0f} s)\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
