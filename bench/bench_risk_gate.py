"""Raw signal → risk decision latency of risk-management, in-process, against a bare publish in the same run.

    .venv/bin/python bench/bench_risk_gate.py            # 3,000 signals
    .venv/bin/python bench/bench_risk_gate.py -n 500 +topology.runtime.persist_log=false   # overrides, as fxrun takes them

The risk gate runs in a runtime of the demo profile on the wall clock (its decisions archived to
the persisted in-process log and written to the embedded ClickHouse, as the demo does), primed
with an hour of bars (ATR) and a quote. Signals alternate buy and flat, so every one is approved
with every check evaluated (a buy opens: sizing, exposure per symbol and currency, leverage,
losses, spread, calendar); after each approval the bench publishes the fill's order event
(untimed), as execution would, so the gate's view stays that of a live account. The latency of
a signal is from just before it is published to the moment a subscriber has its
``signals.approved.*`` message. Baseline: a bare publish on the same bus to one subscriber.

Prints p50 / p99 / max of each and the ratio of the p99s. The issue's aim is signal → order
p99 < 1 ms in-process: this gate's share of it, next to bench_execution.py's approved → order.
The demo's in-process log is written through to disk per record (persist_log): it is what the
p99 is made of here; ``+topology.runtime.persist_log=false`` shows the gate without it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.testing import load, make_runtime  # noqa: E402
from framework.transport.inprocess import InProcessPubSub  # noqa: E402

WARMUP = 200
HOUR = 3_600_000
SERVICE = "risk-management"
EXTRA: list[str] = []


def summary(name: str, seconds: list[float]) -> float:
    us = sorted(s * 1e6 for s in seconds)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    print(f"  {name:<44} p50 {statistics.median(us):>9.1f} us   p99 {p99:>9.1f} us   max {us[-1]:>9.1f} us")
    return p99


async def run(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="fxflow-bench-risk-") as tmp:
        data = Path(tmp)
        loaded = load(data, "pairs=[EURUSD]", "topology.runtime.clock=wall", f"topology.services.{SERVICE}.enabled=true",
                      f"++topology.services.{SERVICE}.params.reconcile=none", f"++topology.services.{SERVICE}.params.throttle_orders=1000000",
                      f"++topology.services.{SERVICE}.params.atr_warmup=0", *EXTRA, project=ROOT)  # fmt: skip
        bus = InProcessPubSub(wire=True)
        await bus.connect()
        arrived: dict[str, float] = {}
        waiting: dict[str, asyncio.Event] = {}
        approvals: dict[str, dict[str, Any]] = {}
        rejected: list[dict[str, Any]] = []

        async def on_decision(subject: str, payload: dict[str, Any], headers: Any) -> None:
            if subject.startswith("signals.rejected"):
                rejected.append(payload)
            key = payload["signal_id"]
            arrived[key] = time.perf_counter()
            approvals[key] = payload
            event = waiting.pop(key, None)
            if event is not None:
                event.set()

        await bus.subscribe("signals.approved.EURUSD", on_decision)
        await bus.subscribe("signals.rejected.EURUSD", on_decision)
        await bus.subscribe("bench.bare.EURUSD", on_decision)
        rt = make_runtime(loaded, data, pubsub=bus, only=[SERVICE])
        await rt.start()
        try:
            now = rt.clock.now_ms()
            for i in range(15):
                start = now - (15 - i) * HOUR
                await bus.publish("bars.EURUSD.1h", {"symbol": "EURUSD", "timeframe": "1h", "ts": start, "ts_close": start + HOUR,
                                                     "open": 1.08, "high": 1.0805, "low": 1.0795, "close": 1.08, "volume": 1.0,
                                                     "tick_count": 1, "spread_mean": None, "spread_min": None, "spread_max": None,
                                                     "source": "bench"})  # fmt: skip

            async def timed(count: int, first: int, subject: str) -> list[float]:
                out = []
                for i in range(first, first + count):
                    key = f"bench-{i}"
                    ts = rt.clock.now_ms()
                    if subject.startswith("signals"):
                        await bus.publish("ticks.EURUSD", {"symbol": "EURUSD", "ts": ts, "bid": 1.08, "ask": 1.0801, "source": "bench"})
                    message = {"signal_id": key, "symbol": "EURUSD", "timeframe": "1h", "ts": ts, "side": "buy" if i % 2 == 0 else "flat",
                               "confidence": 0.9, "model_id": "bench"}  # fmt: skip
                    event = waiting[key] = asyncio.Event()
                    start = time.perf_counter()
                    await bus.publish(subject, message)
                    await asyncio.wait_for(event.wait(), 30)
                    out.append(arrived[key] - start)
                    approved = approvals.pop(key)
                    if subject.startswith("signals") and "decision_id" in approved and "checks" not in approved:
                        await bus.publish("orders.filled.EURUSD", {
                            "order_id": f"o-{i}", "client_order_id": f"o-{i}", "signal_id": key, "decision_id": approved["decision_id"],
                            "symbol": "EURUSD", "side": approved["side"], "order_type": "market", "quantity": approved["quantity"],
                            "status": "filled", "ts": ts, "filled_quantity": approved["quantity"], "avg_price": 1.0801})  # fmt: skip
                return out

            await timed(WARMUP, 0, "signals.raw.EURUSD")
            await timed(WARMUP, WARMUP, "bench.bare.EURUSD")
            gate: list[float] = []
            bare: list[float] = []
            for part in range(5):  # interleaved, so a slow spell of the machine hits both
                base = 2 * WARMUP + part * 2 * (n // 5)
                gate += await timed(n // 5, base, "signals.raw.EURUSD")
                bare += await timed(n // 5, base + n // 5, "bench.bare.EURUSD")
        finally:
            await rt.stop()
    print(f"in-process (demo bus, wall clock), {len(gate):,} signals one at a time, {len(rejected)} rejected"
          + (f" (first: {rejected[0]['reasons']})" if rejected else ""))
    gate_p99 = summary("raw signal → signals.approved", gate)
    bare_p99 = summary("bare publish → subscriber (baseline)", bare)
    print(f"  ratio p50 gate/bare {statistics.median(gate) / statistics.median(bare):>8.1f}")
    print(f"  ratio p99 gate/bare {gate_p99 / bare_p99:>8.1f}   (the gate's share of the signal → order aim of 1000 us p99)")
    return gate_p99, bare_p99


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="signals measured")
    parser.add_argument("overrides", nargs="*", help="topology overrides (key=value)")
    args = parser.parse_args(argv)
    EXTRA.extend(args.overrides)
    asyncio.run(run(args.n))


if __name__ == "__main__":
    main()
