"""Connectors: pure parsers from a source's bytes to observation events.

Every parser returns a :class:`ParseResult`: the events it could build and one
:class:`Rejection` per record it could not, with the reason, so nothing is lost
silently. Parsers do no I/O; fetching, scheduling and Kafka come later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from urbanstack.runtime.events import Observation


@dataclass(frozen=True)
class Rejection:
    """One input record that did not become an event."""

    where: str          # locator in the input: "line 17", "measurements[3]", "row 9"
    reason: str         # what is wrong, in words a data steward can act on
    record: Any = None  # the raw record (text or decoded JSON), for the dead-letter topic


@dataclass
class ParseResult:
    events: list[Observation] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str, record: Any = None) -> None:
        self.rejected.append(Rejection(where, reason, record))

    def load_json(self, data: bytes | str) -> tuple[bool, Any]:
        """Decode a JSON document (any encoding); a broken one becomes a rejection."""
        from urbanstack.runtime.connectors.textformats import decode_text

        text, _ = decode_text(data)
        try:
            return True, json.loads(text)
        except json.JSONDecodeError as exc:
            self.reject("document", f"not valid JSON: {exc}", text[:2000])
            return False, None
