"""Cursors for pull connectors: the newest observation time already delivered,
per key (typically ``tenant/source/sensor``), so a schedule never fetches or
emits the same reading twice."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, Protocol

from urbanstack.runtime.events import Observation, format_instant, parse_instant


class CursorStore(Protocol):
    def get(self, key: str) -> datetime | None: ...

    def set(self, key: str, value: datetime) -> None: ...


class FileCursorStore:
    """Cursors in one JSON file. Every ``set`` rewrites the file atomically
    (temporary file, fsync, rename), so a crash leaves the old or the new
    state, never a torn file. A cursor never moves backwards."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()

    def get(self, key: str) -> datetime | None:
        value = self._load().get(key)
        return parse_instant(value, f"cursor {key!r}") if value else None

    def set(self, key: str, value: datetime) -> None:
        with self._lock:
            cursors = self._load()
            current = cursors.get(key)
            if current and parse_instant(current) >= value:
                return
            cursors[key] = format_instant(value)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as stream:
                    json.dump(cursors, stream, sort_keys=True, indent=1)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def _load(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"cursor file {self.path} is corrupt ({exc}); fix or remove it") from None
        if not isinstance(data, dict):
            raise ValueError(f"cursor file {self.path} must hold a JSON object")
        return data


def cursor_key(event: Observation) -> str:
    return f"{event.tenant}/{event.source}/{event.sensor_id}"


def newer_than_cursor(events: Iterable[Observation], store: CursorStore) -> list[Observation]:
    """The events observed after their sensor's cursor (ties count as seen)."""
    cursors: dict[str, datetime | None] = {}
    fresh = []
    for event in events:
        key = cursor_key(event)
        if key not in cursors:
            cursors[key] = store.get(key)
        cursor = cursors[key]
        if cursor is None or event.observed_at > cursor:
            fresh.append(event)
    return fresh


def advance(store: CursorStore, events: Iterable[Observation]) -> None:
    """Move each sensor's cursor to its newest event; call after delivery succeeded."""
    newest: dict[str, datetime] = {}
    for event in events:
        key = cursor_key(event)
        if key not in newest or event.observed_at > newest[key]:
            newest[key] = event.observed_at
    for key, value in newest.items():
        store.set(key, value)
