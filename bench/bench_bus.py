"""In-process bus throughput against a bare dict dispatch, and the cost of strict validation.

    .venv/bin/python bench/bench_bus.py               # 1,000,000 messages per measurement, median of 5
    .venv/bin/python bench/bench_bus.py -n 200000     # quicker
    .venv/bin/python bench/bench_bus.py -n 2000 -r 3  # a smoke run

Prints, in one run:
1. publish→deliver rate of InProcessPubSub (one subscriber, no validation) and of a bare
   ``await handlers[subject](...)`` loop with the same handler, and their ratio (target >= 0.5),
   with what strict validation adds per published message beside it, and the same runtime path
   with the wire codec on (``InProcessPubSub(wire=True)``: encode once, decode per subscriber,
   as the demo runs) against it off (as backtests run), as a ratio of rates;
2. the cost of strict contract validation: ``BoundaryValidator("strict").check`` for tick.v1
   in µs per message, and the publish rate through a real NodeContext route with validation
   off, sampled and strict, each over the full message count.

Every figure is the median of the repeats. The loops being compared run in turn within each
repeat (bus, bare, …; off, sampled, strict), so a slow spell of the machine hits all of them,
and "strict adds" is the median of the per-repeat differences strict − off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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
MODES = ("off", "sampled", "strict")


class Counter:
    """Counts deliveries. ``handler`` is a plain function (not a bound method) so it can be
    marked :func:`isolated`, as the runtime marks its delivery functions."""

    def __init__(self) -> None:
        self.n = 0

        async def handler(subject: str, payload: dict, headers: Any) -> None:
            self.n += 1

        self.handler = handler


def us_per_msg(seconds: list[float], n: int) -> float:
    return statistics.median(seconds) / n * 1e6


async def time_bus(bus: InProcessPubSub, n: int) -> float:
    publish, msg = bus.publish, TICK
    start = time.perf_counter()
    for _ in range(n):
        await publish(SUBJECT, msg)
    return time.perf_counter() - start


async def time_bare(handlers: dict[str, Any], n: int) -> float:
    msg = TICK
    start = time.perf_counter()
    for _ in range(n):
        await handlers[SUBJECT](SUBJECT, msg, None)
    return time.perf_counter() - start


async def time_wrapper(routes: dict[str, tuple[Any, ...]], n: int) -> float:
    """The ceiling of any async publish: one extra coroutine frame around the same dispatch."""

    async def wrapper(subject: str, payload: dict, headers: Any = None) -> None:
        for target in routes[subject]:
            await target(subject, payload, headers)

    msg = TICK
    start = time.perf_counter()
    for _ in range(n):
        await wrapper(SUBJECT, msg)
    return time.perf_counter() - start


async def bench_bus(n: int, repeats: int) -> dict[str, float]:
    """Median µs per message of each dispatch loop."""
    runtime, guarded, bare, wrapper, wire = Counter(), Counter(), Counter(), Counter(), Counter()
    runtime_bus, guarded_bus, wire_bus = InProcessPubSub(), InProcessPubSub(), InProcessPubSub(wire=True)
    for bus, handler in ((runtime_bus, isolated(runtime.handler)), (guarded_bus, guarded.handler), (wire_bus, isolated(wire.handler))):
        await bus.connect()
        await bus.subscribe(SUBJECT, handler)
    handlers = {SUBJECT: bare.handler}
    routes = {SUBJECT: (wrapper.handler,)}
    times: dict[str, list[float]] = {"runtime": [], "guarded": [], "bare": [], "wrapper": [], "wire": []}
    for _ in range(repeats):
        times["runtime"].append(await time_bus(runtime_bus, n))
        times["bare"].append(await time_bare(handlers, n))
        times["guarded"].append(await time_bus(guarded_bus, n))
        times["wrapper"].append(await time_wrapper(routes, n))
        times["wire"].append(await time_bus(wire_bus, n))
    for bus in (runtime_bus, guarded_bus, wire_bus):
        await bus.close()
    assert runtime.n == guarded.n == bare.n == wrapper.n == wire.n == repeats * n
    return {name: us_per_msg(seconds, n) for name, seconds in times.items()}


def bench_check(contract: Any, n: int, repeats: int) -> float:
    validator = BoundaryValidator("strict")
    check, msg = validator.check, TICK
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            if check(contract, msg) is not None:
                raise AssertionError("the benchmark tick must be valid")
        times.append(time.perf_counter() - start)
    return us_per_msg(times, n)


async def make_context(contract: Any, mode: str) -> tuple[NodeContext, Counter, InProcessPubSub, InProcessLog]:
    """A NodeContext with one port wired to a NATS subject template, and one subscriber."""
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
    return ctx, counter, bus, log


async def time_context(ctx: NodeContext, n: int) -> float:
    publish, msg = ctx.publish, TICK
    start = time.perf_counter()
    for _ in range(n):
        await publish("ticks", msg)
    return time.perf_counter() - start


async def bench_context(contract: Any, n: int, repeats: int) -> tuple[dict[str, float], float]:
    """Median µs per message of NodeContext.publish in each validation mode, and the median
    per-repeat difference strict − off."""
    built = {mode: await make_context(contract, mode) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            times[mode].append(await time_context(built[mode][0], n))
    for ctx, counter, bus, log in built.values():
        assert counter.n == repeats * n and ctx.metrics.dead_lettered == 0
        await bus.close()
        await log.close()
    added = statistics.median((s - o) / n * 1e6 for s, o in zip(times["strict"], times["off"], strict=True))
    return {mode: us_per_msg(seconds, n) for mode, seconds in times.items()}, added


async def main(n: int, repeats: int) -> None:
    contract = ContractRegistry.load(ROOT / "contracts").resolve("tick.v1")
    print(f"python {sys.version.split()[0]}, {n:,} messages per measurement, median of {repeats} repeats")
    print()
    bus = await bench_bus(n, repeats)
    check_us = bench_check(contract, n, repeats)
    ctx, strict_added = await bench_context(contract, n, repeats)
    ratio = bus["bare"] / bus["runtime"]

    def rate(us: float) -> str:
        return f"{1e6 / us:>12,.0f} msg/s"

    print("1. in-process bus vs bare dict dispatch (one subscriber, no validation)")
    print(f"   bare handlers[subject](msg)       {rate(bus['bare'])}")
    print(f"   bus, runtime path (isolated)      {rate(bus['runtime'])}")
    print(f"   ratio bus/bare                    {ratio:>12.2f}   (target >= 0.5: {'ok' if ratio >= 0.5 else 'MISSED'})")
    print(f"   strict validation adds            {strict_added:>12.3f} us/msg  (NodeContext.publish strict - off, see 2)")
    print(f"   bus, guarded plain handler        {rate(bus['guarded'])}  ratio {bus['bare'] / bus['guarded']:.2f}")
    print(f"   for reference, a 3-line async publish wrapper: {1e6 / bus['wrapper']:,.0f} msg/s, ratio {bus['bare'] / bus['wrapper']:.2f}")
    print(f"   bus, runtime path, wire codec on  {rate(bus['wire'])}  ratio codec/no codec {bus['runtime'] / bus['wire']:.2f}"
          f"  (+{bus['wire'] - bus['runtime']:.3f} us/msg)")
    print()
    print("2. strict validation (tick.v1)")
    print(f"   BoundaryValidator('strict').check {check_us:>12.3f} us/msg  ({1e6 / check_us:,.0f} checks/s)")
    for mode in MODES:
        print(f"   NodeContext.publish, {mode:<8}     {rate(ctx[mode])}  ({ctx[mode]:.3f} us/msg)")
    print(f"   strict adds                       {strict_added:>12.3f} us/msg  (ratio strict/off rate {ctx['off'] / ctx['strict']:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="messages per measurement (default 1,000,000)")
    parser.add_argument("-r", "--repeats", type=int, default=5, help="repeats per measurement, the median is kept (default 5)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.repeats))
