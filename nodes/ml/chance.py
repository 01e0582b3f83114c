"""What a promotion baseline compares against when it declares no bound: the metric's chance level.

Kept apart from :mod:`nodes.ml.promotion` (which needs numpy through the metrics) so that the params models, which the
lint loads, can check a baseline declaration without importing any numeric library.
"""

from __future__ import annotations

CHANCE: dict[str, float] = {"balanced_accuracy": 0.5, "auc": 0.5, "hit_rate": 0.5, "sharpe": 0.0}
"""The score of predictions that know nothing, whatever the data: the floor of a baseline that declares no bound."""


def bound_problem(metric: str, min_: float | None, max_: float | None) -> str | None:
    """Why a baseline on ``metric`` with these bounds is no baseline (None: it is one)."""
    if min_ is None and max_ is None and metric not in CHANCE:
        return (f"baseline on {metric} needs min or max: {metric} has no chance level that holds for every data set "
                f"(declare one, or compare {', '.join(CHANCE)}, which default to beating chance)")  # fmt: skip
    return None
