"""A fake ``MetaTrader5`` module: the package's functions, result namedtuples and return codes, one netting USD account.

The fake server (:mod:`tests.fake_mt5.server`) installs it as ``sys.modules["MetaTrader5"]`` in
an RPyC classic server, so ``import MetaTrader5 as mt5`` on the bridge gets this, as mt5linux's
bridge gets the real package. Tests script it through ``_fake`` (reject the next order with a
code, drop the line before or after executing, requote, fill in part, go offline).

Field names and order, constants and return codes follow the real package
(../shared/reference/protocols.md §5). Money: deals carry commission as MT5 does (negative =
charged), profit in USD converted at the closing price.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections import namedtuple
from typing import Any

TRADE_ACTION_DEAL = 1
TRADE_ACTION_PENDING = 5
ORDER_TYPE_BUY = 0
ORDER_TYPE_SELL = 1
ORDER_FILLING_FOK = 0
ORDER_FILLING_IOC = 1
ORDER_FILLING_RETURN = 2
ORDER_TIME_GTC = 0
POSITION_TYPE_BUY = 0
POSITION_TYPE_SELL = 1
DEAL_TYPE_BUY = 0
DEAL_TYPE_SELL = 1
DEAL_TYPE_BALANCE = 2
DEAL_ENTRY_IN = 0
DEAL_ENTRY_OUT = 1
DEAL_ENTRY_INOUT = 2
DEAL_REASON_EXPERT = 3
DEAL_REASON_SO = 6
RES_S_OK = 1
RES_E_INVALID_PARAMS = -2
RES_E_AUTH_FAILED = -6
RES_E_INTERNAL_FAIL_CONNECT = -10004

TRADE_RETCODE_REQUOTE = 10004
TRADE_RETCODE_REJECT = 10006
TRADE_RETCODE_DONE = 10009
TRADE_RETCODE_DONE_PARTIAL = 10010
TRADE_RETCODE_INVALID = 10013
TRADE_RETCODE_INVALID_VOLUME = 10014
TRADE_RETCODE_INVALID_PRICE = 10015
TRADE_RETCODE_INVALID_STOPS = 10016
TRADE_RETCODE_MARKET_CLOSED = 10018
TRADE_RETCODE_NO_MONEY = 10019
TRADE_RETCODE_INVALID_FILL = 10030
TRADE_RETCODE_CONNECTION = 10031

COMMENTS = {
    0: "Done", 10004: "Requote", 10006: "Request rejected", 10009: "Request executed", 10010: "Request executed partially",
    10013: "Invalid request", 10014: "Invalid volume", 10015: "Invalid price", 10016: "Invalid stops",
    10018: "Market is closed", 10019: "No money", 10030: "Unsupported filling mode", 10031: "No connection",
}  # fmt: skip

TradeDeal = namedtuple("TradeDeal", "ticket order time time_msc type entry magic position_id reason volume price commission swap profit fee symbol comment external_id")
TradePosition = namedtuple("TradePosition", "ticket time time_msc time_update time_update_msc type magic identifier reason volume price_open sl tp price_current swap profit symbol comment external_id")
TradeOrder = namedtuple("TradeOrder", "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type type_time type_filling state magic position_id position_by_id reason volume_initial volume_current price_open sl tp price_current price_stoplimit symbol comment external_id")
AccountInfo = namedtuple("AccountInfo", "login trade_mode leverage limit_orders margin_so_mode trade_allowed trade_expert margin_mode currency_digits fifo_close balance credit profit equity margin margin_free margin_level margin_so_call margin_so_so name server currency company")
SymbolInfo = namedtuple("SymbolInfo", "name visible digits point trade_stops_level trade_mode filling_mode volume_min volume_max volume_step trade_contract_size currency_base currency_profit bid ask")
Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
TradeRequest = namedtuple("TradeRequest", "action magic order symbol volume price stoplimit sl tp deviation type type_filling type_time expiration comment position position_by")
OrderSendResult = namedtuple("OrderSendResult", "retcode deal order volume price bid ask comment request_id retcode_external request")
OrderCheckResult = namedtuple("OrderCheckResult", "retcode balance equity profit margin margin_free margin_level comment request")

SYMBOLS = {  # digits, contract size, base, quote
    "EURUSD": (5, 100_000, "EUR", "USD"),
    "USDJPY": (3, 100_000, "USD", "JPY"),
    "XAUUSD": (2, 100, "XAU", "USD"),
}
COMMISSION_PER_LOT = 3.5


class Fake:
    """The terminal's state and the test's script; one per server process, shared by its connections."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.server: Any = None
        self.local = threading.local()
        self.reset()

    def reset(self, login: int = 5001234, password: str = "", server: str = "Fake-Demo", balance: float = 100_000.0,
              leverage: int = 100, offset_ms: int = 0, fee: float = 0.0) -> None:  # fmt: skip
        with self.lock:
            self.login, self.password, self.server_name = login, password, server
            self.balance, self.leverage, self.offset_ms = balance, leverage, offset_ms
            self.fee = fee
            """Charged on every deal besides the commission (MT5's ``deal.fee``, negative: a charge)."""
            self.initialized = False
            self.offline = False
            self.error: tuple[int, str] = (RES_S_OK, "Success")
            self.ticks: dict[str, tuple[float, float]] = {"EURUSD": (1.08500, 1.08510), "USDJPY": (149.500, 149.512), "XAUUSD": (2650.00, 2650.30)}
            self.closed: set[str] = set()
            self.positions: dict[str, dict[str, Any]] = {}
            self.deals: list[TradeDeal] = []
            self.tickets = itertools.count(100_001)
            self.requests = itertools.count(1)
            self.script: list[tuple[Any, ...]] = []
            self.calls: list[tuple[str, Any, Any]] = []

    # --- the test's controls ------------------------------------------------------------

    def plan(self, *actions: Any) -> None:
        """Queue what the next order_send does: ("retcode", code), ("drop_before",), ("drop_after",),
        ("raise_after",), ("partial", fraction), ("requote",)."""
        with self.lock:
            self.script.extend(tuple(a) for a in actions)

    def set_tick(self, symbol: str, bid: float, ask: float) -> None:
        with self.lock:
            self.ticks[symbol] = (bid, ask)

    def set_closed(self, symbol: str, closed: bool = True) -> None:
        with self.lock:
            (self.closed.add if closed else self.closed.discard)(symbol)

    def set_offline(self, offline: bool = True) -> None:
        with self.lock:
            self.offline = offline

    def count(self, function: str) -> int:
        with self.lock:
            return sum(1 for name, _, _ in self.calls if name == function)

    def call_log(self) -> list[tuple[str, Any, Any]]:
        with self.lock:
            return list(self.calls)

    def roll(self, symbol: str, amount: float) -> None:
        """A daily roll: ``amount`` of swap (account currency, < 0 charged) accrues on the symbol's position."""
        with self.lock:
            self.positions[symbol]["swap"] = round(self.positions[symbol]["swap"] + amount, 2)

    def add_deal(self, symbol: str, side: str, volume: float, comment: str = "", magic: int = 0, reason: int = 0) -> int:
        """A deal made outside fxflow (a manual trade, a stop-out)."""
        with self.lock:
            return self._execute(symbol, 0 if side == "buy" else 1, volume, magic, comment, reason)[0]

    def drop(self) -> None:
        """Cut the connection whose request is being served (the client sees the line drop)."""
        sock = getattr(self.local, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- helpers ------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def _rate_to_usd(self, currency: str) -> float:
        if currency == "USD":
            return 1.0
        for symbol, (_, _, base, quote) in SYMBOLS.items():
            bid, ask = self.ticks[symbol]
            if base == currency and quote == "USD":
                return (bid + ask) / 2
            if quote == currency and base == "USD":
                return 2 / (bid + ask)
        raise KeyError(currency)

    def _margin(self, symbol: str, volume: float) -> float:
        _, size, base, _ = SYMBOLS[symbol]
        return round(volume * size / self.leverage * self._rate_to_usd(base), 2)

    def _floating(self) -> float:
        total = 0.0
        for symbol, p in self.positions.items():
            _, size, _, quote = SYMBOLS[symbol]
            bid, ask = self.ticks[symbol]
            sign = 1 if p["type"] == POSITION_TYPE_BUY else -1
            mark = bid if sign > 0 else ask
            total += (mark - p["price_open"]) * p["volume"] * size * sign * self._rate_to_usd(quote) + p["swap"]  # equity counts accrued swap
        return round(total, 2)

    def _used_margin(self) -> float:
        return round(sum(self._margin(s, p["volume"]) for s, p in self.positions.items()), 2)

    def _check(self, request: dict[str, Any]) -> int:
        for key in ("action", "symbol", "volume", "type"):
            if key not in request:
                return TRADE_RETCODE_INVALID
        symbol = request["symbol"]
        if request["action"] != TRADE_ACTION_DEAL or symbol not in SYMBOLS or request["type"] not in (0, 1):
            return TRADE_RETCODE_INVALID
        volume = request["volume"]
        steps = round(volume / 0.01, 6)
        if volume < 0.01 or volume > 100 or abs(steps - round(steps)) > 1e-6:
            return TRADE_RETCODE_INVALID_VOLUME
        if request.get("type_filling", ORDER_FILLING_FOK) not in (ORDER_FILLING_FOK, ORDER_FILLING_IOC):
            return TRADE_RETCODE_INVALID_FILL
        if symbol in self.closed:
            return TRADE_RETCODE_MARKET_CLOSED
        bid, ask = self.ticks[symbol]
        price = request.get("price", 0.0)
        if price < 0:
            return TRADE_RETCODE_INVALID_PRICE
        sl, tp = request.get("sl", 0.0), request.get("tp", 0.0)
        buy = request["type"] == ORDER_TYPE_BUY
        if (sl and (sl >= bid if buy else sl <= ask)) or (tp and (tp <= ask if buy else tp >= bid)):
            return TRADE_RETCODE_INVALID_STOPS
        held = self.positions.get(symbol)
        current = 0.0 if held is None else held["volume"] * (1 if held["type"] == POSITION_TYPE_BUY else -1)
        after = current + (volume if buy else -volume)
        extra = self._margin(symbol, abs(after)) - self._margin(symbol, abs(current)) if abs(after) > abs(current) else 0.0
        if extra > self.balance + self._floating() - self._used_margin():
            return TRADE_RETCODE_NO_MONEY
        return 0

    def _execute(self, symbol: str, type_: int, volume: float, magic: int, comment: str, reason: int = DEAL_REASON_EXPERT) -> tuple[int, int, float]:
        """Fill at the market; returns (deal ticket, order ticket, price)."""
        _, size, _, quote = SYMBOLS[symbol]
        bid, ask = self.ticks[symbol]
        price = ask if type_ == ORDER_TYPE_BUY else bid
        order = next(self.tickets)
        held = self.positions.get(symbol)
        sign = 1 if type_ == ORDER_TYPE_BUY else -1
        profit, swap, entry = 0.0, 0.0, DEAL_ENTRY_IN
        now = self.now_ms()
        if held is None:
            self.positions[symbol] = {"ticket": order, "type": type_, "volume": volume, "price_open": price, "time_msc": now,
                                      "magic": magic, "comment": comment, "swap": 0.0}  # fmt: skip
        elif held["type"] == type_:
            total = held["volume"] + volume
            held["price_open"] = (held["price_open"] * held["volume"] + price * volume) / total
            held["volume"] = round(total, 2)
        else:
            closed = min(held["volume"], volume)
            held_sign = 1 if held["type"] == POSITION_TYPE_BUY else -1
            profit = round((price - held["price_open"]) * closed * size * held_sign * self._rate_to_usd(quote), 2)
            swap = round(held["swap"] * closed / held["volume"], 2)  # the closed share of the accrued swap is realized
            held["swap"] = round(held["swap"] - swap, 2)
            rest = round(held["volume"] - volume, 2)
            if rest > 0:
                held["volume"], entry = rest, DEAL_ENTRY_OUT
            elif rest == 0:
                del self.positions[symbol]
                entry = DEAL_ENTRY_OUT
            else:
                self.positions[symbol] = {"ticket": order, "type": type_, "volume": -rest, "price_open": price, "time_msc": now,
                                          "magic": magic, "comment": comment, "swap": 0.0}  # fmt: skip
                entry = DEAL_ENTRY_INOUT
        commission = -round(COMMISSION_PER_LOT * volume, 2)
        self.balance = round(self.balance + profit + swap + commission - self.fee, 2)
        deal = next(self.tickets)
        position_id = self.positions.get(symbol, {"ticket": order})["ticket"]
        self.deals.append(TradeDeal(deal, order, now // 1000, now, type_, entry, magic, position_id, reason, volume, price,
                                    commission, swap, profit, -self.fee, symbol, comment, ""))  # fmt: skip
        return deal, order, price


_fake = Fake()


def _api(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        with _fake.lock:
            _fake.calls.append((fn.__name__, args, kwargs))
            if fn.__name__ not in ("initialize", "login", "last_error", "shutdown", "version") and not _fake.initialized:
                _fake.error = (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
                return None
            return fn(*args, **kwargs)

    call.__name__ = fn.__name__
    return call


@_api
def initialize(path: str | None = None, *, login: int | None = None, password: str = "", server: str = "", timeout: int = 60_000,
               portable: bool = False) -> bool:  # fmt: skip
    f = _fake
    if f.offline:
        f.error = (RES_E_INTERNAL_FAIL_CONNECT, "No IPC connection")
        return False
    if (login is not None and login != f.login) or (f.password and password != f.password):
        f.error = (RES_E_AUTH_FAILED, "Terminal: Authorization failed")
        return False
    f.initialized = True
    f.error = (RES_S_OK, "Success")
    return True


@_api
def login(login: int, password: str = "", server: str = "", timeout: int = 60_000) -> bool:
    return initialize(login=login, password=password, server=server, timeout=timeout)


@_api
def shutdown() -> None:
    _fake.initialized = False


@_api
def version() -> tuple[int, int, str]:
    return (500, 4755, "20 Nov 2026")


@_api
def last_error() -> tuple[int, str]:
    return _fake.error


@_api
def account_info() -> AccountInfo:
    f = _fake
    floating, margin = f._floating(), f._used_margin()
    equity = round(f.balance + floating, 2)
    level = round(equity / margin * 100, 2) if margin else 0.0
    return AccountInfo(f.login, 0, f.leverage, 200, 0, True, True, 0, 2, False, f.balance, 0.0, floating, equity, margin,
                       round(equity - margin, 2), level, 50.0, 30.0, "Fake Trader", f.server_name, "USD", "Fake Broker Ltd")  # fmt: skip


@_api
def symbol_info(symbol: str) -> SymbolInfo | None:
    spec = SYMBOLS.get(symbol)
    if spec is None:
        _fake.error = (RES_E_INVALID_PARAMS, "Terminal: Invalid params")
        return None
    digits, size, base, quote = spec
    bid, ask = _fake.ticks[symbol]
    return SymbolInfo(symbol, True, digits, 10.0**-digits, 10, 4, 3, 0.01, 100.0, 0.01, float(size), base, quote, bid, ask)


@_api
def symbol_info_tick(symbol: str) -> Tick | None:
    if symbol not in SYMBOLS:
        _fake.error = (RES_E_INVALID_PARAMS, "Terminal: Invalid params")
        return None
    bid, ask = _fake.ticks[symbol]
    now = _fake.now_ms()
    return Tick(now // 1000, bid, ask, 0.0, 0, now, 6, 0.0)


def _request(request: dict[str, Any]) -> TradeRequest:
    fields = {k: request.get(k, 0) for k in TradeRequest._fields}
    fields["comment"] = str(request.get("comment", ""))[:31]
    fields["symbol"] = request.get("symbol", "")
    return TradeRequest(**fields)


@_api
def order_check(request: dict[str, Any]) -> OrderCheckResult | None:
    f = _fake
    if not isinstance(request, dict):
        f.error = (RES_E_INVALID_PARAMS, "Invalid request")
        return None
    code = f._check(request)
    margin = f._used_margin()
    equity = round(f.balance + f._floating(), 2)
    return OrderCheckResult(code, f.balance, equity, f._floating(), margin, round(equity - margin, 2), 0.0, COMMENTS.get(code, ""), _request(request))


@_api
def order_send(request: dict[str, Any]) -> OrderSendResult | None:
    f = _fake
    if not isinstance(request, dict):
        f.error = (RES_E_INVALID_PARAMS, "Invalid request")
        return None
    step = f.script.pop(0) if f.script else ("normal",)
    symbol = request.get("symbol", "")
    bid, ask = f.ticks.get(symbol, (0.0, 0.0))
    request_id = next(f.requests)

    def result(code: int, deal: int = 0, order: int = 0, volume: float = 0.0, price: float = 0.0) -> OrderSendResult:
        return OrderSendResult(code, deal, order, volume, price, bid, ask, COMMENTS.get(code, "Request rejected"), request_id, 0, _request(request))

    if step[0] == "drop_before":
        f.drop()
        return None
    if step[0] == "retcode":
        return result(step[1])
    if step[0] == "requote":
        return result(TRADE_RETCODE_REQUOTE)
    code = f._check(request)
    if code:
        return result(code)
    volume = request["volume"]
    if step[0] == "partial":
        volume = round(volume * step[1], 2)
    deal, order, price = f._execute(symbol, request["type"], volume, request.get("magic", 0), str(request.get("comment", ""))[:31])
    if step[0] == "drop_after":
        f.drop()
    if step[0] == "raise_after":
        raise RuntimeError("terminal: internal error after execution")
    return result(TRADE_RETCODE_DONE_PARTIAL if step[0] == "partial" else TRADE_RETCODE_DONE, deal, order, volume, price)


@_api
def positions_get(symbol: str | None = None, group: str | None = None, ticket: int | None = None) -> tuple[TradePosition, ...]:
    f = _fake
    out = []
    for name, p in sorted(f.positions.items()):
        if (symbol and name != symbol) or (ticket and p["ticket"] != ticket):
            continue
        bid, ask = f.ticks[name]
        current = bid if p["type"] == POSITION_TYPE_BUY else ask
        out.append(TradePosition(p["ticket"], p["time_msc"] // 1000, p["time_msc"], p["time_msc"] // 1000, p["time_msc"], p["type"],
                                 p["magic"], p["ticket"], DEAL_REASON_EXPERT, p["volume"], p["price_open"], 0.0, 0.0, current,
                                 p["swap"], 0.0, name, p["comment"], ""))  # fmt: skip
    return tuple(out)


@_api
def orders_get(symbol: str | None = None, group: str | None = None, ticket: int | None = None) -> tuple[TradeOrder, ...]:
    return ()


def _seconds(value: Any) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


@_api
def history_deals_get(date_from: Any = None, date_to: Any = None, group: str | None = None, ticket: int | None = None,
                      position: int | None = None) -> tuple[TradeDeal, ...] | None:  # fmt: skip
    deals = _fake.deals
    if ticket is not None:
        return tuple(d for d in deals if d.order == ticket)
    if position is not None:
        return tuple(d for d in deals if d.position_id == position)
    if date_from is None or date_to is None:
        _fake.error = (RES_E_INVALID_PARAMS, 'Invalid "date_from" argument')
        return None
    start, end = _seconds(date_from), _seconds(date_to)
    return tuple(d for d in deals if start <= d.time <= end)


@_api
def history_orders_get(date_from: Any = None, date_to: Any = None, **kwargs: Any) -> tuple[TradeOrder, ...]:
    return ()
