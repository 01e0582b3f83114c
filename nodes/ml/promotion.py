"""Promotion: a trained model goes live only if its walk-forward metrics beat the declared baseline.

A model's ``baseline`` in the topology, e.g. ``{metric: balanced_accuracy, min: 0.52,
beat_promoted: true}``, reads: the walk-forward mean of ``metric`` (over the test folds, never
the final fit's own training rows) must be at least ``min`` (at most ``max`` for a
lower-is-better metric such as ``log_loss``) and, with ``beat_promoted``, better than the
currently promoted model's by more than ``margin``. Without a floor (``min``, or ``max`` where
lower is better; a bound on the better side alone is a ceiling) the floor is the metric's chance
level (:data:`~nodes.ml.levels.CHANCE`: what predictions that know nothing score on any data),
which the model must beat strictly; a metric with no such level (accuracy, log loss, Brier,
trades: they depend on the classes' balance) needs a declared floor, so no model goes live on no
baseline at all. Every decision, either way, is one ``model_promotions`` row and one log line
with its reason; promoting is tagging the artifact ``<name>@promoted``, which is what inference
loads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodes.ml.levels import CHANCE, HIGHER_IS_BETTER, bound_problem, floor_of

PROMOTED = "promoted"
REJECTED = "rejected"


def promoted_name(name: str) -> str:
    return f"{name}@promoted"


@dataclass(frozen=True)
class Baseline:
    metric: str = "balanced_accuracy"
    min: float | None = None
    max: float | None = None
    beat_promoted: bool = False
    margin: float = 0.0

    def __post_init__(self) -> None:
        problem = bound_problem(self.metric, self.min, self.max)
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def of(cls, doc: Mapping[str, Any] | None) -> Baseline:
        return cls(**dict(doc or {}))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    value: float | None

    @property
    def outcome(self) -> str:
        return PROMOTED if self.promote else REJECTED


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def decide(
    metrics: Mapping[str, Any],
    baseline: Baseline,
    promoted: Mapping[str, Any] | None = None,
    promoted_id: str | None = None,
) -> Decision:
    """Whether a model with walk-forward ``metrics`` goes live, and why.

    ``promoted`` holds the metrics of the model live now (None: none is), named ``promoted_id``.
    """
    name = baseline.metric
    value = _number(metrics.get(name))
    if value is None:
        return Decision(False, f"{name} is undefined (no fold could compute it)", name, None)
    higher = HIGHER_IS_BETTER[name]
    checks = []
    if baseline.min is not None:
        if value < baseline.min:
            return Decision(False, f"{name} {value:.4f} < {baseline.min:g} (baseline min)", name, value)
        checks.append(f"{name} {value:.4f} >= {baseline.min:g}")
    if floor_of(name, baseline.min, baseline.max) is None:
        chance = CHANCE[name]
        if not value > chance:
            return Decision(False, f"{name} {value:.4f} does not beat chance ({chance:g})", name, value)
        checks.append(f"{name} {value:.4f} > {chance:g} (chance)")
    if baseline.max is not None:
        if value > baseline.max:
            return Decision(False, f"{name} {value:.4f} > {baseline.max:g} (baseline max)", name, value)
        checks.append(f"{name} {value:.4f} <= {baseline.max:g}")
    if baseline.beat_promoted:
        other = _number((promoted or {}).get(name)) if promoted is not None else None
        if promoted is None:
            checks.append("no model is promoted yet")
        elif other is None:
            checks.append(f"the promoted {promoted_id or 'model'} has no {name} to compare")
        else:
            better = value > other + baseline.margin if higher else value < other - baseline.margin
            if not better:
                op = "does not beat" if baseline.margin == 0 else f"does not beat by {baseline.margin:g}"
                return Decision(False, f"{name} {value:.4f} {op} the promoted {promoted_id or 'model'} ({other:.4f})", name, value)
            checks.append(f"beats the promoted {promoted_id or 'model'} ({other:.4f})")
    return Decision(True, "; ".join(checks), name, value)


def record(
    decision: Decision, *, name: str, version: int, sha256: str, run_id: str, ts: int, by: str
) -> dict[str, Any]:
    """The ``model_promotions`` row of a decision."""
    return {
        "ts": ts,
        "name": name,
        "version": version,
        "sha256": sha256,
        "run_id": run_id,
        "decision": decision.outcome,
        "reason": decision.reason,
        "metric": decision.metric,
        "value": decision.value,
        "by": by,
    }


def log_line(decision: Decision, model_id: str) -> str:
    return f"model {model_id} {decision.outcome}: {decision.reason}"
