"""The trading state, after NautilusTrader's ``TradingState``: active, reducing, halted.

- ``active``: every check decides.
- ``reducing``: only orders that reduce a position pass (a reversal is trimmed to its closing part).
- ``halted``: nothing passes.

The operator sets it (``fxrun risk halt|reduce|resume``); breaches set it too: a daily-loss
breach until the next trading day starts (then it resumes by itself, if nobody changed it
since), a drawdown breach until the operator resumes. A breach never makes the state less
strict than it is; a drawdown breach under a state at least as strict (a daily-loss halt) is
still kept (``until_resume``): the next day falls back to it, not to active.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any


class TradingState(str, Enum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}

COMMANDS = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}
"""``fxrun risk`` verbs → the state they set."""

OPERATOR, DAILY_LOSS, DRAWDOWN = "operator", "daily_loss", "drawdown"


@dataclass(frozen=True, slots=True)
class StateOfRecord:
    state: TradingState = TradingState.ACTIVE
    set_by: str = OPERATOR
    """operator, daily_loss or drawdown."""
    reason: str = "initial state"
    since: int = 0
    command_id: str | None = None
    """The control command that set it (so a queued command is applied once)."""
    until_resume: TradingState | None = None
    """The state a drawdown breach holds until the operator resumes (an operator's command clears it): what a new
    trading day falls back to when the daily loss set a state at least as strict on the day of the breach."""

    def to_json(self) -> dict[str, Any]:
        """Without ``until_resume`` when no drawdown breach is held: the document of a gate that never breached one
        stays what it was."""
        doc = {**asdict(self), "state": self.state.value}
        held = doc.pop("until_resume")
        if held is not None:
            doc["until_resume"] = held.value
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateOfRecord:
        held = data.get("until_resume")
        return cls(TradingState(data["state"]), data.get("set_by", OPERATOR), data.get("reason", ""),
                   int(data.get("since", 0)), data.get("command_id"), None if held is None else TradingState(held))  # fmt: skip


def breach(current: StateOfRecord, target: TradingState, rule: str, reason: str, now: int) -> StateOfRecord | None:
    """The state a breach of ``rule`` sets, or None when it changes nothing. The state never becomes less strict; a
    drawdown breach is recorded in ``until_resume`` even when the state is already as strict, so the new day that ends
    a daily-loss state cannot lift it (:func:`new_day`)."""
    held = current.until_resume
    if rule == DRAWDOWN and (held is None or held.severity < target.severity):
        held = target
    if current.state.severity < target.severity:
        return StateOfRecord(target, rule, reason, now, until_resume=held)
    if held is current.until_resume:
        return None
    return replace(current, until_resume=held)


def new_day(current: StateOfRecord, reason: str, now: int) -> StateOfRecord:
    """What a new trading day makes of a state the daily loss set: active, or the state a drawdown breach holds until
    the operator resumes."""
    if current.until_resume is None:
        return StateOfRecord(TradingState.ACTIVE, DAILY_LOSS, reason, now)
    return StateOfRecord(current.until_resume, DRAWDOWN, f"{reason}; a drawdown breach holds until fxrun risk resume", now,
                         until_resume=current.until_resume)  # fmt: skip
