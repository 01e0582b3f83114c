"""MetaTrader 5 as a :class:`~nodes.broker.base.Broker`: market orders out, deals polled back.

One client for both ways to reach a terminal (:mod:`nodes.broker.terminal`): the MetaTrader5
package on Windows, or mt5linux's RPyC bridge from Linux. MT5 pushes nothing to a Python
client, so executions come from polling ``history_deals_get`` over a window that overlaps the
previous poll; the connector publishes each deal once by its ticket.

Our client order id travels in the request's ``comment`` (MT5 keeps it on the order, the deals
and the position; 22 characters, under brokers' ~31-character limit) and our ``magic`` marks
the orders as fxflow's. When the line drops while an order is on its way, the order is *in
doubt*: it may have been executed. The broker does not send it again until it has looked for
it: the next poll (after a reconnect) finds its deals by comment, and a resubmission of the
same id first looks for it on the terminal, so an order is neither lost nor doubled.

An order in doubt is reported with 10012 (``TIMEOUT``: MT5's own "the outcome is unknown, check
before retrying"), not 10031: 10031 says the request never reached the trade server, which is
what the broker answers when it could not send the order at all (the bridge down, the terminal
offline). Requotes (10004, 10020, 10021) are retried with a fresh price a few times; other return
codes are refusals, reported with their code. Every call is journaled, the password masked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from framework.durations import parse_ms
from framework.params import Duration, PositiveDuration
from framework.topology.model import Instrument
from nodes.broker import retcodes as rc
from nodes.broker.base import (
    Ack,
    AccountView,
    AckStatus,
    Broker,
    BrokerState,
    BrokerUnavailable,
    Deal,
    Notice,
    OrderRequest,
    OrderView,
    PositionView,
)
from nodes.broker.journal import Journal
from nodes.broker.terminal import Terminal
from nodes.trading.instruments import dec

TRADE_ACTION_DEAL = 1
ORDER_TYPE = {"buy": 0, "sell": 1}
FILLING = {"fok": 0, "ioc": 1, "return": 2}
ORDER_TIME_GTC = 0
DEAL_TYPES = {0: "buy", 1: "sell"}
DEAL_ENTRY = {0: "in", 1: "out", 2: "inout", 3: "out"}
DEAL_REASON_SO = 6
BROKER_CLOSES = {4: "sl", 5: "tp", DEAL_REASON_SO: "stop_out"}
"""MT5's deal reasons for a position the server closed itself: its stop loss, its take profit, a stop-out."""
IPC_ERRORS = range(-10005, -9999)
"""last_error codes of a terminal that did not answer (IPC send/receive/timeout…): the request is in doubt."""
DAY_S = 86_400


class Mt5Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: int | None = Field(default=None, description="the trading account number (default: the terminal's last)")
    password_env: str | None = Field(default="MT5_PASSWORD", description="environment variable holding the password")
    server: str | None = Field(default=None, description="the trade server, as the terminal names it")
    path: str | None = Field(default=None, description="terminal64.exe (Windows; default: found by the package)")
    host: str = Field(default="127.0.0.1", description="mt5linux bridge host")
    port: int = Field(default=18812, ge=1, le=65535, description="mt5linux bridge port")
    timeout: PositiveDuration = Field(default="60s", description="initialize timeout, and the bridge's request timeout")
    magic: int = Field(default=20261124, ge=0, description="marks fxflow's orders (MT5's expert id)")
    deviation: int = Field(default=20, ge=0, description="accepted slippage in points")
    filling: Literal["fok", "ioc", "return"] = Field(default="ioc", description="must be one the symbol allows")
    requote_retries: int = Field(default=2, ge=0, description="new tries with a fresh price after a requote")
    check_first: bool = Field(default=True, description="order_check before order_send (a refusal costs no order)")
    server_time_offset: int = Field(default=0, description="minutes the trade server's clock is ahead of UTC (MT5 times are server time)")
    history_overlap: Duration = Field(default="10m", description="each deal poll reaches this far before the last deal seen")
    symbol_suffix: str = Field(default="", description="appended to our symbols for the broker's names (EURUSD.m)")

    @property
    def timeout_s(self) -> float:
        return (parse_ms(self.timeout) or 60_000) / 1000


@dataclass(slots=True)
class _Outcome:
    ack: Ack
    notices: list[Notice]


class Mt5Broker(Broker):
    kind = "mt5"

    def __init__(
        self,
        params: Mt5Params,
        terminal: Callable[[], Terminal],
        instruments: Mapping[str, Instrument],
        *,
        password: str | None = None,
        journal: Journal | None = None,
        run_blocking: Callable[..., Any] | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(journal)
        self.params = params
        self._make_terminal = terminal
        self._terminal: Terminal | None = None
        self._password = password
        self.journal.add_secret(password)
        self._digits = {s: i.digits for s, i in instruments.items()}
        self._run = run_blocking or _to_thread
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._offset_ms = params.server_time_offset * 60_000
        self._in_doubt: dict[str, int] = {}
        """client order id → when it went in doubt: not sent again until found or known absent."""
        self._acked: dict[str, int] = {}
        """client order id → when the terminal took it: a resubmission is a duplicate."""
        self._logged: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._terminal is not None

    # --- session ----------------------------------------------------------------------

    async def connect(self) -> None:
        await self._run(self._connect)

    def _connect(self) -> None:
        if self._terminal is not None:
            return
        terminal = self._make_terminal()
        kwargs: dict[str, Any] = {"timeout": int(self.params.timeout_s * 1000)}
        if self.params.login is not None:
            kwargs["login"] = self.params.login
        if self._password:
            kwargs["password"] = self._password
        if self.params.server:
            kwargs["server"] = self.params.server
        args = (self.params.path,) if self.params.path else ()
        self.journal.record("request", "initialize", {"args": list(args), **kwargs})
        try:
            ok = terminal.call("initialize", *args, **kwargs)
            error = None if ok else terminal.call("last_error")
        except BrokerUnavailable as exc:
            self.journal.record("response", "initialize", {"error": str(exc)})
            raise BrokerUnavailable(self.journal.mask(str(exc))) from None
        self.journal.record("response", "initialize", {"result": ok, "last_error": error})
        if not ok:
            terminal.close()
            raise BrokerUnavailable(self.journal.mask(f"MT5 initialize failed: {error}"))
        self._terminal = terminal

    async def close(self) -> None:
        await self._run(self._close)

    def _close(self) -> None:
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            try:
                self._call_on(terminal, "shutdown")
            except BrokerUnavailable:
                pass
            terminal.close()

    def _call(self, function: str, *args: Any, order_id: str | None = None, quiet: bool = False, **kwargs: Any) -> Any:
        """One terminal call, journaled (``quiet``: the caller journals it); a lost line raises BrokerUnavailable."""
        self._connect()
        assert self._terminal is not None
        try:
            return self._call_on(self._terminal, function, *args, order_id=order_id, quiet=quiet, **kwargs)
        except BrokerUnavailable:
            terminal, self._terminal = self._terminal, None
            terminal.close()
            raise

    def _call_on(self, terminal: Terminal, function: str, *args: Any, order_id: str | None = None, quiet: bool = False, **kwargs: Any) -> Any:
        request = {"args": list(args), **kwargs} if args else dict(kwargs)
        if not quiet:
            self.journal.record("request", function, request, order_id)
        try:
            result = terminal.call(function, *args, **kwargs)
        except BrokerUnavailable as exc:
            self.journal.record("response", function, {"error": str(exc)}, order_id)
            raise
        if not quiet:
            self.journal.record("response", function, {"result": result}, order_id)
        return result

    # --- orders -----------------------------------------------------------------------

    async def submit(self, order: OrderRequest) -> Ack:
        outcome = await self._run(self._submit, order)
        self.notices.extend(outcome.notices)
        return outcome.ack

    def _submit(self, order: OrderRequest) -> _Outcome:
        cid = order.client_order_id
        if cid in self._acked:
            return _Outcome(Ack(AckStatus.DUPLICATE, None, f"order {cid} was taken by the terminal before"), [])
        try:
            if cid in self._in_doubt:
                found = self._find(cid)
                if found is not None:
                    self._resolve(cid)
                    return _Outcome(Ack(AckStatus.DUPLICATE, rc.DONE, f"order {cid} reached the terminal before", found), [])
            return self._send(order)
        except BrokerUnavailable as exc:
            if cid not in self._in_doubt and not getattr(exc, "sent", False):
                return _Outcome(Ack(AckStatus.REJECTED, rc.CONNECTION, f"not sent: {exc}"), [])
            self._in_doubt.setdefault(cid, self._wall_ms())
            return _Outcome(Ack(AckStatus.IN_DOUBT, rc.TIMEOUT, f"the line dropped with the order on its way: {exc}"), [])
        except Exception as exc:  # noqa: BLE001 - the bridge raised: whether the order went through is unknown
            self._in_doubt.setdefault(cid, self._wall_ms())
            message = self.journal.mask(f"the terminal failed on the order: {type(exc).__name__}: {exc}")
            self.journal.record("response", "order_send", {"error": message}, order.order_id)
            return _Outcome(Ack(AckStatus.IN_DOUBT, rc.TIMEOUT, message), [])

    def _send(self, order: OrderRequest) -> _Outcome:
        cid = order.client_order_id
        symbol = order.symbol + self.params.symbol_suffix
        if order.order_type != "market":
            return _Outcome(Ack(AckStatus.REJECTED, rc.INVALID_ORDER, f"only market orders are sent to MT5, not {order.order_type}"), [])
        if order.side not in ORDER_TYPE or order.quantity <= 0:
            return _Outcome(Ack(AckStatus.REJECTED, rc.INVALID_VOLUME if order.quantity <= 0 else rc.INVALID, "bad side or volume"), [])
        info = self._call("symbol_info", symbol, order_id=order.order_id)
        if info is None:
            return _Outcome(Ack(AckStatus.REJECTED, rc.INVALID, f"unknown symbol {symbol}"), [])
        request = {
            "action": TRADE_ACTION_DEAL,
            "symbol": symbol,
            "volume": float(order.quantity),
            "type": ORDER_TYPE[order.side],
            "price": self._price(symbol, order.side, order.order_id),
            "deviation": self.params.deviation,
            "magic": self.params.magic,
            "comment": cid[:31],
            "type_time": ORDER_TIME_GTC,
            "type_filling": FILLING[self.params.filling],
        }
        if order.stop_loss is not None:
            request["sl"] = float(order.stop_loss)
        if order.take_profit is not None:
            request["tp"] = float(order.take_profit)
        if self.params.check_first:
            check = self._call("order_check", request, order_id=order.order_id)
            if check is None:
                return _Outcome(self._local_failure(order.order_id), [])
            if check["retcode"] not in (0, rc.DONE):
                return _Outcome(Ack(AckStatus.REJECTED, check["retcode"], check.get("comment") or rc.name(check["retcode"])), [])
        for attempt in range(self.params.requote_retries + 1):
            try:
                result = self._call("order_send", request, order_id=order.order_id)
            except BrokerUnavailable as exc:
                exc.sent = True  # type: ignore[attr-defined]
                raise
            if result is None:
                error = self._call("last_error", order_id=order.order_id)
                if error and error[0] in IPC_ERRORS:
                    raise _sent(BrokerUnavailable(f"terminal did not answer: {error}"))
                return _Outcome(Ack(AckStatus.REJECTED, rc.INVALID, f"refused by the terminal: {error}"), [])
            code = result["retcode"]
            if code in rc.SUCCESS:
                self._acked[cid] = self._wall_ms()
                self._in_doubt.pop(cid, None)
                notices = []
                if code == rc.DONE_PARTIAL:
                    notices.append(Notice(order.symbol, order.order_id, order.ts, "partial_fill",
                                          f"filled {result['volume']} of {order.quantity} lots; the rest is cancelled", code,
                                          dec(result["volume"])))  # fmt: skip
                return _Outcome(Ack(AckStatus.ACCEPTED, code, result.get("comment") or rc.name(code), str(result["order"])), notices)
            if code == rc.TIMEOUT:
                raise _sent(BrokerUnavailable(f"the trade server timed out ({code})"))
            if code in rc.RETRY and attempt < self.params.requote_retries:
                request["price"] = self._price(symbol, order.side, order.order_id)
                continue
            return _Outcome(Ack(AckStatus.REJECTED, code, result.get("comment") or rc.name(code)), [])
        raise AssertionError("unreachable")

    def _price(self, symbol: str, side: str, order_id: str) -> float:
        tick = self._call("symbol_info_tick", symbol, order_id=order_id)
        if tick is None:
            return 0.0
        return tick["ask"] if side == "buy" else tick["bid"]

    def _local_failure(self, order_id: str) -> Ack:
        error = self._call("last_error", order_id=order_id)
        if error and error[0] in IPC_ERRORS:
            raise BrokerUnavailable(f"terminal did not answer: {error}")
        return Ack(AckStatus.REJECTED, rc.INVALID, f"refused by the terminal: {error}")

    def _find(self, cid: str) -> str | None:
        """The terminal's order ticket for our client order id, from open orders or recent deals."""
        for order in self._call("orders_get") or []:
            if order.get("comment") == cid[:31] and order.get("magic") == self.params.magic:
                return str(order["ticket"])
        since = self._in_doubt.get(cid, self._wall_ms())
        for deal in self._deals_since(since - parse_ms(self.params.history_overlap or "0s") - 60_000):
            if deal.get("comment") == cid[:31] and deal.get("magic") == self.params.magic:
                return str(deal["order"])
        return None

    def _resolve(self, cid: str) -> None:
        self._in_doubt.pop(cid, None)
        self._acked[cid] = self._wall_ms()

    # --- deals ------------------------------------------------------------------------

    async def poll(self, since_ms: int | None = None) -> list[Deal]:
        return await self._run(self._poll, since_ms)

    def _poll(self, since_ms: int | None) -> list[Deal]:
        start = (since_ms if since_ms is not None else self._wall_ms()) - (parse_ms(self.params.history_overlap) or 0)
        raw = self._deals_since(start, quiet=True)
        fresh = [d for d in raw if d["ticket"] not in self._logged]
        if fresh:
            self.journal.record("response", "history_deals_get", {"result": fresh})
            self._logged.update(d["ticket"] for d in fresh)
        deals = [d for d in (self._deal(r) for r in raw) if d is not None]
        for deal in deals:
            if deal.client_order_id in self._in_doubt:
                self._resolve(deal.client_order_id)
        return deals

    def _deals_since(self, since_ms: int, quiet: bool = False) -> list[dict[str, Any]]:
        start_s = max(0, (since_ms + self._offset_ms) // 1000)
        end_s = (self._wall_ms() + self._offset_ms) // 1000 + DAY_S
        return self._call("history_deals_get", start_s, end_s, quiet=quiet) or []

    def _deal(self, raw: Mapping[str, Any]) -> Deal | None:
        side = DEAL_TYPES.get(raw["type"])
        if side is None:
            return None  # balance, credit, commission… rows are not executions
        symbol = raw["symbol"]
        if self.params.symbol_suffix and symbol.endswith(self.params.symbol_suffix):
            symbol = symbol[: -len(self.params.symbol_suffix)]
        closed_by = BROKER_CLOSES.get(raw.get("reason"))  # its comment is the server's ("[sl 1.07900]"), not our order id
        ours = closed_by is None and raw.get("magic") == self.params.magic and bool(raw.get("comment"))
        reason = closed_by or ("client" if ours else "other")
        price = dec(raw["price"])
        digits = self._digits.get(symbol)
        if digits is not None:
            price = price.quantize(Decimal(1).scaleb(-digits))
        return Deal(
            ticket=raw["ticket"], order_ticket=raw["order"], client_order_id=raw["comment"] if ours else None,
            symbol=symbol, side=side, entry=DEAL_ENTRY.get(raw["entry"], "in"), lots=dec(raw["volume"]), price=price,
            ts=raw["time_msc"] - self._offset_ms, commission=-(dec(raw.get("commission", 0.0)) + dec(raw.get("fee", 0.0))),
            swap=dec(raw.get("swap", 0.0)),
            profit=dec(raw.get("profit", 0.0)), reason=reason,
        )  # fmt: skip

    # --- state ------------------------------------------------------------------------

    async def state(self, since_ms: int | None, client_order_ids: Iterable[str] = ()) -> BrokerState:
        return await self._run(self._state, since_ms, list(client_order_ids))

    def _state(self, since_ms: int | None, ids: list[str]) -> BrokerState:
        info = self._call("account_info")
        if info is None:
            raise BrokerUnavailable("account_info returned nothing")
        account = AccountView(info["currency"], dec(info["balance"]), dec(info["equity"]), dec(info["margin"]), dec(info["margin_free"]))
        by_symbol: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        for p in self._call("positions_get") or []:
            symbol = p["symbol"].removesuffix(self.params.symbol_suffix) if self.params.symbol_suffix else p["symbol"]
            lots = dec(p["volume"]) * (1 if p["type"] == 0 else -1)
            qty, cost, swap = by_symbol.get(symbol, (Decimal(0), Decimal(0), Decimal(0)))
            by_symbol[symbol] = (qty + lots, cost + abs(lots) * dec(p["price_open"]), swap + dec(p.get("swap", 0.0)))
        positions = [PositionView(s, q, (c / abs(q)) if q else Decimal(0), w) for s, (q, c, w) in sorted(by_symbol.items()) if q]
        open_orders = [o for o in self._call("orders_get") or [] if o.get("magic") == self.params.magic]
        orders = [self._order_view(o) for o in open_orders if not ids or o.get("comment") in ids]
        deals_from = since_ms
        if ids:
            deals_from = min(since_ms if since_ms is not None else self._wall_ms(), self._wall_ms() - 7 * DAY_S * 1000)
        raw = self._deals_since(deals_from) if deals_from is not None else []
        deals = [d for d in (self._deal(r) for r in raw) if d is not None]
        if ids:
            listed = {o.client_order_id for o in orders}
            for cid in ids:
                if cid in listed:
                    continue
                fills = [d for d in deals if d.client_order_id == cid]
                if fills:
                    filled = sum((d.lots for d in fills), Decimal(0))
                    orders.append(OrderView(cid, fills[0].symbol, fills[0].side, filled, filled, "filled", str(fills[0].order_ticket)))
        if since_ms is not None:
            deals = [d for d in deals if d.ts >= since_ms]
        else:
            deals = []
        return BrokerState(account, positions, orders, deals)

    def _order_view(self, o: Mapping[str, Any]) -> OrderView:
        initial, current = dec(o["volume_initial"]), dec(o["volume_current"])
        side = "buy" if o["type"] % 2 == 0 else "sell"
        status = "partially_filled" if current < initial else "accepted"
        return OrderView(o["comment"], o["symbol"].removesuffix(self.params.symbol_suffix), side, initial, initial - current, status, str(o["ticket"]))

    # --- state across restarts --------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        horizon = self._wall_ms() - 7 * DAY_S * 1000
        return {
            "in_doubt": dict(self._in_doubt),
            "acked": {k: v for k, v in self._acked.items() if v >= horizon},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self._in_doubt = dict(state.get("in_doubt", {}))
        self._acked = dict(state.get("acked", {}))

    def in_doubt(self) -> list[str]:
        return sorted(self._in_doubt)


def _sent(exc: BrokerUnavailable) -> BrokerUnavailable:
    exc.sent = True  # type: ignore[attr-defined]
    return exc


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
