"""In-process bus throughput against a bare dict dispatch, and the cost of strict validation.

    .venv/bin/python bench/bench_bus.py            # 1,000,000 messages per measurement
    .venv/bin/python bench/bench_bus.py -n 200000  # quicker

Prints, in one run:
1. publish→deliver rate of InProcessPubSub (one subscriber, no validation) and of a bare
   ``await handlers[subject](...)`` loop with the same handler, and their ratio (target >= 0.5);
2. the cost of strict contract validation: ``BoundaryValidator("strict").check`` for tick.v1
   in µs per message, and the publish rate through a real NodeContext route with validation
   off, sampled and strict.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.clock import SimulatedClock  # noqa: E402
from framework.context import NodeContext, OutputRoute  # noqa: E402
from framework.contracts import BoundaryValidator, ContractRegistry  # noqa: E402
from framework.deadletter import DeadLetters  # noqa: E402
from framework.metrics import ServiceMetrics  # noqa: E402
from framework.topology.model import Instrument  # noqa: E402
from framework.topology.templates import compile_renderer  # noqa: E402
from framework.transport.base import isolated  # noqa: E402
from framework.transport.inprocess import InProcessLog, InProcessPubSub  # noqa: E402

SUBJECT = "ticks.EURUSD"
TICK: dict[str, Any] = {
    "symbol": "EURUSD",
    "ts": 1_793_577_600_000,
    "bid": 1.08501,
    "ask": 1.08509,
    "source": "synthetic",
    "seq": 1,
}
REPEATS = 3


class Counter:
    """Counts deliveries. ``handler`` is a plain function (not a bound method) so it can be
    marked :func:`isolated`, as the runtime marks its delivery functions."""

    def __init__(self) -> None:
        self.n = 0

        async def handler(subject: str, payload: dict, headers: Any) -> None:
            self.n += 1

        self.handler = handler


def best_rate(samples: list[float], n: int) -> float:
    """Messages per second of the fastest repeat (the least disturbed by the machine)."""
    return n / min(samples)


async def bench_publish(n: int, mark_isolated: bool) -> float:
    counter = Counter()
    bus = InProcessPubSub()
    await bus.connect()
    await bus.subscribe(SUBJECT, isolated(counter.handler) if mark_isolated else counter.handler)
    publish, msg = bus.publish, TICK
    bus_times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            await publish(SUBJECT, msg)
        bus_times.append(time.perf_counter() - start)
    await bus.close()
    assert counter.n == REPEATS * n, counter.n
    return best_rate(bus_times, n)


async def bench_bus(n: int) -> tuple[float, float, float, float]:
    runtime_rate = await bench_publish(n, mark_isolated=True)
    guarded_rate = await bench_publish(n, mark_isolated=False)
    msg = TICK

    counter = Counter()
    handlers = {SUBJECT: counter.handler}
    bare_times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            await handlers[SUBJECT](SUBJECT, msg, None)
        bare_times.append(time.perf_counter() - start)
    assert counter.n == REPEATS * n

    # the ceiling of any async publish: one extra coroutine frame around the same dispatch
    counter = Counter()
    routes = {SUBJECT: (counter.handler,)}

    async def wrapper(subject: str, payload: dict, headers: Any = None) -> None:
        for target in routes[subject]:
            await target(subject, payload, headers)

    wrapper_times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            await wrapper(SUBJECT, msg)
        wrapper_times.append(time.perf_counter() - start)
    return runtime_rate, guarded_rate, best_rate(bare_times, n), best_rate(wrapper_times, n)


def bench_check(contract: Any, n: int) -> float:
    validator = BoundaryValidator("strict")
    check, msg = validator.check, TICK
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            if check(contract, msg) is not None:
                raise AssertionError("the benchmark tick must be valid")
        times.append(time.perf_counter() - start)
    return min(times) / n * 1e6


async def bench_context(contract: Any, mode: str, n: int) -> float:
    """NodeContext.publish on a port wired to one NATS subject template, one subscriber."""
    counter = Counter()
    bus = InProcessPubSub()
    await bus.connect()
    await bus.subscribe(SUBJECT, counter.handler)
    log = InProcessLog()
    await log.connect()
    template = "ticks.{symbol}"
    route = OutputRoute(port="ticks", contracts=(contract,), subjects=[(template, compile_renderer(template))])
    ctx = NodeContext(
        "bench",
        clock=SimulatedClock(),
        pubsub=bus,
        log=log,
        validator=BoundaryValidator(mode),
        dead_letters=DeadLetters(None),
        metrics=ServiceMetrics("bench"),
        routes={"ticks": route},
        tables={},
        pairs=["EURUSD"],
        timeframes=["1m"],
        instruments={"EURUSD": Instrument(pip=0.0001, digits=5)},
        data_dir=None,
    )
    publish, msg = ctx.publish, TICK
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(n):
            await publish("ticks", msg)
        times.append(time.perf_counter() - start)
    await bus.close()
    await log.close()
    assert counter.n == REPEATS * n and ctx.metrics.dead_lettered == 0
    return best_rate(times, n)


async def main(n: int) -> None:
    contract = ContractRegistry.load(ROOT / "contracts").resolve("tick.v1")
    print(f"python {sys.version.split()[0]}, {n:,} messages per measurement, best of {REPEATS}")
    print()
    bus_rate, guarded_rate, bare_rate, wrapper_rate = await bench_bus(n)
    ratio = bus_rate / bare_rate
    print("1. in-process bus vs bare dict dispatch (one subscriber, no validation)")
    print(f"   bare handlers[subject](msg)       {bare_rate:>12,.0f} msg/s")
    print(f"   bus, runtime path (isolated)      {bus_rate:>12,.0f} msg/s")
    print(f"   ratio bus/bare                    {ratio:>12.2f}   (target >= 0.5: {'ok' if ratio >= 0.5 else 'MISSED'})")
    print(f"   bus, guarded plain handler        {guarded_rate:>12,.0f} msg/s  ratio {guarded_rate / bare_rate:.2f}")
    print(f"   for reference, a 3-line async publish wrapper: {wrapper_rate:,.0f} msg/s, ratio {wrapper_rate / bare_rate:.2f}")
    print()
    us = bench_check(contract, n)
    print("2. strict validation (tick.v1)")
    print(f"   BoundaryValidator('strict').check {us:>12.3f} us/msg  ({1e6 / us:,.0f} checks/s)")
    m = max(n // 5, 1)
    rates = {mode: await bench_context(contract, mode, m) for mode in ("off", "sampled", "strict")}
    for mode, rate in rates.items():
        print(f"   NodeContext.publish, {mode:<8}     {rate:>12,.0f} msg/s  ({1e6 / rate:.3f} us/msg)")
    added = 1e6 / rates["strict"] - 1e6 / rates["off"]
    print(f"   strict adds                       {added:>12.3f} us/msg  (strict/off rate {rates['strict'] / rates['off']:.2f})")
    print(f"   ({m:,} messages per NodeContext measurement)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="messages per measurement (default 1,000,000)")
    args = parser.parse_args()
    asyncio.run(main(args.n))
