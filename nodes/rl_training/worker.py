"""One RL training run, as a worker process runs it: data → environment → agent → evaluation.

:func:`train` is what the service hands to ``ctx.background(..., process=True)``: a module-level
function of one picklable :class:`TrainJob`, returning a picklable :class:`TrainResult`. It
pins torch to one thread and seeds everything from ``job.seed`` (stable-baselines3's
``set_random_seed``: Python, NumPy, torch; the environment's draws through ``reset(seed)``), so
the same rows, parameters and seed give the same agent bytes and the same evaluation.

The rows are split in time: training is every bar before the cut, evaluation (the held-out
period, ``eval_fraction`` of the distinct bar times) every bar from it; feature scaling and the
differential Sharpe's starting variance come from the training rows alone. The agent is
evaluated as inference will run it: written to bytes, read back, and asked for a position row
by row; buy-and-hold (long from the first bar) and flat run through the same environment.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from framework.errors import FxflowError
from framework.timeframes import DAY_MS, parse_timeframe
from nodes.ml.agents import ALGORITHMS, AgentModel
from nodes.ml.model import ModelCard
from nodes.ml.trading_env import EnvConfig, InsufficientData, Market, Normalizer, TradingEnv, constant, market_from_rows, performance, rollout
from nodes.rl_training.spec import RESERVED

TRADING_DAYS = 252


class TrainingError(FxflowError):
    """A run that cannot train: its data, algorithm or hyperparameters are wrong (one clear line)."""


@dataclass(frozen=True)
class TrainJob:
    run_id: str
    name: str
    """The agent's artifact name (the topology's agent name)."""
    algorithm: str
    total_timesteps: int
    timeframe: str
    features_rows: Mapping[str, Sequence[Any]]
    """Columns ``symbol``, ``ts``, ``feature_set``, ``values`` (a JSON object or its text) of ml_features."""
    bar_rows: Mapping[str, Sequence[Any]]
    """Columns ``symbol``, ``ts``, ``close``, ``spread_mean`` of the bars."""
    fallback_spread: Mapping[str, float] = field(default_factory=dict)
    """Per symbol, the spread (price units) of rows whose bar has none and whose symbol has no known spread."""
    features: tuple[str, ...] = ()
    """The columns to use, in order; empty: every feature of the set, sorted."""
    feature_set: str | None = None
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    net_arch: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    env: Mapping[str, Any] = field(default_factory=dict)
    """:class:`EnvConfig` fields but ``action`` (the algorithm's) and ``sharpe_var0`` (the training rows')."""
    obs_clip: float = 10.0
    deadband: float = 0.1
    eval_fraction: float = 0.2
    seed: int = 0
    reward_every: int = 1


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    name: str
    algorithm: str
    agent: bytes
    card: dict[str, Any]
    """The agent's :class:`ModelCard` as metadata (its ``metrics`` hold the evaluation)."""
    metrics: dict[str, float]
    episodes: list[dict[str, Any]]
    """Each finished training episode: index, symbol, start_ts, end_ts, steps, reward, net_return, cost, trades."""
    rewards: dict[str, np.ndarray]
    """Columns ``episode``, ``step``, ``ts``, ``reward``: per episode, the reward of each block of ``reward_every`` steps."""
    seconds: float = 0.0
    """Wall time of the training (``learn``), for the log only: never in a message or a table."""


@dataclass(frozen=True)
class Data:
    train: Market
    held_out: Market
    features: tuple[str, ...]
    feature_set: str
    symbols: tuple[str, ...]
    dropped: int
    cut: int


def periods_per_year(timeframe: str) -> float:
    return TRADING_DAYS * DAY_MS / parse_timeframe(timeframe).ms


def _values(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, (str, bytes)):
        return orjson.loads(raw) if raw else {}
    return {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def prepare(job: TrainJob) -> Data:
    """The rows of one feature set joined with their bars, split in time into the training and
    held-out markets; rows with a missing, null, NaN or infinite value are left out."""
    rows = job.features_rows
    symbol = np.asarray(rows.get("symbol", []), dtype=object)
    ts = np.asarray(rows.get("ts", []), dtype=np.int64)
    sets = np.asarray(rows.get("feature_set", []), dtype=object)
    if len(ts) == 0:
        raise InsufficientData(f"{job.name}: no feature rows of {job.timeframe}")
    if job.feature_set is not None:
        keep = sets == job.feature_set
        if not keep.any():
            found = ", ".join(sorted(set(map(str, sets))))
            raise TrainingError(f"{job.name}: no feature rows of feature set {job.feature_set!r} (the table has {found})")
        feature_set = job.feature_set
    else:
        versions = sorted(set(map(str, sets)))
        if len(versions) > 1:
            raise TrainingError(
                f"{job.name}: the rows mix feature sets {', '.join(versions)}; set the service's feature_set, "
                "or wait until the new version is backfilled"
            )
        keep, feature_set = np.ones(len(ts), dtype=bool), versions[0]
    index = np.flatnonzero(keep)
    index = index[np.lexsort((ts[index], symbol[index]))]
    parsed = [_values(rows["values"][i]) for i in index]
    names = tuple(job.features) or tuple(sorted({k for v in parsed for k in v}))
    if not names:
        raise TrainingError(f"{job.name}: the feature rows hold no values")
    X = np.array([[_number(v.get(n)) for n in names] for v in parsed], dtype=np.float64).reshape(len(index), len(names))
    symbol, ts = symbol[index], ts[index]

    bars = job.bar_rows
    bar_key = {(str(s), int(t)): i for i, (s, t) in enumerate(zip(bars.get("symbol", []), bars.get("ts", [])))}
    at = np.array([bar_key.get((str(s), int(t)), -1) for s, t in zip(symbol, ts)], dtype=np.int64)
    bar_close = np.asarray([_number(v) for v in bars.get("close", [])], dtype=np.float64)
    bar_spread = np.asarray([_number(v) for v in bars.get("spread_mean", [])], dtype=np.float64)
    close = np.where(at >= 0, bar_close[at] if len(bar_close) else np.nan, np.nan)
    spread = np.where(at >= 0, bar_spread[at] if len(bar_spread) else np.nan, np.nan)
    for s in sorted(set(symbol)):
        mine = symbol == s
        known = spread[mine & np.isfinite(spread)]
        fallback = float(np.median(known)) if len(known) else float(job.fallback_spread.get(str(s), math.nan))
        spread[mine & ~np.isfinite(spread)] = fallback

    times = np.unique(ts)
    cut = int(times[min(len(times) - 1, int(len(times) * (1.0 - job.eval_fraction)))])
    before = ts < cut
    train, dropped_train = market_from_rows(X[before], close[before], spread[before], ts[before], symbol[before])
    held_out, dropped_held = market_from_rows(X[~before], close[~before], spread[~before], ts[~before], symbol[~before])
    return Data(train, held_out, names, feature_set, tuple(sorted(set(map(str, symbol)))), dropped_train + dropped_held, cut)


def _algorithm(name: str) -> Any:
    if name not in ALGORITHMS:
        raise TrainingError(f"unknown RL algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    import stable_baselines3

    return getattr(stable_baselines3, name.upper())


def train(job: TrainJob) -> TrainResult:
    """Train ``job``'s agent and evaluate it on the held-out period (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job.seed)
    cls = _algorithm(job.algorithm)
    reserved = sorted(RESERVED & set(job.hyperparams))
    if reserved:
        raise TrainingError(f"{job.name}: hyperparams may not set {', '.join(reserved)} (the service sets them)")
    data = prepare(job)
    if data.train.steps == 0:
        raise InsufficientData(f"{job.name}: too little data for an episode: no training rows before the held-out period")
    if data.held_out.steps == 0:
        since = dt.datetime.fromtimestamp(data.cut / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
        raise InsufficientData(f"{job.name}: too little data for the held-out period: no two consecutive valid rows from {since}")
    normalizer = Normalizer.fit(data.train.features, job.obs_clip)
    variance = float(data.train.bar_returns().var()) if data.train.steps > 1 else 0.0
    config = EnvConfig(**{**job.env, "action": ALGORITHMS[job.algorithm], "sharpe_var0": variance if variance > 0 else 1e-8})
    env = TradingEnv(data.train, config, normalizer, record=True)
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[job.activation]
    try:
        model = cls(
            "MlpPolicy", env, seed=job.seed, device="cpu", verbose=0,
            policy_kwargs={"net_arch": list(job.net_arch), "activation_fn": activation}, **dict(job.hyperparams),
        )  # fmt: skip
    except (TypeError, ValueError, AssertionError) as exc:
        raise TrainingError(f"{job.name}: {job.algorithm} rejects its hyperparams: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    began = time.perf_counter()
    model.learn(total_timesteps=job.total_timesteps)
    seconds = time.perf_counter() - began

    card = ModelCard(
        kind=job.algorithm,
        feature_set=data.feature_set,
        features=data.features,
        timeframe=job.timeframe,
        symbols=data.symbols,
        train_start_ms=int(data.train.ts.min()),
        train_end_ms=int(data.train.ts.max()),
        seed=job.seed,
        run_id=job.run_id,
        params={
            "algorithm": job.algorithm,
            "action": config.action,
            "policy": {"net_arch": list(job.net_arch), "activation": job.activation},
            "observation": normalizer.to_params(),
            "env": config.to_params(),
            "hyperparams": dict(job.hyperparams),
            "total_timesteps": job.total_timesteps,
            "deadband": job.deadband,
            "eval_start_ms": int(data.held_out.ts.min()),
            "eval_end_ms": int(data.held_out.ts.max()),
        },
        uses_position=True,
    )
    blob = AgentModel.from_policy(card, model.policy).to_bytes()
    agent = AgentModel.from_bytes(blob, card)
    metrics = evaluate(agent, data.held_out, config, periods_per_year(job.timeframe))
    episodes = env.episodes
    metrics.update(
        train_steps=float(job.total_timesteps),
        train_episodes=float(len(episodes)),
        train_mean_episode_reward=float(np.mean([e.reward for e in episodes])) if episodes else 0.0,
        train_rows=float(len(data.train.ts)),
        eval_rows=float(len(data.held_out.ts)),
        rows_dropped=float(data.dropped),
    )
    card = replace(card, metrics=metrics)
    return TrainResult(
        run_id=job.run_id,
        name=job.name,
        algorithm=job.algorithm,
        agent=blob,
        card=card.to_metadata(),
        metrics=metrics,
        episodes=[
            {k: getattr(e, k) for k in ("index", "symbol", "start_ts", "end_ts", "steps", "reward", "net_return", "cost", "trades")}
            for e in episodes
        ],
        rewards=reward_blocks(episodes, job.reward_every),
        seconds=seconds,
    )


def evaluate(agent: AgentModel, market: Market, config: EnvConfig, periods: float) -> dict[str, float]:
    """The agent, buy-and-hold and flat over ``market``; ``eval_*``, ``buy_and_hold_*``, ``flat_*`` and the comparisons."""

    def decide(row: np.ndarray, held: float) -> float:
        return float(agent.positions(row[None, :], np.array([held]))[0])

    out: dict[str, float] = {}
    for prefix, policy in (("eval", decide), ("buy_and_hold", constant(1.0)), ("flat", constant(0.0))):
        for k, v in performance(rollout(market, config, policy), periods).items():
            out[f"{prefix}_{k}"] = v
    out["sharpe"], out["return"] = out["eval_sharpe"], out["eval_return"]
    out["excess_return_vs_buy_and_hold"] = out["eval_return"] - out["buy_and_hold_return"]
    out["excess_return_vs_flat"] = out["eval_return"] - out["flat_return"]
    out["beats_buy_and_hold"] = float(out["eval_return"] > out["buy_and_hold_return"])
    out["beats_flat"] = float(out["eval_return"] > out["flat_return"])
    return out


def reward_blocks(episodes: Sequence[Any], every: int) -> dict[str, np.ndarray]:
    episode, step, ts, reward = [], [], [], []
    every = max(1, every)
    for e in episodes:
        r = np.asarray(e.rewards, dtype=np.float64)
        starts = np.arange(0, len(r), every)
        episode.extend([e.index] * len(starts))
        step.extend(starts.tolist())
        ts.extend(np.asarray(e.ts, dtype=np.int64)[starts].tolist())
        reward.extend(np.add.reduceat(r, starts).tolist() if len(r) else [])
    return {
        "episode": np.asarray(episode, dtype=np.int64),
        "step": np.asarray(step, dtype=np.int64),
        "ts": np.asarray(ts, dtype=np.int64),
        "reward": np.asarray(reward, dtype=np.float64),
    }
