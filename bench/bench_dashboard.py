"""Dashboard fan-out: events/s pushed to 10 WebSocket pages, and the lag p99, against one page in the same run.

    .venv/bin/python bench/bench_dashboard.py                 # 10 pages, 5,000 events per measurement
    .venv/bin/python bench/bench_dashboard.py -c 4 -n 1000

The dashboard runs alone in a runtime of the demo profile on the wall clock (its inputs behind
their buffers, as live). The pages are WebSocket clients in a child process (so their JSON
parsing does not share the server's event loop), each reading as fast as it can. Events are
alerts (never conflated: each one counts), published on the in-process bus with the moment
of publication (CLOCK_MONOTONIC, the same in both processes) in their text.

1. **Throughput**: ``-n`` events published as fast as the bus takes them; per page, the
   events delivered per second (from the first publication to the last arrival) and how many
   were dropped for it (a page's queue holds ``client_queue`` updates; a page that falls
   behind loses the oldest, by design).
2. **Lag**: ``-n`` events paced at ``-r`` per second; p50 / p99 / max from publication to
   arrival on a page.

Each with 1 page (the baseline) and with ``-c`` pages; prints the ratios 10 pages / 1 page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVICE = "dashboard-service"


# --------------------------------------------------------------------------- the pages (child process)


async def pages(url: str, count: int, expect: int, quiet_s: float) -> None:
    """``count`` pages; prints "ready" once all have their first picture, then, when every page has
    ``expect`` events (or nothing came for ``quiet_s``), each page's lags and last arrival as JSON."""
    import aiohttp

    lags: list[list[float]] = [[] for _ in range(count)]
    last: list[float] = [0.0] * count

    async def page(i: int, session: aiohttp.ClientSession, opened: list[int], ready: asyncio.Event) -> None:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.receive()  # the first picture
            opened.append(i)
            if len(opened) == count:
                ready.set()
            async for msg in ws:
                now = time.monotonic()
                for update in json.loads(msg.data):
                    text = update.get("message") if update.get("t") == "alert" else None
                    if text and text.startswith("bench "):
                        lags[i].append(now - float(text.split()[2]))
                        last[i] = now

    async with aiohttp.ClientSession() as session:
        opened: list[int] = []
        ready = asyncio.Event()
        tasks = [asyncio.create_task(page(i, session, opened, ready)) for i in range(count)]
        await ready.wait()
        print("ready", flush=True)
        quiet_since = time.monotonic()
        while not all(len(lag) >= expect for lag in lags):
            seen = sum(map(len, lags))
            await asyncio.sleep(0.05)
            if sum(map(len, lags)) != seen:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > quiet_s:
                break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"lags": lags, "last": last}), flush=True)


# --------------------------------------------------------------------------- the server and the publisher


async def measure(node: Any, bus: Any, count: int, n: int, rate: float | None) -> dict[str, Any]:
    """``n`` alerts to ``count`` pages (paced at ``rate`` per second, or as fast as the bus takes them)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--pages", node.url + "ws", str(count), str(n), stdout=subprocess.PIPE, cwd=str(ROOT)
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    first = time.monotonic()
    for i in range(n):
        if rate:
            wait = first + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        message = {"alert_id": f"b{i}", "ts": 1793577600000 + i, "source": "bench", "type": "bench", "severity": "info",
                   "message": f"bench {i} {time.monotonic():.6f}"}  # fmt: skip
        await bus.publish("risk.alert.bench", message)
        if not rate and i % 50 == 0:
            await asyncio.sleep(0)  # the server's own tasks get their turns, as between live deliveries
    out, _ = await asyncio.wait_for(child.communicate(), 120)
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["first"] = first
    return result


def per_page_rate(result: dict[str, Any]) -> tuple[float, int]:
    """Events delivered per second to a page (the mean over pages), and the most dropped for one page."""
    rates = [len(lag) / max(1e-6, end - result["first"]) for lag, end in zip(result["lags"], result["last"]) if lag]
    expected = max(map(len, result["lags"]))
    return statistics.mean(rates) if rates else float("nan"), expected - min(map(len, result["lags"]))


def lag_summary(result: dict[str, Any]) -> tuple[float, float, float]:
    ms = sorted(x * 1000 for lag in result["lags"] for x in lag)
    if not ms:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]


async def run(count: int, n: int, rate: float) -> None:
    from framework.testing import load, make_runtime
    from framework.transport.inprocess import InProcessPubSub

    with tempfile.TemporaryDirectory(prefix="fxflow-bench-dashboard-") as tmp:
        data = Path(tmp)
        loaded = load(data, "topology.runtime.clock=wall", f"topology.services.{SERVICE}.params.port=0", project=ROOT)
        bus = InProcessPubSub(wire=True)
        await bus.connect()
        rt = make_runtime(loaded, data, pubsub=bus, only=[SERVICE])
        await rt.start()
        try:
            node = rt.hosts[SERVICE].node
            print(f"dashboard: {n} alerts per measurement; a page's queue holds {node.params.client_queue} updates")
            burst: dict[int, float] = {}
            lag: dict[int, float] = {}
            for k in (1, count):
                result = await measure(node, bus, k, n, None)
                burst[k], dropped = per_page_rate(result)
                print(f"  burst, {k:>2} page(s): {burst[k]:>9,.0f} events/s per page ({burst[k] * k:>9,.0f} in all), "
                      f"at most {dropped} dropped for one page")  # fmt: skip
            for k in (1, count):
                result = await measure(node, bus, k, n, rate)
                p50, lag[k], worst = lag_summary(result)
                print(f"  paced {rate:,.0f}/s, {k:>2} page(s): lag p50 {p50:7.2f} ms   p99 {lag[k]:7.2f} ms   max {worst:7.2f} ms")
            print(f"ratio events/s per page {count} pages/1 page   {burst[count] / burst[1]:.2f}")
            print(f"ratio lag p99 {count} pages/1 page            {lag[count] / lag[1]:.2f}")
        finally:
            await rt.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--pages":
        asyncio.run(pages(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), quiet_s=2.0))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--pages", type=int, default=10, help="pages connected at once (default 10)")
    parser.add_argument("-n", type=int, default=5000, help="events per measurement (default 5000)")
    parser.add_argument("-r", "--rate", type=float, default=1000.0, help="events per second of the paced run (default 1000)")
    args = parser.parse_args()
    asyncio.run(run(args.pages, args.n, args.rate))


if __name__ == "__main__":
    main()
