"""What the replay node and the service-mode runner both say about a run: its id's form and its status messages.

Kept light (no numpy, no node imports): the runner's spec module imports it.
"""

from __future__ import annotations

import math
import re
from typing import Any

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_run_id(value: str | None) -> str | None:
    """A pydantic validator's body: ``value`` if it is a run id (or None), else ValueError saying the form."""
    if value is not None and not RUN_ID.match(value):
        raise ValueError(f"{value!r}: a run id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def number(value: Any) -> float | None:
    """A finite number as a float; anything else (NaN, infinities, bools, text) None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def status_message(run_id: str, ts: int, status: str, *, progress: Any = None, metrics: dict[str, Any] | None = None,
                   message: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A ``backtest_status.v1`` message: progress clamped to [0, 1], metrics finite or null."""
    out: dict[str, Any] = {"run_id": run_id, "ts": int(ts), "status": status}
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        out["progress"] = min(1.0, max(0.0, float(progress)))
    if metrics is not None:
        out["metrics"] = {k: number(v) for k, v in metrics.items()}
    if message:
        out["message"] = message
    return out
