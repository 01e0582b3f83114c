"""The declaration of the RL training service (finrl-training-service): agents trained on ml_features.

The agents are declared in the topology, one block per artifact name::

    params:
      timeframe: 5m
      symbols: [EURUSD, XAUUSD]            # none: every pair of the run
      min_rows: 400                        # per symbol, before the first run
      retrain_every: 1d                    # then again after this much new data (event time)
      window: 30d                          # the history one run takes
      env: {reward: pnl, episode_length: 128}
      agents:
        rl-ppo-5m: {algorithm: ppo, total_timesteps: 20000, hyperparams: {n_steps: 512, batch_size: 64}}
        rl-sac-5m: {algorithm: sac, total_timesteps: 5000, reward: sharpe, hyperparams: {learning_starts: 500},
                    baseline: {beat: [flat, buy_and_hold], min: 0.5}}

Kept light (pydantic and framework imports only): the lint imports every spec.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port
from framework.timeframes import parse_timeframe

RESERVED = frozenset({"policy", "env", "seed", "device", "verbose", "policy_kwargs", "tensorboard_log", "_init_setup_model", "use_sde", "sde_sample_freq"})
"""Constructor arguments ``hyperparams`` may not set: the service sets them, or they would change
the network's shape (``use_sde``), which the agent's card could not rebuild."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FEATURE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

Reward = Literal["pnl", "log_return", "sharpe"]


class EnvDecl(BaseModel):
    """The trading environment (nodes/ml/trading_env.py)."""

    model_config = ConfigDict(extra="forbid")

    reward: Reward = Field(default="pnl", description="pnl, log_return (both in basis points) or sharpe (differential Sharpe, Moody & Saffell)")
    episode_length: int = Field(default=256, ge=1, description="steps (bars) per training episode")
    reward_scale: float = Field(default=1e4, gt=0, description="multiplies the pnl and log_return rewards (1e4: basis points)")
    sharpe_eta: float = Field(default=0.01, gt=0, lt=1, description="the differential Sharpe's moving-moment rate")
    reward_clip: float = Field(default=10.0, gt=0, description="the differential Sharpe is clipped to ± this")
    cost_multiplier: float = Field(default=1.0, ge=0, description="times half the bar's spread per unit of position change (0: no costs)")


class BaselineDecl(BaseModel):
    """What an agent must beat on the held-out period to be promoted (nodes/ml/promotion.py): its
    annualized Sharpe there against the baselines' over the same bars, a floor, the live agent's."""

    model_config = ConfigDict(extra="forbid")

    beat: list[Literal["buy_and_hold", "flat"]] = Field(
        default_factory=lambda: ["flat", "buy_and_hold"], description="baseline strategies whose held-out Sharpe it must exceed"
    )
    min: float | None = Field(default=None, description="its held-out Sharpe must be at least this (none: above 0, chance)")
    beat_promoted: bool = Field(default=True, description="and better than the promoted agent's")
    margin: float = Field(default=0.0, ge=0.0, description="by more than this")


class AgentDecl(BaseModel):
    """One agent, under its name (the artifact name its versions are stored under)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["ppo", "a2c", "sac"] = Field(description="ppo and a2c trade short/flat/long; sac a position in [-1, 1]")
    total_timesteps: int = Field(ge=1, description="environment steps of training")
    hyperparams: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the stable-baselines3 algorithm")
    net_arch: list[int] = Field(default_factory=lambda: [64, 64], min_length=1, max_length=6, description="hidden layer sizes")
    activation: Literal["tanh", "relu"] = "tanh"
    reward: Reward | None = Field(default=None, description="this agent's reward (none: the service's env.reward)")
    episode_length: int | None = Field(default=None, ge=1, description="this agent's episode length (none: the service's env.episode_length)")
    deadband: float = Field(default=0.1, ge=0, lt=1, description="sac: a position smaller than this is a flat signal")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="none: the service's seed")
    baseline: BaselineDecl = Field(default_factory=BaselineDecl)

    @field_validator("hyperparams")
    @classmethod
    def _hyperparams(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED & set(value))
        if reserved:
            raise ValueError(f"hyperparams may not set {', '.join(reserved)} (the service sets them)")
        return value

    @field_validator("net_arch")
    @classmethod
    def _layers(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("layer sizes must be positive")
        return value


class RlTrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeframe: str = Field(default="1h", description="the bars and feature rows agents trade")
    symbols: list[str] = Field(default_factory=list, description="the symbols whose rows train every agent (empty: the run's pairs)")
    feature_set: str | None = Field(default=None, description="train on this feature-set version only (none: the table must hold one)")
    features: list[str] = Field(default_factory=list, description="the features agents observe, in order (empty: every feature of the set)")
    agents: dict[str, AgentDecl] = Field(default_factory=dict, description="agent name (artifact name) -> algorithm and hyperparameters")
    env: EnvDecl = Field(default_factory=EnvDecl)
    min_rows: int = Field(default=500, ge=2, description="feature rows per symbol before the first run")
    retrain_every: PositiveDuration = Field(default="1d", description="train again once the newest row common to all symbols has moved on this much (event time)")
    window: PositiveDuration = Field(default="30d", description="the history one run takes, up to the newest row common to all symbols")
    check_every: PositiveDuration = Field(default="1m", description="how often a due run starts when no feature row arrives (history found at start)")
    eval_fraction: float = Field(default=0.2, gt=0, lt=1, description="the latest share of bar times held out for the evaluation")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    obs_clip: float = Field(default=10.0, gt=0, description="scaled features are clipped to ± this")
    spread_pips: dict[str, float] = Field(
        default_factory=lambda: {"default": 1.0, "XAUUSD": 30.0},
        description="the cost of a symbol none of whose bars carries a spread (downloaded bars), in pips; 'default' covers the others",
    )
    reward_every: int = Field(default=1, ge=1, description="reward_history keeps the sum of each block of this many steps")

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        parse_timeframe(value)
        return value

    @field_validator("agents")
    @classmethod
    def _names(cls, value: dict[str, AgentDecl]) -> dict[str, AgentDecl]:
        bad = [name for name in value if not _NAME.match(name)]
        if bad:
            raise ValueError(f"agent names are artifact names and run-id prefixes (letters, digits, - and _): {', '.join(map(repr, bad))}")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if not _FEATURE.match(f)]
        if bad:
            raise ValueError(f"not feature names: {', '.join(map(repr, bad))}")
        if len(set(value)) != len(value):
            raise ValueError("a feature is listed twice")
        return value


SPEC = NodeSpec(
    name="rl_training",
    factory="nodes.rl_training.node:RlTraining",
    description="Trains the declared RL agents (PPO, A2C, SAC) in a trading environment over ml_features and bars, "
    "evaluates each on a held-out period against buy-and-hold and flat, and stores it as an artifact.",
    params=RlTrainingParams,
    inputs={
        "features": Port("features.v1", "feature rows as they are computed: they move the training window on"),
        "bars": Port("bar.v1", "bars of the timeframe: closes and spreads", required=False),
    },
    outputs={
        "status": Port("training_status.v1", "started, completed (with the evaluation) or failed, per run"),
        "episodes": Port("training_status.v1", "one per finished training episode (status episode)"),
        "checkpoints": Port("any", "one agent_checkpoints row per stored agent"),
        "rewards": Port("any", "reward_history rows: the rewards of every episode"),
        "promotions": Port("any", "every promotion decision and its reason (model_promotions)", required=False),
    },
    role="batch",
    extras=("ml",),
)
