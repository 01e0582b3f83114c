"""execution-service: approved signals become orders; broker fills and errors move them; positions follow.

**Orders.** An approved signal becomes one market order whose id is
:func:`~nodes.trading.orders.client_order_id` of the signal id, so a signal delivered twice (a
JetStream redelivery, a replay, a restart) finds its order and makes no second one. Each order
goes through :mod:`nodes.trading.orders` (pending → submitted → partially filled → filled, or
rejected / failed / cancelled) and every change is published on ``orders.{status}.{symbol}``;
``orders.submitted.*`` is what the broker connector executes. A signal with an unknown symbol,
a volume that is not a positive tradable number of lots, or older than ``max_signal_age`` is
dead-lettered with the reason and never traded.

**Broker events.** Each fill (``fill_id``) is applied once: recorded in ``executions``, counted
in the symbol's netting position (the broker's money moved, whatever our order says), and moves
its order where the state machine allows. A fill for an order we do not know, or one the order's
status does not allow (a fill after a cancel, an overfill), is recorded and alerted and leaves the
order as it was; it never stops the service. The exception is a fill of an order whose rest the
broker cancelled (10010): its deals and the cancel travel apart, so a deal heard of after the cancel
still counts on the order, which stays cancelled (:meth:`~nodes.trading.orders.Order.fill_cancelled`).
A broker error rejects or fails its order with the MT5 retcode in the reason
(:func:`~nodes.execution.broker.error_outcome`); an error the order's status does not allow is
dead-lettered and alerted.

**Event time.** Every order event carries the time of what caused it, never when it was handled:
the approved signal's ``ts`` (its decision's time) for pending and submitted, the fill's for
partially filled and filled, the error's for a rejection. So live delivery, whatever its delays
and interleaving, publishes the same events as a replay on simulated time (``tests/test_parity.py``),
and the broker fills a market order on the first price after its decision. Events the service
makes on its own (an acknowledgement timeout, a reconciliation, an order held until the broker
answered) carry the clock.

**Reconciliation** (after NautilusTrader's live execution engine). Until the broker has told us
its state (``ctx.request("broker", broker_query)``: open orders, positions, fills since the last
one we saw), nothing is submitted: orders wait as pending, an alert says so, and the query is
retried every ``check_every``. Then missed fills are adopted (once, by id), each open order is
resolved against the broker's view (:func:`~nodes.execution.broker.resolution`), positions that
differ are alerted, and the held orders go out (or fail, if their signal went stale meanwhile).
A submitted order nothing was heard of for ``ack_timeout`` is asked about by id and resolved the
same way; one the broker cannot be asked about ``ack_retries`` times fails with the reason.

**Restarts.** The state (orders, applied fill ids, positions) is a versioned JSON snapshot
(every ``snapshot_every`` and at stop). A process killed between snapshots loses what came after
the last one, so at start the service also reads its own order events back from the orders table
(which the runtime refills from the order_execution_archive after a crash): an order published
after the snapshot is known again, so its signal is still a duplicate, and the reconciliation
resolves it; fills come back from the broker since the snapshot. Events the table shows were
already published are not published again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import InvalidOperation
from typing import Any

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.execution.book import OrderBook, Tracked
from nodes.execution.broker import BrokerState, error_outcome, parse_state, position_differences, resolution
from nodes.trading.ledger import Ledger
from nodes.execution.spec import ExecutionParams
from nodes.trading.fills import fill_problem, fill_profit, fill_swap, is_number
from nodes.trading.instruments import Rules, VolumeError, dec
from nodes.trading.orders import OPEN, TRANSITIONS, InvalidTransition, Order, OrderStatus, client_order_id

S = OrderStatus
MARGIN_MS = 60_000
"""Overlap of a fills query with what the restored state already holds (fill ids make it harmless)."""
PRUNE_EVERY_MS = 3_600_000
"""Finished orders and fill ids older than ``keep`` are forgotten at most this often (as the paper broker prunes)."""
SIGNAL_FIELDS = ("signal_id", "decision_id", "symbol", "side", "quantity", "ts")
ERROR_FIELDS = ("order_id", "symbol", "ts", "code", "message")
TERMINAL_ROWS = ("failed", "rejected", "cancelled")

log = logging.getLogger("fxflow.execution")



class Execution(Node[ExecutionParams]):
    state_version = 1
    snapshot_every = "snapshot_every"

    def __init__(self, ctx: Any, params: ExecutionParams) -> None:
        super().__init__(ctx, params)
        self.rules = Rules.table(ctx.instruments, ctx.service)
        self.book = OrderBook()
        self.ledger = Ledger(self.rules, ctx.account.currency)
        self.last_fill_ms: int | None = None
        self.reconciled = False
        self.duplicates = 0
        self._restored_at: int | None = None
        self._since_ms = 0
        self._already: set[tuple[str, str, float]] = set()
        self._retry_ms: int | None = None
        self._due_ms: int | None = None
        self._next_mark_ms: int | None = None
        self._holding = False
        self._unconverted: set[str] = set()
        self._max_age_ms = parse_ms(params.max_signal_age) or 0
        self._ack_ms = parse_ms(params.ack_timeout) or 0
        self._check_ms = parse_ms(params.check_every) or 1000
        self._mark_ms = parse_ms(params.mark_every) or 60_000
        self._keep_ms = parse_ms(params.keep) or 0
        self._next_prune_ms = 0
        self._query_s = (parse_ms(params.query_timeout) or 5000) / 1000

    # --- state ----------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "saved_at": self.ctx.clock.now_ms(),
            "book": self.book.to_json(),
            "ledger": self.ledger.to_json(),
            "last_fill_ms": self.last_fill_ms,
        }

    def restore(self, state: Any) -> None:
        try:
            book = OrderBook.from_json(state["book"])
            self.ledger.load(state["ledger"])
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            log.error("%s: the saved state is unreadable (%s); starting from the orders table and the broker", self.ctx.service, exc)
            self.ledger = Ledger(self.rules, self.ctx.account.currency)
            return
        self.book = book
        self.last_fill_ms = state.get("last_fill_ms")
        self._restored_at = int(state["saved_at"])

    async def on_start(self) -> None:
        if self._restored_at is not None:
            self._since_ms = max(0, min(self._restored_at, self.last_fill_ms or self._restored_at) - MARGIN_MS)
        await self._recover_from_table()

    async def _recover_from_table(self) -> None:
        """Orders published after the restored snapshot (all of them without one), back from the orders table."""
        name = self.params.orders_table
        if not name:
            return
        since = 0 if self._restored_at is None else max(0, self._restored_at - MARGIN_MS)
        try:
            await self.ctx.flush("orders")  # the rows the runtime refilled from the archive after a crash
            rows = await self.ctx.table(name).query(
                "SELECT order_id, signal_id, decision_id, symbol, side, quantity, status, ts, filled_quantity, reason, "
                "broker_order_id, stop_loss, take_profit FROM {table} WHERE ts >= {since:Int64} ORDER BY ts, order_id",
                {"since": since},
            )
        except Exception as exc:
            log.error("%s: cannot read %s (%s: %s); the broker's reconciliation alone restores the orders",
                      self.ctx.service, name, type(exc).__name__, exc)  # fmt: skip
            return
        grouped: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["order_id"], []).append(row)
        recreated = 0
        for order_id, events in grouped.items():
            for row in events:
                self._already.add((order_id, row["status"], float(row["filled_quantity"] or 0)))
            statuses = {row["status"] for row in events}
            last_terminal = next((r for r in reversed(events) if r["status"] in TERMINAL_ROWS), None)
            tracked = self.book.find(order_id)
            if tracked is None:
                tracked = self._recreate(order_id, events, statuses)
                if tracked is None:
                    continue
                recreated += 1
                self._since_ms = min(self._since_ms, max(0, tracked.created_ms - MARGIN_MS))
            if last_terminal is not None and not tracked.order.done:
                tracked.final = S(last_terminal["status"])
                tracked.reason = last_terminal["reason"]
        if recreated:
            log.warning("%s: %d order(s) published after the last snapshot recovered from %s", self.ctx.service, recreated, name)

    def _recreate(self, order_id: str, events: list[Mapping[str, Any]], statuses: set[str]) -> Tracked | None:
        first = events[0]
        if first["symbol"] not in self.rules:
            return None
        sent = statuses - {"pending", "failed"}
        status = S.ACCEPTED if "accepted" in statuses else S.SUBMITTED if sent or "submitted" in statuses else S.PENDING
        submitted = next((r["ts"] for r in events if r["status"] == "submitted"), None)
        tracked = Tracked(
            order=Order(order_id, first["symbol"], first["side"], dec(first["quantity"]), status=status),
            signal_id=first["signal_id"],
            decision_id=first["decision_id"],
            created_ms=int(first["ts"]),
            updated_ms=int(events[-1]["ts"]),
            submitted_ms=submitted,
            stop_loss=None if first["stop_loss"] is None else dec(first["stop_loss"]),
            take_profit=None if first["take_profit"] is None else dec(first["take_profit"]),
        )
        self.book.add(tracked)
        self.book.note_broker_id(tracked, next((r["broker_order_id"] for r in reversed(events) if r["broker_order_id"]), None))
        return tracked

    # --- approved signals -----------------------------------------------------------------

    @handles("approved")
    async def on_approved(self, signal: dict[str, Any], origin: str) -> None:
        now = self.ctx.clock.now_ms()
        signal_id = signal.get("signal_id")
        order_id = client_order_id(signal_id) if isinstance(signal_id, str) and signal_id else None
        if order_id is not None and order_id in self.book:  # a redelivery, however late: not bad input
            self.duplicates += 1
            log.info("%s: signal %s again: its order %s exists, no second one", self.ctx.service, signal_id, order_id)
            return
        problem = self._signal_problem(signal, now)
        if problem is not None or order_id is None:
            await self.ctx.dead_letter(problem or "no signal_id", signal, origin, contract="approved_signal.v1")
            return
        symbol = signal["symbol"]
        rules = self.rules[symbol]
        try:
            lots = rules.lots(signal["quantity"])
        except VolumeError as exc:
            await self.ctx.dead_letter(f"volume: {exc}", signal, origin, contract="approved_signal.v1")
            return
        stop, take = signal.get("stop_loss"), signal.get("take_profit")
        at = signal["ts"]  # the decision's time: the order's, whenever the signal reached this service
        tracked = Tracked(
            order=Order(order_id, symbol, signal["side"], lots),
            signal_id=signal["signal_id"],
            decision_id=signal["decision_id"],
            created_ms=at,
            updated_ms=at,
            stop_loss=rules.price(stop) if is_number(stop) and stop > 0 else None,
            take_profit=rules.price(take) if is_number(take) and take > 0 else None,
        )
        self.book.add(tracked)
        await self._emit(tracked, at)
        if not self.reconciled:
            await self._reconcile(now, fresh=tracked)
        if self.reconciled and tracked.status is S.PENDING:
            await self._submit(tracked, at, now)

    def _signal_problem(self, signal: Mapping[str, Any], now: int) -> str | None:
        missing = [f for f in SIGNAL_FIELDS if f not in signal]
        if missing:
            return f"approved signal without {', '.join(missing)}"
        for name in ("signal_id", "decision_id"):
            value = signal[name]
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                return f"{name} {value!r} is not an id (a string of 1 to 128 characters)"
        symbol = signal["symbol"]
        if symbol not in self.rules or (self.ctx.pairs and symbol not in self.ctx.pairs):
            return f"unknown symbol {symbol!r}: not an instrument this service trades"
        if signal["side"] not in ("buy", "sell"):
            return f"side {signal['side']!r} is neither buy nor sell"
        quantity = signal["quantity"]
        if not is_number(quantity) or quantity <= 0:
            return f"volume {quantity!r} is not a positive number of lots"
        for name in ("stop_loss", "take_profit"):
            level = signal.get(name)
            if is_number(level) and level > 0 and not _priced(self.rules[symbol], level):
                return f"{name} {level!r} is not a price of {symbol} (it cannot be put on its tick of {self.rules[symbol].tick})"
        ts = signal["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool):
            return f"ts {ts!r} is not epoch milliseconds"
        if now - ts > self._max_age_ms:
            return f"stale: the approved signal is {now - ts} ms old (max_signal_age {self.params.max_signal_age})"
        return None

    async def _submit(self, tracked: Tracked, at: int, now: int) -> None:
        """Send ``tracked`` as of event time ``at`` (what the broker fills after); its acknowledgement is awaited on the clock."""
        tracked.submitted_ms = at
        tracked.query_due_ms = now + self._ack_ms
        self._due_ms = tracked.query_due_ms if self._due_ms is None else min(self._due_ms, tracked.query_due_ms)
        await self._move(tracked, S.SUBMITTED, None, at)

    # --- order events ---------------------------------------------------------------------

    async def _move(self, tracked: Tracked, status: OrderStatus, reason: str | None, at: int) -> bool:
        """Move ``tracked`` to ``status`` and publish it as of ``at``; False (nothing changed) when the table forbids it."""
        try:
            tracked.order.move(status)
        except InvalidTransition:
            return False
        tracked.reason = reason
        self.book.touch(tracked, at)
        if status is not S.SUBMITTED:
            tracked.query_due_ms = None
        if tracked.order.done:
            tracked.cancel_after_fill = None
        await self._emit(tracked, at)
        return True

    async def _emit(self, tracked: Tracked, at: int) -> None:
        order = tracked.order
        status = order.status.value
        key = (order.order_id, status, float(order.filled))
        if key in self._already:  # published before the restart (the orders table says so)
            self._already.discard(key)
            return
        event: dict[str, Any] = {
            "order_id": order.order_id,
            "client_order_id": order.order_id,
            "signal_id": tracked.signal_id,
            "decision_id": tracked.decision_id,
            "symbol": order.symbol,
            "side": order.side,
            "order_type": "market",
            "quantity": float(order.quantity),
            "status": status,
            "ts": at,
            "filled_quantity": float(order.filled),
            "event_id": f"{order.order_id}:{status}:{order.filled}",
        }
        if order.avg_price is not None:
            event["avg_price"] = float(order.avg_price)
        if tracked.broker_order_id:
            event["broker_order_id"] = tracked.broker_order_id
        if tracked.reason:
            event["reason"] = tracked.reason
        if tracked.stop_loss is not None:
            event["stop_loss"] = float(tracked.stop_loss)
        if tracked.take_profit is not None:
            event["take_profit"] = float(tracked.take_profit)
        await self.ctx.publish("orders", event)

    # --- broker events --------------------------------------------------------------------

    @handles("fills")
    async def on_fill(self, fill: dict[str, Any], origin: str) -> None:
        await self._apply_fill(fill, self.ctx.clock.now_ms(), origin)

    async def _apply_fill(self, fill: Mapping[str, Any], now: int, origin: str) -> None:
        """Record a broker fill, count it in its position, move its order where the state machine allows."""
        fill_id = fill.get("fill_id")
        if isinstance(fill_id, str) and fill_id in self.book.fill_ids:
            return
        problem = fill_problem(fill, self.rules)
        if problem is not None:
            await self.ctx.dead_letter(problem, dict(fill), origin, contract="fill.v1")
            return
        self.book.note_fill(fill_id, fill["ts"])
        self.last_fill_ms = max(self.last_fill_ms or 0, fill["ts"])
        symbol, side = fill["symbol"], fill["side"]
        lots, price = dec(fill["quantity"]), dec(fill["price"])
        await self.ctx.publish("executions", dict(fill))
        booked = self.ledger.apply(symbol, side, lots, price, dec(fill["commission"]), fill_swap(fill), fill_profit(fill))
        if booked is None and symbol not in self._unconverted:
            self._unconverted.add(symbol)
            await self._alert("missing_rate", "warning", f"{symbol}: no price yet to convert its P&L to "
                              f"{self.ledger.currency}; booked when one arrives", now, symbol=symbol, key=fill_id)  # fmt: skip
        tracked = self.book.find(fill["order_id"], fill.get("broker_order_id"))
        what = f"fill {fill_id} ({side} {fill['quantity']} {symbol} at {fill['price']})"
        if tracked is None and fill.get("reason") in ("sl", "tp"):
            level = "stop loss" if fill["reason"] == "sl" else "take profit"
            self.ctx.log.info("%s: the broker closed the position at its %s (%s)", what, level, fill["order_id"])
        elif tracked is None:
            await self._alert("unknown_fill", "critical", f"{what} for order {fill['order_id']}, which this service does not "
                              "know: recorded and counted in the position", now, symbol=symbol, key=fill_id)  # fmt: skip
        else:
            order = tracked.order
            problem = None
            if (symbol, side) != (order.symbol, order.side):
                problem = f"the order is a {order.side} of {order.symbol}"
            else:
                try:
                    if tracked.rest_cancelled and order.status is S.CANCELLED:
                        order.fill_cancelled(fill_id, lots, price)
                    else:
                        order.fill(fill_id, lots, price)
                except InvalidTransition as exc:
                    problem = str(exc)
            if problem is None:
                at = fill["ts"]
                self.book.note_broker_id(tracked, fill.get("broker_order_id"))
                self.book.touch(tracked, at)
                tracked.query_due_ms = None
                if order.status is not S.CANCELLED:
                    tracked.reason = None
                await self._emit(tracked, at)
                if tracked.cancel_after_fill is not None and not order.done:
                    await self._move(tracked, S.CANCELLED, tracked.cancel_after_fill, at)
            else:
                await self._alert("illegal_transition", "critical", f"{what} for order {order.order_id} "
                                  f"({order.status.value}) refused: {problem}; recorded and counted in the position, "
                                  "the order unchanged", now, symbol=symbol, key=fill_id)  # fmt: skip
        await self._publish_position(symbol, fill["ts"])

    @handles("broker_errors")
    async def on_broker_error(self, error: dict[str, Any], origin: str) -> None:
        now = self.ctx.clock.now_ms()
        missing = [f for f in ERROR_FIELDS if f not in error]
        if missing:
            await self.ctx.dead_letter(f"broker error without {', '.join(missing)}", error, origin, contract="broker_error.v1")
            return
        if not isinstance(error["order_id"], str):
            await self.ctx.dead_letter(f"broker error order_id {error['order_id']!r} is not an id", error, origin,
                                       contract="broker_error.v1")  # fmt: skip
            return
        tracked = self.book.find(error["order_id"])
        target, reason = error_outcome(error)
        if tracked is None:
            await self.ctx.dead_letter(f"broker error for unknown order {error['order_id']}: {reason}", error, origin,
                                       contract="broker_error.v1")  # fmt: skip
            await self._alert("unknown_order", "warning", f"broker error {reason} for order {error['order_id']}, "
                              "which this service does not know", now, symbol=error["symbol"], key=error["order_id"])  # fmt: skip
            return
        if target is S.CANCELLED and tracked.status in OPEN:
            tracked.rest_cancelled = True
        if target is S.CANCELLED and tracked.status in OPEN and not tracked.order.filled:
            # a cancelled remainder (10010) before the fill it follows, which travels on another subject
            tracked.cancel_after_fill = reason
            target = None
        if target is None:
            if tracked.status in OPEN:
                tracked.reason = reason
                tracked.query_due_ms = now + self._ack_ms
                self._due_ms = tracked.query_due_ms if self._due_ms is None else min(self._due_ms, tracked.query_due_ms)
            return
        status = tracked.status
        at = error["ts"] if isinstance(error["ts"], int) and not isinstance(error["ts"], bool) else now
        if not await self._move(tracked, target, reason, at):
            why = f"broker error {reason} would move order {tracked.order.order_id} from {status.value} to {target.value}"
            await self.ctx.dead_letter(f"illegal transition: {why}", error, origin, contract="broker_error.v1")
            await self._alert("illegal_transition", "warning", f"{why}, which is not allowed; the order unchanged", now,
                              symbol=tracked.order.symbol, key=f"{tracked.order.order_id}-{error['ts']}")  # fmt: skip

    # --- prices ---------------------------------------------------------------------------

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        bid, ask = tick.get("bid"), tick.get("ask")
        if is_number(bid) and is_number(ask) and tick.get("symbol") in self.rules:
            self.ledger.quote(tick["symbol"], bid, ask)
        await self._prices_moved()

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        close = bar.get("close")
        if is_number(close) and bar.get("symbol") in self.rules:
            self.ledger.quote(bar["symbol"], close, close)
        await self._prices_moved()

    async def _prices_moved(self) -> None:
        if self._unconverted:
            for symbol in self.ledger.book_waiting():
                self._unconverted.discard(symbol)
                await self._publish_position(symbol, self.ctx.clock.now_ms())
        if self._due_ms is not None and self.ctx.clock.now_ms() >= self._due_ms:
            await self._check_inflight(self.ctx.clock.now_ms())

    async def _publish_position(self, symbol: str, now: int) -> None:
        self.ledger.mark(symbol)
        await self.ctx.publish("positions", self.ledger.row(symbol, now))

    # --- checks ---------------------------------------------------------------------------

    @every("check_every")
    async def check(self) -> None:
        now = self.ctx.clock.now_ms()
        if not self.reconciled:
            await self._reconcile(now)
        await self._check_inflight(now)
        if self._next_mark_ms is None:
            self._next_mark_ms = now + self._mark_ms
        elif now >= self._next_mark_ms:
            self._next_mark_ms = now + self._mark_ms
            for symbol, entry in self.ledger.entries.items():
                if not entry.position.flat and self.ledger.mark(symbol):
                    await self.ctx.publish("positions", self.ledger.row(symbol, now))
            if self._keep_ms and now >= self._next_prune_ms:  # hourly is plenty for days kept
                self._next_prune_ms = now + PRUNE_EVERY_MS
                before = now - self._keep_ms
                self.book.prune(before, min(before, (self.last_fill_ms or before) - MARGIN_MS))

    async def _ask(self, query: dict[str, Any]) -> BrokerState | str:
        """The broker's state, or why it could not be had."""
        try:
            reply = await self.ctx.request("broker", query, timeout=self._query_s)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        try:
            state = parse_state(reply)
        except ValueError as exc:
            return str(exc)
        if not state.connected:
            return "the connector is not connected to the broker"
        return state

    async def _reconcile(self, now: int, fresh: Tracked | None = None) -> None:
        """Align with the broker (see the module docstring); on failure, hold orders and retry later. The held orders
        go out on the clock, except ``fresh``, whose signal is being handled: it goes out at its own time."""
        if self._retry_ms is not None and now < self._retry_ms:
            return
        self._retry_ms = now + self._check_ms
        asked = [t.order.order_id for t in (*self.book.open(), *self.book.pending())]
        state = await self._ask({"query": "state", "ts": now, "since_ms": self._since_ms, "order_ids": asked})
        if isinstance(state, str):
            if not self._holding:
                self._holding = True
                held = len(self.book.pending())
                await self._alert("not_reconciled", "warning", f"not reconciled with the broker ({state}): {held} order(s) "
                                  "held, nothing is submitted until it answers", now, key=str(now))  # fmt: skip
            else:
                log.debug("%s: still not reconciled with the broker (%s)", self.ctx.service, state)
            return
        sent = set(state.orders) | {f.get("order_id") for f in state.fills}
        for tracked in self.book.pending():  # held here, yet the broker has it: it went out before a crash
            if tracked.order.order_id in sent:
                await self._move(tracked, S.SUBMITTED, "found at the broker: sent before the restart", now)
        adopted = 0
        for fill in state.fills:
            known = fill.get("fill_id") in self.book.fill_ids
            await self._apply_fill(fill, now, "reconciliation")
            adopted += not known
        for tracked in list(self.book.unsettled()):
            final, tracked.final = tracked.final, None
            if final is not None and final in TRANSITIONS.get(tracked.status, ()):
                await self._move(tracked, final, tracked.reason, now)
        resolved = 0
        for order_id in asked:
            tracked = self.book.orders.get(order_id)
            if tracked is not None and tracked.status in OPEN:
                resolved += await self._resolve(tracked, state, now, None)
        for symbol, ours, theirs in position_differences(self.ledger.net(), state.positions):
            await self._alert("position_mismatch", "critical", f"{symbol}: this service holds {ours} lots, the broker {theirs}",
                              now, symbol=symbol, key=f"{symbol}-{now}")  # fmt: skip
        self.reconciled, self._holding = True, False
        self._already.clear()
        log.info("%s: reconciled with the broker: %d missed fill(s) adopted, %d open order(s) resolved",
                 self.ctx.service, adopted, resolved)  # fmt: skip
        for tracked in self.book.pending():
            if now - tracked.created_ms <= self._max_age_ms:
                await self._submit(tracked, tracked.created_ms if tracked is fresh else now, now)
            else:
                await self._move(tracked, S.FAILED, "never submitted: the signal went stale before the broker could "
                                 "be reconciled with", now)  # fmt: skip

    async def _resolve(self, tracked: Tracked, state: BrokerState, now: int, prefix: str | None) -> bool:
        theirs = state.orders.get(tracked.order.order_id)
        if theirs is not None:
            self.book.note_broker_id(tracked, theirs.broker_order_id)
            if theirs.filled != tracked.order.filled and theirs.status != "unknown":
                await self._alert("fills_missing", "critical", f"order {tracked.order.order_id}: the broker has "
                                  f"{theirs.filled} lots filled, this service {tracked.order.filled}", now,
                                  symbol=tracked.order.symbol, key=f"{tracked.order.order_id}-{now}")  # fmt: skip
        target, reason = resolution(tracked.order, theirs)
        if target is None:
            return False
        if prefix is not None and reason is not None and target is not S.ACCEPTED:
            reason = f"{prefix}; {reason}"
        return await self._move(tracked, target, reason, now)

    async def _check_inflight(self, now: int) -> None:
        """Ask the broker about submitted orders nothing was heard of within ``ack_timeout``."""
        if not self.reconciled:
            return
        opened = self.book.open()
        due = [t for t in opened if t.query_due_ms is not None and t.query_due_ms <= now]
        if not due:
            self._due_ms = min((t.query_due_ms for t in opened if t.query_due_ms is not None), default=None)
            return
        since = max(0, min(t.submitted_ms or t.created_ms for t in due) - MARGIN_MS)
        state = await self._ask({"query": "state", "ts": now, "since_ms": since, "order_ids": [t.order.order_id for t in due]})
        waited = f"no acknowledgement within {self.params.ack_timeout}"
        if isinstance(state, str):
            for tracked in due:
                tracked.queries += 1
                if tracked.queries >= self.params.ack_retries:
                    reason = f"{waited}, and the broker could not be asked ({tracked.queries} tries; last: {state})"
                    if await self._move(tracked, S.FAILED, reason, now):
                        await self._alert("unacknowledged_order", "critical", f"order {tracked.order.order_id} failed: "
                                          f"{reason}", now, symbol=tracked.order.symbol, key=tracked.order.order_id)  # fmt: skip
                else:
                    tracked.query_due_ms = now + self._ack_ms
        else:
            for fill in state.fills:
                await self._apply_fill(fill, now, "query")
            for tracked in due:
                if tracked.status in OPEN:
                    tracked.query_due_ms = None
                    await self._resolve(tracked, state, now, waited)
        self._due_ms = min((t.query_due_ms for t in self.book.open() if t.query_due_ms is not None), default=None)

    # --- alerts ---------------------------------------------------------------------------

    async def _alert(self, kind: str, severity: str, message: str, now: int, *, symbol: str | None = None, key: str) -> None:
        log.warning("%s: %s", self.ctx.service, message)
        alert: dict[str, Any] = {
            "alert_id": f"{self.ctx.service}-{kind}-{key}",
            "ts": now,
            "source": self.ctx.service,
            "type": kind,
            "severity": severity,
            "message": message,
        }
        if symbol is not None:
            alert["symbol"] = symbol
        await self.ctx.publish("alerts", alert)


def _priced(rules: Rules, value: float) -> bool:
    """Whether ``value`` can be put on the instrument's tick: an infinite or huge level (past ``Decimal``'s precision
    at that tick) cannot, and would fail the order half-made."""
    try:
        rules.price(value)
    except InvalidOperation:
        return False
    return True
