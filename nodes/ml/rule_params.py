"""The parameters of the rule models (:mod:`nodes.ml.rules`), importable without numpy.

The inference service's spec validates a rule's inline params with these when the topology
loads (lint FX102 reports a misspelt one with its file and line), and the lint imports every
spec, so this module holds only pydantic models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ANY_FEATURE_SET = "*"
"""A rule's card ``feature_set`` when the topology names none: any set that has its columns."""


class SmaCrossParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fast: str = Field(min_length=1, description="feature column of the fast SMA (its distance to the close, or its level)")
    slow: str = Field(min_length=1, description="feature column of the slow SMA (same form as fast)")
    form: Literal["distance", "level"] = Field(
        default="distance",
        description="distance: the columns are the close's distance to each SMA (fast above slow <=> fast < slow); "
        "level: they are the SMA values",
    )
    band: float = Field(default=0.0, ge=0.0, description="dead zone: |gap| <= band is flat (units of the columns)")
    scale: float | None = Field(default=None, gt=0.0, description="confidence = min(1, |gap| / scale); none: 1")
    long_only: bool = Field(default=False, description="sell signals become flat")

    @model_validator(mode="after")
    def _two_columns(self) -> SmaCrossParams:
        if self.fast == self.slow:
            raise ValueError(f"fast and slow name the same feature {self.fast!r}")
        return self


RULES: dict[str, type[BaseModel]] = {"sma_cross": SmaCrossParams}
"""Rule kinds (in :data:`nodes.ml.model.KINDS` too) → their params model."""


def rule_params(kind: str, params: dict[str, Any]) -> BaseModel:
    """``params`` validated for rule ``kind`` (pydantic's error on a bad one)."""
    model = RULES.get(kind)
    if model is None:
        raise ValueError(f"{kind!r} is not a rule kind ({', '.join(sorted(RULES))})")
    return model.model_validate(params)
