"""execution-service through the real runtime (demo profile: in-process bus, embedded ClickHouse, simulated
clock), against a scripted stand-in for the broker connector (``FakeBroker`` below): orders, the state
machine, broker errors, unacknowledged orders, reconciliation, positions and P&L, bad input.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from framework.node import Node, handles
from framework.registry import NodeSpec, Port, Registry
from framework.runtime import Runtime
from framework.testing import contracts, load, query, recording_bus
from framework.topology.model import Service
from nodes.execution.book import OrderBook, Tracked
from nodes.trading.orders import TRANSITIONS, Order, OrderStatus, client_order_id

TIMEOUT = 60.0
T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday
SEC = 1000


# --------------------------------------------------------------------------- a scripted broker


class FakeBrokerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    script: dict[str, list[list[Any]]] = Field(default_factory=dict)
    """signal_id → steps: ["fill", lots|"all", price], ["hidden_fill", …] (done, not reported),
    ["error", retcode, code], ["accept"] (kept open, nothing said), ["drop"] (never arrived).
    Default: one fill of everything at ``price``."""
    price: float = 1.1
    state_file: str = ""
    """Where the broker keeps its state across a restart (orders, fills, every order received)."""
    answers: int = -1
    """Queries it answers before it stops answering (-1: all)."""
    connected: bool = True


class FakeBroker(Node[FakeBrokerParams]):
    """What the connector does for the execution service, scripted per signal."""

    async def on_start(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.fills: list[dict[str, Any]] = []
        self.received: list[str] = []
        self.answered = 0
        path = self.params.state_file
        if path and os.path.exists(path):
            state = json.loads(Path(path).read_text())
            self.orders, self.fills, self.received = state["orders"], state["fills"], state["received"]

    def _save(self) -> None:
        if self.params.state_file:
            tmp = self.params.state_file + ".tmp"
            Path(tmp).write_text(json.dumps({"orders": self.orders, "fills": self.fills, "received": self.received}))
            os.replace(tmp, self.params.state_file)

    @handles("orders")
    async def on_order(self, event: dict[str, Any]) -> None:
        order_id = event["order_id"]
        self.received.append(order_id)
        if order_id in self.orders:  # a broker refuses a client order id it saw before
            self._save()
            return
        order = {"order_id": order_id, "broker_order_id": f"T{len(self.orders) + 1}", "symbol": event["symbol"],
                 "side": event["side"], "quantity": event["quantity"], "filled_quantity": 0.0, "status": "accepted"}  # fmt: skip
        now = self.ctx.clock.now_ms()
        for step in self.params.script.get(event["signal_id"], [["fill", "all", self.params.price]]):
            kind = step[0]
            if kind == "drop":
                break
            self.orders[order_id] = order
            if kind in ("fill", "hidden_fill"):
                lots = round(order["quantity"] - order["filled_quantity"], 8) if step[1] == "all" else step[1]
                fill = {"fill_id": f"{order_id}-{len(self.fills) + 1}", "order_id": order_id, "symbol": order["symbol"],
                        "side": order["side"], "quantity": lots, "price": step[2], "ts": now, "commission": 3.5,
                        "broker_order_id": order["broker_order_id"]}  # fmt: skip
                order["filled_quantity"] = round(order["filled_quantity"] + lots, 8)
                order["status"] = "filled" if order["filled_quantity"] >= order["quantity"] else "partially_filled"
                self.fills.append(fill)
                self._save()
                if kind == "fill":
                    await self.ctx.publish("fills", fill)
            elif kind == "error":
                order["status"] = "rejected"
                error = {"order_id": order_id, "symbol": order["symbol"], "ts": now, "code": step[2],
                         "message": f"refused ({step[2]})", "retcode": step[1]}  # fmt: skip
                await self.ctx.publish("errors", error)
        self._save()

    @handles("query")
    async def on_query(self, q: dict[str, Any]) -> dict[str, Any]:
        self.answered += 1
        if 0 <= self.params.answers < self.answered:
            raise ConnectionError("the broker stopped answering")
        ids = q.get("order_ids")
        orders = [self.orders[i] for i in ids if i in self.orders] if ids is not None else list(self.orders.values())
        net: dict[str, float] = {}
        for f in self.fills:
            net[f["symbol"]] = round(net.get(f["symbol"], 0.0) + (f["quantity"] if f["side"] == "buy" else -f["quantity"]), 8)
        return {
            "ts": self.ctx.clock.now_ms(),
            "connected": self.params.connected,
            "account": {"currency": "USD", "balance": 100_000.0, "equity": 100_000.0, "margin": 0.0},
            "positions": [{"symbol": s, "quantity": q, "avg_price": 1.0} for s, q in net.items() if q],
            "orders": orders,
            "fills": [f for f in self.fills if f["ts"] >= q.get("since_ms", 1 << 62)],
        }


FAKE_BROKER = NodeSpec(
    name="fake_broker",
    factory=f"{__name__}:FakeBroker",
    params=FakeBrokerParams,
    inputs={"orders": Port("order_event.v1"), "query": Port("broker_query.v1")},
    outputs={"fills": Port("fill.v1"), "errors": Port("broker_error.v1")},
)
BROKER_SERVICE = {
    "node": "fake_broker",
    "phase": "trading",
    "inputs": {"orders": {"nats": "orders.submitted.{symbol}"}, "query": {"nats": "broker.query"}},
    "outputs": {"fills": {"nats": "broker.fill.{symbol}"}, "errors": {"nats": "broker.error.{symbol}"}},
}


def registry() -> Registry:
    found = Registry.discover()
    found.register(FAKE_BROKER)
    return found


def runtime(data: Path, broker: dict[str, Any] | None, execution: dict[str, Any] | None = None, *overrides: str, **kw: Any) -> Runtime:
    """The demo profile (plus ``overrides``) with execution-service (params ``execution``) and, unless None, the fake broker."""
    loaded = load(data, "pairs=[EURUSD,USDJPY,EURJPY]", *overrides)
    topo = loaded.topology
    services = dict(topo.services)
    execution_service = services["execution-service"]
    inputs = {**execution_service.inputs, "bars": execution_service.inputs["ticks"].model_copy(update={"nats": "bars.{symbol}.1m", "buffer": None})}
    services["execution-service"] = execution_service.model_copy(update={"enabled": True, "params": execution or {}, "inputs": inputs})
    only = ["execution-service"]
    if broker is not None:
        services["fake-broker"] = Service.model_validate({**BROKER_SERVICE, "params": broker})
        only.append("fake-broker")
    topo = topo.model_copy(update={"services": services})
    return Runtime(topo, registry(), contracts(loaded.project), pairs=loaded.config.pairs, only=only, data_dir=data, **kw)


class Run:
    """One run: the runtime, what it published, and helpers to feed it on the simulated clock."""

    def __init__(self, data: Path, broker: dict[str, Any] | None = None, execution: dict[str, Any] | None = None) -> None:
        self.data, self.broker, self.execution = data, broker, execution
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __aenter__(self) -> Run:
        self.bus, self.events = await recording_bus("orders.>", "risk.alert.>", "deadletter.>")
        self.rt = runtime(self.data, self.broker, self.execution, pubsub=self.bus)
        await self.rt.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.wait_for(self.rt.stop(), TIMEOUT)

    async def at(self, ts: int) -> None:
        await self.rt.clock.wait_until(ts)

    async def signal(self, ts: int, signal_id: str, quantity: Any = 1.0, *, symbol: str = "EURUSD", side: str = "buy",
                     subject: str | None = None, **extra: Any) -> None:  # fmt: skip
        await self.at(ts)
        message = {"signal_id": signal_id, "decision_id": f"d-{signal_id}", "symbol": symbol, "side": side,
                   "quantity": quantity, "ts": ts, **extra}  # fmt: skip
        await self.bus.publish(f"signals.approved.{subject or symbol}", message)

    async def publish(self, subject: str, message: dict[str, Any]) -> None:
        await self.bus.publish(subject, message)

    def statuses(self, signal_id: str) -> list[str]:
        oid = client_order_id(signal_id)
        return [p["status"] for s, p in self.events if s.startswith("orders.") and p["order_id"] == oid]

    def last(self, signal_id: str) -> dict[str, Any]:
        oid = client_order_id(signal_id)
        return [p for s, p in self.events if s.startswith("orders.") and p["order_id"] == oid][-1]

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [p for s, p in self.events if s == f"risk.alert.{kind}"]

    def dead(self) -> list[dict[str, Any]]:
        return [p for s, p in self.events if s == "deadletter.execution-service"]

    @property
    def node(self) -> Any:
        return self.rt.hosts["execution-service"].node

    @property
    def fake(self) -> FakeBroker:
        return self.rt.hosts["fake-broker"].node


def fill(fill_id: str, order_id: str, quantity: float, price: float, ts: int, *, symbol: str = "EURUSD", side: str = "buy") -> dict[str, Any]:
    return {"fill_id": fill_id, "order_id": order_id, "symbol": symbol, "side": side, "quantity": quantity,
            "price": price, "ts": ts, "commission": 0.0}  # fmt: skip


def tick(symbol: str, ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


# --------------------------------------------------------------------------- orders


async def test_a_signal_becomes_an_order_filled_in_parts_and_recorded(tmp_path: Path) -> None:
    script = {"s1": [["fill", 0.3, 1.1], ["fill", 0.5, 1.1002], ["fill", "all", 1.1004]]}
    async with Run(tmp_path, {"script": script}) as run:
        await run.signal(T0, "s1", 1.0, stop_loss=1.09512345, take_profit=1.2)
    assert run.statuses("s1") == ["pending", "submitted", "partially_filled", "partially_filled", "filled"]
    from framework.transport.nats import message_id

    names = [message_id(s, p) for s, p in run.events if s.startswith("orders.")]  # NATS de-duplication ids
    assert len(set(names)) == len(names) == 5  # two fills in one millisecond: two events, neither dropped by JetStream
    done = run.last("s1")
    assert done["filled_quantity"] == 1.0 and done["broker_order_id"] == "T1"
    assert done["avg_price"] == pytest.approx(1.10018)  # (0.3×1.1 + 0.5×1.1002 + 0.2×1.1004) / 1
    submitted = next(p for s, p in run.events if s == "orders.submitted.EURUSD")
    assert (submitted["order_id"], submitted["client_order_id"]) == (client_order_id("s1"),) * 2
    assert (submitted["stop_loss"], submitted["take_profit"]) == (1.09512, 1.2)  # on the instrument's tick
    rows = await query(tmp_path, "SELECT status, filled_quantity FROM orders FINAL")
    assert {r["status"]: r["filled_quantity"] for r in rows} == {"pending": 0, "submitted": 0, "partially_filled": 0.8, "filled": 1}
    executions = await query(tmp_path, "SELECT fill_id, quantity FROM executions FINAL ORDER BY fill_id")
    assert [r["quantity"] for r in executions] == [0.3, 0.5, 0.2]
    position = await query(tmp_path, "SELECT quantity, avg_price, commission, currency FROM positions FINAL")
    assert position == [{"quantity": 1.0, "avg_price": pytest.approx(1.10018), "commission": 10.5, "currency": "USD"}]


async def test_finished_orders_are_forgotten_once_kept_for_keep_and_open_ones_never(tmp_path: Path) -> None:
    """Finished orders go after ``keep``, at the hourly prune; an order still open stays."""
    hour = 3600 * SEC
    async with Run(tmp_path, {"script": {"open": [["fill", 0.3, 1.1]]}}, {"keep": "2h", "mark_every": "1m"}) as run:
        await run.signal(T0, "done")
        await run.signal(T0 + 10 * SEC, "open")
        await run.at(T0 + 2 * hour - 60 * SEC)
        kept = set(run.node.book.orders)
        assert {client_order_id("done"), client_order_id("open")} <= kept
        await run.at(T0 + 3 * hour + 2 * 60 * SEC)  # past keep, and a prune since
        assert set(run.node.book.orders) == {client_order_id("open")}
        assert len(run.node.book.fill_ids) == 2  # fill ids stay back to the last fill: a reconciliation's fills query
    assert run.statuses("done") == ["pending", "submitted", "filled"]
    assert run.statuses("open") == ["pending", "submitted", "partially_filled"]


async def test_a_duplicated_signal_gives_one_order(tmp_path: Path) -> None:
    async with Run(tmp_path, {}) as run:
        await run.signal(T0, "s1")
        await run.signal(T0 + SEC, "s1")  # redelivered
        await run.signal(T0 + 2 * SEC, "s1", 2.0, side="sell")  # same id, other content: still the same signal
        await run.at(T0 + 60 * SEC)
        await run.publish("signals.approved.EURUSD", {"signal_id": "s1", "decision_id": "d-s1", "symbol": "EURUSD",
                                                      "side": "buy", "quantity": 1.0, "ts": T0})  # a minute late: a duplicate still
        assert run.fake.received == [client_order_id("s1")]
        assert run.node.duplicates == 3 and not run.dead()
    assert run.statuses("s1") == ["pending", "submitted", "filled"]


@pytest.mark.parametrize(
    ("retcode", "code", "status"),
    [(10019, "no_money", "rejected"), (10014, "invalid_volume", "rejected"), (10018, "market_closed", "rejected"),
     (10031, "no_connection", "failed")],
)  # fmt: skip
async def test_broker_errors_reject_or_fail_the_order_with_the_retcode(tmp_path: Path, retcode: int, code: str, status: str) -> None:
    async with Run(tmp_path, {"script": {"s1": [["error", retcode, code]]}}) as run:
        await run.signal(T0, "s1")
    assert run.statuses("s1") == ["pending", "submitted", status]
    assert run.last("s1")["reason"] == f"{code}: refused ({code}) (MT5 retcode {retcode})"


@pytest.mark.parametrize(
    "steps",
    [[["fill", 0.4, 1.1], ["error", 10010, "partial_fill"]], [["error", 10010, "partial_fill"], ["fill", 0.4, 1.1]]],
    ids=["fill-then-cancel", "cancel-then-fill"],
)  # fmt: skip
async def test_a_partial_fill_done_with_10010_cancels_the_rest_and_keeps_the_filled_part(tmp_path: Path, steps: list[Any]) -> None:
    """MT5's 10010 (done partially): the broker filled a part and cancelled the rest. The order ends cancelled, not
    open forever, with its fill in the executions and the position, whichever of the fill and the error (two
    subjects) comes first."""
    async with Run(tmp_path, {"script": {"s1": steps}}) as run:
        await run.signal(T0, "s1", 1.0)
        await run.at(T0 + 10 * SEC)
        assert not run.dead() and not run.alerts("illegal_transition")
    assert run.statuses("s1") == ["pending", "submitted", "partially_filled", "cancelled"]
    done = run.last("s1")
    assert done["filled_quantity"] == 0.4 and done["reason"] == "partial_fill: refused (partial_fill) (MT5 retcode 10010)"
    assert [r["quantity"] for r in await query(tmp_path, "SELECT quantity FROM executions FINAL")] == [0.4]
    assert (await query(tmp_path, "SELECT quantity FROM positions FINAL"))[0]["quantity"] == pytest.approx(0.4)


async def test_a_stale_order_the_connector_would_not_send_fails_with_its_reason(tmp_path: Path) -> None:
    async with Run(tmp_path, {"script": {"s1": [["drop"]]}}) as run:
        await run.signal(T0, "s1")
        await run.publish("broker.error.EURUSD", {"order_id": client_order_id("s1"), "symbol": "EURUSD", "ts": T0, "code": "stale_order",
                                                  "message": "not sent to the broker: the order is 90000 ms old"})  # fmt: skip
    assert run.statuses("s1") == ["pending", "submitted", "failed"]
    assert run.last("s1")["reason"] == "stale_order: not sent to the broker: the order is 90000 ms old"


async def test_an_ambiguous_timeout_error_asks_the_broker_instead_of_guessing(tmp_path: Path) -> None:
    async with Run(tmp_path, {"script": {"s1": [["hidden_fill", "all", 1.1], ["error", 10012, "timeout"]]}}) as run:
        await run.signal(T0, "s1")
        assert run.statuses("s1") == ["pending", "submitted"]  # 10012: it may have been executed
        await run.at(T0 + 6 * SEC)
    assert run.statuses("s1") == ["pending", "submitted", "filled"]  # it was: the fill is adopted


async def test_illegal_broker_events_are_recorded_and_alerted_and_leave_the_order_unchanged(tmp_path: Path) -> None:
    script = {"s1": [["error", 10019, "no_money"]], "s2": [["fill", "all", 1.1]], "s3": [["fill", 0.5, 1.1]]}
    async with Run(tmp_path, {"script": script}) as run:
        await run.signal(T0, "s1")
        await run.signal(T0 + SEC, "s2")
        await run.signal(T0 + 2 * SEC, "s3")
        o1, o2, o3 = (client_order_id(s) for s in ("s1", "s2", "s3"))
        await run.publish("broker.fill.EURUSD", fill("late", o1, 1.0, 1.1, T0 + 3 * SEC))  # a fill after the rejection
        await run.publish("broker.error.EURUSD", {"order_id": o2, "symbol": "EURUSD", "ts": T0 + 3 * SEC, "code": "reject",
                                                  "message": "too late", "retcode": 10006})  # an error after the fill
        await run.publish("broker.fill.EURUSD", fill("over", o3, 0.7, 1.1, T0 + 3 * SEC))  # more than remains
        await run.publish("broker.fill.EURUSD", fill("wrong-side", o3, 0.1, 1.1, T0 + 3 * SEC, side="sell"))
    assert run.statuses("s1") == ["pending", "submitted", "rejected"]
    assert run.statuses("s2") == ["pending", "submitted", "filled"]
    assert run.statuses("s3") == ["pending", "submitted", "partially_filled"]
    illegal = run.alerts("illegal_transition")
    assert [a["severity"] for a in illegal] == ["critical", "warning", "critical", "critical"]
    assert "rejected → filled is not allowed" in illegal[0]["message"]
    assert "from filled to rejected" in illegal[1]["message"]
    assert "a fill of 0.7 with 0.5 remaining" in illegal[2]["message"]
    assert "the order is a buy of EURUSD" in illegal[3]["message"]
    assert [d["payload"]["order_id"] for d in run.dead()] == [o2]  # the illegal error is kept with its reason
    assert run.dead()[0]["reason"].startswith("illegal transition: broker error reject: too late (MT5 retcode 10006)")
    executions = await query(tmp_path, "SELECT fill_id FROM executions FINAL ORDER BY fill_id")
    assert {"late", "over", "wrong-side"} <= {r["fill_id"] for r in executions}  # every broker fill is recorded
    position = await query(tmp_path, "SELECT quantity FROM positions FINAL")
    assert position[0]["quantity"] == pytest.approx(1 + 1 + 0.5 + 0.7 - 0.1)  # and moves the position: the money moved


async def test_a_fill_for_an_unknown_order_is_recorded_and_alerted_once(tmp_path: Path) -> None:
    async with Run(tmp_path, {}) as run:
        await run.signal(T0, "s1")
        for _ in range(2):  # delivered twice: applied once
            await run.publish("broker.fill.EURUSD", fill("f-x", "o-nobody", 0.2, 1.1, T0 + SEC))
        await run.publish("broker.error.EURUSD", {"order_id": "o-nobody", "symbol": "EURUSD", "ts": T0 + SEC,
                                                  "code": "reject", "message": "no", "retcode": 10006})  # fmt: skip
        assert run.rt.hosts["execution-service"].metrics.errors == 0
    [alert] = run.alerts("unknown_fill")
    assert alert["severity"] == "critical" and "order o-nobody, which this service does not know" in alert["message"]
    assert len(run.alerts("unknown_order")) == 1 and run.dead()[0]["reason"].startswith("broker error for unknown order o-nobody")
    assert [r["fill_id"] for r in await query(tmp_path, "SELECT fill_id FROM executions FINAL WHERE fill_id = 'f-x'")] == ["f-x"]
    assert (await query(tmp_path, "SELECT quantity FROM positions FINAL"))[0]["quantity"] == pytest.approx(1.2)


# --------------------------------------------------------------------------- unacknowledged orders


@pytest.mark.parametrize(
    ("step", "statuses", "reason"),
    [
        (["accept"], ["pending", "submitted", "accepted"], "acknowledged: the broker has the order"),
        (["hidden_fill", "all", 1.1], ["pending", "submitted", "filled"], None),
        (["drop"], ["pending", "submitted", "failed"], "no acknowledgement within 5s; the broker does not know the order: it never arrived"),
    ],
    ids=["accepted", "filled", "unknown"],
)
async def test_an_unacknowledged_order_is_queried_after_the_timeout_and_resolved(
    tmp_path: Path, step: list[Any], statuses: list[str], reason: str | None
) -> None:
    async with Run(tmp_path, {"script": {"s1": [step]}}) as run:
        await run.signal(T0, "s1")
        await run.at(T0 + 4 * SEC)
        assert run.statuses("s1") == ["pending", "submitted"]  # not before the declared timeout
        await run.at(T0 + 6 * SEC)
    assert run.statuses("s1") == statuses
    assert run.last("s1").get("reason") == reason


async def test_an_order_the_broker_cannot_be_asked_about_fails_after_the_retries(tmp_path: Path) -> None:
    async with Run(tmp_path, {"script": {"s1": [["accept"]]}, "answers": 1}, {"ack_retries": 2}) as run:
        await run.signal(T0, "s1")  # the one query answered: the reconciliation
        await run.at(T0 + 8 * SEC)
        assert run.statuses("s1") == ["pending", "submitted"]  # the first unanswered query: asked again later
        await run.at(T0 + 12 * SEC)
    assert run.statuses("s1") == ["pending", "submitted", "failed"]
    reason = run.last("s1")["reason"]
    assert reason.startswith("no acknowledgement within 5s, and the broker could not be asked (2 tries; last: ")
    assert len(run.alerts("unacknowledged_order")) == 1


async def test_nothing_is_submitted_until_reconciled_and_the_service_says_so(tmp_path: Path) -> None:
    async with Run(tmp_path, None) as run:  # no broker connector at all
        await run.signal(T0, "s1")
        await run.signal(T0 + 2 * SEC, "s2")
        await run.at(T0 + 30 * SEC)
    assert run.statuses("s1") == ["pending"] and run.statuses("s2") == ["pending"]
    [alert] = run.alerts("not_reconciled")
    assert "nothing is submitted until it answers" in alert["message"] and "NoResponders" in alert["message"]

    async with Run(tmp_path, {}) as run:  # the broker is back: held orders go out if still fresh, else fail
        await run.signal(T0 + 35 * SEC, "s3")
    assert run.statuses("s1")[-1:] == run.statuses("s2")[-1:] == ["failed"]
    assert run.last("s1")["reason"].startswith("never submitted: the signal went stale")
    assert run.statuses("s3") == ["pending", "submitted", "filled"]


async def test_a_disconnected_broker_holds_orders_too(tmp_path: Path) -> None:
    async with Run(tmp_path, {"connected": False}) as run:
        await run.signal(T0, "s1")
        assert run.fake.received == []
    assert run.statuses("s1") == ["pending"]
    assert "the connector is not connected to the broker" in run.alerts("not_reconciled")[0]["message"]


# --------------------------------------------------------------------------- reconciliation


async def test_reconciliation_after_a_restart_adopts_missed_fills_once_and_resolves_open_orders(tmp_path: Path) -> None:
    state = str(tmp_path / "broker.json")
    script = {"s1": [["fill", 0.4, 1.1]], "s2": [["accept"]], "s3": [["drop"]]}
    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h"}) as run:
        await run.signal(T0, "s1")
        await run.signal(T0 + SEC, "s2")
        await run.signal(T0 + 2 * SEC, "s3")
    assert [run.statuses(s)[-1] for s in ("s1", "s2", "s3")] == ["partially_filled", "submitted", "submitted"]

    # while the service is down, the broker fills the rest of s1 and all of s2, and an order of someone else
    broker = json.loads(Path(state).read_text())
    o1, o2 = client_order_id("s1"), client_order_id("s2")
    for n, (oid, lots) in enumerate([(o1, 0.6), (o2, 1.0), ("manual-1", 0.5)]):
        broker["fills"].append(fill(f"missed-{n}", oid, lots, 1.1005, T0 + 10 * SEC))
        if oid in broker["orders"]:
            broker["orders"][oid].update(filled_quantity=1.0, status="filled")
    Path(state).write_text(json.dumps(broker))

    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h"}) as run:
        await run.signal(T0 + 20 * SEC, "s1")  # redelivered after the restart: no second order
        await run.at(T0 + 25 * SEC)
        assert run.fake.received == [o1, o2, client_order_id("s3")]
    assert run.statuses("s1") == ["filled"]  # the missed fill, adopted
    assert run.statuses("s2") == ["filled"]
    assert run.statuses("s3") == ["failed"] and run.last("s3")["reason"] == "the broker does not know the order: it never arrived"
    assert len(run.alerts("unknown_fill")) == 1 and not run.alerts("position_mismatch")
    executions = await query(tmp_path, "SELECT fill_id, quantity FROM executions FINAL ORDER BY fill_id")
    assert len(executions) == 4  # 0.4 live, then the three missed ones, each once
    [position] = await query(tmp_path, "SELECT quantity FROM positions FINAL")
    assert position["quantity"] == pytest.approx(2.5)


async def test_reconciliation_alerts_positions_that_differ(tmp_path: Path) -> None:
    state = str(tmp_path / "broker.json")
    async with Run(tmp_path, {"state_file": state}) as run:
        await run.signal(T0, "s1")
    broker = json.loads(Path(state).read_text())
    broker["fills"][0]["ts"] = T0 - 3_600_000  # a fill too old for the query window: only the position shows it
    broker["fills"].append({**broker["fills"][0], "fill_id": "old", "quantity": 0.3})
    Path(state).write_text(json.dumps(broker))
    async with Run(tmp_path, {"state_file": state}) as run:
        await run.signal(T0 + SEC, "s2")
    [alert] = run.alerts("position_mismatch")
    assert alert["message"] == "EURUSD: this service holds 1.0 lots, the broker 1.3"


# --------------------------------------------------------------------------- positions and P&L


async def test_positions_and_pnl_in_the_account_currency_exact(tmp_path: Path) -> None:
    """By hand: USDJPY long 1 @ 150.000, sell 2 @ 151.000: realizes (151 − 150) × 100,000 = 100,000 JPY, converted at
    the USDJPY mid 151.000 → 662.2516… → 662.25 USD, and flips to 1 short @ 151.000. Marked at the ask 151.020: −2,000 JPY
    → −13.24 USD. EURJPY long 1 @ 160.000 sold @ 160.500 before any USDJPY price: 50,000 JPY wait, booked at the first
    USDJPY quote (mid 150.000): 333.33 USD."""
    script = {"u1": [["fill", "all", 150.0]], "u2": [["fill", "all", 151.0]], "e1": [["fill", "all", 160.0]],
              "e2": [["fill", "all", 160.5]]}  # fmt: skip
    async with Run(tmp_path, {"script": script}, {"mark_every": "10s"}) as run:
        await run.signal(T0, "e1", symbol="EURJPY")
        await run.signal(T0 + SEC, "e2", symbol="EURJPY", side="sell")
        assert len(run.alerts("missing_rate")) == 1
        await run.at(T0 + 2 * SEC)
        await run.publish("ticks.USDJPY", tick("USDJPY", T0 + 2 * SEC, 149.99, 150.01))
        eurjpy = run.node.ledger.entries["EURJPY"]
        assert (eurjpy.realized, eurjpy.unbooked, eurjpy.position.flat) == (Decimal("333.33"), 0, True)

        await run.signal(T0 + 3 * SEC, "u1", symbol="USDJPY")
        await run.at(T0 + 4 * SEC)
        await run.publish("ticks.USDJPY", tick("USDJPY", T0 + 4 * SEC, 150.99, 151.01))
        await run.signal(T0 + 5 * SEC, "u2", 2.0, symbol="USDJPY", side="sell")
        usdjpy = run.node.ledger.entries["USDJPY"]
        assert usdjpy.realized == Decimal("662.25")
        assert (usdjpy.position.quantity, usdjpy.position.avg_price) == (Decimal("-1"), Decimal("151.000"))
        await run.at(T0 + 6 * SEC)
        await run.publish("ticks.USDJPY", tick("USDJPY", T0 + 6 * SEC, 151.00, 151.02))
        await run.at(T0 + 25 * SEC)  # a mark
        assert usdjpy.unrealized == Decimal("-13.24")  # −2,000 JPY at mid 151.01 = −13.2441…
    rows = await query(tmp_path, "SELECT symbol, quantity, avg_price, realized_pnl, unrealized_pnl, commission FROM positions FINAL ORDER BY symbol")
    assert rows == [
        {"symbol": "EURJPY", "quantity": 0.0, "avg_price": 0.0, "realized_pnl": 333.33, "unrealized_pnl": 0.0, "commission": 7.0},
        {"symbol": "USDJPY", "quantity": -1.0, "avg_price": 151.0, "realized_pnl": 662.25, "unrealized_pnl": -13.24, "commission": 7.0},
    ]


# --------------------------------------------------------------------------- bad input


async def test_bad_signals_are_dead_lettered_with_a_reason_and_never_traded(tmp_path: Path) -> None:
    async with Run(tmp_path, {}) as run:
        await run.signal(T0, "unknown", symbol="ABCDEF", subject="EURUSD")
        await run.signal(T0, "not-ours", symbol="GBPUSD", subject="EURUSD")  # an instrument, not among this run's pairs
        await run.signal(T0, "zero", 0)
        await run.signal(T0, "negative", -1.0)
        await run.signal(T0, "tiny", 0.004)  # below the minimum lot
        await run.signal(T0, "words", "lots")
        await run.signal(T0, "no-decision", decision_id=7)
        await run.at(T0 + 20 * SEC)
        await run.bus.publish("signals.approved.EURUSD", {"signal_id": "stale", "decision_id": "d", "symbol": "EURUSD",
                                                          "side": "buy", "quantity": 1.0, "ts": T0 + 5 * SEC})  # fmt: skip
        await run.bus.publish("signals.approved.EURUSD", {"signal_id": "half", "symbol": "EURUSD"})
        assert run.fake.received == []
        assert run.rt.hosts["execution-service"].metrics.errors == 0
    reasons = {d["payload"]["signal_id"]: d["reason"] for d in run.dead()}
    assert reasons == {
        "unknown": "unknown symbol 'ABCDEF': not an instrument this service trades",
        "not-ours": "unknown symbol 'GBPUSD': not an instrument this service trades",
        "zero": "volume 0 is not a positive number of lots",
        "negative": "volume -1.0 is not a positive number of lots",
        "tiny": "volume: EURUSD: volume 0.004 lots is below the minimum of 0.01",
        "words": "volume 'lots' is not a positive number of lots",
        "no-decision": "decision_id 7 is not an id (a string of 1 to 128 characters)",
        "stale": "stale: the approved signal is 15000 ms old (max_signal_age 10s)",
        "half": "approved signal without decision_id, side, quantity, ts",
    }
    assert not [s for s, _ in run.events if s.startswith("orders.")]


async def test_bad_broker_messages_are_dead_lettered_not_crashed_on(tmp_path: Path) -> None:
    async with Run(tmp_path, {}) as run:
        await run.signal(T0, "s1")
        await run.publish("broker.fill.EURUSD", {"fill_id": "f", "order_id": client_order_id("s1")})
        await run.publish("broker.fill.EURUSD", fill("neg", client_order_id("s1"), -1.0, 1.1, T0))
        await run.publish("broker.fill.EURUSD", {**fill("swap", client_order_id("s1"), 1.0, 1.1, T0), "swap": "-19.5"})
        await run.publish("broker.error.EURUSD", {"order_id": client_order_id("s1")})
        await run.publish("ticks.EURUSD", {"ts": T0, "source": "test"})
        await run.publish("bars.EURUSD.1m", {"ts": T0, "close": "1.1"})
        assert run.rt.hosts["execution-service"].metrics.errors == 0
    assert [d["reason"] for d in run.dead()] == [
        "fill without symbol, side, quantity, price, ts, commission",
        "fill quantity -1.0 is not a positive number",
        "fill swap '-19.5' is not an amount (a finite number below 1e+15)",
        "broker error without symbol, ts, code, message",
    ]
    assert run.statuses("s1") == ["pending", "submitted", "filled"]


# --------------------------------------------------------------------------- determinism


async def test_two_runs_publish_the_same_events(tmp_path: Path) -> None:
    script = {"s1": [["fill", 0.5, 1.1]], "s2": [["error", 10019, "no_money"]], "s3": [["drop"]]}
    runs = []
    for name in ("a", "b"):
        async with Run(tmp_path / name, {"script": script}) as run:
            for n, signal_id in enumerate(("s1", "s2", "s3")):
                await run.signal(T0 + n * SEC, signal_id, side="sell" if n % 2 else "buy")
            await run.at(T0 + 30 * SEC)
        runs.append(run.events)
    assert runs[0] == runs[1] and len(runs[0]) > 8


# --------------------------------------------------------------------------- over a real NATS server


async def test_over_nats_with_the_topologys_durable_subjects(tmp_path: Path, nats_server_fn: Any) -> None:
    """Reconciliation is a NATS request: it must not land on a JetStream subject (whose ack would be the reply).

    Each signal has its own decision: JetStream de-duplicates on the decision id and time, so two approvals of
    one decision in the same millisecond are one message (as they should be)."""
    durable = load(tmp_path, "topology=live").topology.nats.durable  # type: ignore[union-attr]
    bus, events = await recording_bus("orders.>", "risk.alert.>", nats=nats_server_fn.url, durable=durable)
    rt = runtime(tmp_path / "run", {"script": {"s2": [["fill", 0.25, 1.1], ["fill", "all", 1.2]]}}, None,
                 "topology.runtime.clock=wall", pubsub=bus)  # fmt: skip
    await rt.start()
    try:
        for signal_id in ("s1", "s2"):
            await bus.publish("signals.approved.EURUSD", {"signal_id": signal_id, "decision_id": f"d-{signal_id}", "symbol": "EURUSD",
                                                          "side": "sell", "quantity": 0.5, "ts": rt.clock.now_ms()})  # fmt: skip
        deadline = asyncio.get_running_loop().time() + 30
        while len([p for s, p in events if s == "orders.filled.EURUSD"]) < 2:
            assert asyncio.get_running_loop().time() < deadline, events
            await asyncio.sleep(0.02)
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
        await bus.close()
    assert not [s for s, _ in events if s.startswith("risk.alert.")]  # reconciled at the first signal
    assert [p["status"] for s, p in events if s.startswith("orders.") and p["signal_id"] == "s2"] == [
        "pending", "submitted", "partially_filled", "filled"]  # fmt: skip


async def test_positions_are_marked_from_bar_closes_where_a_run_has_no_ticks(tmp_path: Path) -> None:
    async with Run(tmp_path, {"script": {"s1": [["fill", "all", 1.1]]}}, {"mark_every": "5s"}) as run:
        await run.signal(T0, "s1", 2.0, side="sell")
        await run.at(T0 + SEC)
        await run.publish("bars.EURUSD.1m", {"symbol": "EURUSD", "timeframe": "1m", "ts": T0 - 60 * SEC, "ts_close": T0,
                                             "open": 1.1, "high": 1.1, "low": 1.0, "close": 1.0995, "volume": 0.0,
                                             "tick_count": 1, "source": "test"})  # fmt: skip
        await run.at(T0 + 12 * SEC)
    [row] = await query(tmp_path, "SELECT quantity, unrealized_pnl FROM positions FINAL")
    assert row == {"quantity": -2.0, "unrealized_pnl": 100.0}  # (1.1 − 1.0995) × 200,000


# --------------------------------------------------------------------------- pruning


def _full_scan(book: OrderBook, orders_before_ms: int, fills_before_ms: int) -> tuple[Any, ...]:
    """What the book holds after a prune by the plain rule: every order and fill id looked at (the book unchanged)."""
    orders, live, by_broker_id = dict(book.orders), dict(book._live), dict(book._by_broker_id)
    gone = [k for k, t in orders.items() if t.order.done and t.final is None and t.updated_ms < orders_before_ms]
    for key in gone:
        broker_id = orders.pop(key).broker_order_id
        live.pop(key, None)
        if broker_id:
            by_broker_id.pop(broker_id, None)
    fills = [(k, ts) for k, ts in book.fill_ids.items() if ts >= fills_before_ms]
    return len(gone), _ids(orders), _ids(live), list(by_broker_id.items()), fills


def _ids(orders: dict[str, Tracked]) -> list[tuple[str, int]]:
    return [(k, id(t)) for k, t in orders.items()]


def _held(book: OrderBook) -> tuple[Any, ...]:
    return _ids(book.orders), _ids(book._live), list(book._by_broker_id.items()), list(book.fill_ids.items())


def test_a_prune_forgets_exactly_the_orders_and_fill_ids_a_full_scan_would() -> None:
    """The book's prune pops old entries off heaps: at every prune of a random run, it keeps what the plain rule keeps,
    in the same order, with orders replaced under their id, updated_ms going back (event time), status changes
    after a prune looked at them, a ``final`` status pending, fill ids noted again, and restores from JSON."""
    rng = random.Random(1793577600)
    hour = 3600 * SEC
    book, everyone, ids, fill_ids = OrderBook(), [], ["o-0"], ["f-0"]
    now, seen = T0, {"prunes": 0, "orders": 0, "fills": 0, "back": 0}

    def pick() -> Tracked:
        """Mostly an order the book holds, else any (also one forgotten or replaced)."""
        return rng.choice(list(book.orders.values())) if book.orders and rng.random() < 0.9 else rng.choice(everyone)

    for step in range(6000):
        r = rng.random()
        if r < 0.25:
            order_id = rng.choice(ids) if rng.random() < 0.2 else f"o-{step}"
            ids.append(order_id)
            status = rng.choice([OrderStatus.PENDING, OrderStatus.SUBMITTED, OrderStatus.FILLED, OrderStatus.REJECTED])
            at = now + rng.randint(-3 * hour, hour)
            tracked = Tracked(
                Order(order_id, "EURUSD", "buy", Decimal(1), status=status), f"s-{step}", f"d-{step}", at, at,
                broker_order_id=rng.choice([None, "T1", "T2", f"T{step}"]),
                final=OrderStatus.CANCELLED if rng.random() < 0.05 else None,
            )  # fmt: skip
            book.add(tracked)
            everyone.append(tracked)
        elif r < 0.45 and everyone:
            tracked = pick()
            at = tracked.updated_ms + rng.randint(-3 * hour, 2 * hour)
            seen["back"] += at < tracked.updated_ms
            book.touch(tracked, at)
        elif r < 0.6 and everyone:
            tracked = pick()
            allowed = sorted(TRANSITIONS.get(tracked.status, ()))
            if allowed:  # as the service moves an order: to a status, as of an event time
                tracked.order.move(rng.choice(allowed))
                book.touch(tracked, tracked.updated_ms + rng.randint(-hour, 2 * hour))
            if rng.random() < 0.1:
                tracked.final = None if tracked.final is not None else OrderStatus.FAILED
        elif r < 0.8:
            fill_id = rng.choice(fill_ids + list(book.fill_ids)) if rng.random() < 0.2 else f"f-{step}"
            fill_ids.append(fill_id)
            book.note_fill(fill_id, now + rng.randint(-3 * hour, hour))
        elif r < 0.9:
            now += rng.randint(0, hour // 3)
            orders_before, fills_before = now - rng.randint(0, 4 * hour), now - rng.randint(0, 5 * hour)
            count, *rule = _full_scan(book, orders_before, fills_before)
            before = len(book.orders), len(book.fill_ids)
            assert book.prune(orders_before, fills_before) == count
            assert list(_held(book)) == rule
            seen["prunes"] += 1
            seen["orders"] += before[0] - len(book.orders)
            seen["fills"] += before[1] - len(book.fill_ids)
        else:
            book = OrderBook.from_json(json.loads(json.dumps(book.to_json())))
            everyone.extend(book.orders.values())
    assert seen["prunes"] > 500 and seen["orders"] > 500 and seen["fills"] > 500 and seen["back"] > 100


@pytest.mark.parametrize("ending", ["fill", "cancel"])
async def test_an_order_whose_time_goes_back_is_forgotten_as_soon_as_it_is_old(tmp_path: Path, ending: str) -> None:
    """A fill or a cancel (10010) dated before the order's last change (event time) moves the order back in time:
    the prune that would forget it then does, however late it looked at the order before."""
    hour = 3600 * SEC
    later = T0 + 2 * hour + 30 * 60 * SEC
    order_id = client_order_id("s")
    async with Run(tmp_path, {"script": {"s": [["fill", 0.3, 1.1]]}}, {"keep": "2h", "mark_every": "1m"}) as run:
        await run.signal(T0, "s")
        await run.at(later)
        await run.publish("broker.fill.EURUSD", fill("f-2", order_id, 0.3, 1.1, later))
        run.node._next_prune_ms = 0  # a prune at the next mark: the order, unfinished, is looked at and kept
        await run.at(later + 3 * 60 * SEC)
        assert order_id in run.node.book.orders and run.node._next_prune_ms > later
        if ending == "fill":
            await run.publish("broker.fill.EURUSD", fill("f-3", order_id, 0.4, 1.1, T0 + 10 * SEC))
        else:
            error = {"order_id": order_id, "symbol": "EURUSD", "ts": T0 + 10 * SEC, "code": "partial_fill",
                     "message": "done partially", "retcode": 10010}  # fmt: skip
            await run.publish("broker.error.EURUSD", error)
        run.node._next_prune_ms = 0
        await run.at(later + 6 * 60 * SEC)
        assert order_id not in run.node.book.orders
    assert run.statuses("s")[-1] == ("filled" if ending == "fill" else "cancelled")
