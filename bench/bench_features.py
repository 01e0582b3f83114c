"""Feature engineering: batch against TA-Lib alone, and the streaming update per closed bar.

    .venv/bin/python bench/bench_features.py                   # 1M bars batch, a 1m block (B minutes) of streaming
    .venv/bin/python bench/bench_features.py -n 100000 --hours 1

Prints, in one run:
1. batch, the TA-Lib subset: the trend, momentum and bands groups of the core set (W = 512,
   B = 1024) over N 1m bars of one pair through :class:`~nodes.features.engine.Batch` (anchored
   windows, ratios to close, assembly), against TA-Lib computing the same indicators once over
   the whole series (the same calls, no normalisation): the ratio (aim <= 2x), and how much of
   ours is spent inside TA-Lib (one more run, every TA-Lib call timed): the anchored windows run
   the running indicators over (W + B) / B times the bars, about 1.5x by themselves;
2. batch, the full set (every group, ~119 features, context from 15m and 1h, cross-pair inputs
   from gold, calendar and FRED joins) over the same N 1m bars: seconds, us per row, and the ratio
   to TA-Lib alone;
3. streaming: 14 pairs x 7 timeframes primed with their history, then every bar of ``--hours``
   hours fed in time order to ``StreamingEngine.on_bar``: p50 and p99 of one update (aim p99 < 2 ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import talib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.topology.model import Instrument  # noqa: E402
from nodes.features.bars import Bars  # noqa: E402
from nodes.features.engine import Batch, History, StreamingEngine  # noqa: E402
from nodes.features.featureset import FeatureSetParams, Groups, ResolvedFeatureSet  # noqa: E402
from nodes.features.synthetic import END_MS, SyntheticWorld, synthetic_bars  # noqa: E402
from nodes.features.ta import ta  # noqa: E402

PAIRS = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP", "EURJPY", "GBPJPY",
         "AUDJPY", "EURCHF", "EURAUD", "XAUUSD"]  # fmt: skip
TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]


def instruments() -> dict[str, Instrument]:
    return {s: Instrument(kind="metal" if s.startswith("XAU") else "fx", pip=0.01 if s.endswith("JPY") or s.startswith("XAU") else 1e-4, digits=3) for s in PAIRS}


def talib_alone(b: Bars) -> None:
    """The indicators of the trend, momentum and bands groups, each computed once by TA-Lib."""
    h, lo, c, o = b.high, b.low, b.close, b.open
    for n in (10, 20, 50, 100, 200):
        talib.SMA(c, n)
    for n in (12, 26, 50):
        talib.EMA(c, n)
    talib.MACD(c, 12, 26, 9)
    talib.ADX(h, lo, c, 14), talib.PLUS_DI(h, lo, c, 14), talib.MINUS_DI(h, lo, c, 14)
    talib.AROON(h, lo, 25), talib.AROONOSC(h, lo, 25), talib.LINEARREG_SLOPE(c, 20)
    for n in (7, 14, 21):
        talib.RSI(c, n)
    talib.STOCH(h, lo, c, 14, 3, 0, 3, 0), talib.CCI(h, lo, c, 20), talib.WILLR(h, lo, c, 14)
    for n in (5, 10, 20):
        talib.ROCR(c, n)
    talib.MOM(c, 10), talib.ULTOSC(h, lo, c, 7, 14, 28), talib.CMO(c, 14), talib.TRIX(c, 15), talib.BOP(o, h, lo, c)
    for n in (7, 14, 28):
        talib.NATR(h, lo, c, n)
    tr = talib.TRANGE(h, lo, c)
    talib.BBANDS(c, 20, 2, 2, 0), talib.BBANDS(c, 50, 2, 2, 0)
    talib.EMA(c, 20), talib.EMA(tr, 20)


def best(fns: tuple[Callable[[], Any], ...], repeats: int) -> list[float]:
    """The best time of each of ``fns`` over ``repeats`` rounds, the functions taking turns within a
    round (so a change of the machine's load during the run weighs on all of them alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(t) for t in times]


def machine_load() -> str:
    """The machine's load (1, 5 and 15 minutes), printed with each figure: the benchmarks share the CPUs."""
    try:
        return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load unknown"


@contextmanager
def talib_timed() -> Iterator[list[float]]:
    """Every TA-Lib function the kernel calls, timed: the seconds spent inside them (``[0]``)."""
    spent = [0.0]
    saved = dict(vars(ta))

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[0] += time.perf_counter() - start

        return call

    for name, fn in saved.items():
        setattr(ta, name, timed(fn))
    try:
        yield spent
    finally:
        for name, fn in saved.items():
            setattr(ta, name, fn)


def run_batch(fs: ResolvedFeatureSet, history: History, stream: tuple[str, str]) -> int:
    """Every row of ``stream`` (the rows of its context timeframes are computed too)."""
    return sum(int(frame.valid.sum()) for frame in Batch(fs, history).frames(streams=[stream]))


def bench_batch(n: int, repeats: int, block: int) -> None:
    insts = instruments()
    one = synthetic_bars(["EURUSD", "XAUUSD"], "1m", n, seed=1)
    eurusd = one["EURUSD"]
    subset = ResolvedFeatureSet(FeatureSetParams(block=block, groups={"trend": {}, "momentum": {}, "bands": {}}), insts, ["1m"])
    alone, ours = best((lambda: talib_alone(eurusd), lambda: run_batch(subset, History({("EURUSD", "1m"): eurusd}), ("EURUSD", "1m"))), repeats)
    with talib_timed() as inside:
        run_batch(subset, History({("EURUSD", "1m"): eurusd}), ("EURUSD", "1m"))
    print(f"batch TA-Lib subset ({len(subset.kernel_names)} features, W={subset.history} B={subset.block}): {n:,} bars  "
          f"ours {ours:.2f} s  TA-Lib alone {alone:.2f} s  ratio {ours / alone:.2f}x (aim <= 2x); "
          f"inside TA-Lib {inside[0]:.2f} s ({inside[0] / alone:.2f}x alone); {machine_load()}")  # fmt: skip

    groups = Groups.core().model_dump()
    groups["context"]["timeframes"] = {"1m": ["15m", "1h"], "15m": ["1h"], "1h": []}
    full = ResolvedFeatureSet(FeatureSetParams(block=block, groups=groups), insts, ["1m", "15m", "1h"])
    bars = {("EURUSD", "1m"): eurusd, ("XAUUSD", "1m"): one["XAUUSD"]}
    for tf, div in (("15m", 15), ("1h", 60)):
        for symbol, b in synthetic_bars(["EURUSD", "XAUUSD"], tf, max(n // div, 2000), seed=1).items():
            bars[(symbol, tf)] = b
    externals = SyntheticWorld(["EURUSD", "XAUUSD"], ["1d"], max(n // 1440, 60) + 400, seed=1, fred_series=list(full.params.groups.macro.series))
    known = externals.history(full.params.groups.events, full.params.groups.macro)
    history = History(bars, known.calendar, known.macro)
    start = time.perf_counter()
    rows = run_batch(full, history, ("EURUSD", "1m"))
    took = time.perf_counter() - start
    print(f"batch full set ({len(full.names('1m'))} features, context from 15m and 1h, gold, calendar, FRED): {n:,} bars  "
          f"{took:.2f} s  {took / n * 1e6:.2f} us/row  {rows:,} rows  ratio to TA-Lib alone {took / alone:.2f}x; {machine_load()}")  # fmt: skip


def bench_streaming(hours: float, block: int) -> None:
    fs = ResolvedFeatureSet(FeatureSetParams(block=block), instruments(), TIMEFRAMES)
    count = fs.history + 2 * fs.block + 16
    end = END_MS + 2 * 86_400_000  # a Wednesday: the hours before it are trading hours
    world = SyntheticWorld(PAIRS, TIMEFRAMES, count, seed=2, end_ms=end, fred_series=list(fs.params.groups.macro.series))
    g = fs.params.groups
    horizon = int(hours * 3_600_000)
    cut = end - horizon
    known = world.history(g.events, g.macro, cut)
    engine = StreamingEngine(fs, known.calendar, known.macro)
    engine.prime(known)
    full = world.bars
    order = sorted((int(b.ts_close[i]), tf, s, i) for (s, tf), b in full.items() for i in np.flatnonzero(b.ts_close > cut))
    latencies = np.empty(len(order))
    for k, (_, tf, symbol, i) in enumerate(order):
        b = full[(symbol, tf)]
        values = (b.open[i], b.high[i], b.low[i], b.close[i], b.ticks[i], b.spread[i], b.spread_min[i], b.spread_max[i])
        start = time.perf_counter()
        engine.on_bar(symbol, tf, int(b.ts[i]), int(b.ts_close[i]), values)
        latencies[k] = time.perf_counter() - start
    if not len(latencies):
        print("streaming: no bar in the window")
        return
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
    print(f"streaming {len(PAIRS)} pairs x {len(TIMEFRAMES)} timeframes: {len(latencies):,} updates  p50 {p50:.3f} ms  "
          f"p99 {p99:.3f} ms  max {latencies.max() * 1e3:.3f} ms (aim p99 < 2 ms); {machine_load()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="1m bars of the batch measurements")
    parser.add_argument("-r", type=int, default=5, help="rounds of the subset measurement, ours and TA-Lib's in turn (best of)")
    parser.add_argument("--hours", type=float, default=None,
                        help="hours of bars fed to the streaming engine (default: a whole 1m block and an hour, so every window length of the 1m stream is met)")
    parser.add_argument("--block", type=int, default=FeatureSetParams().block, help="B of the measured sets (default: the core set's)")
    args = parser.parse_args()
    bench_batch(args.n, args.r, args.block)
    bench_streaming(args.hours if args.hours is not None else args.block / 60 + 1, args.block)


if __name__ == "__main__":
    main()
