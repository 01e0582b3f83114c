"""The backtesting engine (issue 12, point 5): one backtest through the live nodes of topology=backtest.

The reference strategy (nodes/backtest/reference.py: SMA 10/30 on 1-minute bars, fixed volume,
next-bar-open fills, no costs) runs through backtesting-engine, feature-engineering, inference,
the risk gate, execution, the paper broker and performance-monitoring on the simulation driver,
on seeded bars that cross a weekend, and its fills and round trips equal backtesting.py's on the
same bars. Two runs of one configuration in two directories give the same bytes; bad input is one
line; the HTML report opens in headless Chromium with its charts drawn (a screenshot is kept).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from framework.testing import load, make_runtime, query_df, recording_bus
from nodes.backtest import command, reference
from nodes.backtest import report as html
from nodes.backtest import tape as tapes
from nodes.backtest.node import model_of
from tests import browser as chromium

ROOT = Path(__file__).resolve().parents[1]
END = 1793599200000  # Monday 2026-11-02T06:00Z: the window crosses the weekend
BARS = 2400
SEED = 16  # its first bar after the weekend changes side: that order needs the bar's own price at the risk gate and the broker
ENGINE = "backtesting-engine"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


START = tapes.start_for(BARS, END)
WINDOW = (iso(START), iso(END))


def artifact(path: Path) -> None:
    target = os.environ.get("FXFLOW_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def run_reference(data_dir: Path, *extra: str) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    loaded = load(data_dir, *reference.overrides(*WINDOW, seed=SEED), *extra, profile="backtest")
    bus, statuses = await recording_bus("backtest.>")
    rt = make_runtime(loaded, data_dir, pubsub=bus)
    await rt.run()
    return rt, statuses


def run_sync(coro: Any) -> Any:
    """``asyncio.run`` on a thread of its own: also from an async test, whose loop is running."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def table(data_dir: Path, sql: str) -> pd.DataFrame:
    return run_sync(query_df(data_dir, sql))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[tuple[str, dict[str, Any]]]]:
    data_dir = tmp_path_factory.mktemp("reference")
    rt, statuses = run_sync(run_reference(data_dir))
    return data_dir, rt, statuses


def _backtesting_py() -> pd.DataFrame:
    bars = tapes.synthetic(["EURUSD"], ["1m"], START, END, SEED).columns
    trades, _ = reference.backtesting_py_trades(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"])
    return trades


def _ms(stamp: Any) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)


def test_the_trades_equal_backtesting_pys(reference_run: tuple[Path, Any, list[Any]]) -> None:
    data_dir, _, _ = reference_run
    theirs = _backtesting_py()
    assert len(theirs) > 40 and theirs["ExitTime"].isna().sum() == 1  # many trades; the last one still open at the end
    assert 1793570460000 in {_ms(t) for t in theirs["EntryTime"]}  # one on the open after the first bar of the week (Sunday 22:01)

    # every fill: a change of side is one netting order of 2 lots, as backtesting.py closes one trade and opens the next at that open
    fills = (table(data_dir, "SELECT ts, side, quantity, price FROM executions ORDER BY ts, fill_id"))
    expected: dict[tuple[int, str], list[float]] = {}
    for t in theirs.itertuples():
        side = "buy" if t.Size > 0 else "sell"
        expected.setdefault((_ms(t.EntryTime), side), []).append(t.EntryPrice)
        if not pd.isna(t.ExitTime):
            expected.setdefault((_ms(t.ExitTime), "sell" if side == "buy" else "buy"), []).append(t.ExitPrice)
    want = sorted((ts, side, float(len(prices)), prices[0]) for (ts, side), prices in expected.items())
    got = sorted((int(r.ts), r.side, float(r.quantity), float(r.price)) for r in fills.itertuples())
    assert got == want

    # the round trips of performance-monitoring's report: the same entry and exit times and prices
    result = orjson.loads(next((data_dir / "backtests").glob("*/result.json")).read_bytes())
    assert result["metrics"]["trades"] == float(theirs["ExitTime"].notna().sum())
    closed = theirs[theirs["ExitTime"].notna()]
    trips = (table(data_dir, "SELECT side, open_ts, ts, volume, entry_price, exit_price FROM trade_analysis ORDER BY open_ts"))
    ours = [(r.side, int(r.open_ts), int(r.ts), float(r.entry_price), float(r.exit_price)) for r in trips.itertuples()]
    want_trips = [("buy" if t.Size > 0 else "sell", _ms(t.EntryTime), _ms(t.ExitTime), t.EntryPrice, t.ExitPrice) for t in closed.itertuples()]
    assert ours == want_trips


def test_status_results_and_report_name_the_run(reference_run: tuple[Path, Any, list[Any]]) -> None:
    data_dir, rt, statuses = reference_run
    run_id = f"bt-{rt.config_hash[:12]}"
    assert [s for s, _ in statuses][0] == f"backtest.started.{run_id}"
    kinds = [m["status"] for _, m in statuses]
    assert kinds[0] == "started" and kinds[-1] == "completed" and kinds.count("progress") >= 5
    progress = [m["progress"] for _, m in statuses if m["status"] == "progress"]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 1
    done = statuses[-1][1]
    assert done["metrics"]["bars"] == BARS and done["metrics"]["trades"] > 40 and "sharpe" in done["metrics"]

    rows = (table(data_dir, "SELECT run_id, metric, value, details FROM backtest_results ORDER BY metric"))
    assert set(rows["run_id"]) == {run_id} and {"bars", "total_return", "max_drawdown", "trades"} <= set(rows["metric"])
    details = orjson.loads(rows["details"].iloc[0])
    assert details["config_hash"] == rt.config_hash
    assert details["params"]["start"] == WINDOW[0] and details["params"]["source"] == "synthetic"
    assert list(details["models"]) == [next(iter(details["models"]))] and details["models"][next(iter(details["models"]))] > 40
    assert next(iter(details["models"])).startswith("sma-10-30-")
    assert (data_dir / details["report"]).is_file()


def _dump(data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sql in {
        "orders": "SELECT * EXCEPT (msg_id, cause_id) FROM orders ORDER BY order_id, status, ts",
        "executions": "SELECT * EXCEPT (msg_id, cause_id) FROM executions ORDER BY fill_id",
        "results": "SELECT * FROM backtest_results ORDER BY run_id, metric",
        "trades": "SELECT * FROM trade_analysis ORDER BY open_ts, symbol",
    }.items():
        frame = (table(data_dir, sql))
        out[name] = orjson.dumps(frame.to_dict("records"), option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    folder = next((data_dir / "backtests").iterdir())
    out["report.html"] = (folder / "report.html").read_bytes()
    out["result.json"] = (folder / "result.json").read_bytes()
    return out


def test_two_backtests_of_one_configuration_are_byte_identical(reference_run: tuple[Path, Any, list[Any]], tmp_path: Path) -> None:
    first, _, _ = reference_run
    run_sync(run_reference(tmp_path))
    a, b = _dump(first), _dump(tmp_path)
    assert len(a["executions"]) > 1000 and len(a["orders"]) > 1000
    for name in a:
        assert a[name] == b[name], name


async def _store_bars(data_dir: Path) -> int:
    """The reference window's bars in historical_aggregates, as an archive holds them: revised bars (revision > 0)
    among them, with sequence numbers, and a bar of another symbol and of another timeframe the run does not take."""
    from framework.runtime import assembly

    loaded = load(data_dir, *reference.overrides(*WINDOW), profile="backtest")
    rt = make_runtime(loaded, data_dir)
    await assembly.open_tables(rt)
    rows = tapes.synthetic(["EURUSD"], ["1m"], START, END, SEED).messages()
    for i, row in enumerate(rows):
        row["seq"] = 1000 + i
        row["revision"] = i % 3
        row["source"] = "polygon"
    other = [{**rows[0], "symbol": "GBPUSD"}, {**rows[0], "timeframe": "5m", "ts_close": rows[0]["ts"] + 300_000}]
    store = rt.stores["clickhouse"]
    await store.insert("historical_aggregates", rows + other)
    for s in {id(s): s for s in rt.stores.values()}.values():
        await s.close()
    return len(rows)


def test_bars_from_the_table_trade_as_the_same_bars_made_here(reference_run: tuple[Path, Any, list[Any]], tmp_path: Path) -> None:
    """source: table replays what historical_aggregates holds (revised bars as first publications: the broker and the risk
    gate ignore revisions), and feature-engineering does not prime its windows from that very table (bars_table: null)."""
    assert run_sync(_store_bars(tmp_path)) == BARS
    run_sync(run_reference(tmp_path, f"topology.services.{ENGINE}.params.source=table"))
    sql = "SELECT ts, side, quantity, price FROM executions ORDER BY ts, fill_id"
    first, here = table(reference_run[0], sql), table(tmp_path, sql)
    assert len(here) > 40 and here.equals(first)


def _fxrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FXFLOW_PROJECT": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def _one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower() and " INFO " not in line and " WARNING " not in line]
    assert errors, done.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["pairs=[EURXXX]"], "'EURXXX' is not declared"),
        ([f"topology.services.{ENGINE}.params.start=2026-10-30T00:00Z", f"topology.services.{ENGINE}.params.end=2026-10-29T00:00Z"],
         "end 2026-10-29T00:00Z is not after start"),
        ([f"topology.services.{ENGINE}.params.source=table", "pairs=[EURUSD]"], "no bars of EURUSD"),
        ([f"++topology.services.{ENGINE}.params.timeframes=[2h]", "pairs=[EURUSD]"], "'2h', which is not in `timeframes`"),
    ],
    ids=["unknown-symbol", "end-before-start", "no-history", "unknown-timeframe"],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, overrides: list[str], says: str) -> None:
    done = _fxrun(tmp_path, "topology=backtest", f"data_dir={tmp_path / 'run'}", *overrides)
    line = _one_error(done)
    assert says in line, done.stderr
    if says.startswith("no bars"):  # where it looked, and how to get history
        assert "historical_aggregates" in line and "polygon-historical-downloader" in line and "source=synthetic" in line


async def test_a_second_backtest_in_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    window = reference.overrides(iso(END - 300 * 60_000), iso(END), report=False)
    loaded = load(tmp_path, *window, profile="backtest")
    await make_runtime(loaded, tmp_path).run()
    with pytest.raises(Exception, match="holds backtest bt-.* already"):
        await make_runtime(load(tmp_path, *window, profile="backtest"), tmp_path).run()


# ------------------------------------------------------------------------------ the report


def hand_written_report() -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    ts = np.arange(1790000000000, 1790000000000 + 60 * 86_400_000, 3_600_000)  # two months of hourly marks
    equity = 100_000 + np.cumsum(np.sin(np.arange(len(ts)) / 40) * 30 - 2)
    curve = [{"ts": int(t), "equity": float(e), "balance": float(e) - 15.0} for t, e in zip(ts, equity)]
    trades = [{"symbol": "EURUSD", "side": "buy" if i % 2 else "sell", "open_ts": int(ts[i * 40]), "close_ts": int(ts[i * 40 + 30]),
               "volume": 1.0, "entry_price": 1.08 + i * 1e-4, "exit_price": 1.081 - i * 1e-4, "pnl": 100.0 - 30 * i, "commission": 0.0}
              for i in range(8)]  # fmt: skip
    report = {"ts": int(ts[-1]), "currency": "USD", "balance": 99_000.0, "equity": float(equity[-1]), "margin": 0.0, "open_positions": 0,
              "metrics": {"total_return": -0.01, "sharpe": -0.4, "max_drawdown": 0.03, "max_drawdown_duration_ms": 9.0e8,
                          "trades": 8.0, "win_rate": 0.5, "profit_factor": float("nan")},
              "equity_curve": curve, "trades": trades, "pnl_by_symbol": {"EURUSD": -40.0}}  # fmt: skip
    prices = {"EURUSD": {"ts_close": ts, "close": 1.08 + np.sin(np.arange(len(ts)) / 25) * 1e-3}}
    return report, prices


def test_report_tables_from_a_hand_written_report() -> None:
    report, prices = hand_written_report()
    page = html.render("bt-hand", report, prices, {"params": {"start": "a", "end": "b", "source": "table"}, "symbols": ["EURUSD"],
                                                   "timeframes": ["1m"], "models": {"m-1": 8}, "config_hash": "c0ffee"})  # fmt: skip
    assert page == html.render("bt-hand", report, prices, {"params": {"start": "a", "end": "b", "source": "table"}, "symbols": ["EURUSD"],
                                                           "timeframes": ["1m"], "models": {"m-1": 8}, "config_hash": "c0ffee"})  # fmt: skip
    assert "http://" not in page and "https://" not in page and "src=" not in page  # offline: nothing to fetch
    assert page.count('<figure class="chart"') == 3 and page.count('class="entry ') == 8 and page.count('class="exit ') == 8
    months = html.monthly_returns(report["equity_curve"])
    first = report["equity_curve"][0]["equity"]
    last_of = {}
    for p in report["equity_curve"]:
        m = datetime.fromtimestamp(p["ts"] / 1000, timezone.utc)
        last_of[(m.year, m.month)] = p["equity"]
    keys = sorted(last_of)
    assert months[keys[0][0]][keys[0][1]] == pytest.approx(last_of[keys[0]] / first - 1)
    assert months[keys[1][0]][keys[1][1]] == pytest.approx(last_of[keys[1]] / last_of[keys[0]] - 1)
    assert "-1.00%" in page and "10.4 days" in page  # total_return as a percentage, a duration in days


def test_downsample_keeps_the_extremes() -> None:
    x = np.arange(100_000)
    y = np.sin(x / 500.0)
    y[31_337] = 9.0
    xs, ys = html.downsample(x, y, 900)
    assert len(xs) <= 900 and ys.max() == 9.0 and ys.min() == y.min() and np.all(np.diff(xs) > 0)


async def _open(tmp_path: Path, path: Path, shot: str) -> tuple[str, list[str]]:
    async with chromium.Browser.launch(tmp_path / f"chromium-{shot}", width=1100, height=1600) as browser:
        page = await browser.page()
        await page.goto(path.as_uri())
        status = await page.wait_for("document.body && document.body.dataset.status !== 'loading' && document.body.dataset.status")
        png = await page.screenshot(tmp_path / shot)
        artifact(png)
        return status, page.problems()


@pytest.mark.skipif(not chromium.available(), reason="chromium is not installed (tasks.py test installs it)")
async def test_the_report_opens_offline_in_headless_chromium(reference_run: tuple[Path, Any, list[Any]], tmp_path: Path) -> None:
    data_dir, _, _ = reference_run
    path = next((data_dir / "backtests").glob("*/report.html"))
    status, problems = await _open(tmp_path, path, "backtest-report.png")
    assert status == "ok" and not problems, (status, problems)
    assert (tmp_path / "backtest-report.png").stat().st_size > 20_000

    report, prices = hand_written_report()  # the page's own check fails on an empty chart and on a script error
    empty = html.render("bt-empty", {**report, "equity_curve": report["equity_curve"][:1]}, prices, {"params": {}})
    (tmp_path / "empty.html").write_text(empty)
    status, _ = await _open(tmp_path, tmp_path / "empty.html", "empty.png")
    assert status.startswith("error: empty chart equity")
    broken = html.render("bt-broken", report, prices, {"params": {}}).replace("</body>", "<script>undefinedCall();</script></body>")
    (tmp_path / "broken.html").write_text(broken)
    status, problems = await _open(tmp_path, tmp_path / "broken.html", "broken.png")
    assert status.startswith("error:") and "undefinedCall" in status and problems


# ------------------------------------------------------------------------------ parts


def test_synthetic_tape_is_in_event_order_and_its_timeframes_agree() -> None:
    end = 1793620800000  # Monday 12:00: Friday, the weekend and Monday morning
    tape = tapes.synthetic(["EURUSD", "XAUUSD"], ["1h", "1m", "5m"], end - 4 * 86_400_000 + 123_000, end, 11)
    assert tape.timeframes == ["1m", "5m", "1h"]
    c = tape.columns
    order = np.lexsort((tape.timeframe, tape.symbol, c["ts_close"]))
    assert np.array_equal(order, np.arange(len(tape)))  # by close, then symbol, then finest first
    assert c["ts"].min() >= end - 4 * 86_400_000 + 123_000 and c["ts_close"].max() <= end
    minute = tape.stream("EURUSD", "1m")
    for tf, ms in (("5m", 300_000), ("1h", 3_600_000)):
        coarse = tape.stream("EURUSD", tf)
        assert len(coarse["ts"]) > 10
        for i in (0, len(coarse["ts"]) // 2, len(coarse["ts"]) - 1):
            inside = (minute["ts"] >= coarse["ts"][i]) & (minute["ts"] < coarse["ts"][i] + ms)
            assert coarse["open"][i] == minute["open"][inside][0] and coarse["close"][i] == minute["close"][inside][-1]
            assert coarse["high"][i] == minute["high"][inside].max() and coarse["low"][i] == minute["low"][inside].min()
    messages = tape.messages(0, 3)
    assert messages[0]["revision"] == 0 and messages[0]["complete"] is True and "seq" not in messages[0]
    assert isinstance(messages[0]["tick_count"], int) and messages[0]["spread_mean"] > 0


def test_model_id_from_a_signal_id() -> None:
    assert model_of("sma-10-30-1a2b3c4d-EURUSD-1m-1793599200000", "EURUSD") == "sma-10-30-1a2b3c4d"
    assert model_of("signal-1h-v3-XAUUSD-1h-1793599200000", "XAUUSD") == "signal-1h-v3"
    assert model_of("hand-made", "EURUSD") == "hand-made"


def test_sweep_grid_and_values() -> None:
    assert command.split_values("a,b,[1,2],{x: 1, y: 2},'p,q'") == ["a", "b", "[1,2]", "{x: 1, y: 2}", "'p,q'"]
    assert command.grid(["k=1,2", "j=[a,b],c"]) == [["k=1", "j=[a,b]"], ["k=1", "j=c"], ["k=2", "j=[a,b]"], ["k=2", "j=c"]]
    assert command.grid([]) == [[]]
