"""supervised-training-service through the real runtime (demo profile: in-process bus, embedded ClickHouse,
simulated clock, a spawned worker process): synthetic bars and features in; events, tables, artifacts and
promotion decisions out; bad input fails one run with its reason while the service goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson

from framework.offline import open_offline
from framework.testing import contracts, load, make_runtime, query, recording_bus
from nodes.ml.model import ModelCard, load_model
from nodes.supervised_training.synthetic import bars_and_features

SERVICE = "supervised-training-service"
T0 = 1_793_577_600_000  # 2026-11-02T00:00Z
M = 60_000
STATUS = contracts().resolve("training_status.v1")


def flow(value: Any) -> str:
    """A Hydra override value (flow style, unquoted keys)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def model(name: str, **over: Any) -> dict[str, Any]:
    decl = {
        "name": name, "kind": "lightgbm", "timeframe": "1m",
        "target": {"kind": "direction", "horizon": "2m", "dead_zone": 0.0},
        "params": {"n_estimators": 20, "num_leaves": 7}, "folds": {"n": 3, "min_train": 50, "min_test": 20},
        "seed": 3, "min_rows": 300, "window": "1d", "retrain_every": "1d",
        "baseline": {"metric": "balanced_accuracy", "min": 0.5},
    }  # fmt: skip
    decl.update(over)
    return decl


async def run(data_dir: Path, models: list[dict[str, Any]], feeds: list[tuple[list, list]], *, messages: bool = True) -> list[tuple[str, dict]]:
    """Start the service alone, play the bars and features (in event-time order) through the bus, stop."""
    loaded = load(data_dir, "pairs=[EURUSD,XAUUSD]", f"topology.services.{SERVICE}.enabled=true",
                  f"topology.services.{SERVICE}.params.models={flow(models)}")  # fmt: skip
    bus, got = await recording_bus("training.>")
    rt = make_runtime(loaded, data_dir, pubsub=bus, only=[SERVICE])
    await rt.start()
    events = sorted(
        ((b["ts_close"], i, b, f) for bars, rows in feeds for i, (b, f) in enumerate(zip(bars, rows))), key=lambda e: (e[0], e[1], e[2]["symbol"], e[2]["timeframe"])
    )
    if messages:
        for ts, _, bar, row in events:
            await rt.clock.wait_until(ts)
            await bus.publish(f"bars.{bar['symbol']}.{bar['timeframe']}", bar)
            await bus.publish(f"features.{row['symbol']}.{row['timeframe']}", row)
    else:
        await rt.clock.wait_until(events[-1][0])  # the first event time starts the clock
        await rt.clock.wait_until(events[-1][0] + 5 * M)  # the check timer (every minute) runs on the way
    metrics = {m["service"]: m for m in rt.metrics()}[SERVICE]
    await rt.stop()
    assert metrics["errors"] == 0 and metrics["dead_lettered"] == 0, metrics
    return got


def synthetic(n: int = 420, **kw: Any) -> tuple[list, list]:
    return bars_and_features(["EURUSD", "XAUUSD"], start_ms=T0, n=n, momentum=0.6, **kw)


async def artifacts_of(data_dir: Path) -> list[dict[str, Any]]:
    return await query(data_dir, "SELECT name, version, sha256, kind, metadata FROM artifacts ORDER BY name, version")


async def test_the_service_trains_stores_records_and_promotes(tmp_path: Path) -> None:
    models = [model("good"), model("picky", kind="xgboost", params={"n_estimators": 10}, baseline={"metric": "balanced_accuracy", "min": 0.99})]
    got = await run(tmp_path / "a", models, [synthetic()])
    for _, payload in got:
        assert STATUS.validate(payload) is None
    by_run: dict[str, list[tuple[str, dict]]] = {}
    for subject, payload in got:
        by_run.setdefault(payload["run_id"], []).append((subject, payload))
    assert len(by_run) == 2
    good_id = next(r for r in by_run if r.startswith("good-"))
    assert good_id.startswith("good-20261102T0500-")  # 300 rows per symbol: the window ends at 05:00
    steps = by_run[good_id]
    assert [s for s, _ in steps] == [f"training.{s}.{good_id}" for s in ("started", "progress", "progress", "progress", "completed")]
    assert [p.get("progress") for _, p in steps] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(p["kind"] == "supervised" and p["model_type"] == "lightgbm" and p["ts"] == T0 + 300 * M for _, p in steps)
    completed = steps[-1][1]
    assert completed["message"].startswith("model good:1 (sha256 ")
    assert completed["metrics"]["balanced_accuracy"] > 0.5

    data_dir = tmp_path / "a"
    runs = await query(data_dir, "SELECT run_id, status FROM training_runs ORDER BY run_id, ts, status")
    assert len(runs) == 10 and {r["status"] for r in runs} == {"started", "progress", "completed"}
    fold_rows = await query(data_dir, f"SELECT name, value, step FROM training_metrics WHERE run_id = '{good_id}'")
    steps_by_metric: dict[str, set[int]] = {}
    for r in fold_rows:
        steps_by_metric.setdefault(r["name"], set()).add(r["step"])
    for name in ("accuracy", "balanced_accuracy", "auc", "log_loss", "brier", "sharpe", "hit_rate"):
        assert steps_by_metric[name] == {0, 1, 2, 3}  # three folds and their mean (step 0)
    folds = [r["value"] for r in fold_rows if r["name"] == "balanced_accuracy" and r["step"] > 0]
    mean = next(r["value"] for r in fold_rows if r["name"] == "balanced_accuracy" and r["step"] == 0)
    assert math.isclose(mean, sum(folds) / 3)

    (checkpoint,) = await query(data_dir, f"SELECT * FROM model_checkpoints WHERE run_id = '{good_id}'")
    assert checkpoint["artifact"] == "good:1" and checkpoint["model_type"] == "lightgbm" and checkpoint["symbols"] == "EURUSD,XAUUSD"
    assert checkpoint["feature_set"] == "synthetic-v1" and checkpoint["train_end"] == T0 + 300 * M

    stored = {(a["name"], a["version"]): a for a in await artifacts_of(data_dir)}
    assert set(stored) == {("good", 1), ("good@promoted", 1), ("picky", 1)}
    assert stored[("good@promoted", 1)]["sha256"] == stored[("good", 1)]["sha256"] == checkpoint["sha256"]
    card = ModelCard.from_metadata(json.loads(stored[("good", 1)]["metadata"]))
    assert card.run_id == good_id and card.feature_set == "synthetic-v1" and card.train_end_ms == T0 + 300 * M
    assert card.metrics["balanced_accuracy"] == completed["metrics"]["balanced_accuracy"]
    blob = (data_dir / "artifacts" / "sha256" / checkpoint["sha256"][:2] / checkpoint["sha256"]).read_bytes()
    assert load_model(blob, card).card.kind == "lightgbm"

    decisions = {r["name"]: r for r in await query(data_dir, "SELECT * FROM model_promotions")}
    assert decisions["good"]["decision"] == "promoted" and decisions["good"]["reason"].startswith("balanced_accuracy 0.")
    assert decisions["picky"]["decision"] == "rejected" and decisions["picky"]["reason"].endswith("< 0.99 (baseline min)")

    again = await run(tmp_path / "b", models, [synthetic()])  # same data, same seeds: the same run, byte for byte
    assert orjson.dumps(again) == orjson.dumps(got)
    assert [a["sha256"] for a in await artifacts_of(tmp_path / "b")] == [a["sha256"] for a in await artifacts_of(data_dir)]


async def test_bad_input_fails_its_run_with_the_reason_and_the_service_goes_on(tmp_path: Path) -> None:
    mixed_bars, mixed_rows = bars_and_features(["EURUSD", "XAUUSD"], start_ms=T0, n=80, timeframe="5m")
    for row in mixed_rows[80:]:
        row["feature_set"] = "synthetic-v2"
    models = [
        model("tiny-folds", folds={"n": 10, "min_train": 500}),
        model("long-horizon", target={"kind": "direction", "horizon": "1d"}),
        model("mixed", timeframe="5m", min_rows=60, target={"kind": "direction", "horizon": "10m"}),
        model("fine", min_rows=350),
    ]
    got = await run(tmp_path, models, [synthetic(), (mixed_bars, mixed_rows)])
    failed = {p["run_id"].rsplit("-", 2)[0]: p["message"] for s, p in got if s.startswith("training.failed.")}
    assert set(failed) == {"tiny-folds", "long-horizon", "mixed"}
    assert "too few for 10 folds: fold 1 trains on" in failed["tiny-folds"] and "give it more history or fewer folds" in failed["tiny-folds"]
    assert failed["long-horizon"].startswith("model long-horizon: target horizon 1d is longer than the data (")
    assert "mixes feature sets synthetic-v1 (" in failed["mixed"] and "synthetic-v2 (" in failed["mixed"]
    assert all("\n" not in m for m in failed.values())
    completed = [p for s, p in got if s.startswith("training.completed.fine-")]
    assert len(completed) == 1  # trained after the three failures
    runs = await query(tmp_path, "SELECT run_id, message FROM training_runs WHERE status = 'failed'")
    assert {r["message"] for r in runs} == set(failed.values())
    assert [a["name"] for a in await artifacts_of(tmp_path)] == ["fine", "fine@promoted"]


async def test_history_in_the_tables_trains_at_start_and_the_state_prevents_a_second_run(tmp_path: Path) -> None:
    bars, rows = synthetic(n=360)
    loaded = load(tmp_path, "pairs=[EURUSD,XAUUSD]")
    async with open_offline(loaded.topology, tmp_path, ["ml_features", "historical_aggregates"], contracts=contracts()) as offline:
        await offline.tables["ml_features"].insert(rows)
        await offline.tables["historical_aggregates"].insert(bars)
    decl = [model("hist")]
    first = await run(tmp_path, decl, [(bars, rows)], messages=False)  # no message: the tables alone
    assert [s.split(".")[1] for s, _ in first] == ["started", "progress", "progress", "progress", "completed"]
    assert first[0][1]["run_id"].startswith("hist-20261102T0600-")  # the newest rows in the tables: up to 06:00
    again = await run(tmp_path, decl, [(bars, rows)], messages=False)
    assert again == []  # its state says this window was trained on
    assert [(a["name"], a["version"]) for a in await artifacts_of(tmp_path)] == [("hist", 1), ("hist@promoted", 1)]


async def test_the_node_keeps_handling_messages_while_a_model_trains_in_a_worker_process(tmp_path: Path) -> None:
    import asyncio
    import time

    from framework.testing import handled

    decl = [model("slow", kind="catboost", params={"n_estimators": 300, "depth": 6}, min_rows=300)]
    loaded = load(tmp_path, "pairs=[EURUSD,XAUUSD]", "topology.runtime.clock=wall", f"topology.services.{SERVICE}.enabled=true",
                  f"topology.services.{SERVICE}.params.models={flow(decl)}")  # fmt: skip
    bus, got = await recording_bus("training.>")
    seen: dict[str, float] = {}

    async def stamp(subject: str, payload: dict, headers: Any) -> None:
        seen.setdefault(subject.split(".")[1], time.monotonic())

    await bus.subscribe("training.>", stamp)
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    try:
        bars, rows = synthetic(n=360)
        sent = 0
        for bar, row in zip(bars, rows):
            await bus.publish(f"bars.{bar['symbol']}.1m", bar)
            await bus.publish(f"features.{row['symbol']}.1m", row)
            sent += 2
            if "started" in seen:
                break
        assert "started" in seen
        for bar, row in list(zip(bars, rows))[sent // 2 :]:  # the rest while the model trains
            await bus.publish(f"bars.{bar['symbol']}.1m", bar)
            await bus.publish(f"features.{row['symbol']}.1m", row)
            sent += 2
        await handled(rt, SERVICE, sent)
        caught_up = time.monotonic()
        for _ in range(600):
            if "completed" in seen or "failed" in seen:
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert "completed" in seen, got
    assert caught_up < seen["completed"]  # every message handled before the training finished
