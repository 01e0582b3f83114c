"""The paper broker's account survives SIGKILL: a connector process is killed right after an order was
acknowledged; the restarted one reports the same account, positions, orders and fills, publishes
no fill twice, and fills the acknowledged order on the next price.

``python -m tests.test_broker_restart DATA first|second`` is the connector process (wall clock, as
live): ``first`` trades, writes its broker state reply to ``DATA/before.json`` and waits to be
killed; ``second`` writes ``DATA/after.json`` and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nodes.broker.paper import deal_ticket

ROOT = Path(__file__).resolve().parents[1]
MON = 1_793_577_600_000
T = MON + 10 * 3_600_000  # market time: the paper broker's clock is its prices, not the wall clock


def _event(cid: str, side: str, quantity: float, ts: int) -> dict[str, Any]:
    return {"order_id": f"ord-{cid}", "client_order_id": cid, "signal_id": f"sig-{cid}", "decision_id": f"dec-{cid}",
            "symbol": "EURUSD", "side": side, "order_type": "market", "quantity": quantity, "status": "submitted", "ts": ts}  # fmt: skip


def _tick(ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": "EURUSD", "ts": ts, "bid": bid, "ask": ask, "source": "test"}


async def _connector(data: Path, mode: str) -> None:
    from framework.testing import load, make_runtime, recording_bus

    # the orders are stamped in market time, weeks before the wall clock: no refusal of stale orders here
    loaded = load(data, "pairs=[EURUSD]", "topology.runtime.clock=wall", "++topology.services.mt5-connector.params.paper.commission.per_lot=2",
                  "++topology.services.mt5-connector.params.max_order_age=3650d")
    bus, got = await recording_bus("broker.fill.>", "broker.error.>")
    rt = make_runtime(loaded, data, pubsub=bus, only=["mt5-connector"])
    await rt.start()
    query = {"query": "state", "ts": T, "since_ms": T, "order_ids": ["ord-a", "ord-b"]}
    if mode == "first":
        await bus.publish("ticks.EURUSD", _tick(T, 1.08500, 1.08510))
        await bus.publish("orders.submitted.EURUSD", _event("a", "buy", 2, T))
        await bus.publish("ticks.EURUSD", _tick(T + 1_000, 1.08520, 1.08530))  # fills a
        await bus.publish("orders.submitted.EURUSD", _event("b", "sell", 0.5, T + 2_000))  # acknowledged, not filled yet
        reply = await bus.request("broker.query", query)
        (data / "before.json").write_text(json.dumps({"reply": reply, "published": got}))
        while True:  # killed here
            await asyncio.sleep(1)
    reply = await bus.request("broker.query", query)
    await bus.publish("ticks.EURUSD", _tick(T + 3_000, 1.08540, 1.08550))  # fills b
    later = await bus.request("broker.query", query)
    await rt.stop()
    (data / "after.json").write_text(json.dumps({"reply": reply, "later": later, "published": got}))


def _run(data: Path, mode: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.test_broker_restart", str(data), mode], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _without_ts(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "ts"}


def test_a_killed_connector_comes_back_with_the_same_account(tmp_path: Path) -> None:
    first = _run(tmp_path, "first")
    deadline = time.monotonic() + 120
    while not (tmp_path / "before.json").exists():
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "the first connector did not get going"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no stop, no snapshot at exit: only what was written as it went
    first.wait(30)
    before = json.loads((tmp_path / "before.json").read_text())

    second = _run(tmp_path, "second")
    assert second.wait(120) == 0, second.stderr.read() if second.stderr else ""
    after = json.loads((tmp_path / "after.json").read_text())

    assert _without_ts(after["reply"]) == _without_ts(before["reply"])
    reply = before["reply"]
    assert [(p["symbol"], p["quantity"], p["avg_price"]) for p in reply["positions"]] == [("EURUSD", 2.0, 1.0853)]
    assert [(o["order_id"], o["status"]) for o in reply["orders"]] == [("ord-a", "filled"), ("ord-b", "accepted")]
    assert reply["account"]["balance"] == 100_000 - 4.0  # 2 lots × 2 USD commission
    assert [f["fill_id"] for f in reply["fills"]] == [f"paper-{deal_ticket('a', 1)}"]
    assert [m["fill_id"] for s, m in before["published"] if s.startswith("broker.fill.")] == [f"paper-{deal_ticket('a', 1)}"]

    # after the restart: nothing published again, and the acknowledged order filled on the next price
    assert [(m["fill_id"], m["order_id"], m["price"]) for s, m in after["published"]] == [(f"paper-{deal_ticket('b', 1)}", "ord-b", 1.0854)]
    later = after["later"]
    assert [(o["order_id"], o["status"]) for o in later["orders"]] == [("ord-a", "filled"), ("ord-b", "filled")]
    assert [(p["symbol"], p["quantity"]) for p in later["positions"]] == [("EURUSD", 1.5)]
    assert later["account"]["balance"] == 100_000 - 4.0 - 1.0 + 5.0  # commission 0.5 × 2; (1.0854 - 1.0853) × 50,000


if __name__ == "__main__":
    asyncio.run(_connector(Path(sys.argv[1]), sys.argv[2]))
