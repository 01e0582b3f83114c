"""data-bridge into ClickHouse (chdb) with dedup, against batched inserts straight into the store.

    .venv/bin/python bench/bench_bridge.py            # 200,000 ticks
    .venv/bin/python bench/bench_bridge.py -n 50000

Prints, in one run:
1. baseline: the same tick rows inserted into a fresh chdb ``historical_ticks`` table through
   ``ClickHouseStore.insert`` in batches of 10,000 (no bus, no dedup);
2. the data-bridge service on the demo profile: ticks published on ``ticks.EURUSD`` (half of
   them twice, as when NATS and a replay both deliver), each claiming a dedup key in the
   in-process key-value store, written through the runtime's batch writer; rows/s counted from
   the first publish until the last row is flushed, and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.contracts import ContractRegistry  # noqa: E402
from framework.registry import Registry  # noqa: E402
from framework.runtime import Runtime  # noqa: E402
from framework.stores.clickhouse import ClickHouseStore  # noqa: E402
from framework.stores.columns import columns_from_contract  # noqa: E402
from framework.topology.load import load_run  # noqa: E402
from framework.transport.inprocess import InProcessPubSub  # noqa: E402

T0 = 1_793_577_600_000


def ticks(n: int) -> list[dict]:
    return [
        {"symbol": "EURUSD", "ts": T0 + i * 10, "bid": 1.1 + (i % 500) / 1e5, "ask": 1.1002 + (i % 500) / 1e5,
         "source": "bench", "seq": i + 1}
        for i in range(n)
    ]


async def baseline(rows: list[dict], tmp: Path) -> float:
    loaded = load_run(["topology=demo", f"data_dir={tmp}"], ROOT)
    contracts = ContractRegistry.load(ROOT / "contracts")
    store = ClickHouseStore("bench", f"chdb://{tmp}/clickhouse")
    await store.connect()
    table = loaded.topology.tables["historical_ticks"]
    contract = contracts.resolve("tick.v1")
    await store.ensure_table("historical_ticks", table, columns_from_contract(contract), contract.time_field)
    start = time.perf_counter()
    for i in range(0, len(rows), 10_000):
        await store.insert("historical_ticks", rows[i : i + 10_000])
    elapsed = time.perf_counter() - start
    await store.close()
    return len(rows) / elapsed


async def bridge(rows: list[dict], tmp: Path) -> tuple[float, int]:
    loaded = load_run(["topology=demo", f"data_dir={tmp}", "pairs=[EURUSD]"], ROOT)
    bus = InProcessPubSub()
    await bus.connect()
    rt = Runtime(loaded.topology, Registry.discover(), ContractRegistry.load(ROOT / "contracts"), pairs=["EURUSD"],
                 only=["data-bridge"], data_dir=tmp, pubsub=bus)
    await rt.start()
    node = rt.hosts["data-bridge"].node
    start = time.perf_counter()
    for i, row in enumerate(rows):
        await bus.publish("ticks.EURUSD", row)
        if i % 2 == 0:
            await bus.publish("ticks.EURUSD", row)
    await rt.stop()
    elapsed = time.perf_counter() - start
    return len(rows) / elapsed, node.duplicates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200_000)
    args = parser.parse_args()
    rows = ticks(args.n)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        base = asyncio.run(baseline(rows, Path(a)))
        ours, dups = asyncio.run(bridge(rows, Path(b)))
    print(f"{args.n:,} ticks into chdb historical_ticks")
    print(f"  ClickHouseStore.insert, batches of 10k   {base:12,.0f} rows/s")
    print(f"  data-bridge (dedup, {dups:,} duplicates dropped) {ours:12,.0f} rows/s   ratio {ours / base:.2f}")


if __name__ == "__main__":
    main()
