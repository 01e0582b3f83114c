"""The RL trading environment (nodes/ml/trading_env.py): the env checkers, step semantics (costs, rewards, episode
end, seeded resets, no look-ahead), the rows it accepts, and the rollouts the evaluation runs."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from nodes.ml.trading_env import (
    EnvConfig,
    InsufficientData,
    Market,
    Normalizer,
    TradingEnv,
    constant,
    market_from_rows,
    performance,
    rollout,
)

LONG, FLAT, SHORT = 2, 1, 0
CLOSE = np.array([1.00, 1.01, 1.00, 1.02, 1.02, 1.03])
SPREAD = np.array([0.002, 0.001, 0.004, 0.002, 0.002, 0.001])


def market(n: int = 400, seed: int = 0, symbols: tuple[str, ...] = ("EURUSD",)) -> Market:
    rng = np.random.default_rng(seed)
    rows = []
    for symbol in symbols:
        close = 1.1 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        X = np.column_stack([np.diff(np.log(close), prepend=np.log(close[0])) * 1e3, rng.normal(size=n), rng.normal(size=n) * 50 + 7])
        rows.append((X, close, np.full(n, 1.2e-4), np.arange(n, dtype=np.int64) * 60_000, [symbol] * n))
    m, dropped = market_from_rows(*(np.concatenate([r[k] for r in rows]) for k in range(5)))
    assert dropped == 0
    return m


def small(features: np.ndarray | None = None, close: np.ndarray = CLOSE, spread: np.ndarray = SPREAD) -> Market:
    n = len(close)
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2) if features is None else features
    return Market(X, close.astype(np.float64), spread.astype(np.float64), np.arange(n, dtype=np.int64) * 60_000, ((0, n),), ("EURUSD",))


def config(**kw: Any) -> EnvConfig:
    return EnvConfig(**{"reward_scale": 1.0, "episode_length": None, **kw})


# --------------------------------------------------------------------------- the checkers


@pytest.mark.parametrize("action", ["discrete", "continuous"])
@pytest.mark.parametrize("reward", ["pnl", "log_return", "sharpe"])
def test_the_environment_passes_gymnasiums_and_stable_baselines3s_checkers(action: str, reward: str) -> None:
    m = market()
    cfg = EnvConfig(action=action, reward=reward, episode_length=64, sharpe_var0=float(m.bar_returns().var()))  # type: ignore[arg-type]
    gymnasium_check_env(TradingEnv(m, cfg, Normalizer.fit(m.features)), skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning of SB3's checker is a failure here
        sb3_check_env(TradingEnv(m, cfg, Normalizer.fit(m.features)), warn=True)


# --------------------------------------------------------------------------- step semantics


def test_a_step_earns_the_next_bars_return_on_the_new_position_less_half_the_spread_per_unit_changed() -> None:
    env = TradingEnv(small(), config())
    obs, info = env.reset(options={"segment": 0})
    assert obs[-1] == 0.0 and info["position"] == 0.0
    expected = []
    previous = 0.0
    for t, (action, position) in enumerate([(LONG, 1.0), (LONG, 1.0), (SHORT, -1.0), (FLAT, 0.0), (SHORT, -1.0)]):
        cost = abs(position - previous) * SPREAD[t] / 2 / CLOSE[t]
        expected.append(position * (CLOSE[t + 1] / CLOSE[t] - 1) - cost)
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == pytest.approx(expected[-1], abs=1e-15)
        assert info["cost"] == pytest.approx(cost, abs=1e-15) and info["position"] == position == obs[-1]
        assert not terminated and truncated == (t == 4)
        previous = position
    assert expected[0] == pytest.approx(0.01 - 0.001)  # long from flat: +1% less half of 0.002 on 1.00
    assert expected[2] == pytest.approx(-0.02 - 2 * 0.002)  # long to short: two units of half of 0.004


def test_continuous_positions_are_clipped_to_one_and_cost_what_they_change() -> None:
    env = TradingEnv(small(), config(action="continuous"))
    env.reset(options={"segment": 0})
    _, reward, *_ , info = env.step(np.array([0.5], dtype=np.float32))
    assert info["position"] == 0.5 and reward == pytest.approx(0.5 * 0.01 - 0.5 * 0.001)
    _, reward, *_, info = env.step(np.array([3.0], dtype=np.float32))
    assert info["position"] == 1.0 and reward == pytest.approx(1.0 * (1.0 / 1.01 - 1) - 0.5 * 0.0005 / 1.01)


def test_cost_multiplier_scales_the_costs_and_zero_removes_them() -> None:
    rewards = {}
    for k in (0.0, 1.0, 3.0):
        env = TradingEnv(small(), config(cost_multiplier=k))
        env.reset(options={"segment": 0})
        rewards[k] = env.step(LONG)[1]
    assert rewards[0.0] == pytest.approx(0.01)
    assert rewards[3.0] == pytest.approx(0.01 - 3 * 0.001)


def test_log_return_reward_is_the_log_of_the_net_step_return_times_the_scale() -> None:
    env = TradingEnv(small(), config(reward="log_return", reward_scale=1e4))
    env.reset(options={"segment": 0})
    assert env.step(LONG)[1] == pytest.approx(math.log(1 + 0.009) * 1e4)
    assert env.step(SHORT)[1] == pytest.approx(math.log(1 + (-(1.0 / 1.01 - 1)) - 2 * 0.0005 / 1.01) * 1e4)


def test_sharpe_reward_is_moody_and_saffells_differential_sharpe_ratio() -> None:
    eta, var0 = 0.1, 1e-4
    env = TradingEnv(small(), config(reward="sharpe", sharpe_eta=eta, sharpe_var0=var0, reward_clip=1e9))
    env.reset(options={"segment": 0})
    a, b = 0.0, var0
    actions = [LONG, SHORT, SHORT, FLAT, LONG]
    previous = 0.0
    for t, action in enumerate(actions):
        position = float(action - 1)
        net = position * (CLOSE[t + 1] / CLOSE[t] - 1) - abs(position - previous) * SPREAD[t] / 2 / CLOSE[t]
        d = (b * (net - a) - 0.5 * a * (net * net - b)) / (b - a * a) ** 1.5
        assert env.step(action)[1] == pytest.approx(d, rel=1e-12)
        a, b = a + eta * (net - a), b + eta * (net * net - b)
        previous = position
    clipped = TradingEnv(small(), config(reward="sharpe", sharpe_var0=1e-12, reward_clip=2.5))
    clipped.reset(options={"segment": 0})
    assert clipped.step(LONG)[1] == 2.5  # 0.009 over a 1e-6 deviation, clipped


def test_an_episode_ends_truncated_after_its_length_and_must_be_reset() -> None:
    env = TradingEnv(market(), EnvConfig(episode_length=7))
    env.reset(seed=3)
    ends = [env.step(FLAT)[2:4] for _ in range(7)]
    assert ends == [(False, False)] * 6 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(FLAT)
    obs, _ = env.reset()
    assert obs[-1] == 0.0  # flat again


def test_reset_with_a_seed_draws_the_same_episodes_and_another_seed_others() -> None:
    def starts(seed: int) -> list[int]:
        env = TradingEnv(market(symbols=("EURUSD", "XAUUSD")), EnvConfig(episode_length=20))
        out = [env.reset(seed=seed)[1]["ts"]]
        out += [env.reset()[1]["ts"] for _ in range(9)]
        return out

    assert starts(1) == starts(1)
    assert starts(1) != starts(2)
    assert len(set(starts(1))) > 5


def test_episodes_never_cross_a_segment_and_every_start_that_fits_can_be_drawn() -> None:
    m = small(close=np.array([1.0, 1.1, 1.2, 1.3, 1.4]), spread=np.zeros(5))
    m = Market(m.features, m.close, m.spread, m.ts, ((0, 3), (3, 5)), ("EURUSD", "XAUUSD"))
    env = TradingEnv(m, EnvConfig(episode_length=1))
    seen = set()
    for seed in range(60):
        _, info = env.reset(seed=seed)
        seen.add(info["ts"])
        env.step(LONG)
    assert seen == {0, 60_000, 180_000}  # starts 0, 1 of the first segment and 3 of the second; never a segment's last row


def test_the_observation_at_a_step_holds_only_that_bars_features_and_its_reward_comes_from_the_next_bar() -> None:
    base = market(n=50)
    j = 20  # the second market differs from row j on: features and closes
    X2, close2 = base.features.copy(), base.close.copy()
    X2[j:] += 5.0
    close2[j:] *= 1.05
    other = Market(X2, close2, base.spread, base.ts, base.segments, base.symbols)
    norm = Normalizer.fit(base.features[:j])
    runs = []
    for m in (base, other):
        env = TradingEnv(m, EnvConfig(episode_length=None, reward_scale=1.0), norm)
        obs, _ = env.reset(options={"segment": 0})
        observations, rewards = [obs], []
        for t in range(30):
            obs, reward, *_ = env.step([LONG, SHORT, FLAT][t % 3])
            observations.append(obs)
            rewards.append(reward)
        runs.append((np.array(observations), np.array(rewards)))
    (obs_a, rew_a), (obs_b, rew_b) = runs
    assert np.array_equal(obs_a[:j], obs_b[:j]) and not np.array_equal(obs_a[j], obs_b[j])
    assert np.array_equal(obs_a[5, :-1], norm(base.features[5]))
    assert np.array_equal(rew_a[: j - 1], rew_b[: j - 1])  # step t uses closes t and t+1 only
    assert rew_a[j - 1] != rew_b[j - 1]  # the action at j-1 is realized with bar j's close


# --------------------------------------------------------------------------- the rows it takes


def test_rows_with_a_missing_or_infinite_value_are_left_out_and_split_their_series() -> None:
    n = 10
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    close = np.linspace(1.0, 1.1, n)
    spread = np.full(n, 1e-4)
    spread[5] = np.nan
    symbols = ["EURUSD"] * 6 + ["XAUUSD"] * 4
    m, dropped = market_from_rows(X, close, spread, np.arange(n) * 60_000, symbols)
    assert dropped == 3
    assert m.segments == ((0, 3), (3, 4), (4, 5), (5, 7)) and m.symbols == ("EURUSD", "EURUSD", "XAUUSD", "XAUUSD")
    assert np.isfinite(m.features).all() and m.steps == 2 + 0 + 0 + 1
    with pytest.raises(ValueError, match="finite features only"):
        Market(X, close, np.full(n, 1e-4), np.arange(n) * 60_000, ((0, n),), ("EURUSD",))


def test_too_little_data_for_an_episode_is_a_clear_error() -> None:
    with pytest.raises(InsufficientData, match=r"too little data for an episode: the longest of 1 segment\(s\) .* has 6 row\(s\), an episode of 10 step\(s\) needs 11"):
        TradingEnv(small(), EnvConfig(episode_length=10))
    m = small()
    one_row = Market(m.features[:1], m.close[:1], m.spread[:1], m.ts[:1], ((0, 1),), ("EURUSD",))
    with pytest.raises(InsufficientData):
        TradingEnv(one_row, EnvConfig(episode_length=None))


# --------------------------------------------------------------------------- rollouts and baselines


def test_buy_and_hold_pays_half_the_spread_once_and_flat_earns_nothing() -> None:
    m = small()
    hold = performance(rollout(m, config(), constant(1.0)), 252.0)
    assert hold["return"] == pytest.approx(float(np.sum(CLOSE[1:] / CLOSE[:-1] - 1)) - 0.001)
    assert hold["trades"] == 1 and hold["exposure"] == 1 and hold["steps"] == 5 and hold["cost"] == pytest.approx(0.001)
    flat = performance(rollout(m, config(), constant(0.0)), 252.0)
    assert flat == {"return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "trades": 0.0, "exposure": 0.0, "cost": 0.0, "steps": 5.0}


def test_a_rollout_runs_every_segment_from_flat_with_the_positions_it_decides() -> None:
    m = market(n=30, symbols=("EURUSD", "XAUUSD"))
    seen: list[float] = []

    def decide(row: np.ndarray, held: float) -> float:
        seen.append(held)
        return 1.0 if row[0] > 0 else -1.0

    result = rollout(m, EnvConfig(), decide)
    assert len(result.net) == m.steps == 58 and seen[0] == 0.0 and seen[29] == 0.0  # flat at each segment's start
    expected = np.where(m.features[:, 0] > 0, 1.0, -1.0)
    assert np.array_equal(result.positions, np.concatenate([expected[:29], expected[30:59]]))
    equity = np.cumsum(result.net)
    assert performance(result, 252.0)["max_drawdown"] == pytest.approx(float(np.max(np.maximum.accumulate(np.r_[0, equity])[1:] - equity)))
