"""Walk-forward over model checkpoints (issue 12, point 5): ``fxrun backtest walkforward``.

A small LightGBM model on 15-minute features of seeded EURUSD bars walks forward over a week: each fold's model
is trained by supervised-training-service on its rolling window only (features by feature-engineering-service),
recorded as a checkpoint, and the following day is backtested through topology=backtest with inference pinned to
it. The folds' tables show that each test traded exactly its own checkpoint, trained before its embargoed test
window; the stitched metrics are nodes/trading/metrics of the folds' curves chained here with pandas; two runs
give the same walkforward.json; a checkpoint trained into its test window is refused; bad input is one line.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from framework.cli import main as fxrun
from framework.testing import load, query_df
from nodes.backtest import walkforward as wf
from nodes.backtest.node import model_of
from nodes.trading import metrics as M

ROOT = Path(__file__).resolve().parents[1]
DAY, HOUR = 86_400_000, 3_600_000
MODEL = ("{name: wf15, kind: lightgbm, timeframe: 15m, target: {kind: direction, horizon: 1h}, params: {n_estimators: 10, "
         "num_leaves: 7}, folds: {n: 2, min_train: 50, min_test: 20}, seed: 3, min_rows: 50}")  # fmt: skip
OVERRIDES = ["pairs=[EURUSD]", "topology.timeframes=[1m,15m]", "++topology.services.feature-engineering-service.params.timeframes=[15m]",
             f"++topology.services.supervised-training-service.params.models=[{MODEL}]"]
"""One pair, 1-minute bars (fills, marks) and 15-minute bars (the model's features, computed for them alone): a fast run."""
WINDOW = ["--start", "2026-10-26T00:00Z", "--end", "2026-10-30T12:00Z"]  # Monday to Friday noon
ARGS = ["--train", "59h", "--test", "1d", "--embargo", "1h", *WINDOW, "--jobs", "2"]
"""Two folds: trained from Monday 00:00 and 12:00 for 59 h, tested Wednesday noon to Thursday noon and on to Friday noon
(three days of marks: the chained curve has daily returns across the fold boundary)."""


def run_sync(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def table(data_dir: Path, sql: str) -> pd.DataFrame:
    return run_sync(query_df(data_dir, sql))


def ms(value: Any) -> int:
    return int(value) if isinstance(value, (int, np.integer)) else int(pd.Timestamp(value).value // 1_000_000)


def walk(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FXFLOW_PROJECT": str(ROOT)}
    command = [sys.executable, "-m", "framework.cli", "backtest", "walkforward", *args, "--out", str(out), *OVERRIDES]
    return subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("walk") / "out"
    done = walk(out, *ARGS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done


def test_each_fold_trains_before_its_embargoed_test_and_trades_only_its_pinned_checkpoint(walked: Any) -> None:
    out, done = walked
    doc = orjson.loads((out / "walkforward.json").read_bytes())
    folds = doc["folds"]
    assert [f["name"] for f in folds] == ["fold-01", "fold-02"]
    lines = [line for line in done.stdout.splitlines() if line.startswith("fold-")]
    assert len(lines) == 2 and all(f["model"]["id"] in line and "→" in line for f, line in zip(folds, lines))
    first, second = folds[0]["windows"], folds[1]["windows"]
    assert second["train_start"] - first["train_start"] == DAY and first["test_end"] == second["test_start"]  # rolling; the tests adjoin
    for fold in folds:
        w, data_dir, pinned = fold["windows"], out / fold["name"], fold["model"]["id"]
        assert w["train_end"] - w["train_start"] == 59 * HOUR and w["test_start"] - w["train_end"] == HOUR and w["test_end"] - w["test_start"] == DAY
        assert pinned == f"wf15-wf{fold['fold']:02d}-v1"

        # the checkpoint as supervised-training-service recorded it: trained inside the fold's window, before the embargo
        checkpoints = table(data_dir, "SELECT name, version, sha256, train_start, train_end, feature_set FROM model_checkpoints")
        assert len(checkpoints) == 1
        cp = checkpoints.iloc[0]
        assert f"{cp['name']}-v{cp['version']}" == pinned and cp["sha256"] == fold["model"]["sha256"]
        assert w["train_start"] <= ms(cp["train_start"]) and ms(cp["train_end"]) + HOUR <= w["test_start"]

        # what predicted, signalled and traded in the test: that checkpoint alone, inside the test window
        orders = table(data_dir, "SELECT signal_id, symbol, ts FROM orders")
        signals = table(data_dir, "SELECT model_id, ts FROM trading_signals")
        predictions = table(data_dir, "SELECT DISTINCT model_id FROM model_predictions")
        assert len(orders) > 5 and {model_of(s, sym) for s, sym in zip(orders["signal_id"], orders["symbol"])} == {pinned}
        assert set(signals["model_id"]) == {pinned} and set(predictions["model_id"]) == {pinned}
        assert w["test_start"] < min(map(ms, signals["ts"])) and max(map(ms, orders["ts"])) <= w["test_end"]
        assert min(map(ms, signals["ts"])) <= w["test_start"] + 15 * 60_000  # the features were warm at the window's start

        # reproducible: the results' details hold the configuration hash and the pinned checkpoint
        details = orjson.loads(table(data_dir, "SELECT details FROM backtest_results LIMIT 1")["details"].iloc[0])
        assert details["config_hash"] == fold["backtest"]["config_hash"] and list(details["models"]) == [pinned]
        notes = details["annotations"]
        assert (notes["model_id"], notes["model_sha256"], notes["test_start"]) == (pinned, cp["sha256"], wf.iso(w["test_start"]))
    assert (out / "walkforward.html").read_text().count("wf15-wf0") >= 2


def test_the_combined_metrics_are_the_metrics_of_the_folds_curves_chained_with_pandas(walked: Any) -> None:
    out, _ = walked
    doc = orjson.loads((out / "walkforward.json").read_bytes())
    returns, pnls, start = [], [], None
    for fold in doc["folds"]:
        report = orjson.loads(next((out / fold["name"] / "backtests").glob("*/report.json")).read_bytes())
        equity = pd.DataFrame(report["equity_curve"]).set_index("ts")["equity"]
        assert equity.iloc[0] == 100_000.0  # every fold trades a fresh account
        start = equity.iloc[0] if start is None else start
        returns.append(equity.pct_change().fillna(0.0))
        pnls += [t["pnl"] for t in report["trades"]]
    chained = start * (1.0 + pd.concat(returns)).cumprod()
    want = M.summary(chained.index.to_numpy(), chained.to_numpy(), pnls, weekdays_only=True)  # the folds' FX convention
    got = doc["combined"]["metrics"]
    for name, value in want.items():
        assert got[name] == (pytest.approx(value, rel=1e-12, abs=1e-12) if math.isfinite(value) else None), name
    assert doc["combined"]["equity_curve"]["ts"] == chained.index.tolist()
    assert doc["combined"]["equity_curve"]["equity"] == pytest.approx(chained.tolist(), rel=1e-12)
    assert got["trades"] == len(pnls) == len(doc["combined"]["trades"]) > 10 and got["sharpe"] is not None
    folds_return = np.prod([1 + f["backtest"]["metrics"]["total_return"] for f in doc["folds"]]) - 1
    assert got["total_return"] == pytest.approx(folds_return, rel=1e-9)


def test_two_walkforwards_of_one_configuration_give_the_same_result(walked: Any, tmp_path: Path) -> None:
    out, _ = walked
    again = tmp_path / "again"
    done = walk(again, *ARGS)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (again / "walkforward.json").read_bytes() == (out / "walkforward.json").read_bytes()
    assert (again / "walkforward.html").read_bytes() == (out / "walkforward.html").read_bytes()


def test_bars_from_a_table_walk_forward_as_the_same_bars_made_here(walked: Any, tmp_path: Path) -> None:
    """source: table reads the engine's table in the data_dir given (here the seeded bars of the window, stored): the first
    fold trains the same checkpoint and trades as the synthetic run's."""
    out, _ = walked
    history = tmp_path / "history"

    async def store() -> None:
        loaded = load(history, *OVERRIDES, profile="backtest")
        bars = wf.load_tape(out / "fold-01" / wf.BARS)  # the synthetic window's bars, as the first fold got them
        async with wf.stores(loaded, history, ["backtesting-engine"]) as rt:
            await rt.stores["clickhouse"].insert("historical_aggregates", bars.messages())

    run_sync(store())
    args = ["--train", "59h", "--test", "1d", "--embargo", "1h", "--start", "2026-10-26T00:00Z", "--end", "2026-10-29T12:00Z"]
    done = walk(tmp_path / "out", *args, "topology.services.backtesting-engine.params.source=table", f"data_dir={history}")
    assert done.returncode == 0, done.stderr[-2000:]
    [here] = orjson.loads((tmp_path / "out" / "walkforward.json").read_bytes())["folds"]
    there = orjson.loads((out / "walkforward.json").read_bytes())["folds"][0]
    assert here["windows"] == there["windows"] and here["model"]["sha256"] == there["model"]["sha256"]
    assert here["backtest"]["metrics"] == there["backtest"]["metrics"] and here["backtest"]["metrics"]["trades"] > 5


def test_a_checkpoint_trained_into_its_test_window_is_refused_before_any_bar_is_replayed(walked: Any, tmp_path: Path) -> None:
    """The plan is sound, but the fold's directory already holds the bars of its test window among those known before
    it (a directory reused from another run): training takes them, and its recorded window is what is checked."""
    out, _ = walked
    fold = tmp_path / "fold-01"
    fold.mkdir()
    for name in (wf.SPEC, wf.BARS):
        shutil.copy(out / "fold-01" / name, fold / name)

    async def dirty() -> None:
        loaded = load(fold, *OVERRIDES, profile="backtest")
        async with wf.stores(loaded, fold, ["feature-engineering-service"]) as rt:
            await wf._insert(rt, loaded, wf.BEFORE_TABLE, wf.load_tape(fold / wf.BARS))

    run_sync(dirty())
    env = {**os.environ, "FXFLOW_PROJECT": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "nodes.backtest.walkforward", str(fold)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    error = orjson.loads((fold / wf.OUTCOME).read_bytes())["error"]
    assert error.startswith("fold-01 (train 2026-10-26T00:00Z → 2026-10-28T11:00Z, test 2026-10-28T12:00Z → 2026-10-29T12:00Z): "
                            "checkpoint wf15-wf01:1 (trained ")  # fmt: skip
    assert "refused: the model is trained on data up to 2026-10-29T" in error and "its test window starts at 2026-10-28T12:00Z" in error
    assert done.stderr.strip().splitlines()[-1] == f"fxrun backtest walkforward: {error}" and "Traceback" not in done.stderr
    assert not (fold / "backtests").exists()


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--train", "30m", "--test", "1d", *WINDOW], 2, "--train 30m is not longer than the target horizon 1h of model wf15"),
        (["--train", "3x", "--test", "1d", *WINDOW], 2, "--train: '3x' is not a duration"),
        (["--train", "3d", "--test", "1d", "--step", "12h", *WINDOW], 2, "--step 12h is shorter than --test 1d: the test windows would overlap"),
        (["--train", "5d", "--test", "1d", *WINDOW], 2, "no fold fits"),
        (["--train", "3d", "--test", "1d", "--model", "nope", *WINDOW], 2, "--model nope: supervised-training-service declares wf15"),
        (["--train", "1d", "--test", "1d", "--embargo", "0m", "--start", "2026-10-31T00:00Z", "--end", "2026-11-03T00:00Z"], 1,
         "fold-01: its training window 2026-10-31T00:00Z → 2026-11-01T00:00Z holds no 15m bar of EURUSD"),
        (["--train", "2d", "--test", "1d", "--embargo", "0m", "--start", "2026-10-29T00:00Z", "--end", "2026-11-01T00:00Z"], 1,
         "fold-01: its test window 2026-10-31T00:00Z → 2026-11-01T00:00Z holds no 1m bar of EURUSD"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_without_a_traceback(args: list[str], code: int, says: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert fxrun(["backtest", "walkforward", *args, "--out", str(tmp_path / "out"), *OVERRIDES]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fxrun backtest walkforward: ") and says in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_training_window_too_short_for_the_models_min_rows_fails_its_fold_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    model = MODEL.replace("min_rows: 50", "min_rows: 400")
    env = {**os.environ, "FXFLOW_PROJECT": str(ROOT)}
    command = [sys.executable, "-m", "framework.cli", "backtest", "walkforward", "--train", "3d", "--test", "1d", "--embargo", "1h",
               "--start", "2026-10-26T00:00Z", "--end", "2026-10-30T06:00Z", "--out", str(out), *OVERRIDES[:3],
               f"++topology.services.supervised-training-service.params.models=[{model}]"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "fxrun backtest walkforward: fold-01 (train 2026-10-26T00:00Z → 2026-10-29T00:00Z, test 2026-10-29T01:00Z → 2026-10-30T01:00Z): "
        "its training window gives too few 15m feature rows (EURUSD 250); model wf15 needs min_rows 400 per symbol: "
        "lengthen --train or lower the model's min_rows"
    ]
    doc = orjson.loads((out / "walkforward.json").read_bytes())
    assert doc["combined"] is None and not (out / "fold-01" / "backtests").exists()
