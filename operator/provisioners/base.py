"""What every provisioner shares: the outcome of a reconcile step and the
errors that turn into conditions."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """A backend object with the expected name belongs to someone else."""


@dataclass
class Observed:
    """What a provisioner found, compared with the desired state."""

    missing: list[str] = field(default_factory=list)   # desired, but not there
    drifted: list[str] = field(default_factory=list)   # there, but different
    extra: list[str] = field(default_factory=list)     # there, but no longer desired

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.drifted or self.extra)

    def summary(self) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("drifted", self.drifted), ("extra", self.extra)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts) or "in sync"
