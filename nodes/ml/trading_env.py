"""A trading environment (gymnasium) over feature rows and bar prices, for RL agents.

Time runs over the rows of a :class:`Market`: row ``t`` holds the features of bar ``t`` (known
when bar ``t`` closed), its close and its spread. At step ``t`` the agent sees row ``t``'s
features and the position it holds, and chooses the position to hold over the next bar; the
step's return is realized with bar ``t + 1``'s close::

    net_t = position_t * (close[t+1] / close[t] - 1) - |position_t - position_{t-1}| * spread[t] / 2 / close[t]

(the cost of a change is half the bar's mean spread per unit of position, in return terms,
times ``cost_multiplier``). Nothing of bar ``t + 1`` reaches the observation of step ``t``.

Actions: ``discrete`` is short / flat / long (``Discrete(3)``, index - 1 is the position: PPO,
A2C); ``continuous`` is a position in [-1, 1] (``Box``: SAC). Rewards: ``pnl`` (``net_t``),
``log_return`` (``log(1 + net_t)``), both times ``reward_scale``; ``sharpe``: the differential
Sharpe ratio of Moody & Saffell (1998) with moving moments ``A``, ``B`` of rate ``sharpe_eta``,
started at ``A = 0`` and ``B = sharpe_var0`` (the variance of the training period's bar returns,
so the first steps are not divided by zero), clipped to ``±reward_clip``.

An episode is ``episode_length`` steps from a start drawn with the environment's seeded
generator among every start that fits in a segment (``None``: a whole segment), so the same
data, configuration and seed give the same episodes. :func:`rollout` runs a decision function
over whole segments (the held-out evaluation and the buy-and-hold and flat baselines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from framework.errors import FxflowError

ActionKind = Literal["discrete", "continuous"]
RewardKind = Literal["pnl", "log_return", "sharpe"]
ACTIONS: tuple[str, ...] = ("discrete", "continuous")
REWARDS: tuple[str, ...] = ("pnl", "log_return", "sharpe")
DISCRETE_POSITIONS = (-1.0, 0.0, 1.0)


class InsufficientData(FxflowError, ValueError):
    """Too few rows for what was asked (an episode, a held-out period)."""


@dataclass(frozen=True, eq=False)
class Market:
    """Rows of one or more series, concatenated; each segment ``[start, end)`` is a run of
    consecutive bars of one symbol whose features are all finite numbers."""

    features: np.ndarray
    close: np.ndarray
    spread: np.ndarray
    ts: np.ndarray
    segments: tuple[tuple[int, int], ...]
    symbols: tuple[str, ...]
    """The symbol of each segment."""

    def __post_init__(self) -> None:
        n = len(self.ts)
        if self.features.ndim != 2 or self.features.shape[0] != n or len(self.close) != n or len(self.spread) != n:
            raise ValueError(f"market arrays disagree: features {self.features.shape}, {len(self.close)} closes, {len(self.spread)} spreads, {n} times")
        if len(self.symbols) != len(self.segments):
            raise ValueError(f"{len(self.segments)} segments but {len(self.symbols)} symbols")
        for start, end in self.segments:
            if not 0 <= start < end <= n:
                raise ValueError(f"segment [{start}, {end}) is outside the {n} rows")
        if not np.isfinite(self.features).all():
            i, j = map(int, np.argwhere(~np.isfinite(self.features))[0])
            raise ValueError(f"feature {j} of row {i} is {self.features[i, j]}: an environment takes finite features only")
        if not (np.isfinite(self.close).all() and (self.close > 0).all()):
            raise ValueError("closes must be finite and positive")
        if not (np.isfinite(self.spread).all() and (self.spread >= 0).all()):
            raise ValueError("spreads must be finite and non-negative")

    @property
    def width(self) -> int:
        return int(self.features.shape[1])

    @property
    def steps(self) -> int:
        """Steps in all (a segment of n rows has n - 1: the last row has no next bar)."""
        return sum(end - start - 1 for start, end in self.segments)

    def bar_returns(self) -> np.ndarray:
        """The return of every step (close to next close), segment by segment."""
        parts = [self.close[s + 1 : e] / self.close[s : e - 1] - 1.0 for s, e in self.segments]
        return np.concatenate(parts) if parts else np.empty(0)


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Feature scaling fitted on the training rows only: ``clip((x - mean) / std, ±clip)``."""

    mean: np.ndarray
    std: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, X: np.ndarray, clip: float = 10.0) -> Normalizer:
        mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
        std = X.std(axis=0) if len(X) else np.ones(X.shape[1])
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean.astype(np.float64), std.astype(np.float64), float(clip))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def to_params(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std], "clip": self.clip}

    @classmethod
    def from_params(cls, doc: Mapping[str, Any]) -> Normalizer:
        return cls(np.asarray(doc["mean"], dtype=np.float64), np.asarray(doc["std"], dtype=np.float64), float(doc["clip"]))


@dataclass(frozen=True)
class EnvConfig:
    action: ActionKind = "discrete"
    reward: RewardKind = "pnl"
    episode_length: int | None = 256
    """Steps per episode; ``None``: a whole segment."""
    reward_scale: float = 1e4
    """``pnl`` and ``log_return`` rewards in basis points: bar returns are ~1e-4."""
    sharpe_eta: float = 0.01
    sharpe_var0: float = 1e-8
    reward_clip: float = 10.0
    cost_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r}: one of {', '.join(ACTIONS)}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward {self.reward!r}: one of {', '.join(REWARDS)}")
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError("episode_length must be at least 1")
        if not 0 < self.sharpe_eta < 1:
            raise ValueError("sharpe_eta must be in (0, 1)")

    def to_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Episode:
    """One finished episode, as training records it."""

    index: int
    symbol: str
    start_ts: int
    end_ts: int
    steps: int = 0
    reward: float = 0.0
    net_return: float = 0.0
    cost: float = 0.0
    trades: int = 0
    rewards: list[float] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)


def action_position(action: Any, kind: ActionKind) -> float:
    """The position an action asks for."""
    if kind == "discrete":
        return DISCRETE_POSITIONS[int(action) if np.ndim(action) == 0 else int(np.asarray(action).reshape(-1)[0])]
    value = float(action[0]) if isinstance(action, np.ndarray) and action.ndim == 1 else float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
    return -1.0 if value < -1.0 else 1.0 if value > 1.0 else value


def position_action(position: float, kind: ActionKind) -> Any:
    """The action that asks for ``position`` (discrete: its sign)."""
    if kind == "discrete":
        return int(np.sign(position)) + 1
    return np.array([position], dtype=np.float32)


class TradingEnv(gym.Env):
    """See the module docstring. ``record=True`` keeps every finished :class:`Episode` in ``episodes``."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, market: Market, config: EnvConfig = EnvConfig(), normalizer: Normalizer | None = None, *, record: bool = False) -> None:
        super().__init__()
        self.market = market
        self.config = config
        self.normalizer = normalizer or Normalizer(np.zeros(market.width), np.ones(market.width), float("inf"))
        self.record = record
        self.episodes: list[Episode] = []
        bound = self.normalizer.clip if math.isfinite(self.normalizer.clip) else np.inf
        low = np.full(market.width + 1, -bound, dtype=np.float32)
        high = np.full(market.width + 1, bound, dtype=np.float32)
        low[-1], high[-1] = -1.0, 1.0
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        if config.action == "discrete":
            self.action_space: gym.spaces.Space[Any] = gym.spaces.Discrete(3)
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._obs = self.normalizer(market.features)
        self._cost = config.cost_multiplier * market.spread / 2.0 / market.close
        self._starts = self._episode_starts()
        self._t = self._end = self._left = 0
        self._segment = 0
        self._position = 0.0
        self._a = 0.0
        self._b = config.sharpe_var0
        self._episode: Episode | None = None

    def _episode_starts(self) -> list[tuple[int, int, int]]:
        """(segment, first start, number of starts) of every segment an episode fits in."""
        length = self.config.episode_length
        fits = []
        for k, (s, e) in enumerate(self.market.segments):
            steps = e - s - 1
            if steps >= 1 and (length is None or steps >= length):
                fits.append((k, s, 1 if length is None else steps - length + 1))
        if not fits:
            longest = max((e - s for s, e in self.market.segments), default=0)
            need = 2 if length is None else length + 1
            raise InsufficientData(
                f"too little data for an episode: the longest of {len(self.market.segments)} segment(s) of consecutive "
                f"valid rows has {longest} row(s), an episode of {length or 1} step(s) needs {need}"
            )
        return fits

    # --- gymnasium --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """A new episode, flat. ``options={"segment": k}`` starts at segment ``k``'s first row
        (``"start"``: another row of it) instead of a drawn start."""
        super().reset(seed=seed)
        options = options or {}
        if "segment" in options:
            k = int(options["segment"])
            s, e = self.market.segments[k]
            start = s + int(options.get("start", 0))
            steps = e - 1 - start if self.config.episode_length is None else min(self.config.episode_length, e - 1 - start)
            if steps < 1:
                raise InsufficientData(f"segment {k} has no step from row {start}")
        else:
            total = sum(n for _, _, n in self._starts)
            draw = int(self.np_random.integers(total))
            for k, first, n in self._starts:
                if draw < n:
                    start = first + draw
                    break
                draw -= n
            s, e = self.market.segments[k]
            steps = e - 1 - start if self.config.episode_length is None else self.config.episode_length
        self._segment, self._t, self._left = k, start, steps
        self._position = 0.0
        self._a, self._b = 0.0, self.config.sharpe_var0
        self._episode = Episode(len(self.episodes), self.market.symbols[k], int(self.market.ts[start]), int(self.market.ts[start])) if self.record else None
        return self._observation(), self._info(0.0, 0.0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._left <= 0:
            raise RuntimeError("step() after the episode ended: call reset()")
        t, m = self._t, self.market
        target = action_position(action, self.config.action)
        change = abs(target - self._position)
        cost = change * float(self._cost[t])
        net = target * (float(m.close[t + 1]) / float(m.close[t]) - 1.0) - cost
        reward = self._reward(net)
        self._position = target
        self._t, self._left = t + 1, self._left - 1
        truncated = self._left == 0
        episode = self._episode
        if episode is not None:
            episode.steps += 1
            episode.reward += reward
            episode.net_return += net
            episode.cost += cost
            episode.trades += change > 0
            episode.rewards.append(reward)
            episode.ts.append(int(m.ts[t]))
            episode.end_ts = int(m.ts[t + 1])
            if truncated:
                self.episodes.append(episode)
                self._episode = None
        return self._observation(), reward, False, truncated, self._info(net, cost)

    # --- internals ----------------------------------------------------------------------------

    def _reward(self, net: float) -> float:
        config = self.config
        if config.reward == "pnl":
            return net * config.reward_scale
        if config.reward == "log_return":
            return math.log(max(1.0 + net, 1e-12)) * config.reward_scale
        a, b, eta = self._a, self._b, config.sharpe_eta
        delta_a, delta_b = net - a, net * net - b
        variance = b - a * a
        d = (b * delta_a - 0.5 * a * delta_b) / variance**1.5 if variance > 1e-300 else 0.0
        self._a, self._b = a + eta * delta_a, b + eta * delta_b
        return max(-config.reward_clip, min(config.reward_clip, d))

    def _observation(self) -> np.ndarray:
        obs = np.empty(self.market.width + 1, dtype=np.float32)
        obs[:-1] = self._obs[self._t]
        obs[-1] = self._position
        return obs

    def _info(self, net: float, cost: float) -> dict[str, Any]:
        return {"ts": int(self.market.ts[self._t]), "position": self._position, "net_return": net, "cost": cost}


# --------------------------------------------------------------------------- evaluation

Decide = Callable[[np.ndarray, float], float]
"""(a row's raw features, the position held) -> the position to hold over the next bar."""


@dataclass(frozen=True)
class Rollout:
    net: np.ndarray
    positions: np.ndarray
    cost: np.ndarray
    ts: np.ndarray


def rollout(market: Market, config: EnvConfig, decide: Decide) -> Rollout:
    """Run ``decide`` over every segment of ``market`` from its first row to its last, flat at
    each segment's start; the steps are the environment's (same costs, same returns)."""
    env = TradingEnv(market, EnvConfig(**{**config.to_params(), "episode_length": None, "reward": "pnl"}))
    net: list[float] = []
    positions: list[float] = []
    costs: list[float] = []
    ts: list[int] = []
    for k, (s, e) in enumerate(market.segments):
        if e - s < 2:
            continue
        env.reset(options={"segment": k})
        position, done = 0.0, False
        for t in range(s, e - 1):
            target = float(np.clip(decide(market.features[t], position), -1.0, 1.0))
            _, _, _, done, info = env.step(position_action(target, config.action))
            position = info["position"]
            net.append(info["net_return"])
            costs.append(info["cost"])
            positions.append(position)
            ts.append(int(market.ts[t]))
        assert done
    return Rollout(np.asarray(net), np.asarray(positions), np.asarray(costs), np.asarray(ts, dtype=np.int64))


def performance(result: Rollout, periods_per_year: float) -> dict[str, float]:
    """Return (sum of the steps' net returns on a unit position), annualized Sharpe, maximum
    drawdown of the cumulative return, trades (position changes), exposure, cost, steps."""
    net = result.net
    steps = len(net)
    if steps == 0:
        return {"return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "trades": 0.0, "exposure": 0.0, "cost": 0.0, "steps": 0.0}
    equity = np.cumsum(net)
    drawdown = float(np.max(np.maximum.accumulate(np.concatenate([[0.0], equity]))[1:] - equity))
    std = float(net.std())
    sharpe = float(net.mean()) / std * math.sqrt(periods_per_year) if std > 1e-15 else 0.0
    changes = np.abs(np.diff(np.concatenate([[0.0], result.positions]))) > 0
    return {
        "return": float(equity[-1]),
        "sharpe": sharpe,
        "max_drawdown": drawdown,
        "trades": float(changes.sum()),
        "exposure": float(np.abs(result.positions).mean()),
        "cost": float(result.cost.sum()),
        "steps": float(steps),
    }


def constant(position: float) -> Decide:
    """A decision that always holds ``position`` (buy-and-hold: 1.0; flat: 0.0)."""

    def decide(features: np.ndarray, held: float) -> float:
        return position

    return decide


def market_from_rows(
    features: np.ndarray, close: np.ndarray, spread: np.ndarray, ts: np.ndarray, symbols: Sequence[str]
) -> tuple[Market, int]:
    """A :class:`Market` from rows sorted by (symbol, ts): segments are the runs of one symbol
    whose features, close and spread are all finite (a row that is not breaks the run and is
    left out, so no NaN or infinity ever reaches an agent). Returns the market and how many
    rows were left out."""
    features = np.asarray(features, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    spread = np.asarray(spread, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    symbols = np.asarray(symbols, dtype=object)
    valid = np.isfinite(features).all(axis=1) & np.isfinite(close) & (close > 0) & np.isfinite(spread) & (spread >= 0)
    keep = np.flatnonzero(valid)
    segments: list[tuple[int, int]] = []
    names: list[str] = []
    start = 0
    for i in range(1, len(keep) + 1):
        if i == len(keep) or keep[i] != keep[i - 1] + 1 or symbols[keep[i]] != symbols[keep[i - 1]]:
            segments.append((start, i))
            names.append(str(symbols[keep[start]]))
            start = i
    market = Market(features[keep], close[keep], spread[keep], ts[keep], tuple(segments), tuple(names))
    return market, int(len(ts) - len(keep))
