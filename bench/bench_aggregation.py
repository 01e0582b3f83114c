"""Candle aggregation: streaming against a bare per-tick loop, batch against pandas resample.

    .venv/bin/python bench/bench_aggregation.py                 # 10M ticks batch, 2M streaming
    .venv/bin/python bench/bench_aggregation.py -n 2000000 -s 500000

Prints, in one run:
1. streaming: ``StreamingAggregator.add`` for 14 pairs × 7 timeframes (1m … 1d), ticks/s, and a
   bare per-tick loop over the same ticks (append each quote to its symbol's lists, nothing
   else) as the baseline, with their ratio;
2. batch: ``aggregate_frame`` (all 7 timeframes) on N ticks against pandas
   ``resample().ohlc()`` + count + spread mean/min/max per timeframe on the same frame, and the
   speed-up (target >= 1x, aim 3x);
3. ``frame_of`` on the streaming run's closed bars (one ``ClosedBar`` each, as they close live)
   against building one DataFrame per bar and concatenating them (what it did before).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.marketdata.bars import ClosedBar, StreamingAggregator, aggregate_frame, bars_frame, frame_of  # noqa: E402

PAIRS = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP", "EURJPY", "GBPJPY",
         "AUDJPY", "EURCHF", "EURAUD", "XAUUSD"]
TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
T0 = 1_793_577_600_000


def ticks(n: int, seed: int = 1) -> pd.DataFrame:
    """``n`` quotes over the 14 pairs, ~4 per second overall, sorted by time."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.exponential(250, n)).astype(np.int64)
    symbol = np.array(PAIRS)[rng.integers(0, len(PAIRS), n)]
    bid = np.round(1.1 * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 5)
    ask = bid + np.round(rng.uniform(1, 3, n), 1) * 1e-4
    return pd.DataFrame({"symbol": symbol, "ts": ts, "bid": bid, "ask": ask})


def bench_streaming(frame: pd.DataFrame) -> None:
    rows = list(zip(frame["symbol"].tolist(), frame["ts"].tolist(), frame["bid"].tolist(), frame["ask"].tolist()))

    start = time.perf_counter()
    lists: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in PAIRS}
    for symbol, ts, bid, ask in rows:
        lst = lists[symbol]
        lst[0].append(ts)
        lst[1].append(bid)
        lst[2].append(ask)
    bare = len(rows) / (time.perf_counter() - start)

    agg = StreamingAggregator(TIMEFRAMES, lateness_ms=2_000)
    start = time.perf_counter()
    bars = 0
    add = agg.add
    kept: list[ClosedBar] = []
    for symbol, ts, bid, ask in rows:
        closed = add(symbol, ts, bid, ask)
        if closed:
            bars += sum(len(c.bars) for c in closed)
            kept.extend(closed)
    drained = agg.drain()
    bars += sum(len(c.bars) for c in drained)
    ours = len(rows) / (time.perf_counter() - start)
    print(f"streaming, {len(rows):,} ticks, 14 pairs x 7 timeframes ({bars:,} bars)")
    print(f"  bare per-tick loop      {bare:14,.0f} ticks/s")
    print(f"  StreamingAggregator     {ours:14,.0f} ticks/s   ratio {ours / bare:.3f}")
    bench_frame_of(kept + drained)


def bench_frame_of(closed: list[ClosedBar]) -> None:
    singles = [ClosedBar(c.symbol, c.timeframe, c.bars.take(slice(i, i + 1))) for c in closed for i in range(len(c.bars))]
    sample = singles[: min(len(singles), 2_000)]  # the old way is slow: time a sample, scale it
    start = time.perf_counter()
    pd.concat([bars_frame(c.bars, c.symbol, c.timeframe) for c in sample], ignore_index=True)
    old = (time.perf_counter() - start) * len(singles) / len(sample)
    start = time.perf_counter()
    frame = frame_of(singles)
    new = time.perf_counter() - start
    assert len(frame) == len(singles)
    print(f"frame_of, {len(singles):,} closed bars")
    print(f"  a frame per bar         {old:8.2f} s (from {len(sample):,} bars)")
    print(f"  column-wise             {new:8.2f} s   speed-up {old / new:.0f}x")


def pandas_resample(frame: pd.DataFrame) -> int:
    indexed = frame.assign(spread=frame["ask"] - frame["bid"])
    indexed.index = pd.to_datetime(indexed["ts"], unit="ms", utc=True)
    rows = 0
    for tf in TIMEFRAMES:
        rule = {"m": "min", "h": "h", "d": "D"}[tf[-1]]
        r = indexed.groupby("symbol").resample(f"{tf[:-1]}{rule}")
        out = r["bid"].ohlc()
        out["tick_count"] = r["bid"].count()
        out["spread_mean"] = r["spread"].mean()
        out["spread_min"] = r["spread"].min()
        out["spread_max"] = r["spread"].max()
        rows += int((out["tick_count"] > 0).sum())
    return rows


def bench_batch(frame: pd.DataFrame) -> None:
    start = time.perf_counter()
    reference = pandas_resample(frame)
    base = time.perf_counter() - start
    start = time.perf_counter()
    ours = aggregate_frame(frame, TIMEFRAMES)
    elapsed = time.perf_counter() - start
    assert len(ours) == reference, (len(ours), reference)
    print(f"batch, {len(frame):,} ticks, 14 pairs x 7 timeframes ({len(ours):,} bars)")
    print(f"  pandas resample         {base:8.2f} s   {len(frame) / base:14,.0f} ticks/s")
    print(f"  aggregate_frame         {elapsed:8.2f} s   {len(frame) / elapsed:14,.0f} ticks/s   speed-up {base / elapsed:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10_000_000, help="ticks for the batch comparison")
    parser.add_argument("-s", type=int, default=2_000_000, help="ticks for the streaming comparison")
    args = parser.parse_args()
    bench_streaming(ticks(args.s))
    bench_batch(ticks(args.n, seed=2))


if __name__ == "__main__":
    main()
