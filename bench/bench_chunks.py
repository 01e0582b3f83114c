"""Chunk validation per column against row-wise contract validation, and the cost of a Chunk.

    .venv/bin/python bench/bench_chunks.py              # 100,000 ticks and 100,000 features messages, median of 5
    .venv/bin/python bench/bench_chunks.py -n 20000     # quicker
    .venv/bin/python bench/bench_chunks.py -n 500 -r 1  # a smoke run

Prints, in one run:
1. for tick.v1 and features.v1: the rows/s of ``Contract.is_valid`` over every message (the
   baseline, jsonschema-rs row by row) and of ``ChunkValidator.check`` over a chunk of the same
   messages, and their ratio; then the same with ``Chunk.from_rows`` counted in (messages that
   arrive as dicts);
2. ``Chunk.from_rows`` and ``Chunk.rows()`` in rows/s at full size, and in µs for one message;
3. the chunk size where the column checks overtake row-by-row validation (``ROWWISE_BELOW``).

The loops compared run in turn within each repeat, so a slow spell of the machine hits both;
every figure is the median of the repeats.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.chunk import Chunk  # noqa: E402
from framework.chunk_validation import ROWWISE_BELOW, ChunkValidator  # noqa: E402
from framework.contracts import Contract, ContractRegistry  # noqa: E402

SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "USDCHF", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP", "EURJPY", "GBPJPY", "XAUUSD", "XAGUSD", "EURCHF", "AUDJPY"]
FEATURES = ["rsi_14", "macd", "macd_signal", "macd_hist", "atr_14", "ema_20_dist", "ema_200_dist", "bb_width", "hour_sin", "hour_cos"]


def ticks(n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        bid = round(1.0 + rng.random(), 5)
        out.append(
            {
                "symbol": SYMBOLS[i % len(SYMBOLS)],
                "ts": 1_793_577_600_000 + i * 37,
                "bid": bid,
                "ask": round(bid + 0.00008, 5),
                "source": "polygon",
                "seq": i // len(SYMBOLS),
            }
        )
    return out


def features(n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "timeframe": "1m",
            "ts": 1_793_577_600_000 + (i // len(SYMBOLS)) * 60_000,
            "feature_set": "core-v1",
            "values": {name: (None if i < 200 and name == "ema_200_dist" else rng.random()) for name in FEATURES},
        }
        for i in range(n)
    ]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_call(fn: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def compare(contract: Contract, rows: list[dict[str, Any]], repeats: int) -> None:
    validator = ChunkValidator(contract)
    chunk = Chunk.from_rows(rows)
    assert validator.check(chunk) == [], validator.check(chunk)[:3]
    n = len(rows)
    is_valid = contract.is_valid
    base, column, built = [], [], []
    for _ in range(repeats):
        base.append(timed(lambda: [is_valid(r) for r in rows]))
        column.append(timed(lambda: validator.check(chunk)))
        built.append(timed(lambda: validator.check(Chunk.from_rows(rows))))
    b, c, f = (statistics.median(x) for x in (base, column, built))
    print(
        f"{contract.ref:<12} {n:>9,} rows: row-wise is_valid {n / b:>12,.0f} rows/s   "
        f"ChunkValidator.check {n / c:>12,.0f} rows/s   ratio {b / c:.1f}x"
    )
    print(f"{'':<12} {'':>9}       from_rows + check  {n / f:>12,.0f} rows/s   ratio {b / f:.1f}x")


def conversions(rows: list[dict[str, Any]], repeats: int) -> None:
    n = len(rows)
    chunk = Chunk.from_rows(rows)
    build, back = [], []
    for _ in range(repeats):
        build.append(timed(lambda: Chunk.from_rows(rows)))
        back.append(timed(chunk.rows))
    print(f"Chunk.from_rows  {n / statistics.median(build):>12,.0f} rows/s    Chunk.rows() {n / statistics.median(back):>12,.0f} rows/s")
    one, single = rows[:1], Chunk.from_rows(rows[:1])
    calls = 20_000
    build1 = statistics.median(per_call(lambda: Chunk.from_rows(one), calls) for _ in range(repeats))
    back1 = statistics.median(per_call(single.rows, calls) for _ in range(repeats))
    print(f"1 row: from_rows {build1 * 1e6:.2f} us, rows() {back1 * 1e6:.2f} us")


def crossover(contract: Contract, rows: list[dict[str, Any]], repeats: int) -> None:
    """µs per chunk of the column checks and of row-by-row validation, by chunk size."""
    columns = ChunkValidator(contract, rowwise_below=0)
    by_row = ChunkValidator(contract, rowwise_below=10**9)
    found = None
    parts = []
    for size in (1, 2, 4, 8, 16, 32, 64, 128):
        chunk = Chunk.from_rows(rows[:size])
        calls = max(20, 2000 // size)
        col = statistics.median(per_call(lambda: columns.check(chunk), calls) for _ in range(repeats))
        row = statistics.median(per_call(lambda: by_row.check(chunk), calls) for _ in range(repeats))
        parts.append(f"{size}: {col * 1e6:.0f}/{row * 1e6:.0f}")
        if found is None and col < row:
            found = size
    print(f"{contract.ref} us per chunk, columns/row-by-row, by size: " + ", ".join(parts))
    print(f"{contract.ref} columns win from {found if found else '>128'} rows (ROWWISE_BELOW = {ROWWISE_BELOW})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="messages per contract (default 100000)")
    parser.add_argument("-r", type=int, default=5, help="repeats; figures are medians (default 5)")
    args = parser.parse_args(argv)
    registry = ContractRegistry.load(ROOT / "contracts")
    rng = random.Random(7)
    tick_rows, feature_rows = ticks(args.n, rng), features(args.n, rng)
    print(f"{args.n:,} messages per contract, median of {args.r}")
    compare(registry.resolve("tick.v1"), tick_rows, args.r)
    compare(registry.resolve("features.v1"), feature_rows, args.r)
    conversions(tick_rows, args.r)
    crossover(registry.resolve("tick.v1"), tick_rows, args.r)
    crossover(registry.resolve("features.v1"), feature_rows, args.r)


if __name__ == "__main__":
    main()
