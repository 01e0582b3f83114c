"""The mt5-connector node: orders in, a broker in the middle, fills, errors and a log out.

- ``orders`` (``orders.submitted.*``): each order goes to the broker once. A refusal is a
  ``broker.error`` with its MT5 return code (10031 when it could not be sent at all); an order
  whose line dropped on the way is in doubt (error 10012, MT5's "outcome unknown"): not sent
  again until found, and execution decides what to do (it asks ``broker.query``). An order this
  connector never saw that is older than ``max_order_age`` when it arrives (a redelivery after a
  replay or an outage) is not sent: error ``stale_order``. An order the broker filled in part and
  cancelled the rest of (10010) is reported, as ``partial_fill`` with 10010, once its deals are
  published, so execution sees the fills before the cancel.
- ``ticks`` / ``bars``: the paper broker's prices and clock (a real terminal has its own).
- a timer polls MT5's deals; the paper broker's deals come with the price that made them.
  Each deal is published once as ``broker.fill.{symbol}``, its fill id from the deal ticket,
  also across restarts (the tickets published are part of the saved state).
- ``query`` (``broker.query``): the reply is a ``broker_state.v1`` (account, positions, the
  orders asked for, fills since a time), ``connected: false`` with the last known view when the
  broker cannot be reached.
- ``log``: every request and response, secrets masked (:mod:`nodes.broker.journal`).

State (the broker's book for paper, the published deal tickets, the orders seen) is one JSON
document: saved after every change to ``<service dir>/broker.json`` on a wall clock (a killed
process loses nothing acknowledged), through ``snapshot()`` at stop on a simulated one.
"""

from __future__ import annotations

import heapq
import math
import os
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from framework.durations import parse_ms
from framework.errors import UserError
from framework.node import Node, every, handles
from nodes.broker import retcodes as rc
from nodes.broker.base import Ack, AckStatus, Broker, BrokerState, BrokerUnavailable, Deal, Notice, OrderRequest
from nodes.broker.journal import Journal
from nodes.mt5_connector.spec import Mt5ConnectorParams

ORDER_FIELDS = ("order_id", "client_order_id", "symbol", "side", "quantity", "ts")
STATE_FILE = "broker.json"
DOC_VERSION = 1
OPEN = ("accepted", "partially_filled", "unknown")
KEEP_DONE_MS = 7 * 86_400_000
BROKER_CLOSE_PREFIX = {"stop_out": "stop-out", "sl": "stop-loss", "tp": "take-profit"}
"""The order id of a fill for a position the broker closed itself (no order of ours): ``<prefix>-<broker ticket>``."""


def order_problem(event: Any) -> str | None:
    """Why an order event cannot be read as an order (the dead letter's reason), or None.

    Only what the connector needs to read it and to tell execution about it: an unknown symbol, a side or
    a volume the broker cannot trade are the broker's to refuse, with their MT5 return codes."""
    if not isinstance(event, dict):
        return f"an order event is an object, not a {type(event).__name__}"
    missing = [f for f in ORDER_FIELDS if f not in event]
    if missing:
        return f"order event without {', '.join(missing)}"
    for name in ("order_id", "client_order_id", "symbol", "side"):
        if not isinstance(event[name], str) or not event[name]:
            return f"order {name} {event[name]!r} is not a non-empty string"
    quantity, ts = event["quantity"], event["ts"]
    if not isinstance(quantity, (int, float)) or isinstance(quantity, bool) or not math.isfinite(quantity):
        return f"order quantity {quantity!r} is not a finite number"
    if not isinstance(ts, int) or isinstance(ts, bool):
        return f"order ts {ts!r} is not epoch milliseconds"
    return None


class Mt5Connector(Node[Mt5ConnectorParams]):
    state_version = 1

    def __init__(self, ctx: Any, params: Mt5ConnectorParams) -> None:
        super().__init__(ctx, params)
        self._restored: dict[str, Any] | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def on_start(self) -> None:
        self.journal = Journal()
        self.broker = self._make_broker()
        self.sync = self.params.sync_state if self.params.sync_state is not None else not getattr(self.ctx.clock, "simulated", False)
        self.path = Path(self.ctx.data_dir) / STATE_FILE
        self.rev = 0
        self.published: dict[int, int] = {}
        """deal ticket → deal time: what was published (kept while a poll can still return it)."""
        self.cursor: int | None = None
        """The newest deal time published; each poll reaches back ``_overlap_ms`` before it."""
        self._next_prune_ms = 0
        self._set_orders({})
        self.last_state: BrokerState | None = None
        self._dirty = False
        self._saved_revision = 0
        self._errors: list[dict[str, Any]] = []
        self._held: list[Notice] = []
        """``partial_fill`` notices waiting for the deals of their order (MT5 reports the deal on a later poll)."""
        self._max_age_ms = parse_ms(self.params.max_order_age) or 0
        doc = self._newest(self._restored, self._read_file() if self.sync else None)
        if doc is not None:
            self._load(doc)
        self.was_connected = True
        try:
            await self.broker.connect()
        except BrokerUnavailable as exc:
            self.was_connected = False
            self.ctx.log.warning("%s: broker not reachable yet (%s); retrying every %s", self.ctx.service, exc, self.params.poll)
        await self._sync()

    def _make_broker(self) -> Broker:
        kind = self.params.broker
        instruments = {s: self.ctx.instrument(s) for s in self.ctx.instruments}
        if kind == "paper":
            from nodes.broker.paper import PaperBroker

            return PaperBroker(self.params.paper, instruments, self.ctx.account, self.journal, lookback_ms=self._paper_lookback_ms)
        from nodes.broker.mt5 import Mt5Broker
        from nodes.broker.terminal import ModuleTerminal, RpycTerminal, load_metatrader5

        mt5 = self.params.mt5
        password = os.environ.get(mt5.password_env) if mt5.password_env else None
        if kind == "mt5":
            try:
                module = load_metatrader5()
            except BrokerUnavailable as exc:
                raise UserError(str(exc), path=f"services.{self.ctx.service}.params.broker") from None

            def terminal() -> Any:
                return ModuleTerminal(module)
        else:

            def terminal() -> Any:
                return RpycTerminal(mt5.host, mt5.port, mt5.timeout_s)

        async def offload(fn: Any, *args: Any) -> Any:
            return await self.ctx.offload(fn, *args)

        return Mt5Broker(mt5, terminal, instruments, password=password, journal=self.journal, run_blocking=offload,
                         wall_ms=self.ctx.clock.now_ms)  # fmt: skip

    @property
    def _paper_lookback_ms(self) -> int:
        return (parse_ms(self.params.max_order_age) or 0) + 60_000

    @cached_property
    def _overlap_ms(self) -> int:
        """How far before the newest deal published a new one may be dated: MT5's clock skew and reporting delay; the
        paper broker's late orders, filled on the prices of their time (up to its lookback), after newer deals.
        Fixed by the params and the broker's kind (asked at every sync: parsed once)."""
        if self.broker.kind == "mt5":
            return parse_ms(self.params.mt5.history_overlap) or 0
        return self._paper_lookback_ms

    async def on_stop(self) -> None:
        await self._sync()
        self._persist()
        await self.broker.close()

    # --- inputs -----------------------------------------------------------------------

    @handles("orders")
    async def on_order(self, event: dict[str, Any], origin: str) -> None:
        problem = order_problem(event)
        if problem is not None:
            await self.ctx.dead_letter(problem, event, origin, contract="order_event.v1")
            return
        order = OrderRequest.from_event(event)
        cid = order.client_order_id
        known = self.orders.get(cid)
        if known is None or known["status"] == "rejected":
            age = self.ctx.clock.now_ms() - order.ts
            if age > self._max_age_ms:
                await self._refuse_stale(order, age)
                return
            known = {
                "order_id": order.order_id, "symbol": order.symbol, "side": order.side, "quantity": str(order.quantity),
                "ts": order.ts, "status": "submitted", "filled": "0", "broker_order_id": None, "retcode": None,
            }  # fmt: skip
            self._track(cid, known)
        try:
            ack = await self.broker.submit(order)
        except BrokerUnavailable as exc:
            ack = Ack(AckStatus.IN_DOUBT, rc.CONNECTION, str(exc))
        self._acknowledged(order, known, ack)
        await self._sync()

    async def _refuse_stale(self, order: OrderRequest, age: int) -> None:
        message = (f"not sent to the broker: the order is {age} ms old (its ts {order.ts}), older than max_order_age "
                   f"{self.params.max_order_age}")  # fmt: skip
        self.ctx.log.warning("%s: order %s %s", self.ctx.service, order.order_id, message)
        self._error(Notice(order.symbol, order.order_id, self.ctx.clock.now_ms(), "stale_order", message))
        await self._drain_errors()
        await self._drain_journal()

    def _event_ms(self, order: OrderRequest) -> int:
        """When the broker answered an order: the paper broker's time is the market data's (the order's own time, so a
        replay gives the same messages); a real broker answers now."""
        return order.ts if self.broker.kind == "paper" else self.ctx.clock.now_ms()

    def _acknowledged(self, order: OrderRequest, known: dict[str, Any], ack: Ack) -> None:
        known["retcode"] = ack.retcode
        if ack.broker_order_id:
            known["broker_order_id"] = ack.broker_order_id
        if ack.status is AckStatus.ACCEPTED:
            if ack.retcode == rc.DONE_PARTIAL:
                known["status"] = "cancelled"  # the rest is gone: what a query says from now on, also after a restart
            elif known["status"] in ("submitted", "unknown"):
                known["status"] = "accepted"
        elif ack.status is AckStatus.REJECTED:
            known["status"] = "rejected"
            self._error(Notice(order.symbol, order.order_id, self._event_ms(order), rc.code(ack.retcode or rc.REJECT),
                               ack.message or rc.name(ack.retcode or rc.REJECT), ack.retcode))  # fmt: skip
        elif ack.status is AckStatus.IN_DOUBT:
            known["status"] = "unknown"
            code = ack.retcode or rc.TIMEOUT
            self._error(Notice(order.symbol, order.order_id, self._event_ms(order), rc.code(code),
                               f"order in doubt, not sent again until found: {ack.message}", code))  # fmt: skip
        elif known["status"] == "submitted":  # a duplicate of an order the broker has: it keeps its status
            known["status"] = "accepted"
        self._dirty = True

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        before = self.broker.revision
        await self.broker.on_tick(tick)
        if self.broker.revision != before or self.broker.notices:
            await self._sync()

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        before = self.broker.revision
        await self.broker.on_bar(bar)
        if self.broker.revision != before or self.broker.notices:
            await self._sync()

    @every("poll_every")
    async def poll(self) -> None:
        if self.params.broker != "paper":
            await self._sync()

    @handles("query")
    async def on_query(self, query: dict[str, Any]) -> dict[str, Any]:
        wanted = [self.by_order_id.get(i, i) for i in query.get("order_ids") or []]
        since = query.get("since_ms")
        connected = True
        try:
            state = await self.broker.state(since, wanted)
            self.last_state = state
        except BrokerUnavailable as exc:
            connected = False
            self.ctx.log.warning("%s: broker state unavailable: %s", self.ctx.service, exc)
            state = self.last_state or BrokerState(self._empty_account(), [], [], [])
            state = BrokerState(state.account, state.positions, [], [d for d in state.deals if since is not None and d.ts >= since])
        reply = {
            "ts": self.ctx.clock.now_ms(),
            "connected": connected,
            "account": {
                "currency": state.account.currency, "balance": float(state.account.balance), "equity": float(state.account.equity),
                "margin": float(state.account.margin), "free_margin": float(state.account.free_margin),
            },  # fmt: skip
            "positions": [
                {"symbol": p.symbol, "quantity": float(p.quantity), "avg_price": float(p.avg_price), "swap": float(p.swap)}
                for p in state.positions
            ],
            "orders": self._orders_reply(state, wanted),
            "fills": [self._fill(d) for d in state.deals if since is not None and d.ts >= since],
        }
        self.journal.record("response", "broker_query", {"connected": connected, "orders": len(reply["orders"]),
                                                         "positions": len(reply["positions"]), "fills": len(reply["fills"])})  # fmt: skip
        await self._drain_journal()
        return reply

    def _orders_reply(self, state: BrokerState, wanted: list[str]) -> list[dict[str, Any]]:
        views = {v.client_order_id: v for v in state.orders}
        chosen = wanted or sorted(
            {cid for cid, o in self.orders.items() if o["status"] in OPEN} | set(views), key=lambda c: (self.orders.get(c, {}).get("ts", 0), c)
        )
        out = []
        for cid in chosen:
            known, view = self.orders.get(cid), views.get(cid)
            if known is None and view is None:
                continue  # neither we nor the broker have heard of it: nothing to say (execution treats it as unknown)
            if known is not None:
                filled = max(Decimal(known["filled"]), view.filled if view else Decimal(0))
                quantity = Decimal(known["quantity"])
                status = known["status"]
                if view is not None and status in ("submitted", "unknown", "accepted"):
                    status = view.status
                if status == "submitted":
                    status = "unknown"
                if status not in ("rejected", "cancelled", "expired"):
                    status = "filled" if filled >= quantity else ("partially_filled" if filled > 0 else status)
                if quantity <= 0:
                    continue  # a refused zero-volume order cannot be described in broker_state.v1
                out.append({"order_id": known["order_id"], "symbol": known["symbol"], "side": known["side"],
                            "quantity": float(quantity), "filled_quantity": float(filled), "status": status,
                            **({"broker_order_id": known["broker_order_id"]} if known.get("broker_order_id") else {})})  # fmt: skip
            else:
                assert view is not None
                out.append({"order_id": cid, "symbol": view.symbol, "side": view.side, "quantity": float(view.quantity),
                            "filled_quantity": float(view.filled), "status": view.status,
                            **({"broker_order_id": view.broker_order_id} if view.broker_order_id else {})})  # fmt: skip
        return out

    def _empty_account(self) -> Any:
        from nodes.broker.base import AccountView

        account = self.ctx.account
        zero = Decimal(0)
        return AccountView(account.currency, zero, zero, zero, zero)

    # --- deals, notices, the log ------------------------------------------------------

    async def _sync(self) -> None:
        """Publish what the broker did since the last call (deals once, notices), log, save."""
        try:
            since = self.cursor
            if since is not None and self.broker.kind != "mt5":  # MT5's poll reaches back by itself
                since -= self._overlap_ms
            deals = await self.broker.poll(since)
        except BrokerUnavailable as exc:
            if self.was_connected:
                self.ctx.log.warning("%s: broker unreachable: %s", self.ctx.service, exc)
            self.was_connected = False
            deals = []
        else:
            if not self.was_connected:
                self.ctx.log.info("%s: broker reachable again", self.ctx.service)
            self.was_connected = True
        new = sorted((d for d in deals if d.ticket not in self.published), key=lambda d: d.ts)
        notices = self.broker.take_notices()
        changed = bool(new or notices or self._dirty or self.broker.revision != self._saved_revision)
        if changed:
            self._persist()  # the broker's book first: a crash now republishes these deals, never loses them
        for deal in new:
            await self.ctx.publish("fills", self._fill(deal))
            self.published[deal.ticket] = deal.ts
            self._filled(deal)
            self.cursor = deal.ts if self.cursor is None else max(self.cursor, deal.ts)
        for notice in notices:
            if notice.code == "partial_fill":
                cid = self.by_order_id.get(notice.order_id)
                if cid in self.orders:
                    self.orders[cid]["status"] = "cancelled"
                self._held.append(notice)
            else:
                self._error(notice)
        self._release_held()
        await self._drain_errors()
        await self._drain_journal()
        if changed:
            self._prune()
            self._persist()
        self._dirty = False
        self._saved_revision = self.broker.revision

    def _release_held(self) -> None:
        """Report each cancelled remainder once its order's deals are published (or after ``max_order_age``)."""
        now = self.ctx.clock.now_ms()
        waiting = []
        for notice in self._held:
            known = self.orders.get(self.by_order_id.get(notice.order_id, ""))
            filled = Decimal(known["filled"]) if known is not None else None
            if filled is None or notice.filled is None or filled >= notice.filled or now - notice.ts > self._max_age_ms:
                self._error(notice)
            else:
                waiting.append(notice)
        self._held = waiting

    def _filled(self, deal: Deal) -> None:
        cid = deal.client_order_id
        known = self.orders.get(cid) if cid else None
        if known is None:
            return
        known["filled"] = str(Decimal(known["filled"]) + deal.lots)
        if known["status"] in ("submitted", "unknown", "accepted", "partially_filled"):
            known["status"] = "filled" if Decimal(known["filled"]) >= Decimal(known["quantity"]) else "partially_filled"

    def _fill(self, deal: Deal) -> dict[str, Any]:
        fill: dict[str, Any] = {
            "fill_id": f"{self.broker.kind}-{deal.ticket}",
            "order_id": self._order_id(deal),
            "symbol": deal.symbol,
            "side": deal.side,
            "quantity": float(deal.lots),
            "price": float(deal.price),
            "ts": deal.ts,
            "commission": float(deal.commission),
            "profit": float(deal.profit),
            "broker_order_id": str(deal.order_ticket),
        }
        if deal.slippage is not None:
            fill["slippage"] = float(deal.slippage)
        if deal.swap:
            fill["swap"] = float(deal.swap)  # what the deal realized of the position's accrued swap (MT5's deal.swap)
        if deal.reason != "client":
            fill["reason"] = deal.reason
        return fill

    def _order_id(self, deal: Deal) -> str:
        if deal.client_order_id:
            known = self.orders.get(deal.client_order_id)
            return known["order_id"] if known else deal.client_order_id
        return f"{BROKER_CLOSE_PREFIX.get(deal.reason, self.broker.kind)}-{deal.order_ticket}"

    def _error(self, notice: Notice) -> None:
        message: dict[str, Any] = {"order_id": notice.order_id, "symbol": notice.symbol, "ts": notice.ts,
                                   "code": notice.code, "message": self.journal.mask(notice.message) or notice.code}  # fmt: skip
        if notice.retcode is not None:
            message["retcode"] = notice.retcode
        self._errors.append(message)
        self.journal.record("event", "error", message, notice.order_id)

    async def _drain_errors(self) -> None:
        errors, self._errors = self._errors, []
        for error in errors:
            await self.ctx.publish("errors", error)

    async def _drain_journal(self) -> None:
        now = self.ctx.clock.now_ms()
        for entry in self.journal.drain():
            message: dict[str, Any] = {"ts": now, "direction": entry.direction, "operation": entry.operation, "payload": entry.payload}
            if entry.order_id:
                message["order_id"] = entry.order_id
            await self.ctx.publish("log", message)

    # --- state ------------------------------------------------------------------------

    def _doc(self) -> dict[str, Any]:
        return {
            "version": DOC_VERSION,
            "rev": self.rev,
            "broker_kind": self.broker.kind,
            "broker": self.broker.snapshot(),
            "published": [[t, ts] for t, ts in sorted(self.published.items())],
            "cursor": self.cursor,
            "orders": self.orders,
        }

    def _load(self, doc: dict[str, Any]) -> None:
        if doc.get("version") != DOC_VERSION or doc.get("broker_kind") != self.broker.kind:
            self.ctx.log.warning("%s: saved broker state is for %s (version %s); starting without it",
                                 self.ctx.service, doc.get("broker_kind"), doc.get("version"))  # fmt: skip
            return
        self.rev = doc["rev"]
        self.broker.restore(doc["broker"])
        self.published = {int(t): ts for t, ts in doc["published"]}
        self.cursor = doc["cursor"]
        self._set_orders(doc["orders"])

    def _set_orders(self, orders: dict[str, dict[str, Any]]) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        """client order id → what we know of the order (from its event, the broker's answers, its fills)."""
        self.by_order_id: dict[str, str] = {}
        self._by_ts: list[tuple[int, int, str, dict[str, Any]]] = []
        """A min-heap of (order ts, sequence, client order id, order), one entry per order kept: a prune pops the
        old ones instead of walking every order. An entry whose order is no longer the one under its id is skipped."""
        self._pushed = 0
        for cid, known in orders.items():
            self._track(cid, known)

    def _track(self, cid: str, known: dict[str, Any]) -> None:
        self.orders[cid] = known
        self.by_order_id[known["order_id"]] = cid
        self._push(cid, known)

    def _push(self, cid: str, known: dict[str, Any]) -> None:
        self._pushed += 1
        heapq.heappush(self._by_ts, (known["ts"], self._pushed, cid, known))

    def _prune(self) -> None:
        """Forget deals no poll can return again and orders done for ``KEEP_DONE_MS``: at most once per hour of
        deal time (each pass walks the deals kept; per deal it made a long backtest quadratic)."""
        if self.cursor is None or self.cursor < self._next_prune_ms:
            return
        self._next_prune_ms = self.cursor + 3_600_000
        horizon = self.cursor - self._overlap_ms - 60_000
        self.published = {t: ts for t, ts in self.published.items() if ts >= horizon}
        cutoff = self.cursor - KEEP_DONE_MS
        by_ts, kept = self._by_ts, []
        while by_ts and by_ts[0][0] < cutoff:
            _, _, cid, known = heapq.heappop(by_ts)
            if self.orders.get(cid) is not known:
                continue
            if known["status"] in OPEN or known["ts"] >= cutoff:
                kept.append((cid, known))
            else:
                self.by_order_id.pop(self.orders.pop(cid)["order_id"], None)
        for cid, known in kept:
            self._push(cid, known)

    def _persist(self) -> None:
        self.rev += 1
        if not self.sync:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(self._doc()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _read_file(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            os.replace(self.path, aside)
            self.ctx.log.warning("%s: %s is unreadable (%s); set aside as %s", self.ctx.service, self.path, exc, aside.name)
            return None

    @staticmethod
    def _newest(*docs: dict[str, Any] | None) -> dict[str, Any] | None:
        present = [d for d in docs if d is not None]
        return max(present, key=lambda d: d.get("rev", 0)) if present else None

    def snapshot(self) -> Any:
        return None if self.sync else self._doc()

    def restore(self, state: Any) -> None:
        self._restored = state
