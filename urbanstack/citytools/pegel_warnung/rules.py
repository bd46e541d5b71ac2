"""When Pegel-Warnung warns: thresholds per gauge, the rate-of-rise rule, hysteresis. Pure.

Per gauge (keyed by the municipality that owns it and its sensor id) the state is one of
``none``, ``warning`` and ``alarm``. A reading decides by its own time, never by arrival:

- a reading not newer than the last one decided for the gauge is a duplicate or arrived out
  of order, and changes nothing (so readings sent twice, or replayed after a restart, are
  harmless);
- from ``none``: at or above the warn level (or rising faster than the rate-of-rise rule
  allows) → **Alert** at warning level; at or above the alarm level → **Alert** at alarm level;
- from ``warning``: at or above the alarm level → **Update** to alarm (it rises further);
- from ``warning`` or ``alarm``: below the warn level minus the hysteresis, and not rising
  fast → **Cancel** (all-clear). Falling from alarm back into the warning band raises nothing:
  the alarm stands until the all-clear, so a level hovering around a threshold cannot make
  a storm of messages.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

NONE, WARNING, ALARM = 0, 1, 2
LEVEL_NAMES = {NONE: "all_clear", WARNING: "warning", ALARM: "alarm"}
LEVELS_BY_NAME = {name: level for level, name in LEVEL_NAMES.items()}
HISTORY = 64  # readings kept per gauge for the rate-of-rise rule


class SettingsError(ValueError):
    """The tool's settings are unusable; the message names the key and what to write."""


@dataclass(frozen=True)
class Thresholds:
    warn: float
    alarm: float
    hysteresis: float = 10.0
    rise_cm_per_hour: float | None = None
    rise_window: timedelta = timedelta(hours=1)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"settings {key} must be a number of centimetres, got {value!r}")
    return float(value)


def thresholds(settings: Mapping[str, Any], owner: str, gauge: str) -> Thresholds:
    """Levels for gauge ``gauge`` of ``owner``: ``settings.gauges["<owner>/<gauge>"]`` (or
    ``gauges["<gauge>"]``) over the tool-wide ``warnLevelCm``, ``alarmLevelCm``,
    ``hysteresisCm`` (default 10) and ``riseCmPerHour`` (default: no rate rule)."""
    gauges = settings.get("gauges") or {}
    if not isinstance(gauges, Mapping):
        raise SettingsError("settings gauges must map '<municipality>/<gauge>' to its levels")
    own = gauges.get(f"{owner}/{gauge}") or gauges.get(gauge) or {}
    merged = {**settings, **own}
    for key in ("warnLevelCm", "alarmLevelCm"):
        if key not in merged:
            raise SettingsError(f"settings {key} is missing: set it for the tool in spec.tools[].settings")
    warn, alarm = _number(merged["warnLevelCm"], "warnLevelCm"), _number(merged["alarmLevelCm"], "alarmLevelCm")
    if not warn < alarm:
        raise SettingsError(f"settings warnLevelCm ({warn:g}) must be below alarmLevelCm ({alarm:g})")
    hysteresis = _number(merged.get("hysteresisCm", 10), "hysteresisCm")
    if hysteresis < 0:
        raise SettingsError("settings hysteresisCm must not be negative")
    rise = merged.get("riseCmPerHour")
    return Thresholds(warn, alarm, hysteresis, None if rise is None else _number(rise, "riseCmPerHour"))


@dataclass
class Message:
    """One CAP message already sent for a gauge (what a later one references)."""
    identifier: str
    sent: datetime


@dataclass
class GaugeState:
    level: int = NONE
    last_time: datetime | None = None
    episode: list[Message] = field(default_factory=list)   # the messages since the last all-clear
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))


@dataclass(frozen=True)
class Decision:
    level: int                # the new level (NONE: all-clear)
    msg_type: str             # Alert | Update | Cancel
    observed_at: datetime
    value: float
    threshold: float          # the level crossed (warn or alarm; for an all-clear the warn level)
    rising_fast: bool
    references: tuple[Message, ...]

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]


def _rising_fast(state: GaugeState, rules: Thresholds, at: datetime, value: float) -> bool:
    if rules.rise_cm_per_hour is None:
        return False
    window = [(t, v) for t, v in state.history if at - rules.rise_window <= t < at]
    if not window:
        return False
    start, first = window[0]
    hours = (at - start).total_seconds() / 3600
    return hours > 0 and (value - first) / hours >= rules.rise_cm_per_hour


def decide(state: GaugeState, rules: Thresholds, observed_at: datetime, value: float) -> Decision | None:
    """Apply one reading to ``state`` (changed in place); the message to send, if any."""
    if state.last_time is not None and observed_at <= state.last_time:
        return None
    fast = _rising_fast(state, rules, observed_at, value)
    state.last_time = observed_at
    state.history.append((observed_at, value))
    target = ALARM if value >= rules.alarm else WARNING if value >= rules.warn or fast else NONE
    if state.level == NONE and target > NONE:
        decision = Decision(target, "Alert", observed_at, value, rules.alarm if target == ALARM else rules.warn,
                            fast, ())
    elif state.level != NONE and target > state.level:
        decision = Decision(target, "Update", observed_at, value, rules.alarm, fast, tuple(state.episode))
    elif state.level != NONE and value < rules.warn - rules.hysteresis and not fast:
        decision = Decision(NONE, "Cancel", observed_at, value, rules.warn, False, tuple(state.episode))
    else:
        return None
    state.level = decision.level
    return decision


def remember(state: GaugeState, decision_level: int, message: Message) -> None:
    """Record a message that was sent (or found in the warnings topic on restart)."""
    if decision_level == NONE:
        state.episode = []
    else:
        state.episode.append(message)
    state.level = decision_level
    if state.last_time is None or message.sent > state.last_time:
        state.last_time = message.sent
