"""The trading state, after NautilusTrader's ``TradingState``: active, reducing, halted.

- ``active``: every check decides.
- ``reducing``: only orders that reduce a position pass (a reversal is trimmed to its closing part).
- ``halted``: nothing passes.

The operator sets it (``fxrun risk halt|reduce|resume``); breaches set it too: a daily-loss
breach until the next trading day starts (then it resumes by itself, if nobody changed it
since), a drawdown breach until the operator resumes. A breach never makes the state less
strict than it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateOfRecord:
        return cls(TradingState(data["state"]), data.get("set_by", OPERATOR), data.get("reason", ""),
                   int(data.get("since", 0)), data.get("command_id"))  # fmt: skip


def breach(current: StateOfRecord, target: TradingState, rule: str, reason: str, now: int) -> StateOfRecord | None:
    """The state a breach of ``rule`` sets, or None when the current one is already as strict."""
    if current.state.severity >= target.severity:
        return None
    return StateOfRecord(target, rule, reason, now)
