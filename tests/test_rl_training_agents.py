"""RL agents as models (nodes/ml/agents.py) and one training run (nodes/rl_training/worker.py), without the runtime:
the train → bytes → load round trip, what a load refuses, reproducibility, the held-out evaluation."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from nodes.ml.agents import AgentModel
from nodes.ml.model import FeatureShapeError, ModelCard, ModelError, load_model
from nodes.ml.trading_env import EnvConfig, InsufficientData, Normalizer, TradingEnv, market_from_rows
from nodes.rl_training import worker

torch.set_num_threads(1)
TINY: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 1},
    "a2c": {"n_steps": 8},
    "sac": {"learning_starts": 32, "batch_size": 16, "buffer_size": 1000},
}
STEPS = {"ppo": 128, "a2c": 96, "sac": 64}


def market(n: int = 300, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    X = np.column_stack([np.diff(np.log(close), prepend=np.log(close[0])) * 1e3, rng.normal(size=n), rng.normal(size=n) * 20 + 3])
    return market_from_rows(X, close, np.full(n, 1.2e-4), np.arange(n, dtype=np.int64) * 300_000, ["EURUSD"] * n)[0]


def trained(algorithm: str, seed: int = 1) -> tuple[AgentModel, Any]:
    from stable_baselines3 import A2C, PPO, SAC

    m = market()
    norm = Normalizer.fit(m.features)
    action = "continuous" if algorithm == "sac" else "discrete"
    env = TradingEnv(m, EnvConfig(action=action, episode_length=32), norm)  # type: ignore[arg-type]
    cls = {"ppo": PPO, "a2c": A2C, "sac": SAC}[algorithm]
    model = cls("MlpPolicy", env, seed=seed, device="cpu", policy_kwargs={"net_arch": [16, 16], "activation_fn": torch.nn.Tanh}, **TINY[algorithm])
    model.learn(STEPS[algorithm])
    card = ModelCard(
        kind=algorithm, feature_set="test-v1", features=("a", "b", "c"), timeframe="5m", symbols=("EURUSD",), seed=seed,
        run_id=f"{algorithm}-test", uses_position=True,
        params={"algorithm": algorithm, "policy": {"net_arch": [16, 16], "activation": "tanh"}, "observation": norm.to_params(), "deadband": 0.1},
    )  # fmt: skip
    return AgentModel.from_policy(card, model.policy), model


@pytest.mark.parametrize("algorithm", ["ppo", "a2c", "sac"])
def test_an_agent_written_to_bytes_and_loaded_acts_exactly_as_trained(algorithm: str) -> None:
    agent, sb3 = trained(algorithm)
    blob = agent.to_bytes()
    loaded = load_model(blob, agent.card)
    assert isinstance(loaded, AgentModel) and loaded.policy is not agent.policy
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 3)) * np.array([1.0, 1.0, 20.0]) + np.array([0.0, 0.0, 3.0])
    held = rng.choice([-1.0, 0.0, 1.0], size=200) if algorithm != "sac" else rng.uniform(-1, 1, size=200)
    a, b = agent.predict(X, held), loaded.predict(X, held)
    assert np.array_equal(a.side, b.side) and np.array_equal(a.confidence, b.confidence)
    assert np.array_equal(agent.positions(X, held), loaded.positions(X, held))
    # the same decision SB3's own deterministic predict makes on the same observation
    actions, _ = sb3.predict(agent.observations(X, held), deterministic=True)
    expected = actions.astype(np.float64) - 1.0 if algorithm != "sac" else actions.reshape(-1).astype(np.float64)
    assert np.allclose(loaded.positions(X, held), expected, atol=1e-6)
    assert loaded.to_bytes() == blob  # the loaded agent writes the same bytes back
    if algorithm != "sac":
        assert len(set(a.side.tolist())) >= 1 and ((a.confidence >= 1 / 3 - 1e-9) & (a.confidence <= 1)).all()


def test_the_position_is_part_of_what_an_agent_sees() -> None:
    agent, _ = trained("ppo")
    X = np.repeat(np.random.default_rng(3).normal(size=(1, 3)), 3, axis=0)
    obs = agent.observations(X, np.array([-1.0, 0.0, 1.0]))
    assert obs[:, -1].tolist() == [-1.0, 0.0, 1.0] and np.array_equal(obs[0, :-1], obs[2, :-1])
    assert agent.predict(X).side.tolist() == agent.predict(X, np.zeros(3)).side.tolist()  # no position: flat


def test_sac_positions_inside_the_deadband_are_flat_signals() -> None:
    agent, _ = trained("sac")

    class Fixed(AgentModel):
        def _outputs(self, X: np.ndarray, position: np.ndarray | None) -> np.ndarray:
            return np.array([-0.8, -0.05, 0.0, 0.04, 0.5])

    fixed = Fixed(agent.card, agent.policy)
    p = fixed.predict(np.zeros((5, 3)))
    assert p.side.tolist() == [-1, 0, 0, 0, 1]
    assert p.confidence == pytest.approx([0.8, 0.5, 1.0, 0.6, 0.5])


class Payload:
    """Not a tensor: what a weights-only load must refuse to rebuild."""


def test_a_load_reads_tensors_only_and_refuses_what_does_not_fit_the_card() -> None:
    agent, _ = trained("ppo")
    with pytest.raises(ModelError, match="its weights cannot be read"):
        AgentModel.from_bytes(b"not a torch file", agent.card)
    pickled = io.BytesIO()
    torch.save({"policy": Payload()}, pickled)
    with pytest.raises(ModelError, match="its weights cannot be read"):
        AgentModel.from_bytes(pickled.getvalue(), agent.card)
    wider = ModelCard.from_metadata({**agent.card.to_metadata(), "params": {**agent.card.params, "policy": {"net_arch": [32, 32], "activation": "tanh"}}})
    with pytest.raises(ModelError, match="do not fit the network its card describes"):
        AgentModel.from_bytes(agent.to_bytes(), wider)
    with pytest.raises(ModelError, match="lacks params.observation"):
        AgentModel.from_bytes(agent.to_bytes(), ModelCard.from_metadata({**agent.card.to_metadata(), "params": {"algorithm": "ppo"}}))
    with pytest.raises(FeatureShapeError, match="rows of 3 features"):
        agent.predict(np.zeros((2, 4)))


# --------------------------------------------------------------------------- one training run (the worker)


def rows(n: int = 240, seed: int = 4) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    rng = np.random.default_rng(seed)
    features: dict[str, list[Any]] = {"symbol": [], "ts": [], "feature_set": [], "values": []}
    bars: dict[str, list[Any]] = {"symbol": [], "ts": [], "close": [], "spread_mean": []}
    for symbol, p0 in (("EURUSD", 1.1), ("XAUUSD", 2500.0)):
        close = p0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        for i in range(n):
            ts = 1_700_000_000_000 + i * 300_000
            values = {"r": float(np.log(close[i] / close[i - 1]) * 1e3) if i else None, "z": float(rng.normal())}
            features["symbol"].append(symbol), features["ts"].append(ts), features["feature_set"].append("fs1")
            features["values"].append(orjson.dumps(values).decode() if i % 2 else values)  # table text or a received dict
            bars["symbol"].append(symbol), bars["ts"].append(ts), bars["close"].append(float(close[i]))
            bars["spread_mean"].append(None if symbol == "XAUUSD" else 1e-4)
    return features, bars


def job(**kw: Any) -> worker.TrainJob:
    features, bars = rows()
    base = dict(run_id="r", name="agent", algorithm="ppo", total_timesteps=128, timeframe="5m", features_rows=features, bar_rows=bars,
                fallback_spread={"XAUUSD": 0.3}, hyperparams=TINY["ppo"], net_arch=(16,), env={"episode_length": 32}, seed=3)  # fmt: skip
    return worker.TrainJob(**{**base, **kw})


def test_a_run_is_reproducible_from_its_data_and_seed() -> None:
    a, b, c = worker.train(job()), worker.train(job()), worker.train(job(seed=4))
    assert a.agent == b.agent and a.metrics == b.metrics and a.episodes == b.episodes
    assert all(np.array_equal(a.rewards[k], b.rewards[k]) for k in a.rewards)
    assert c.agent != a.agent


def test_a_run_trains_on_the_time_before_the_cut_and_evaluates_on_the_rest() -> None:
    result = worker.train(job(eval_fraction=0.25))
    card = ModelCard.from_metadata(result.card)
    p, m = card.params, result.metrics
    assert card.features == ("r", "z") and card.feature_set == "fs1" and card.symbols == ("EURUSD", "XAUUSD") and card.uses_position
    assert card.train_end_ms < p["eval_start_ms"] == 1_700_000_000_000 + 180 * 300_000
    assert m["rows_dropped"] == 2 and m["train_rows"] == 2 * 180 - 2 and m["eval_rows"] == 2 * 60
    assert m["eval_steps"] == m["buy_and_hold_steps"] == 2 * 59
    assert m["flat_return"] == 0 and m["beats_flat"] == float(m["eval_return"] > 0)
    # the scaling is the training rows' alone
    data = worker.prepare(job(eval_fraction=0.25))
    assert p["observation"]["mean"] == pytest.approx(data.train.features.mean(axis=0).tolist())
    # XAUUSD bars carry no spread: the fallback (0.3) prices its costs; buy-and-hold pays half of it once per symbol
    assert m["buy_and_hold_cost"] == pytest.approx(0.5e-4 / data.held_out.close[0] + 0.15 / data.held_out.close[60])
    assert len(result.episodes) == m["train_episodes"] == 4 and all(e["steps"] == 32 for e in result.episodes)
    assert len(result.rewards["reward"]) == 128 and result.rewards["step"][:3].tolist() == [0, 1, 2]
    blocks = worker.reward_blocks([type("E", (), {"index": 0, "rewards": [1.0, 2.0, 3.0], "ts": [10, 20, 30]})()], 2)
    assert blocks["reward"].tolist() == [3.0, 3.0] and blocks["ts"].tolist() == [10, 30]
    assert math.isfinite(m["eval_sharpe"])


def test_mixed_feature_sets_unknown_algorithms_and_short_data_are_clear_errors() -> None:
    features, bars = rows()
    mixed = {**features, "feature_set": ["fs1"] * 300 + ["fs2"] * (len(features["ts"]) - 300)}
    with pytest.raises(worker.TrainingError, match="mix feature sets fs1, fs2; set the service's feature_set"):
        worker.prepare(job(features_rows=mixed))
    assert worker.prepare(job(features_rows=mixed, feature_set="fs2")).feature_set == "fs2"
    with pytest.raises(worker.TrainingError, match="unknown RL algorithm 'dqn'"):
        worker.train(job(algorithm="dqn"))
    with pytest.raises(InsufficientData, match="too little data for an episode"):
        worker.train(job(env={"episode_length": 500}))
    with pytest.raises(worker.TrainingError, match="ppo rejects its hyperparams.*learning_rat"):
        worker.train(job(hyperparams={"learning_rat": 0.1}))
