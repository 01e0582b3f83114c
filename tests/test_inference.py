"""inference-service through the real runtime (framework.testing: the demo profile, in-process bus and log, embedded
ClickHouse, simulated clock unless said): rule and trained models, hot swaps, refusals and bad vectors.

Features are synthetic (a seeded random walk → SMA distances and a return), so these tests do not depend on the
feature set of feature-engineering-service. Trained models are a tiny XGBoost booster behind a test-only Model kind
registered in KINDS here (``test_xgb``), and a test-only agent that reads its position (``test_flip``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from framework.artifacts import ArtifactRef
from framework.chunk import Chunk
from framework.testing import contracts, load, make_runtime, query, recording_bus
from nodes.ml.model import KINDS, Model, ModelCard, ModelError, Prediction

T0 = 1_793_577_600_000  # 2026-11-02T00:00Z, a Monday
BAR = 60_000
TF = "1m"  # one-minute bars: simulated time moves little between two messages (the runtime has 1 s timers)
FS = "test-v1"
FEATURES = ("dist_fast", "dist_slow", "ret_1")
SERVICE = "inference-service"
TIMEOUT = 60.0
SIGNAL = contracts().resolve("signal.v1")

LOAD_STARTED = threading.Event()
RELEASE = threading.Event()


# --------------------------------------------------------------------------- test-only model kinds


class TinyXGB(Model):
    """A tiny XGBoost classifier of the next bar's direction (what nodes/ml/trees.py will provide)."""

    kind = "test_xgb"

    def __init__(self, card: ModelCard, booster: Any) -> None:
        super().__init__(card)
        self.booster = booster

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        p = self.booster.inplace_predict(X)
        return Prediction(np.where(p > 0.5, 1, -1).astype(np.int8), np.abs(p - 0.5) * 2.0)

    def to_bytes(self) -> bytes:
        return bytes(self.booster.save_raw("ubj"))

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> TinyXGB:
        import xgboost

        if card.params.get("gate"):  # the hot-swap test holds the load until the node has handled more messages
            LOAD_STARTED.set()
            assert RELEASE.wait(TIMEOUT), "never released"
        booster = xgboost.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgboost.core.XGBoostError as exc:
            raise ModelError(f"not an XGBoost model: {str(exc).splitlines()[0]}") from None
        booster.set_param({"nthread": 1})
        return cls(card, booster)


class Flip(Model):
    """An agent that reads its position: long when flat or short, short when long."""

    kind = "test_flip"

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        assert position is not None and len(position) == len(X)
        return Prediction(np.where(position <= 0, 1, -1).astype(np.int8), np.ones(len(X)))

    def to_bytes(self) -> bytes:
        return b"flip"

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> Flip:
        return cls(card)


class Moody(Model):
    """Fails on some rows, predicts nonsense on others."""

    kind = "test_moody"

    def predict(self, X: np.ndarray, position: np.ndarray | None = None) -> Prediction:
        if (X[:, 0] > 0.001).any():
            raise RuntimeError("boom")
        return Prediction(np.where(X[:, 1] > 0.0, 2, 1).astype(np.int8), np.ones(len(X)))

    def to_bytes(self) -> bytes:
        return b"moody"

    @classmethod
    def from_bytes(cls, data: bytes, card: ModelCard) -> Moody:
        return cls(card)


@pytest.fixture(autouse=True)
def test_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "test_xgb", f"{__name__}:TinyXGB")  # this very module (its events are the test's)
    monkeypatch.setitem(KINDS, "test_flip", f"{__name__}:Flip")
    monkeypatch.setitem(KINDS, "test_moody", f"{__name__}:Moody")
    LOAD_STARTED.clear()
    RELEASE.clear()


# --------------------------------------------------------------------------- data


def feature_rows(n: int, seed: int = 7, symbol: str = "EURUSD", fs: str = FS, start: int = T0) -> list[dict[str, Any]]:
    """``n`` one-minute features.v1 messages from a random walk: distances of the close to its SMA(5) and SMA(20)."""
    rng = np.random.default_rng(seed)
    close = pd.Series(1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, n + 20))))
    frame = pd.DataFrame({"close": close, "dist_fast": close / close.rolling(5).mean() - 1,
                          "dist_slow": close / close.rolling(20).mean() - 1, "ret_1": close.pct_change()}).iloc[20:]  # fmt: skip
    return [
        {"symbol": symbol, "timeframe": TF, "ts": start + k * BAR, "feature_set": fs,
         "values": {name: float(row[name]) for name in ("close", *FEATURES)}}  # fmt: skip
        for k, (_, row) in enumerate(frame.iterrows())
    ]


def interleave(*streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((m for s in streams for m in s), key=lambda m: m["ts"])  # stable: symbol order within a bar


def matrix(rows: list[dict[str, Any]], features: tuple[str, ...] = FEATURES) -> np.ndarray:
    return np.array([[r["values"][f] for f in features] for r in rows])


def tiny_xgb(seed: int = 1, feature_set: str = FS, **params: Any) -> TinyXGB:
    import xgboost

    rows = feature_rows(300, seed=seed + 100)
    X = matrix(rows)
    y = (np.roll(X[:, 2], -1) > 0).astype(int)
    booster = xgboost.train({"max_depth": 2, "eta": 0.5, "objective": "binary:logistic", "nthread": 1, "seed": seed},
                            xgboost.DMatrix(X, label=y), num_boost_round=4 + seed)  # fmt: skip
    card = ModelCard(kind="test_xgb", feature_set=feature_set, features=FEATURES, timeframe=TF, symbols=(), seed=seed, params=params)
    return TinyXGB(card, booster)


# --------------------------------------------------------------------------- runtime


def loaded(tmp_path: Path, models: str, *overrides: str, poll: str = "1m") -> Any:
    return load(tmp_path, "pairs=[EURUSD,GBPUSD]", f"++topology.services.{SERVICE}.enabled=true",
                f"~topology.services.{SERVICE}.params.models", f"+topology.services.{SERVICE}.params.models={models}",
                f"++topology.services.{SERVICE}.params.poll={poll}", *overrides)  # fmt: skip


async def promote(rt: Any, name: str, model: Model, card: ModelCard | None = None) -> ArtifactRef:
    card = card or model.card
    ref = await rt.artifacts.put(name, model.to_bytes(), kind=card.kind, metadata=card.to_metadata())
    await rt.artifacts.tag(ref, f"{name}@promoted")
    return ref


class Run:
    """The service alone on the runtime, fed features at their bars' close on the simulated clock."""

    def __init__(self, tmp_path: Path, models: str, *overrides: str, poll: str = "1m") -> None:
        self.tmp_path = tmp_path
        self.loaded = loaded(tmp_path, models, *overrides, poll=poll)

    async def __aenter__(self) -> Run:
        self.bus, self.got = await recording_bus("signals.raw.>", "deadletter.>")
        self.rt = make_runtime(self.loaded, self.tmp_path, pubsub=self.bus, only=[SERVICE])
        await asyncio.wait_for(self.rt.start(), TIMEOUT)
        if self.loaded.topology.runtime.clock == "simulated":
            await self.rt.clock.wait_until(T0)  # the clock starts here: the first poll is at T0 + 1m, before the first bar closes
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.wait_for(self.rt.stop(), TIMEOUT)

    async def feed(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            await self.rt.clock.wait_until(row["ts"] + BAR)
            await self.bus.publish(f"features.{row['symbol']}.{row['timeframe']}", row)

    @property
    def signals(self) -> list[dict[str, Any]]:
        return [m for s, m in self.got if s.startswith("signals.raw.")]

    @property
    def dead(self) -> list[dict[str, Any]]:
        return [m for s, m in self.got if s.startswith("deadletter.")]

    @property
    def metrics(self) -> dict[str, Any]:
        return {m["service"]: m for m in self.rt.metrics()}[SERVICE]


SMA = "{sma: {kind: sma_cross, timeframe: 1m, params: {fast: dist_fast, slow: dist_slow}, price_feature: close}}"


# --------------------------------------------------------------------------- rule models


async def test_sma_cross_signals_equal_the_pandas_crossover_and_are_replayed_with_the_same_ids(tmp_path: Path) -> None:
    eur, gbp = feature_rows(150, seed=1), feature_rows(150, seed=2, symbol="GBPUSD")
    rows = interleave(eur, gbp)
    runs = []
    for attempt in ("a", "b"):
        async with Run(tmp_path / attempt, SMA) as run:
            await run.feed(rows)
        runs.append(run)
    run = runs[0]
    signals = run.signals
    assert [(s["symbol"], s["feature_ts"]) for s in signals] == [(r["symbol"], r["ts"]) for r in rows]  # one each, in order
    for symbol, stream, seed in (("EURUSD", eur, 1), ("GBPUSD", gbp, 2)):
        rng = np.random.default_rng(seed)
        close = pd.Series(1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, 170))))
        cross = np.sign(close.rolling(5).mean() - close.rolling(20).mean()).iloc[20:]  # the pandas reference
        expected = cross.map({1.0: "buy", -1.0: "sell", 0.0: "flat"}).tolist()
        assert [s["side"] for s in signals if s["symbol"] == symbol] == expected
        assert {"buy", "sell"} <= set(expected)
    model_id = signals[0]["model_id"]
    assert model_id.startswith("sma-") and {s["model_id"] for s in signals} == {model_id}
    for s, r in zip(signals, rows):
        assert SIGNAL.validate(s) is None
        assert s["ts"] == r["ts"] + BAR and s["ttl_ms"] == BAR and s["horizon"] == TF  # known at the bar's close
        assert s["feature_set"] == FS and s["price"] == r["values"]["close"] and s["confidence"] == 1.0
        assert s["signal_id"] == f"{model_id}-{r['symbol']}-1m-{r['ts'] + BAR}"
    assert runs[1].signals == signals  # a replay: the same signals, the same ids
    assert run.metrics["dead_lettered"] == 0 and run.metrics["errors"] == 0
    table = await query(tmp_path / "a", "SELECT signal_id, side, feature_ts, ttl_ms FROM trading_signals FINAL ORDER BY ts, symbol")
    assert [t["signal_id"] for t in table] == [s["signal_id"] for s in sorted(signals, key=lambda s: (s["ts"], s["symbol"]))]
    predictions = await query(tmp_path / "a", "SELECT signal_id, side, confidence, position, feature_set FROM model_predictions FINAL")
    assert len(predictions) == len(rows) and {p["feature_set"] for p in predictions} == {FS}
    by_id = {s["signal_id"]: s for s in signals}
    assert all(["sell", "flat", "buy"][p["side"] + 1] == by_id[p["signal_id"]]["side"] for p in predictions)


async def test_a_chunk_of_features_gives_the_signals_of_its_messages_one_by_one(tmp_path: Path) -> None:
    rows = feature_rows(60, seed=3)
    models = "{sma: {kind: sma_cross, timeframe: 1m, params: {fast: dist_fast, slow: dist_slow}}, xgb: {timeframe: 1m}}"
    async with Run(tmp_path / "one", models) as single:
        await promote(single.rt, "xgb", tiny_xgb())
        await single.feed(rows)
    async with Run(tmp_path / "chunk", models) as chunked:
        await promote(chunked.rt, "xgb", tiny_xgb())
        await chunked.rt.clock.wait_until(rows[-1]["ts"] + BAR)
        await chunked.bus.publish_chunk("features.EURUSD.1m", Chunk.from_rows(rows))
    assert len(single.signals) == 2 * len(rows)
    assert chunked.signals == single.signals  # input order, then declaration order within each message
    assert [s["model_id"][:3] for s in chunked.signals[:4]] == ["sma", "xgb", "sma", "xgb"]
    assert chunked.metrics["dead_lettered"] == single.metrics["dead_lettered"] == 0


# --------------------------------------------------------------------------- trained models and hot swaps


async def test_train_artifact_load_predict_gives_the_trained_models_predictions(tmp_path: Path) -> None:
    model = tiny_xgb(seed=2)
    rows = feature_rows(80, seed=9)[2:]
    async with Run(tmp_path, "{xgb: {timeframe: 1m, min_confidence: 0.0}}") as run:
        ref = await promote(run.rt, "xgb", model)
        await run.feed(rows)
    expected = model.predict(matrix(rows))  # the model in memory, before it was ever serialised
    signals = run.signals
    assert [s["side"] for s in signals] == [["sell", "flat", "buy"][v + 1] for v in expected.side.tolist()]
    assert [s["confidence"] for s in signals] == expected.confidence.tolist()
    assert {s["model_id"] for s in signals} == {f"xgb-v{ref.version}"} and "price" not in signals[0]


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "catboost"])
async def test_a_trained_tree_model_gives_through_the_service_what_it_predicted_in_training(tmp_path: Path, kind: str) -> None:
    from nodes.ml.model import model_class

    train = feature_rows(300, seed=20)
    X = matrix(train)
    y = (np.roll(X[:, 2], -1) > 0).astype(int)
    card = ModelCard(kind=kind, feature_set=FS, features=FEATURES, timeframe=TF, symbols=("EURUSD",), seed=3,
                     params={"model": {"n_estimators": 8, "max_depth": 2}, "threshold": 0.52})  # fmt: skip
    model = model_class(kind).fit(X, y, card)
    rows = feature_rows(40, seed=21)
    async with Run(tmp_path, "{m: {timeframe: 1m}}") as run:
        ref = await promote(run.rt, "m", model)
        await run.feed(rows)
    expected = model.predict(matrix(rows))  # in memory, as training left it
    signals = run.signals
    assert [s["side"] for s in signals] == [["sell", "flat", "buy"][v + 1] for v in expected.side.tolist()]
    assert [s["confidence"] for s in signals] == expected.confidence.tolist()
    assert {s["model_id"] for s in signals} == {f"m-v{ref.version}"} and len(set(expected.confidence.tolist())) > 1


async def test_a_hot_swap_while_messages_flow_loses_and_reorders_none(tmp_path: Path) -> None:
    rows = interleave(feature_rows(120, seed=5), feature_rows(120, seed=6, symbol="GBPUSD"))[2:]
    half = len(rows) // 2
    async with Run(tmp_path, "{xgb: {timeframe: 1m}}") as run:
        await promote(run.rt, "xgb", tiny_xgb(seed=1))
        await run.feed(rows[:half])
        await promote(run.rt, "xgb", tiny_xgb(seed=2))  # mid-stream; the next poll loads it in the background
        await run.feed(rows[half:])
    signals = run.signals
    assert [(s["symbol"], s["feature_ts"]) for s in signals] == [(r["symbol"], r["ts"]) for r in rows]
    ids = [s["model_id"] for s in signals]
    switches = [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]]
    assert ids[0] == "xgb-v1" and ids[-1] == "xgb-v2" and len(switches) == 1
    assert half <= switches[0] <= half + 2  # at the first poll after the promotion (the next bar)
    v2 = tiny_xgb(seed=2).predict(matrix(rows[switches[0] :]))
    assert [s["confidence"] for s in signals[switches[0] :]] == v2.confidence.tolist()  # each signal names its model
    assert run.metrics["dead_lettered"] == 0


async def test_a_pinned_version_is_served_and_never_swapped_for_a_later_promotion(tmp_path: Path) -> None:
    rows = feature_rows(80, seed=5)
    half = len(rows) // 2
    async with Run(tmp_path, "{xgb: {timeframe: 1m, version: 1}}") as run:
        await promote(run.rt, "xgb", tiny_xgb(seed=1))  # after start: the pin waits for its version, then loads it
        await run.feed(rows[:half])
        await promote(run.rt, "xgb", tiny_xgb(seed=2))  # promoted, not pinned: ignored
        await run.feed(rows[half:])
    signals = run.signals
    assert len(signals) >= len(rows) - 2 and {s["model_id"] for s in signals} == {"xgb-v1"}
    assert [s["confidence"] for s in signals] == tiny_xgb(seed=1).predict(matrix(rows[-len(signals) :])).confidence.tolist()


async def test_a_hot_swap_on_the_wall_clock_keeps_serving_while_the_new_model_loads(tmp_path: Path) -> None:
    rows = feature_rows(400, seed=8)
    async with Run(tmp_path, "{xgb: {timeframe: 1m}}", "topology.runtime.clock=wall", poll="50ms") as run:
        await promote(run.rt, "xgb", tiny_xgb(seed=1))
        sent = 0

        async def send(until: Any) -> None:
            nonlocal sent
            while not until():
                assert sent < len(rows), "ran out of messages"
                await run.bus.publish("features.EURUSD.1m", rows[sent])
                sent += 1
                await asyncio.sleep(0.002)

        await asyncio.wait_for(send(lambda: len(run.signals) >= 5 and run.signals[-1]["model_id"] == "xgb-v1"), TIMEOUT)
        await promote(run.rt, "xgb", tiny_xgb(seed=2, gate=True))
        await asyncio.wait_for(send(LOAD_STARTED.is_set), TIMEOUT)
        during = len(run.signals)
        await asyncio.wait_for(send(lambda: len(run.signals) >= during + 20), TIMEOUT)  # the load is held: the node serves on
        RELEASE.set()
        await asyncio.wait_for(send(lambda: run.signals[-1]["model_id"] == "xgb-v2"), TIMEOUT)
        target = sent + 10
        await asyncio.wait_for(send(lambda: sent >= target), TIMEOUT)
        unserved = lambda: run.metrics["ports"].get("unserved:xgb", 0)  # noqa: E731  (those before v1 was first loaded)
        await asyncio.wait_for(_until(lambda: len(run.signals) + unserved() == sent), TIMEOUT)
        before = unserved()
    signals = run.signals
    assert [s["feature_ts"] for s in signals] == [r["ts"] for r in rows[before:sent]]  # one each, in order
    ids = [s["model_id"] for s in signals]
    switch = ids.index("xgb-v2")
    assert switch >= during - before + 20 and ids[:switch] == ["xgb-v1"] * switch and set(ids[switch:]) == {"xgb-v2"}


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_model_trained_on_another_feature_set_is_refused_and_the_previous_one_stays_live(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = feature_rows(40, seed=10)[2:]
    later = feature_rows(10, seed=11, fs="test-v2", start=rows[-1]["ts"] + BAR)
    caplog.set_level(logging.WARNING, logger="fxflow")
    async with Run(tmp_path, "{xgb: {timeframe: 1m}}") as run:
        await promote(run.rt, "xgb", tiny_xgb(seed=1))
        await run.feed(rows[:10])
        await promote(run.rt, "xgb", tiny_xgb(seed=2, feature_set="test-v2"))
        await run.feed(rows[10:])
        await run.feed(later)  # the features move to the set v2 was trained on: v2 takes over by itself
    signals = run.signals
    assert [s["feature_ts"] for s in signals] == [r["ts"] for r in rows + later]
    assert [s["model_id"] for s in signals] == ["xgb-v1"] * len(rows) + ["xgb-v2"] * len(later)
    assert run.metrics["dead_lettered"] == 0
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refusals) == 1, refusals  # once per version and feature set, not per message
    assert "xgb-v2" in refusals[0] and "'test-v2'" in refusals[0] and "'test-v1'" in refusals[0]


async def test_a_corrupt_artifact_or_an_unknown_kind_is_refused_and_the_service_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = feature_rows(30, seed=12)[2:]
    caplog.set_level(logging.ERROR, logger="fxflow")
    async with Run(tmp_path, "{xgb: {timeframe: 1m}}") as run:
        await promote(run.rt, "xgb", tiny_xgb(seed=1))
        await run.feed(rows[:8])
        bad = await promote(run.rt, "xgb", tiny_xgb(seed=2))
        blob = run.rt.artifacts.blobs.blob(bad.sha256)
        os.chmod(blob, 0o644)
        blob.write_bytes(blob.read_bytes()[:-7] + b"garbage")  # bytes that no longer hash to the recorded sha256
        await run.feed(rows[8:16])
        odd = tiny_xgb(seed=3)
        await promote(run.rt, "xgb", odd, ModelCard(**{**odd.card.__dict__, "kind": "no_such_kind"}))
        await run.feed(rows[16:22])
        await promote(run.rt, "xgb", tiny_xgb(seed=4))
        await run.feed(rows[22:])
    ids = [s["model_id"] for s in run.signals]
    assert ids == ["xgb-v1"] * 22 + ["xgb-v4"] * (len(rows) - 22)
    errors = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(errors) == 2, errors
    assert "promoted v2 refused (ArtifactCorrupt" in errors[0] and bad.sha256 in errors[0] and "xgb-v1 stays live" in errors[0]
    assert "unknown model kind 'no_such_kind'" in errors[1] and "xgb-v1 stays live" in errors[1]
    assert run.metrics["dead_lettered"] == 0


async def test_without_a_promoted_model_its_messages_are_counted_unserved_and_the_rules_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = feature_rows(12, seed=13)
    models = "{sma: {kind: sma_cross, timeframe: 1m, params: {fast: dist_fast, slow: dist_slow}}, xgb: {timeframe: 1m, symbols: [EURUSD]}}"
    caplog.set_level(logging.INFO, logger="fxflow")
    async with Run(tmp_path, models) as run:
        await run.feed(rows[:6])
        await promote(run.rt, "xgb", tiny_xgb(seed=1))
        await run.feed(rows[6:])
    assert [s["model_id"][:3] for s in run.signals] == ["sma"] * 6 + ["sma", "xgb"] * 6
    assert run.metrics["ports"]["unserved:xgb"] == 6 and run.metrics["errors"] == run.metrics["dead_lettered"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == f"fxflow.{SERVICE}"]
    why = [m for m in said if "get no signal" in m]
    assert len(why) == 1 and "no artifact named 'xgb@promoted'" in why[0], said  # once, with the reason
    assert any("xgb-v1 loaded" in m and "6 feature messages got no signal before" in m for m in said), said


async def test_a_feature_vector_of_the_wrong_shape_or_with_nan_is_dead_lettered_and_never_reaches_the_model(tmp_path: Path) -> None:
    rows = feature_rows(14, seed=14)
    rows[3]["values"]["dist_slow"] = None
    del rows[5]["values"]["dist_fast"]
    rows[7]["values"]["dist_fast"] = float("nan")  # the wire carries it as null
    rows[9]["values"]["dist_slow"] = "1.0"  # numpy would have taken these two as numbers
    rows[10]["values"]["dist_fast"] = True
    rows[12]["values"]["dist_fast"] = "abc"
    bad = (3, 5, 7, 9, 10, 12)
    async with Run(tmp_path, SMA) as run:
        await run.feed(rows)
    assert [s["feature_ts"] for s in run.signals] == [r["ts"] for i, r in enumerate(rows) if i not in bad]
    reasons = {d["payload"]["ts"]: d["reason"] for d in run.dead}
    assert list(reasons) == [rows[i]["ts"] for i in bad]
    why = [reasons[rows[i]["ts"]] for i in bad]
    assert all(w.startswith("sma-") for w in why)  # the model whose input it was
    assert "'dist_slow' is None" in why[0] and "not a finite number" in why[0]
    assert "lacks 'dist_fast'" in why[1]
    assert "'dist_fast'" in why[2] and "not a finite number" in why[2]
    assert "feature 'dist_slow' is '1.0', not a number" in why[3]
    assert "feature 'dist_fast' is True, not a number" in why[4]
    assert "feature 'dist_fast' is 'abc', not a number" in why[5]
    assert run.metrics["errors"] == 0 and run.metrics["dead_lettered"] == len(bad)


async def test_a_model_that_fails_or_predicts_nonsense_on_a_message_dead_letters_it_and_serves_the_next(tmp_path: Path) -> None:
    rows = feature_rows(40, seed=17)
    fails = [r["values"]["dist_fast"] > 0.001 for r in rows]
    nonsense = [not f and r["values"]["dist_slow"] > 0.0 for f, r in zip(fails, rows)]
    assert any(fails) and any(nonsense) and not all(a or b for a, b in zip(fails, nonsense))
    moody = Moody(ModelCard(kind="test_moody", feature_set=FS, features=FEATURES, timeframe=TF, symbols=()))
    async with Run(tmp_path, "{moody: {timeframe: 1m}}") as run:
        await promote(run.rt, "moody", moody)
        await run.feed(rows)
    served = [r["ts"] for r, f, n in zip(rows, fails, nonsense) if not f and not n]
    assert [s["feature_ts"] for s in run.signals] == served and {s["side"] for s in run.signals} == {"buy"}
    reasons = {d["payload"]["ts"]: d["reason"] for d in run.dead}
    assert sorted(reasons) == [r["ts"] for r, f, n in zip(rows, fails, nonsense) if f or n]
    assert {reasons[r["ts"]] for r, f in zip(rows, fails) if f} == {"moody-v1 failed to predict: RuntimeError: boom"}
    assert {reasons[r["ts"]] for r, n in zip(rows, nonsense) if n} == {"moody-v1 predicted side 2, confidence 1.0: not a prediction"}
    assert run.metrics["errors"] == 0


def tiny_agent(algorithm: str) -> Model:
    """A stable-baselines3 agent trained a few steps on the synthetic features (as finrl-training-service stores one)."""
    import torch
    from stable_baselines3 import PPO, SAC

    from nodes.ml.agents import AgentModel
    from nodes.ml.trading_env import EnvConfig, Normalizer, TradingEnv, market_from_rows

    torch.set_num_threads(1)
    rows = feature_rows(200, seed=30)
    X, close = matrix(rows), np.array([r["values"]["close"] for r in rows])
    market, _ = market_from_rows(X, close, np.full(len(rows), 1e-4), np.array([r["ts"] for r in rows]), ["EURUSD"] * len(rows))
    norm = Normalizer.fit(market.features)
    action = "continuous" if algorithm == "sac" else "discrete"
    env = TradingEnv(market, EnvConfig(action=action, episode_length=32), norm)  # type: ignore[arg-type]
    tiny = {"ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 1}, "sac": {"learning_starts": 32, "batch_size": 16, "buffer_size": 500}}
    sb3 = {"ppo": PPO, "sac": SAC}[algorithm]("MlpPolicy", env, seed=1, device="cpu", policy_kwargs={"net_arch": [16, 16], "activation_fn": torch.nn.Tanh}, **tiny[algorithm])
    sb3.learn(64)
    card = ModelCard(kind=algorithm, feature_set=FS, features=FEATURES, timeframe=TF, symbols=("EURUSD",), seed=1, uses_position=True,
                     params={"algorithm": algorithm, "policy": {"net_arch": [16, 16], "activation": "tanh"},
                             "observation": norm.to_params(), "deadband": 0.1})  # fmt: skip
    return AgentModel.from_policy(card, sb3.policy)


@pytest.mark.parametrize("algorithm", ["ppo", "sac"])
async def test_a_trained_agent_acts_through_the_service_as_it_would_holding_its_own_signals_position(tmp_path: Path, algorithm: str) -> None:
    agent = tiny_agent(algorithm)
    rows = feature_rows(30, seed=31)
    async with Run(tmp_path, "{agent: {timeframe: 1m}}") as run:
        await promote(run.rt, "agent", agent)
        await run.feed(rows)
    held, expected = 0.0, []
    for x in matrix(rows):  # the agent in memory, fed the position its previous signal implies
        p = agent.predict(x[None, :], position=np.array([held]))
        side, confidence = int(p.side[0]), float(p.confidence[0])
        expected.append((["sell", "flat", "buy"][side + 1], confidence, held))
        held = side * confidence if algorithm == "sac" else float(side)
    positions = await query(tmp_path, "SELECT feature_ts, position FROM model_predictions FINAL ORDER BY feature_ts")
    got = [(s["side"], s["confidence"], p["position"]) for s, p in zip(run.signals, positions)]
    assert got == expected and len(got) == len(rows)
    assert len({side for side, _, _ in expected}) > 1 or len({h for _, _, h in expected}) > 1, expected


async def test_an_agent_observes_the_position_its_own_signals_imply_across_a_restart(tmp_path: Path) -> None:
    eur, gbp = feature_rows(5, seed=15), feature_rows(5, seed=16, symbol="GBPUSD")
    flip = Flip(ModelCard(kind="test_flip", feature_set=FS, features=FEATURES, timeframe=TF, symbols=(), uses_position=True))
    async with Run(tmp_path, "{agent: {timeframe: 1m}}") as run:
        await promote(run.rt, "agent", flip)
        await run.feed(interleave(eur[1:4], gbp[1:3]))
    sides = [(s["symbol"], s["side"]) for s in run.signals]
    assert sides == [("EURUSD", "buy"), ("GBPUSD", "buy"), ("EURUSD", "sell"), ("GBPUSD", "sell"), ("EURUSD", "buy")]
    state = json.loads((tmp_path / "services" / SERVICE / "state.json").read_text())
    assert "agent|EURUSD" in json.dumps(state) and "agent|GBPUSD" in json.dumps(state)
    async with Run(tmp_path, "{agent: {timeframe: 1m}}") as again:  # restarted: the positions come back
        await again.feed([gbp[3], eur[4]])
    assert [(s["symbol"], s["side"]) for s in again.signals] == [("GBPUSD", "buy"), ("EURUSD", "sell")]
    positions = await query(tmp_path, "SELECT symbol, feature_ts, position FROM model_predictions FINAL ORDER BY feature_ts, symbol")
    assert [(p["symbol"], p["position"]) for p in positions] == [
        ("EURUSD", 0.0), ("GBPUSD", 0.0), ("EURUSD", 1.0), ("GBPUSD", 1.0), ("EURUSD", -1.0), ("GBPUSD", -1.0), ("EURUSD", 1.0)
    ]  # fmt: skip
