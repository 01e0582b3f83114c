"""Swap reaches the books: the paper broker's swap, through mt5-connector's fills, in execution's and performance's balance.

One paper account on simulated time (demo profile: in-process bus, embedded ClickHouse): a long EURUSD held from
Wednesday 10:00 across Wednesday's triple roll, closed on Thursday. While it is open, the balances agree and the equity
differs by the swap the broker accrued (in its equity, not in a fill yet); once closed, the broker's balance, execution's
and performance's agree to the cent, and the round trip's P&L includes the swap.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from framework.testing import contracts, load, make_runtime, query, recording_bus
from nodes.trading.fills import fill_problem, fill_swap

D = Decimal
SEC, HOUR, DAY = 1000, 3_600_000, 86_400_000
WED = 1_793_577_600_000 + 2 * DAY  # Wednesday 2026-11-04 00:00 UTC
OPEN, CLOSE = WED + 10 * HOUR, WED + DAY + 10 * HOUR  # Wednesday 10:00, Thursday 10:00: the 22:00 roll between counts 3 nights
SERVICES = ["mt5-connector", "execution-service", "performance-monitoring"]
SWAP = D("-19.50")  # -6.5 points × 0.00001 × 100,000 × 3 nights
COMMISSION = D("3.50")


def tick(ts: int, bid: float, ask: float) -> dict[str, Any]:
    return {"symbol": "EURUSD", "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def signal(sid: str, side: str, ts: int) -> dict[str, Any]:
    return {"signal_id": sid, "decision_id": f"d-{sid}", "symbol": "EURUSD", "side": side, "quantity": 1.0, "ts": ts}


async def test_swap_of_a_position_held_over_the_wednesday_roll_is_in_every_balance(tmp_path: Path) -> None:
    loaded = load(tmp_path, "pairs=[EURUSD]", *(f"topology.services.{s}.enabled=true" for s in SERVICES),
                  "++topology.services.mt5-connector.params.paper.swap={rates: {EURUSD: {long: -6.5, short: 1.2}}, roll: '22:00'}",
                  "++topology.services.mt5-connector.params.paper.commission.per_lot=3.5",
                  "++topology.services.execution-service.params.check_every=1m",
                  "++topology.services.execution-service.params.snapshot_every=1d",
                  "++topology.services.performance-monitoring.params.snapshot_every=1d",
                  "++topology.services.performance-monitoring.params.record_every=1h")  # fmt: skip
    bus, got = await recording_bus("broker.fill.>", "deadletter.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=SERVICES)
    await rt.start()

    async def at(ts: int, subject: str, message: dict[str, Any]) -> None:
        await rt.clock.wait_until(ts)
        await bus.publish(subject, message)

    async def views(ts: int) -> tuple[dict[str, Any], dict[str, Any]]:
        broker = await bus.request("broker.query", {"query": "state", "ts": ts})
        report = await bus.request("performance.query", {"query": "report", "ts": ts})
        return broker, report

    try:
        await at(OPEN, "ticks.EURUSD", tick(OPEN, 1.08500, 1.08510))
        await at(OPEN, "signals.approved.EURUSD", signal("open", "buy", OPEN))
        await at(OPEN + SEC, "ticks.EURUSD", tick(OPEN + SEC, 1.08500, 1.08510))  # fills at 1.08510
        for hour in range(1, 24):  # a price an hour: the 22:00 roll passes with the position open
            await at(OPEN + hour * HOUR, "ticks.EURUSD", tick(OPEN + hour * HOUR, 1.08600, 1.08610))
        await at(CLOSE, "ticks.EURUSD", tick(CLOSE, 1.08700, 1.08710))
        held_broker, held_report = await views(CLOSE)
        await at(CLOSE, "signals.approved.EURUSD", signal("close", "sell", CLOSE))
        await at(CLOSE + SEC, "ticks.EURUSD", tick(CLOSE + SEC, 1.08700, 1.08710))  # the close fills at the bid, 1.08700
        await rt.clock.wait_until(CLOSE + 2 * SEC)
        broker, report = await views(CLOSE + 2 * SEC)
        execution = rt.hosts["execution-service"].node.ledger
    finally:
        await asyncio.wait_for(rt.stop(), 60)

    # while held, after the roll: the swap is accrued at the broker (its equity, its position), in no balance yet
    (position,) = held_broker["positions"]
    assert D(str(position["swap"])) == SWAP
    floating = (D("1.08700") - D("1.08510")) * 100_000  # 190.00, marked at the bid
    assert D(str(held_broker["account"]["balance"])) == D(str(held_report["balance"])) == 100_000 - COMMISSION
    assert D(str(held_broker["account"]["equity"])) == 100_000 - COMMISSION + floating + SWAP
    assert D(str(held_report["equity"])) == D(str(held_broker["account"]["equity"])) - SWAP  # documented: accrued swap not in it

    # the closing fill carries the swap the broker realized; valid fill.v1, and THE fill check takes it
    fills = [m for s, m in got if s.startswith("broker.fill.")]
    assert [f.get("swap") for f in fills] == [None, float(SWAP)]
    checked = contracts(loaded.project).resolve("fill.v1")
    assert all(checked.validate(f) is None and fill_problem(f, {"EURUSD"}) is None for f in fills)
    assert fill_swap(fills[1]) == SWAP

    # closed: the three balances agree to the cent, swap included
    want = 100_000 + (D("1.08700") - D("1.08510")) * 100_000 - 2 * COMMISSION + SWAP  # 100,163.50
    assert D(str(broker["account"]["balance"])) == want == D(str(broker["account"]["equity"]))
    assert D(str(report["balance"])) == want == D(str(report["equity"]))
    assert 100_000 + sum((e.net for e in execution.entries.values()), D(0)) == want
    assert execution.entries["EURUSD"].swap == SWAP

    # the round trip's P&L includes the swap realized with it (and so does P&L per symbol)
    (trip,) = report["trades"]
    assert D(str(trip["pnl"])) == want - 100_000 and D(str(report["pnl_by_symbol"]["EURUSD"])) == want - 100_000
    assert D(str(trip["swap"])) == SWAP
    (row,) = await query(tmp_path, "SELECT pnl, swap, commission FROM trade_analysis FINAL")
    assert (D(str(row["pnl"])), D(str(row["swap"])), D(str(row["commission"]))) == (want - 100_000, SWAP, 2 * COMMISSION)
    (pos,) = await query(tmp_path, "SELECT realized_pnl, swap, commission FROM positions FINAL")
    assert D(str(pos["realized_pnl"])) + D(str(pos["swap"])) - D(str(pos["commission"])) == want - 100_000
    assert not [s for s, _ in got if s.startswith("deadletter.")]
