"""The contract every provisioner keeps, the diff it speaks in, and the errors
that turn into conditions.

``observe`` compares the desired part with the backend and returns a ``Diff``:
one ``Difference`` per backend object and attribute, naming what is wanted, what
was found and the action that repairs it. ``apply`` executes exactly the actions
of the diff it is given (an empty diff does nothing), so there is one comparison,
not two that can disagree. ``delete`` removes access and, unless ``keep_data``,
the data too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

# Reasons are constants so that alerts and tests can rely on them.
REASON_PROVISIONED = "Provisioned"
REASON_REPAIRED = "DriftRepaired"
REASON_UNAVAILABLE = "BackendUnavailable"
REASON_FAILED = "ProvisioningFailed"
REASON_SUSPENDED = "Suspended"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_CONFLICT = "ResourceConflict"


class BackendUnavailable(RuntimeError):
    """The backend cannot be reached or answered with a server error: retry later."""

    def __init__(self, backend: str, message: str):
        super().__init__(f"{backend} is unavailable: {message}")
        self.backend = backend


class Conflict(RuntimeError):
    """A backend object with the expected name belongs to someone else (reason ``ResourceConflict``)."""


@dataclass(frozen=True)
class Difference:
    """One attribute of one backend object that is not as desired.

    ``wanted`` and ``found`` are for people (never a secret: a password is
    ``"authenticates"`` vs ``"rejected"``); ``payload`` is what the action needs
    (a statement, a binding, a client) and is not shown."""

    object: str          # e.g. "topic guetersloh.pegel-warnung.water_levels"
    attribute: str       # e.g. "exists", "partitions", "config retention.ms"
    wanted: Any
    found: Any
    action: str          # the provisioner's verb that repairs it, e.g. "create_topic", "revoke"
    payload: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.object} {self.attribute}: wanted {self.wanted}, found {self.found}"


@dataclass(frozen=True)
class Diff:
    """What ``observe`` found; empty means in sync."""

    items: tuple[Difference, ...] = ()

    @property
    def in_sync(self) -> bool:
        return not self.items

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def about(self, obj: str, attribute: str | None = None) -> list[Difference]:
        """The differences of one object (and attribute)."""
        return [d for d in self.items if d.object == obj and (attribute is None or d.attribute == attribute)]

    def summary(self) -> str:
        shown = "; ".join(str(d) for d in self.items[:5])
        more = f" and {len(self.items) - 5} more" if len(self.items) > 5 else ""
        return (shown + more) or "in sync"


class DiffBuilder:
    """Collects differences while a provisioner observes."""

    def __init__(self):
        self.items: list[Difference] = []

    def add(self, obj: str, attribute: str, wanted: Any, found: Any, action: str, payload: Any = None) -> None:
        self.items.append(Difference(obj, attribute, wanted, found, action, payload))

    def diff(self) -> Diff:
        return Diff(tuple(self.items))


Part = TypeVar("Part", contravariant=True)


class Provisioner(Protocol[Part]):
    """One backend. ``credentials`` is the tenant Secret's content (key -> value)."""

    name: str
    condition: str

    def observe(self, part: Part, credentials: Mapping[str, str]) -> Diff: ...

    def apply(self, part: Part, diff: Diff, credentials: Mapping[str, str]) -> list[str]: ...

    def delete(self, part: Part, *, keep_data: bool) -> list[str]: ...


def unknown_action(backend: str, difference: Difference) -> RuntimeError:
    return RuntimeError(f"{backend}: no action {difference.action!r} to repair {difference}")


def dispatch(backend: str, handlers: Mapping[str, Any], diff: Diff, *args) -> list[str]:
    """Run each difference's action in diff order; the handler returns what it did."""
    actions: list[str] = []
    for difference in diff:
        handler = handlers.get(difference.action)
        if handler is None:
            raise unknown_action(backend, difference)
        done = handler(difference, *args)
        if done:
            actions.append(done)
    return actions


def ensure(provisioner: Provisioner, part, credentials: Mapping[str, str]) -> list[str]:
    """Observe, then apply exactly what was observed (for callers outside the reconcile loop)."""
    return provisioner.apply(part, provisioner.observe(part, credentials), credentials)
