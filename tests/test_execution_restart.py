"""execution-service killed (SIGKILL) while orders are open, then started again: a real process restart.

The process (``python -m tests.test_execution_restart DATA first|second``) runs the demo profile on the wall
clock (in-process bus, the persisted in-process log as the order_execution_archive, embedded ClickHouse)
with execution-service and the scripted broker of ``tests/test_execution.py``, whose state is a file, as a
broker's is. The first process sends three signals and is killed before it ever saved a snapshot: one order
partly filled (the rest open at the broker), one the broker filled without telling (a fill lost with the
connection), one that never reached the broker. The second gets the same three signals again, as a durable
subscription redelivers what was not acknowledged, and one new one.
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

from framework.testing import query
from framework.transport.inprocess import InProcessPubSub
from nodes.trading.orders import client_order_id

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = {"s1": [["fill", 0.4, 1.1], ["accept"]], "s2": [["hidden_fill", "all", 1.1002]], "s3": [["drop"]], "s4": [["fill", "all", 1.1004]]}
EXECUTION = {"snapshot_every": "1h", "ack_timeout": "1h"}
IDS = {s: client_order_id(s) for s in SCRIPT}


async def _main(data: Path, phase: str) -> None:
    from tests.test_execution import runtime

    events = (data / f"events-{phase}.jsonl").open("a", buffering=1)
    seen: dict[str, str] = {}

    async def record(subject: str, payload: dict[str, Any], headers: Any) -> None:
        events.write(json.dumps([subject, payload]) + "\n")
        if subject.startswith("orders."):
            seen[payload["order_id"]] = payload["status"]

    bus = InProcessPubSub(wire=True)
    await bus.connect()
    await bus.subscribe("orders.>", record)
    await bus.subscribe("risk.alert.>", record)
    broker = {"script": SCRIPT, "state_file": str(data / "broker.json")}
    rt = runtime(data, broker, EXECUTION, "topology.runtime.clock=wall", pubsub=bus)
    await rt.start()

    async def send(*signal_ids: str) -> None:
        for signal_id in signal_ids:
            now = rt.clock.now_ms()
            await bus.publish("signals.approved.EURUSD", {"signal_id": signal_id, "decision_id": f"d-{signal_id}",
                              "symbol": "EURUSD", "side": "buy", "quantity": 1.0, "ts": now})  # fmt: skip

    async def until(wanted: dict[str, str]) -> None:
        deadline = time.monotonic() + 30
        while any(seen.get(IDS[s]) != status for s, status in wanted.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited for {wanted}, have {seen}")
            await asyncio.sleep(0.02)

    if phase == "first":
        await send("s1", "s2", "s3")
        await until({"s1": "partially_filled", "s2": "submitted", "s3": "submitted"})
        # three seconds: the runtime has recorded where the orders table was complete (its first watermark comes
        # about two seconds after the start), so the next start refills the table from the archive
        await asyncio.sleep(3)
        (data / "ready").write_text("1")
        await asyncio.Event().wait()  # killed here
    await send("s1", "s2", "s3", "s4")
    await until({"s2": "filled", "s3": "failed", "s4": "filled"})
    await asyncio.sleep(0.3)
    await rt.stop()
    events.close()


def _start(data: Path, phase: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.test_execution_restart", str(data), phase], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _events(data: Path, phase: str) -> list[tuple[str, dict[str, Any]]]:
    return [tuple(json.loads(line)) for line in (data / f"events-{phase}.jsonl").read_text().splitlines()]  # type: ignore[misc]


async def test_a_sigkill_with_open_orders_leaves_none_unknown_and_none_twice(tmp_path: Path) -> None:
    first = _start(tmp_path, "first")
    deadline = time.monotonic() + 90
    while not (tmp_path / "ready").exists():
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "the first process did not get its orders out"
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert not (tmp_path / "services" / "execution-service" / "state.json").exists()  # no snapshot to come back to

    second = _start(tmp_path, "second")
    try:
        code = await asyncio.to_thread(second.wait, 120)
    finally:
        if second.poll() is None:
            second.kill()
    assert code == 0, second.stderr.read() if second.stderr else ""

    broker = json.loads((tmp_path / "broker.json").read_text())
    assert sorted(broker["received"]) == sorted(IDS.values())  # each signal reached the broker once
    events = _events(tmp_path, "second")
    orders = [p for s, p in events if s.startswith("orders.")]
    assert [(p["order_id"], p["status"]) for p in orders if p["order_id"] != IDS["s4"]] == [
        (IDS["s2"], "filled"),  # the fill it never heard of, adopted from the broker
        (IDS["s3"], "failed"),  # never arrived: failed with the reason
    ]  # s1 is recovered as it was (partially filled, the rest open at the broker): nothing published again
    assert next(p for p in orders if p["order_id"] == IDS["s3"])["reason"] == "the broker does not know the order: it never arrived"
    assert [p["status"] for p in orders if p["order_id"] == IDS["s4"]] == ["pending", "submitted", "filled"]
    assert not [s for s, _ in events if s.startswith("risk.alert.")]  # no unknown fill, no position difference

    rows = await query(tmp_path, "SELECT order_id, status, filled_quantity FROM orders FINAL ORDER BY order_id, ts")
    latest: dict[str, str] = {}
    rank = ["pending", "submitted", "accepted", "partially_filled", "filled", "cancelled", "rejected", "failed"]
    for row in rows:
        if rank.index(row["status"]) >= rank.index(latest.get(row["order_id"], "pending")):
            latest[row["order_id"]] = row["status"]
    assert latest == {IDS["s1"]: "partially_filled", IDS["s2"]: "filled", IDS["s3"]: "failed", IDS["s4"]: "filled"}
    fills = await query(tmp_path, "SELECT fill_id FROM executions FINAL")
    assert len(fills) == 3  # 0.4 of s1, s2 (adopted), s4: each once
    [position] = await query(tmp_path, "SELECT quantity FROM positions FINAL")
    assert abs(position["quantity"] - 2.4) < 1e-9


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1]), sys.argv[2]))
