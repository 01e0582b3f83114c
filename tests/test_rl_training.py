"""finrl-training-service through the real runtime (framework.testing: the demo profile, in-process bus and log,
embedded ClickHouse, simulated clock, a spawned worker process): agents trained on synthetic features, their tables,
events, artifacts and promotion decisions, reproducibility, and the bad-input cases.

The features are synthetic (seeded random walks → a few returns, a z-score with a warm-up, the hour), so these tests
do not depend on the feature set of feature-engineering-service. History is written into ml_features and
historical_aggregates before the service starts (it counts it), newer rows arrive as messages (it holds them).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framework.artifacts import LocalBlobs
from framework.lint import lint
from framework.registry import Registry
from framework.testing import contracts, load, make_runtime, query, recording_bus
from nodes.ml.agents import AgentModel
from nodes.ml.model import ModelCard, load_model

SERVICE = "finrl-training-service"
S = f"topology.services.{SERVICE}"
T0 = 1_793_145_600_000  # 2026-10-28T00:00Z
TF = "5m"
TF_MS = 300_000
FS = "test-v1"
SYMBOLS = ("EURUSD", "XAUUSD")
HISTORY = 260  # rows per symbol in the tables before the service starts
LIVE = 12  # rows per symbol that arrive as messages
NULL_AT = 150  # a row whose ret_5 is null (besides the z-score's warm-up of 19 rows)
TIMEOUT = 120.0
STATUS = contracts().resolve("training_status.v1")
TINY_PPO = {"algorithm": "ppo", "total_timesteps": 128, "net_arch": [16], "hyperparams": {"n_steps": 64, "batch_size": 32, "n_epochs": 1}}
TINY_SAC = {"algorithm": "sac", "total_timesteps": 96, "net_arch": [16], "reward": "sharpe",
            "hyperparams": {"learning_starts": 32, "batch_size": 16, "buffer_size": 1000}}  # fmt: skip


def synthetic(n: int, seed: int = 11) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """features.v1 rows and bar.v1 bars of SYMBOLS, n bars each, in time order."""
    rng = np.random.default_rng(seed)
    features: list[dict[str, Any]] = []
    bars: list[dict[str, Any]] = []
    for symbol, p0, spread in (("EURUSD", 1.08, 0.00012), ("XAUUSD", 2500.0, 0.3)):
        close = p0 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, n)))
        log_ret = np.diff(np.log(close), prepend=np.log(close[0]))
        for i in range(n):
            ts = T0 + i * TF_MS
            window = close[max(0, i - 19) : i + 1]
            hour = (ts // 3_600_000) % 24
            values = {
                "ret_1": float(log_ret[i] * 1e3),
                "ret_5": None if i == NULL_AT else float(log_ret[max(0, i - 4) : i + 1].sum() * 1e3),
                "zscore_20": float((close[i] - window.mean()) / (window.std() + 1e-12)) if i >= 19 else None,
                "hour_sin": math.sin(2 * math.pi * hour / 24),
                "hour_cos": math.cos(2 * math.pi * hour / 24),
            }
            features.append({"symbol": symbol, "timeframe": TF, "ts": ts, "feature_set": FS, "values": values})
            c = float(round(close[i], 5))
            bars.append({
                "symbol": symbol, "timeframe": TF, "ts": ts, "ts_close": ts + TF_MS, "open": c, "high": c, "low": c, "close": c,
                "volume": 10.0, "tick_count": 10, "spread_mean": spread if i % 4 else None, "spread_min": None, "spread_max": None,
                "source": "test", "complete": True,
            })  # fmt: skip
    order = sorted(range(len(features)), key=lambda k: (features[k]["ts"], features[k]["symbol"]))
    return [features[k] for k in order], [bars[k] for k in order]


def params(agents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "timeframe": TF, "symbols": list(SYMBOLS), "min_rows": 200, "retrain_every": "1d", "window": "30d",
        "env": {"episode_length": 32}, "eval_fraction": 0.25, "seed": 5, "agents": agents, **extra,
    }  # fmt: skip


def configure(loaded: Any, values: dict[str, Any]) -> None:
    """The service's params replaced whole (a Hydra override merges the agents with the declared ones)."""
    services = loaded.topology.services
    services[SERVICE] = services[SERVICE].model_copy(update={"params": values})


async def seed_history(tmp_path: Path, rows: list[dict[str, Any]], bars: list[dict[str, Any]]) -> None:
    """Write history into the tables the way the feature service and the downloader would have, before the service runs."""
    loaded = load(tmp_path, f"pairs=[{','.join(SYMBOLS)}]", f"{S}.enabled=true")
    configure(loaded, params({}))
    rt = make_runtime(loaded, tmp_path, only=[SERVICE])
    await rt.start()
    store = rt.stores["clickhouse"]
    await store.insert("ml_features", [{**r, "msg_id": None, "cause_id": None} for r in rows])
    await store.insert("historical_aggregates", bars)
    await rt.stop()


async def run_service(
    tmp_path: Path, agents: dict[str, Any], *, tables: int = 0, live: int = HISTORY + LIVE, runs: int | None = None, **extra: Any
) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """The service on ``tables`` rows per symbol written into the tables before it starts, then ``live`` more as messages
    (each bar, then its feature row, at its close); returns once ``runs`` runs (default: one per agent) have ended."""
    rows, bars = synthetic(tables + live)
    cut = len(SYMBOLS) * tables
    if tables:
        await seed_history(tmp_path, rows[:cut], bars[:cut])
    loaded = load(tmp_path, f"pairs=[{','.join(SYMBOLS)}]", f"{S}.enabled=true")
    configure(loaded, params(agents, **extra))
    bus, got = await recording_bus("training.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    try:
        for row, bar in zip(rows[cut:], bars[cut:]):
            await rt.clock.wait_until(bar["ts_close"])
            await bus.publish(f"bars.{bar['symbol']}.{TF}", bar)
            await bus.publish(f"features.{row['symbol']}.{TF}", row)
        await asyncio.wait_for(_until(lambda: _settled(got, len(agents) if runs is None else runs)), TIMEOUT)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    return rt, got


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.05)


def _settled(got: list[tuple[str, dict[str, Any]]], runs: int) -> bool:
    done = [m for s, m in got if s.startswith(("training.rl.completed.", "training.rl.failed."))]
    return len(done) >= runs


def statuses(got: list[tuple[str, dict[str, Any]]], status: str) -> list[dict[str, Any]]:
    return [m for s, m in got if s.startswith(f"training.rl.{status}.")]


# --------------------------------------------------------------------------- a run end to end


async def test_agents_are_trained_evaluated_stored_and_recorded(tmp_path: Path) -> None:
    rt, got = await run_service(tmp_path, {"tiny-ppo": TINY_PPO, "tiny-sac": TINY_SAC}, tables=HISTORY, live=LIVE, min_rows=HISTORY + 4)
    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert m["errors"] == 0 and m["dead_lettered"] == 0

    started, completed = statuses(got, "started"), statuses(got, "completed")
    assert [e["model_type"] for e in started] == ["ppo", "sac"] and len(completed) == 2 and not statuses(got, "failed")
    for subject, event in got:
        assert subject == f"training.rl.{event['status']}.{event['run_id']}"
        assert event["kind"] == "rl" and STATUS.validate(event) is None
    by_run = {e["run_id"]: e for e in completed}
    assert set(by_run) == {e["run_id"] for e in started}
    # due once both symbols have min_rows: the tables' history and 4 rows held from the messages each; the cut is
    # the close of the 4th live bar (2026-10-28T22:00Z)
    assert all(run.split("-")[2] == "20261028T2200" for run in by_run)

    for run_id, event in by_run.items():
        metrics = event["metrics"]
        assert metrics["flat_return"] == 0.0 and metrics["flat_sharpe"] == 0.0
        assert metrics["buy_and_hold_trades"] == 1.0 and metrics["buy_and_hold_exposure"] == 1.0
        assert metrics["eval_steps"] == metrics["buy_and_hold_steps"] > 0
        assert metrics["excess_return_vs_buy_and_hold"] == pytest.approx(metrics["eval_return"] - metrics["buy_and_hold_return"])
        # 19 warm-up rows and the null ret_5 per symbol never reach an agent: left out, and counted
        assert metrics["rows_dropped"] == 2 * 20
        assert metrics["train_rows"] + metrics["eval_rows"] + metrics["rows_dropped"] == 2 * (HISTORY + 4)
        episodes = [mm for s, mm in got if s == f"training.rl.episode.{run_id}"]
        assert len(episodes) == metrics["train_episodes"] > 0
        assert [e["episode"] for e in episodes] == list(range(len(episodes)))
        assert all(e["metrics"]["steps"] == 32 for e in episodes)

    rows = await query(tmp_path, "SELECT run_id, status, model_type FROM training_runs ORDER BY run_id, status")
    assert {(r["run_id"], r["status"]) for r in rows} == {(run, s) for run in by_run for s in ("started", "completed")}
    eps = await query(tmp_path, "SELECT run_id, episode, metrics FROM training_episodes ORDER BY run_id, episode")
    rewards = await query(tmp_path, "SELECT run_id, episode, step, ts, reward FROM reward_history ORDER BY run_id, episode, step")
    for run_id, event in by_run.items():
        assert len([r for r in eps if r["run_id"] == run_id]) == event["metrics"]["train_episodes"]
        mine = [r for r in rewards if r["run_id"] == run_id]
        assert len(mine) == 32 * event["metrics"]["train_episodes"]  # one row per step (reward_every: 1)
        per_episode: dict[int, float] = {}
        for r in mine:
            per_episode[r["episode"]] = per_episode.get(r["episode"], 0.0) + r["reward"]
        for r in [r for r in eps if r["run_id"] == run_id]:
            assert per_episode[r["episode"]] == pytest.approx(_json(r["metrics"])["reward"])

    checkpoints = await query(tmp_path, "SELECT * FROM agent_checkpoints ORDER BY algorithm")
    assert [(c["name"], c["version"], c["algorithm"], c["artifact"]) for c in checkpoints] == [
        ("tiny-ppo", 1, "ppo", "tiny-ppo:1"), ("tiny-sac", 1, "sac", "tiny-sac:1")]  # fmt: skip
    for c in checkpoints:
        assert c["symbols"] == "EURUSD,XAUUSD" and c["timeframe"] == TF and c["feature_set"] == FS
        assert c["train_start"] < c["train_end"] < c["eval_start"] <= c["eval_end"]
        assert _json(c["metrics"])["eval_sharpe"] == pytest.approx(by_run[c["run_id"]]["metrics"]["eval_sharpe"])

    # the artifact is the agent: its card rebuilds it, and it predicts from features and a position
    artifacts = await query(tmp_path, "SELECT name, version, sha256, kind, metadata FROM artifacts ORDER BY name, version")
    stored = {a["name"]: a for a in artifacts}
    blobs = LocalBlobs(tmp_path / "artifacts")
    for c in checkpoints:
        a = stored[c["name"]]
        assert (a["version"], a["sha256"], a["kind"]) == (c["version"], c["sha256"], c["algorithm"])
        card = ModelCard.from_metadata(_json(a["metadata"]))
        assert card.uses_position and card.feature_set == FS and card.run_id == c["run_id"] and card.symbols == SYMBOLS
        assert card.features == ("hour_cos", "hour_sin", "ret_1", "ret_5", "zscore_20")
        model = load_model(blobs.read(a["sha256"], c["name"]), card)
        assert isinstance(model, AgentModel)
        prediction = model.predict(np.zeros((3, 5)), np.array([-1.0, 0.0, 1.0]))
        assert set(prediction.side.tolist()) <= {-1, 0, 1} and ((0 <= prediction.confidence) & (prediction.confidence <= 1)).all()

    decisions = await query(tmp_path, "SELECT name, version, decision, reason, metric, by FROM model_promotions ORDER BY name")
    assert [(d["name"], d["version"], d["metric"], d["by"]) for d in decisions] == [("tiny-ppo", 1, "sharpe", SERVICE), ("tiny-sac", 1, "sharpe", SERVICE)]
    for d in decisions:
        assert (d["decision"] == "promoted") == (f"{d['name']}@promoted" in stored)
        assert "held-out sharpe" in d["reason"]


def _json(value: Any) -> Any:
    import orjson

    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


async def test_the_same_data_and_seed_give_the_same_agent_and_a_restart_does_not_train_it_again(tmp_path: Path) -> None:
    shas, evaluations = [], []
    for k in range(2):
        _, got = await run_service(tmp_path / f"run{k}", {"tiny-ppo": TINY_PPO})
        shas.append([a["sha256"] for a in await query(tmp_path / f"run{k}", "SELECT sha256 FROM artifacts WHERE name = 'tiny-ppo'")])
        evaluations.append(statuses(got, "completed")[0]["metrics"])
    assert len(shas[0]) == 1 and shas[0] == shas[1]  # byte-identical agents (one torch thread, seeded; see docs/decisions.md)
    assert evaluations[0] == evaluations[1]
    # the service keeps each agent's last cut in its state: restarted on the same data, it does not train again
    assert (tmp_path / "run0" / "services" / SERVICE / "state.json").exists()
    _, again = await run_service(tmp_path / "run0", {"tiny-ppo": TINY_PPO}, runs=0)
    assert not statuses(again, "started")
    assert [r["name"] for r in await query(tmp_path / "run0", "SELECT name FROM agent_checkpoints")] == ["tiny-ppo"]


def test_a_held_row_is_dropped_only_once_the_table_holds_it_as_received() -> None:
    from nodes.rl_training.node import _same

    held = {"symbol": "EURUSD", "ts": 5, "feature_set": FS, "values": {"a": 0.1, "b": None}}
    assert _same({"symbol": "EURUSD", "ts": np.int64(5), "feature_set": FS, "values": '{"a":0.1,"b":null}'}, held)
    assert not _same({"symbol": "EURUSD", "ts": 5, "feature_set": FS, "values": '{"a":0.2,"b":null}'}, held)  # revised since
    assert not _same(None, held)
    assert _same({"symbol": "XAUUSD", "ts": 5, "close": 2500.5, "spread_mean": float("nan")}, {"symbol": "XAUUSD", "ts": 5, "close": 2500.5, "spread_mean": None})


# --------------------------------------------------------------------------- bad input


async def test_bad_runs_fail_with_the_reason_and_the_service_goes_on_to_train_the_next_agent(tmp_path: Path) -> None:
    agents = {
        "long": {**TINY_PPO, "episode_length": 400},  # longer than any series of valid rows: no episode fits
        "bad": {**TINY_PPO, "hyperparams": {"n_steps": 64, "learning_rat": 0.1}},  # PPO has no such argument
        "tiny-ppo": {**TINY_PPO, "baseline": {"beat": [], "min": -1e6, "beat_promoted": True}},  # a floor anything passes
    }
    rt, got = await run_service(tmp_path, agents)
    failed, completed = statuses(got, "failed"), statuses(got, "completed")
    assert [e["run_id"].split("-")[0] for e in failed] == ["long", "bad"]
    assert "too little data for an episode" in failed[0]["message"] and "needs 401" in failed[0]["message"]
    assert "ppo rejects its hyperparams" in failed[1]["message"] and "learning_rat" in failed[1]["message"]
    assert len(completed) == 1 and completed[0]["run_id"].startswith("tiny-ppo-")
    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert m["errors"] == 0 and m["in"] == 2 * 2 * (HISTORY + LIVE)  # every bar and feature row handled, before and after
    runs = await query(tmp_path, "SELECT run_id, status FROM training_runs ORDER BY run_id, status")
    assert [(r["run_id"].split("-")[0], r["status"]) for r in runs] == [
        ("bad", "failed"), ("bad", "started"), ("long", "failed"), ("long", "started"), ("tiny", "completed"), ("tiny", "started")]  # fmt: skip
    assert [c["name"] for c in await query(tmp_path, "SELECT name FROM agent_checkpoints")] == ["tiny-ppo"]
    # above its floor and none promoted yet, the agent goes live: tagged tiny-ppo@promoted, decision recorded
    decision = (await query(tmp_path, "SELECT decision, reason FROM model_promotions"))[0]
    assert decision["decision"] == "promoted" and decision["reason"].endswith("; no model is promoted yet")
    tags = await query(tmp_path, "SELECT name, sha256, metadata FROM artifacts ORDER BY name")
    assert [t["name"] for t in tags] == ["tiny-ppo", "tiny-ppo@promoted"] and tags[0]["sha256"] == tags[1]["sha256"]
    assert _json(tags[1]["metadata"])["promoted_from"] == "tiny-ppo:1"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("{bad: {algorithm: ppo2, total_timesteps: 10}}", "agents.bad.algorithm: Input should be 'ppo', 'a2c' or 'sac'"),
        ("{bad: {algorithm: ppo, total_timesteps: 10, hyperparams: {seed: 3}}}", "hyperparams may not set seed"),
        ("{bad.name: {algorithm: ppo, total_timesteps: 10}}", "agent names"),
    ],
)
def test_an_unknown_algorithm_or_a_reserved_hyperparameter_is_refused_by_the_lint_naming_where(tmp_path: Path, override: str, expected: str) -> None:
    loaded = load(tmp_path, f"{S}.enabled=true", f"++{S}.params.agents={override}")
    found = [f for f in lint(loaded.topology, loaded.source, Registry.discover(), contracts()) if f.code == "FX102"]
    assert len(found) == 1 and found[0].service == SERVICE and found[0].level == "error"
    assert expected in found[0].message and found[0].file == "<command line>"  # where the mistake was made
