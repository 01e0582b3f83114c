"""execution-service at its edges: a partial fill (10010) whose deals and cancel interleave, restarts between
submit and acknowledgement, reconciliation of what the broker did meanwhile, and positions against hand arithmetic.
Runs on the harness of ``tests/test_execution.py`` (demo profile, simulated clock, the scripted broker)."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from framework.testing import query
from nodes.execution.book import OrderBook
from nodes.trading.orders import InvalidTransition, Order, OrderStatus, client_order_id
from tests.test_execution import SEC, T0, Run, fill, tick

PARTIAL = ["error", 10010, "partial_fill"]


@pytest.mark.parametrize(
    "steps",
    [[PARTIAL, ["fill", 0.2, 1.1], ["fill", 0.2, 1.1002]], [["fill", 0.2, 1.1], PARTIAL, ["fill", 0.2, 1.1002]]],
    ids=["cancel-then-two-fills", "fill-cancel-fill"],
)
async def test_a_10010_whose_cancel_overtakes_some_of_its_deals_keeps_every_deal_on_the_order(
    tmp_path: Path, steps: list[Any]
) -> None:
    """MT5's 10010 (filled in part, the rest cancelled) may come with several deals; they and the cancel travel on
    two subjects. Every deal belongs to the order: it ends cancelled with 0.4 filled at their average, no alert."""
    async with Run(tmp_path, {"script": {"s1": steps}}) as run:
        await run.signal(T0, "s1", 1.0)
        await run.at(T0 + 10 * SEC)
        assert not run.alerts("illegal_transition") and not run.dead()
        tracked = run.node.book.orders[client_order_id("s1")]
        restored = OrderBook.from_json(json.loads(json.dumps(run.node.book.to_json()))).orders[client_order_id("s1")]
        assert restored.rest_cancelled and restored.order.fills == tracked.order.fills
    done = run.last("s1")
    assert (done["status"], done["filled_quantity"]) == ("cancelled", pytest.approx(0.4))
    assert done["avg_price"] == pytest.approx(1.1001)
    assert done["reason"] == "partial_fill: refused (partial_fill) (MT5 retcode 10010)"
    assert (await query(tmp_path, "SELECT quantity FROM positions FINAL"))[0]["quantity"] == pytest.approx(0.4)


def test_a_fill_counted_on_a_cancelled_order_stays_within_its_quantity_and_once() -> None:
    order = Order("o", "EURUSD", "buy", Decimal("1"), status=OrderStatus.CANCELLED, filled=Decimal("0.4"),
                  avg_price=Decimal("1.1"), fills={"a": Decimal("0.4")})  # fmt: skip
    assert order.fill_cancelled("b", Decimal("0.6"), Decimal("1.2")) is True
    assert (order.status, order.filled, order.avg_price) == (OrderStatus.CANCELLED, Decimal("1.0"), Decimal("1.16"))
    assert order.fill_cancelled("b", Decimal("0.6"), Decimal("1.2")) is False
    with pytest.raises(InvalidTransition):
        order.fill_cancelled("c", Decimal("0.1"), Decimal("1.2"))  # nothing remains
    with pytest.raises(InvalidTransition):
        Order("p", "EURUSD", "buy", Decimal("1"), status=OrderStatus.FILLED).fill_cancelled("d", Decimal("0.1"), Decimal("1"))


async def test_a_restart_reconciles_a_cancel_a_fill_an_unsent_order_and_a_stranger_once(tmp_path: Path) -> None:
    """Down with three orders open: the broker cancels one, fills another, never saw the third, and a deal of an
    order not ours moves USDJPY. Each is resolved once, nothing is sent again, the stranger's fill is alerted."""
    state = str(tmp_path / "broker.json")
    script = {"s1": [["accept"]], "s2": [["accept"]], "s3": [["drop"]]}
    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h"}) as run:
        for n, signal_id in enumerate(("s1", "s2", "s3")):
            await run.signal(T0 + n * SEC, signal_id)
    broker = json.loads(Path(state).read_text())
    o1, o2 = client_order_id("s1"), client_order_id("s2")
    broker["orders"][o1].update(status="cancelled")
    broker["fills"].append({**fill("missed", o2, 1.0, 1.1005, T0 + 10 * SEC), "broker_order_id": "T2"})
    broker["orders"][o2].update(filled_quantity=1.0, status="filled")
    broker["fills"].append(fill("manual", "someone", 0.5, 150.0, T0 + 11 * SEC, symbol="USDJPY", side="sell"))
    Path(state).write_text(json.dumps(broker))
    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h"}) as run:
        await run.signal(T0 + 20 * SEC, "s2")  # redelivered
        await run.at(T0 + 25 * SEC)
        assert run.fake.received == [o1, o2, client_order_id("s3")]
    assert [run.statuses(s) for s in ("s1", "s2", "s3")] == [["cancelled"], ["filled"], ["failed"]]
    assert [a["symbol"] for a in run.alerts("unknown_fill")] == ["USDJPY"]
    assert sorted(r["fill_id"] for r in await query(tmp_path, "SELECT fill_id FROM executions FINAL")) == ["manual", "missed"]


async def test_a_restart_from_a_snapshot_taken_before_the_fill_books_it_once_and_resends_nothing(tmp_path: Path) -> None:
    """SIGKILL-like: the state is the periodic snapshot of two submitted orders; after it one filled (published), and
    the broker cancelled the other while the service was down."""
    state = str(tmp_path / "broker.json")
    snap = tmp_path / "services" / "execution-service" / "state.json"
    script = {"s1": [["accept"]], "s2": [["accept"]]}
    late = {**fill("f1", client_order_id("s1"), 1.0, 1.1, T0 + 4 * SEC), "broker_order_id": "T1"}
    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h", "snapshot_every": "1s"}) as run:
        await run.signal(T0, "s1")
        await run.signal(T0, "s2")
        await run.at(T0 + 3 * SEC)
        shutil.copy(snap, tmp_path / "periodic.json")
        await run.at(T0 + 4 * SEC)
        await run.publish("broker.fill.EURUSD", late)
        await run.at(T0 + 5 * SEC)
    assert run.statuses("s1")[-1] == "filled"
    shutil.copy(tmp_path / "periodic.json", snap)
    broker = json.loads(Path(state).read_text())
    broker["fills"].append(late)
    broker["orders"][client_order_id("s1")].update(filled_quantity=1.0, status="filled")
    broker["orders"][client_order_id("s2")].update(status="cancelled")
    Path(state).write_text(json.dumps(broker))
    async with Run(tmp_path, {"script": script, "state_file": state}, {"ack_timeout": "1h"}) as run:
        await run.signal(T0 + 20 * SEC, "s1")
        await run.at(T0 + 25 * SEC)
        assert run.fake.received == [client_order_id("s1"), client_order_id("s2")]
    assert run.statuses("s1") == [] and run.statuses("s2") == ["cancelled"]
    assert [r["fill_id"] for r in await query(tmp_path, "SELECT fill_id FROM executions FINAL")] == ["f1"]
    assert (await query(tmp_path, "SELECT quantity FROM positions FINAL"))[0]["quantity"] == 1.0


async def test_a_netting_position_adds_reduces_and_flips_as_by_hand(tmp_path: Path) -> None:
    """EURUSD buy 1 @ 1.1000, buy 1 @ 1.1010 (avg 1.1005), sell 0.5 @ 1.1020: realizes 0.0015 × 50,000 = 75.00, holds
    1.5 @ 1.1005, marked at the bid 1.1030: 0.0025 × 150,000 = 375.00. Sell 2.5 @ 1.1040: realizes 0.0035 × 150,000 =
    525.00 (600.00 in all) and flips to 1 short @ 1.1040, marked at the ask 1.1050: −100.00. Commission 3.5 a fill."""
    script = {s: [["fill", "all", p]] for s, p in (("a", 1.1), ("b", 1.101), ("c", 1.102), ("d", 1.104))}
    async with Run(tmp_path, {"script": script}, {"mark_every": "5s"}) as run:
        await run.signal(T0, "a")
        await run.signal(T0 + SEC, "b")
        await run.signal(T0 + 2 * SEC, "c", 0.5, side="sell")
        await run.at(T0 + 3 * SEC)
        await run.publish("ticks.EURUSD", tick("EURUSD", T0 + 3 * SEC, 1.1030, 1.1032))
        await run.at(T0 + 12 * SEC)
        entry = run.node.ledger.entries["EURUSD"]
        assert (entry.realized, entry.unrealized, entry.position.quantity) == (75, 375, Decimal("1.5"))
        await run.signal(T0 + 13 * SEC, "d", 2.5, side="sell")
        await run.publish("ticks.EURUSD", tick("EURUSD", T0 + 14 * SEC, 1.1048, 1.1050))
        await run.at(T0 + 30 * SEC)
    rows = await query(tmp_path, "SELECT quantity, avg_price, realized_pnl, unrealized_pnl, commission FROM positions FINAL")
    assert rows == [{"quantity": -1.0, "avg_price": 1.104, "realized_pnl": 600.0, "unrealized_pnl": -100.0, "commission": 14.0}]
