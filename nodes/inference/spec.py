"""The declaration of the inference service: feature vectors in, raw trading signals out.

Models are declared in the topology, one block per model name::

    params:
      poll: 1m                                   # how often promoted versions are looked up
      models:
        signal-1h: {timeframe: 1h}               # trained: loads artifact `signal-1h@promoted`
        sma-cross-1h:                            # a rule: a strategy without ML, no artifact
          kind: sma_cross
          timeframe: 1h
          params: {fast: dist_sma_10, slow: dist_sma_50}

A trained model can be pinned instead: ``signal-1h: {timeframe: 1h, version: 3}`` serves version 3
of artifact ``signal-1h`` (model id ``signal-1h-v3``) and never swaps it.

Kept light (pydantic and framework imports only): the lint imports every spec.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port
from nodes.ml.rule_params import RULES, rule_params

_TIMEFRAME = re.compile(r"^[1-9][0-9]*(m|h|d|w)$")
_FEATURE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ModelDecl(BaseModel):
    """One model the service runs, under its name (the artifact name of a trained model)."""

    model_config = ConfigDict(extra="forbid")

    timeframe: str = Field(description="the timeframe whose feature vectors it takes (a trained model's card must say the same)")
    kind: str | None = Field(
        default=None,
        description=f"a rule kind ({', '.join(sorted(RULES))}) with its params inline; none: a trained model, "
        "loaded from the artifact `<name>@promoted` (its card says its kind)",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="a rule's parameters")
    version: int | None = Field(
        default=None, ge=1,
        description="a trained model pinned to this version of artifact `<name>` (model id `<name>-v<version>`), never swapped; "
        "none: the promoted version, hot-swapped (a backtest or a walk-forward fold pins the checkpoint it tests)",
    )  # fmt: skip
    symbols: list[str] | None = Field(
        default=None, description="the symbols it serves; none: a trained model's card symbols (all pairs when empty), a rule all pairs"
    )
    feature_set: str | None = Field(
        default=None, description="a rule's feature-set version (none: any set that has its columns); trained models carry theirs"
    )
    horizon: str | None = Field(default=None, description="how far ahead a signal holds (none: the card's horizon, else one bar)")
    ttl: PositiveDuration | None = Field(default=None, description="the signals' time to live (none: the horizon)")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="a prediction less confident than this is a flat signal")
    price_feature: str | None = Field(default=None, description="the feature holding the reference price the signal carries (none: no price)")

    @field_validator("timeframe", "horizon")
    @classmethod
    def _timeframe(cls, value: str | None) -> str | None:
        if value is not None and not _TIMEFRAME.match(value):
            raise ValueError(f"{value!r} is not a timeframe (a count and m, h, d or w: 1h, 4h, 1d)")
        return value

    @field_validator("price_feature")
    @classmethod
    def _feature(cls, value: str | None) -> str | None:
        if value is not None and not _FEATURE.match(value):
            raise ValueError(f"{value!r} is not a feature name")
        return value

    @model_validator(mode="after")
    def _rule_or_trained(self) -> ModelDecl:
        if self.kind is None:
            if self.params:
                raise ValueError("params are a rule's (give its kind); a trained model's parameters are in its card")
            if self.feature_set is not None:
                raise ValueError("feature_set is a rule's; a trained model's card names the set it was trained on")
            return self
        if self.version is not None:
            raise ValueError("version pins a trained model's artifact; a rule has none (leave kind out to pin a trained model)")
        if self.kind not in RULES:
            raise ValueError(
                f"kind {self.kind!r} is not a rule kind ({', '.join(sorted(RULES))}); "
                "for a trained model leave kind out: its card names it"
            )
        self.params = rule_params(self.kind, self.params).model_dump()
        return self


class InferenceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelDecl | None] = Field(
        default_factory=dict, description="model name -> what it serves (null: not in this profile, for an override)"
    )
    poll: PositiveDuration = Field(default="1m", description="how often newly promoted versions are looked up (event time)")

    @field_validator("models")
    @classmethod
    def _names(cls, value: dict[str, ModelDecl | None]) -> dict[str, ModelDecl]:
        value = {name: decl for name, decl in value.items() if decl is not None}
        bad = [name for name in value if not name.strip() or "@" in name or any(ord(c) < 32 for c in name)]
        if bad:
            raise ValueError(f"model names must be artifact names without '@': {', '.join(map(repr, bad))}")
        return value


SPEC = NodeSpec(
    name="inference",
    factory="nodes.inference.node:Inference",
    description="Runs the declared models (promoted trained models, hot-swapped; rule strategies) on each feature vector.",
    params=InferenceParams,
    inputs={"features": Port("features.v1", "feature vectors; those of a timeframe no model serves are ignored")},
    outputs={
        "signals": Port("signal.v1", "one signal per model and feature vector it serves, in input order; flat included"),
        "predictions": Port("any", "the raw prediction behind each signal (model_predictions)"),
    },
    role="transform",
)
