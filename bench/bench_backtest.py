"""Backtest speed: the SMA 10/30 crossover on N one-minute bars through the live nodes, against backtesting.py.

    .venv/bin/python bench/bench_backtest.py                 # 1,000,000 bars (the figure; tens of minutes)
    .venv/bin/python bench/bench_backtest.py -n 20000        # a quick look

One run of ``topology=backtest`` with the reference overrides (nodes/backtest/reference.py:
backtesting-engine replaying seeded EURUSD 1m bars, feature-engineering with two SMA distances,
inference's ``sma_cross`` rule, the risk gate with a fixed volume, execution, the paper broker
filling at the next bar's open with no costs, performance-monitoring), in-process on the
simulation driver as ``fxrun topology=backtest`` runs it, and backtesting.py on the very same
bars in the same process, with the same rule (``exclusive_orders``, next-open fills).

Prints bars/s of both and their ratio (the aim: the live nodes at least 3x backtesting.py), the
replay alone (from backtest.started to backtest.completed, wall clock) and with start-up, and
whether the trades are identical (every fill: time, side, volume, price). Then where the time
goes: each service's handler time per bar (the runtime's own latency counters), and the rest
(the simulation driver, the bus, the table writers) by difference.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from framework.testing import load, make_runtime, query_df  # noqa: E402
from framework.transport.inprocess import InProcessPubSub  # noqa: E402
from nodes.backtest import reference  # noqa: E402
from nodes.backtest import tape as tapes  # noqa: E402

END = 1793397600000  # Friday 2026-10-30T22:00Z: the last bar of a week


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


async def live(n: int, data_dir: Path, extra: list[str]) -> dict[str, Any]:
    start = tapes.start_for(n, END)
    loaded = load(data_dir, *reference.overrides(iso(start), iso(END), report=False), *extra, profile="backtest", project=ROOT)
    bus = InProcessPubSub()
    marks: dict[str, float] = {}

    cpu: dict[str, float] = {}

    async def status(subject: str, message: dict[str, Any], headers: Any) -> None:
        marks.setdefault(message["status"], time.perf_counter())
        cpu.setdefault(message["status"], time.thread_time())

    collector = {"collections": 0, "seconds": 0.0, "since": 0.0}

    def collecting(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collector["since"] = time.perf_counter()
        else:
            collector["collections"] += 1
            collector["seconds"] += time.perf_counter() - collector["since"]

    await bus.connect()
    await bus.subscribe("backtest.>", status)
    rt = make_runtime(loaded, data_dir, pubsub=bus)
    began = time.perf_counter()
    gc.callbacks.append(collecting)
    try:
        await rt.run()
    finally:
        gc.callbacks.remove(collecting)
    total = time.perf_counter() - began
    replay = marks.get("completed", time.perf_counter()) - marks.get("started", began)
    loop_cpu = cpu.get("completed", 0.0) - cpu.get("started", 0.0)
    return {"start": start, "total": total, "replay": replay, "loop_cpu": loop_cpu, "metrics": rt.metrics(), "completed": "completed" in marks,
            "collector": collector}


def expected_fills(trades: pd.DataFrame) -> list[tuple[int, str, float, float]]:
    """backtesting.py's trades as the paper broker's fills: a change of side is one order closing one trade and opening the next."""
    fills: dict[tuple[int, str], list[float]] = {}
    for t in trades.itertuples():
        side = "buy" if t.Size > 0 else "sell"
        fills.setdefault((int(t.EntryTime.value // 1_000_000), side), []).append(float(t.EntryPrice))
        if not pd.isna(t.ExitTime):
            fills.setdefault((int(t.ExitTime.value // 1_000_000), "sell" if side == "buy" else "buy"), []).append(float(t.ExitPrice))
    return sorted((ts, side, float(len(prices)), prices[0]) for (ts, side), prices in fills.items())


def where_time_goes(metrics: list[dict[str, Any]], n: int, replay: float) -> None:
    print("where the time goes (handler time per bar, the runtime's counters; the rest: driver, bus, writers, timers):")
    handled = 0.0
    for m in sorted(metrics, key=lambda m: -m["handler_latency_ms"]["total"]):
        seconds = m["handler_latency_ms"]["total"] / 1000
        handled += seconds
        print(f"  {m['service']:30s} {seconds / n * 1e6:9.1f} us/bar  {m['in'] / n:5.2f} msg/bar  {seconds / replay * 100:5.1f}%")
    rest = max(0.0, replay - handled)
    print(f"  {'(outside handlers)':30s} {rest / n * 1e6:9.1f} us/bar  {'':14s}{rest / replay * 100:5.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--bars", type=int, default=1_000_000, help="one-minute bars (default 1,000,000)")
    parser.add_argument("--keep", help="keep the run's data_dir here (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="extra overrides of the live run (key=value)")
    args = parser.parse_args()
    n = args.bars
    data_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    if args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)

    start = tapes.start_for(n, END)
    bars = tapes.synthetic(["EURUSD"], ["1m"], start, END, 7).columns
    assert len(bars["ts"]) == n, (len(bars["ts"]), n)
    print(f"SMA 10/30 crossover, EURUSD 1m, {n:,} bars {iso(start)} .. {iso(END)}, next-bar-open fills, no costs")

    trades, bt_seconds = reference.backtesting_py_trades(bars["ts"], bars["open"], bars["high"], bars["low"], bars["close"])
    bt_rate = n / bt_seconds
    print(f"backtesting.py        {bt_seconds:9.2f} s   {bt_rate:12,.0f} bars/s   ({len(trades)} trades)")

    result = asyncio.run(live(n, data_dir, args.overrides))
    rate = n / result["replay"]
    print(f"live nodes (replay)   {result['replay']:9.2f} s   {rate:12,.0f} bars/s")
    print(f"live nodes (with start-up and stop) {result['total']:.2f} s: {n / result['total']:,.0f} bars/s")
    print(f"event-loop thread CPU of the replay {result['loop_cpu'] / n * 1e6:.1f} us/bar (the figure other load disturbs least)")
    gcs = result["collector"]
    print(f"cycle collector during the run  {gcs['seconds']:.2f} s in {gcs['collections']} collections ({gcs['seconds'] / n * 1e6:.1f} us/bar)")
    print(f"ratio live/backtesting.py {rate / bt_rate:.4f} (aim >= 3)")

    fills = asyncio.run(query_df(data_dir, "SELECT ts, side, quantity, price FROM executions ORDER BY ts, fill_id"))
    ours = sorted((int(r.ts), r.side, float(r.quantity), float(r.price)) for r in fills.itertuples())
    want = expected_fills(trades)
    if ours == want:
        print(f"trades identical: yes ({len(ours)} fills, {int(trades['ExitTime'].notna().sum())} closed trades)")
    else:
        diff = sorted(set(ours) ^ set(want))
        print(f"trades identical: NO ({len(ours)} fills here, {len(want)} from backtesting.py; {len(diff)} differ, first: {diff[:4]})")
    where_time_goes(result["metrics"], n, result["replay"])
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ours == want and result["completed"] else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
