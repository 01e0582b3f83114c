"""The paper broker: a netting account filled on the market data it is fed, exact to the cent.

Its clock is the market data: nothing happens between two prices, and the same prices and
orders give the same deals, so a backtest is deterministic and a live paper account behaves
as it would on replay.

- **Fills** (:class:`~nodes.broker.models.PaperParams` ``fill_on``): a market order fills at the
  ask (buy) or bid (sell) of the first tick *strictly after* the order's time, or at the open of
  the first bar that starts at or after it (the signal's own bar closed at the order's time at
  the earliest, so that is the next bar). Never a price from before the order, and the same price
  however late the order arrives: live delivery is asynchronous (an order may reach the broker
  after the ticks that follow its time), so the recent prices of each symbol are kept
  (``lookback_ms``) and an order fills on the first of them after its time, with the conversion
  rates of that moment. No deal is made on a price inside the weekend (Friday 22:00 to Sunday
  22:00 UTC, when orders are refused with 10018): an order working then fills on the first
  price after it. With ``partial_fills`` each price fills at most ``max_lots`` (down to the lot
  step, at least the minimum lot); the rest waits for the next price, or (``rest: cancel``,
  MT5's IOC) is cancelled at once with a ``partial_fill`` notice carrying 10010.
- **Tickets** follow from the client order id (orders) and the order's deal count (deals), never
  from arrival order, so the same orders and prices give the same fill ids live and on replay.
- **Costs**: the quote's spread or a fixed one, adverse slippage, commission per lot and per
  notional, swap at each daily roll (three nights on the triple day), all booked to the cent in
  the account currency through :class:`~nodes.trading.money.Rates`.
- **Refusals** carry MT5 return codes: unknown symbol 10013, a volume off the lot rules 10014,
  the weekend or no recent price 10018, not enough free margin 10019, an order type it does not
  fill 10035.
- **Margin** is notional / leverage converted from the base currency. An order's check counts
  the orders accepted before it that wait for their price as if filled (MT5 fills a market order
  at once: its next order sees the position it made). When equity falls below
  ``stop_out`` × margin the worst position is closed at the market, then the next, until the
  account is back above it.
- **Event time**: an order's margin check values the account at the prices of the order's time
  (each symbol's last price at or before it, and the conversion rates of that instant), as its
  fill does, so an order that reaches the broker after newer prices (live delivery) is judged as
  it is on a replay. The stop-out is judged at the broker's time (the newest price's) on the
  latest prices, and its deal is dated then: a price that arrives late (older than a newer one of
  another symbol) never closes a position with a price from after its own time.
- **Swap** accrues on an open position at each roll (in the account's equity at once) and is
  realized into the balance by the deal that closes (a share of) the position: ``Deal.swap``,
  published as ``fill.v1`` ``swap``. A position's rolls are booked on its own symbol's clock
  (its prices and deals), converted at the rates as of the roll: a bar-open deal dated before
  the roll pays it or not by its date, whichever symbol's bar of that minute came first. Left:
  a late order (live) filled on a kept price from before a roll its symbol already passed.

State (balance, positions, working orders, deals) is :meth:`PaperBroker.snapshot` JSON.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from framework.topology.model import Account, Instrument
from nodes.broker import retcodes as rc
from nodes.broker.base import (
    Ack,
    AccountView,
    AckStatus,
    Broker,
    BrokerState,
    Deal,
    Notice,
    OrderRequest,
    OrderView,
    PositionView,
)
from nodes.broker.journal import Journal
from nodes.broker.models import PaperParams
from nodes.marketdata.synthetic import in_weekend
from nodes.trading.instruments import Rules, VolumeError, dec
from nodes.trading.money import MissingRate, Rates, book
from nodes.trading.positions import Position

ZERO = Decimal(0)
STATE_VERSION = 1
ESTIMATE_MARGIN = 1.5
ESTIMATE_FOR_MS = 3_600_000
LOOKBACK_MS = 120_000
"""Default span of recent prices kept per symbol for orders that arrive after them."""

Raw = tuple[int, Any, Any, Any]
"""A price as received: (ts, bid, ask or None, a bar's spread or None)."""
Estimate = tuple[int, float, float, list[tuple[str, float, float, float, float, float]]]
"""The stop-out estimate (:meth:`PaperBroker._estimator`): valid until, the level that skips the exact check, balance
and swaps, and per position (symbol, lots, average price, units, quote → account rate, margin)."""


def ticket(*parts: object) -> int:
    """A broker ticket from what identifies an order or a deal: 53 bits (exact in JSON numbers), never 0."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) or 1


def order_ticket(client_order_id: str) -> int:
    return ticket("order", client_order_id)


def deal_ticket(client_order_id: str, n: int) -> int:
    """The ticket of the ``n``-th deal (1, 2, …) of an order: the paper broker's fill id is ``paper-<ticket>``."""
    return ticket("deal", client_order_id, n)


@dataclass(slots=True)
class _Quote:
    ts: int
    bid: Decimal
    ask: Decimal


@dataclass(slots=True)
class _Held:
    position: Position
    ticket: int
    opened: int
    swap: Decimal = ZERO
    """Accrued swap in the account currency (booked at each roll, realized as the position closes)."""
    rolled: int = 0
    """The rolls up to this instant are booked: the position's own symbol's time, never another's (:meth:`PaperBroker._roll_to`)."""
    next_roll: int = 0
    """The first roll after ``rolled`` (derived, not saved)."""
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    """The position's levels (MT5's ``sl``/``tp`` on a netting account: the last order that opened or added with one
    set it), closed at the market when a price reaches them (:meth:`PaperBroker._levels_on_tick`, ``_levels_on_bar``)."""


@dataclass(slots=True)
class _Order:
    client_order_id: str
    order_id: str
    symbol: str
    side: str
    quantity: Decimal
    ts: int
    ticket: int
    filled: Decimal = ZERO
    status: str = "accepted"
    retcode: int | None = None
    done_ts: int | None = None
    deals: int = 0
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None

    @property
    def working(self) -> bool:
        return self.status in ("accepted", "partially_filled")

    def to_json(self) -> dict[str, Any]:
        """Levels only when the order has them: the documents of orders without stay what they were."""
        out = {
            "client_order_id": self.client_order_id, "order_id": self.order_id, "symbol": self.symbol, "side": self.side,
            "quantity": str(self.quantity), "ts": self.ts, "ticket": self.ticket, "filled": str(self.filled),
            "status": self.status, "retcode": self.retcode, "done_ts": self.done_ts, "deals": self.deals,
        }  # fmt: skip
        out.update(_levels_json(self.stop_loss, self.take_profit))
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _Order:
        sl, tp = _levels(d)
        return cls(**{**d, "quantity": Decimal(d["quantity"]), "filled": Decimal(d["filled"]), "deals": d.get("deals", 0),
                      "stop_loss": sl, "take_profit": tp})  # fmt: skip


def _levels_json(stop_loss: Decimal | None, take_profit: Decimal | None) -> dict[str, str]:
    out = {}
    if stop_loss is not None:
        out["stop_loss"] = str(stop_loss)
    if take_profit is not None:
        out["take_profit"] = str(take_profit)
    return out


def _levels(d: Mapping[str, Any]) -> tuple[Decimal | None, Decimal | None]:
    sl, tp = d.get("stop_loss"), d.get("take_profit")
    return (None if sl is None else Decimal(sl)), (None if tp is None else Decimal(tp))


class _Refusal(Exception):
    def __init__(self, retcode: int, message: str) -> None:
        super().__init__(message)
        self.retcode = retcode
        self.message = message


class PaperBroker(Broker):
    kind = "paper"

    def __init__(
        self,
        params: PaperParams,
        instruments: Mapping[str, Instrument],
        account: Account | None = None,
        journal: Journal | None = None,
        lookback_ms: int = LOOKBACK_MS,
    ) -> None:
        super().__init__(journal)
        self.params = params
        self.max_quote_age_ms = params.max_quote_age_ms
        self.history_ms = params.history_ms
        """The params' durations, parsed once (an order's check and every prune ask for them)."""
        self.lookback_ms = lookback_ms
        self.account = account or Account()
        self.rules = {s: Rules.of(s, inst) for s, inst in instruments.items()}
        self.rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())
        self.currency = self.account.currency
        self.leverage = dec(self.account.leverage)
        self.stop_out = dec(self.account.stop_out)
        self.balance = dec(self.account.balance)
        self.positions: dict[str, _Held] = {}
        self.orders: dict[str, _Order] = {}
        self.deals: list[Deal] = []
        """In time order, deals of one instant in the order they were made (a bar-open fill can be dated before a
        deal made by a later tick)."""
        self.quotes: dict[str, _Quote] = {}
        """The latest price per symbol, exact; made from ``_raw`` when something needs it (most prices
        of a backtest move nothing: kept as received, they cost no Decimal arithmetic)."""
        self._raw: dict[str, Raw] = {}
        """symbol → its latest price, as received."""
        self._recent: dict[str, deque[Raw]] = {}
        """symbol → its prices of the last ``lookback_ms`` in time order (ticks; with fill_on: bar_open, the
        opens of bars of bar_timeframe), plus the one before: what a late order fills on. Not saved: after a
        restart, orders fill from the next price on."""
        self._stale: set[str] = set()
        self._open: dict[str, list[_Order]] = {}
        """symbol → its working orders, in arrival order."""
        self._done: list[tuple[int, int, _Order]] = []
        """A min-heap of (``done_ts or ts``, sequence, order) of the orders that stopped working, one entry each,
        pushed as it stops (its time fixed from then on): a prune pops the old ones instead of walking every order
        kept. An entry whose order is no longer the one under its client id (a rejected order submitted again, or
        gone) is skipped."""
        self._pushed = 0
        self.now: int | None = None
        self.last_roll: int | None = None
        self._next_roll = 0
        self._next_prune = 0
        self._estimate: Estimate | None = None
        self.ticket = 0

    # --- orders ---------------------------------------------------------------------

    async def submit(self, order: OrderRequest) -> Ack:
        self.journal.record("request", "submit", _request_payload(order), order.order_id)
        self.revision += 1
        known = self.orders.get(order.client_order_id)
        if known is not None and known.status != "rejected":
            ack = Ack(AckStatus.DUPLICATE, known.retcode, f"order {order.client_order_id} is known ({known.status})", str(known.ticket))
        else:
            try:
                lots = self._check(order)
            except _Refusal as refusal:
                ack = self._refuse(order, refusal)
            else:
                self.ticket += 1
                working = _Order(order.client_order_id, order.order_id, order.symbol, order.side, lots, order.ts,
                                 order_ticket(order.client_order_id), stop_loss=order.stop_loss, take_profit=order.take_profit)  # fmt: skip
                self.orders[order.client_order_id] = working
                self._open.setdefault(order.symbol, []).append(working)
                ack = Ack(AckStatus.ACCEPTED, rc.PLACED, "accepted, fills on the next price", str(working.ticket))
                ticks = self.params.fill_on == "tick"
                for raw in self._prices_after(order.symbol, order.ts):  # it arrived after the prices that follow its time
                    if working.working:
                        self._fill_at(working, raw)
                    elif not ticks:
                        break
                    if ticks:  # and its levels are judged on them, as on a replay (kept bars are opens only: not there)
                        self._levels_on_tick(order.symbol, raw)
        self.journal.record("response", "submit", _ack_payload(ack), order.order_id)
        return ack

    def _prices_after(self, symbol: str, ts: int) -> list[Raw]:
        """The kept prices an order of time ``ts`` fills on: ticks strictly after it, or bar opens at or after it."""
        recent = self._recent.get(symbol)
        if not recent:
            return []
        if self.params.fill_on == "tick":
            start = bisect.bisect_right(recent, ts, key=_raw_ts)
        else:
            start = bisect.bisect_left(recent, ts, key=_raw_ts)
        return [raw for raw in _islice(recent, start) if not in_weekend(raw[0])]

    def _price_at(self, symbol: str, ts: int) -> Raw | None:
        """The last price of ``symbol`` at or before ``ts``; None when every price known is later."""
        latest = self._raw.get(symbol)
        if latest is None or latest[0] <= ts:
            return latest
        recent = self._recent.get(symbol)
        index = bisect.bisect_right(recent, ts, key=_raw_ts) if recent else 0
        return recent[index - 1] if index else None

    def _remember(self, symbol: str, raw: Raw) -> None:
        recent = self._recent.get(symbol)
        if recent is None:
            recent = self._recent[symbol] = deque()
        if not recent or recent[-1][0] <= raw[0]:
            recent.append(raw)
        else:  # a price older than the newest kept one (out of order): in its place
            recent.insert(bisect.bisect_right(recent, raw[0], key=_raw_ts), raw)
        cutoff = recent[-1][0] - self.lookback_ms
        while len(recent) > 1 and recent[1][0] <= cutoff:
            recent.popleft()

    def _refuse(self, order: OrderRequest, refusal: _Refusal) -> Ack:
        quantity = order.quantity if order.quantity.is_finite() and order.quantity > 0 else ZERO  # NaN has no order
        rejected = self.orders[order.client_order_id] = _Order(
            order.client_order_id, order.order_id, order.symbol, order.side, quantity, order.ts, 0, status="rejected",
            retcode=refusal.retcode, done_ts=order.ts,
        )  # fmt: skip
        self._stopped(rejected)
        return Ack(AckStatus.REJECTED, refusal.retcode, refusal.message)

    def _check(self, order: OrderRequest) -> Decimal:
        """The order's volume in lots, or the MT5 code the order is refused with."""
        rules = self.rules.get(order.symbol)
        if rules is None:
            raise _Refusal(rc.INVALID, f"unknown symbol {order.symbol}")
        if order.order_type != "market":
            raise _Refusal(rc.INVALID_ORDER, f"the paper broker fills market orders only, not {order.order_type}")
        if order.side not in ("buy", "sell"):
            raise _Refusal(rc.INVALID, f"unknown side {order.side!r}")
        try:
            lots = rules.lots(order.quantity)
        except VolumeError as exc:
            raise _Refusal(rc.INVALID_VOLUME, str(exc)) from None
        if lots != order.quantity:
            raise _Refusal(rc.INVALID_VOLUME, f"{order.symbol}: volume {order.quantity} is not a multiple of the lot step {rules.lot_step}")
        if in_weekend(order.ts):
            raise _Refusal(rc.MARKET_CLOSED, f"{order.symbol}: the market is closed (weekend)")
        self._fresh()
        price = self._price_at(order.symbol, order.ts) or self._raw.get(order.symbol)
        if price is None:
            raise _Refusal(rc.MARKET_CLOSED, f"{order.symbol}: no price yet")
        if order.ts - price[0] > self.max_quote_age_ms:
            raise _Refusal(rc.MARKET_CLOSED, f"{order.symbol}: no price since {price[0]} ({self.params.max_quote_age} before the order)")
        if order.stop_loss is not None or order.take_profit is not None:
            _check_levels(order, self._exact(order.symbol, price))
        try:
            rates = self._rates_at(order.ts)
            if any(self._open.values()):
                committed = self._committed()
                current = committed.get(order.symbol, ZERO)
                used = sum((self._margin(s, q, rates) for s, q in committed.items()), ZERO)
            else:
                held = self.positions.get(order.symbol)
                current = held.position.quantity if held else ZERO
                used = self._total_margin(rates)
            after = current + (lots if order.side == "buy" else -lots)
            extra = self._margin(order.symbol, after, rates) - self._margin(order.symbol, current, rates) if abs(after) > abs(current) else ZERO
            free = self._equity(order.ts, rates) - used
            rates.rate(rules.quote, self.currency)
        except MissingRate as exc:
            raise _Refusal(rc.PRICE_OFF, f"{order.symbol}: {exc}") from None
        if extra > free:
            raise _Refusal(rc.NO_MONEY, f"not enough money: {extra} {self.currency} margin needed, {free} free")
        return lots

    def _committed(self) -> dict[str, Decimal]:
        """Each symbol's position in signed lots as if every working order had filled.

        MT5 fills a market order at once, so the next order is checked against the position it made; here it fills
        on the next price, and an order's margin check counts the ones accepted before it that wait for theirs."""
        committed = {s: h.position.quantity for s, h in self.positions.items()}
        for symbol, working in self._open.items():
            for o in working:
                rest = o.quantity - o.filled
                committed[symbol] = committed.get(symbol, ZERO) + (rest if o.side == "buy" else -rest)
        return committed

    # --- market data ----------------------------------------------------------------

    async def on_tick(self, tick: Mapping[str, Any]) -> None:
        symbol = tick["symbol"]
        if symbol not in self.rules:
            return
        ts = tick["ts"]
        self._advance(ts)
        self._roll_to(symbol, ts)
        raw = (ts, tick["bid"], tick["ask"], None)
        self._set(symbol, *raw)
        if self.params.fill_on == "tick":
            self._remember(symbol, raw)
            if self._open.get(symbol) and not in_weekend(ts):
                for order in list(self._open[symbol]):
                    if order.ts < ts:
                        self._fill_at(order, raw)
            if not in_weekend(ts):
                self._levels_on_tick(symbol, raw)
        if self.positions:
            self._check_stop_out()

    async def on_bar(self, bar: Mapping[str, Any]) -> None:
        symbol = bar["symbol"]
        if symbol not in self.rules or bar["timeframe"] != self.params.bar_timeframe:
            return
        if bar.get("complete") is False or bar.get("revision"):
            return
        start = bar["ts"]
        self._advance(start)
        self._roll_to(symbol, start)
        if self.params.fill_on == "bar_open":
            opening = (start, bar["open"], None, bar.get("spread_mean"))
            self._remember(symbol, opening)
            working = [] if in_weekend(start) else [o for o in self._open.get(symbol, ()) if o.ts <= start]
            if working:
                self._set(symbol, *opening)
                for order in working:
                    self._fill_at(order, opening)  # the open, even when a later tick came first
            self._levels_on_bar(symbol, bar)
        self._advance(bar["ts_close"])
        self._roll_to(symbol, bar["ts_close"])
        self._set(symbol, bar["ts_close"], bar["close"], None, bar.get("spread_mean"))
        if self.positions:
            self._check_stop_out()

    def _set(self, symbol: str, ts: int, bid: Any, ask: Any, spread: Any) -> None:
        """A price as received; an older one than the symbol's latest is ignored."""
        latest = self._raw.get(symbol)
        if latest is None or latest[0] <= ts:
            self._raw[symbol] = (ts, bid, ask, spread)
            self._stale.add(symbol)

    def quote(self, symbol: str) -> _Quote | None:
        """The latest price of ``symbol``, exact."""
        if symbol in self._stale:
            self._materialize(symbol)
        return self.quotes.get(symbol)

    def _materialize(self, symbol: str) -> None:
        quote = self.quotes[symbol] = self._exact(symbol, self._raw[symbol])
        self.rates.update(symbol, quote.bid, quote.ask)
        self._stale.discard(symbol)

    def _exact(self, symbol: str, raw: tuple[int, Any, Any, Any]) -> _Quote:
        ts, bid, ask, spread = raw
        rules = self.rules[symbol]
        exact_bid = rules.price(bid)
        if ask is not None:
            quoted = rules.price(ask)
        else:
            quoted = None if spread is None else rules.price(exact_bid + dec(spread))
        return _Quote(ts, exact_bid, self.params.spread.ask(rules, exact_bid, quoted))

    def _fresh(self) -> None:
        """Every price exact, so conversions use the latest of each pair."""
        for symbol in sorted(self._stale):
            self._materialize(symbol)

    def _working(self, symbol: str) -> list[_Order]:
        return list(self._open.get(symbol, ()))

    def _advance(self, ts: int) -> None:
        """Move the broker's time to ``ts`` (``last_roll``: the latest roll it passed), old history dropped."""
        now = self.now
        if now is None:
            self.now = self.last_roll = ts
            self._next_roll = self._roll_after(ts)
            return
        if ts <= now:
            return
        if ts >= self._next_roll:
            self.last_roll = self.params.swap.rolls(self.last_roll if self.last_roll is not None else now, ts)[-1]
            self._next_roll = self._roll_after(ts)
        self.now = ts
        if ts >= self._next_prune:
            self._prune()
            self._next_prune = ts + 3_600_000

    def _roll_after(self, ts: int) -> int:
        return self.params.swap.rolls(ts, ts + 86_400_000)[0]

    def _roll_to(self, symbol: str, ts: int) -> None:
        """Book the swap of ``symbol``'s position at every roll up to ``ts``, a time of that symbol's own prices or deals.

        A position's rolls follow its own symbol's clock, as its deals do: a bar-open deal is dated at its bar's
        start, which another symbol's bar of the same minute may already have carried the broker's time past. A roll
        booked on the broker's clock would charge a position closed before it (or miss lots added before it) by the
        order in which the bars of one instant arrive. Converted at the rates as of the roll."""
        held = self.positions.get(symbol)
        if held is None or ts < held.next_roll:
            return
        for roll_ts in self.params.swap.rolls(held.rolled, ts):
            self._roll(symbol, held, roll_ts)
        held.rolled, held.next_roll = ts, self._roll_after(ts)

    def _roll(self, symbol: str, held: _Held, roll_ts: int) -> None:
        nights = self.params.swap.nights(roll_ts)
        pos = held.position
        points = self.params.swap.points(symbol, pos.quantity > 0)
        if not nights or not points or pos.flat:
            return
        rules = self.rules[symbol]
        in_quote = points * rules.tick * rules.units(abs(pos.quantity)) * nights
        try:
            amount = book(self._rates_at(roll_ts).convert(in_quote, rules.quote, self.currency))
        except MissingRate:
            return
        held.swap += amount
        self.revision += 1
        self._estimate = None
        self.journal.record("event", "swap", {"symbol": symbol, "ts": roll_ts, "nights": nights, "amount": amount})

    # --- execution ------------------------------------------------------------------

    def _fill_at(self, order: _Order, raw: Raw) -> None:
        """Fill (a slice of) ``order`` on the price ``raw``, with the conversion rates of its time."""
        quote = self._exact(order.symbol, raw)
        self._fill(order, raw[0], quote.bid, quote.ask, self._rates_at(raw[0]))

    def _rates_at(self, ts: int) -> Rates:
        """The conversion rates as of ``ts``: the latest ones, unless a price after ``ts`` moved them."""
        self._fresh()
        if all(raw[0] <= ts for raw in self._raw.values()):
            return self.rates
        rates = Rates((s, r.base, r.quote) for s, r in self.rules.items())
        for symbol in self._raw:
            quote = self._quote_at(symbol, ts)
            rates.update(symbol, quote.bid, quote.ask)
        return rates

    def _quote_at(self, symbol: str, ts: int) -> _Quote:
        """The symbol's exact price as of ``ts`` (the last at or before it; none that old: the oldest kept, the nearest)."""
        latest = self._raw[symbol]
        if latest[0] > ts:
            recent = self._recent.get(symbol)
            raw = self._price_at(symbol, ts) or (recent[0] if recent else latest)
            if raw is not latest:
                return self._exact(symbol, raw)
        quote = self.quote(symbol)
        assert quote is not None
        return quote

    def _fill(self, order: _Order, ts: int, bid: Decimal, ask: Decimal, rates: Rates | None = None) -> None:
        self._fresh()
        rules = self.rules[order.symbol]
        lots = order.quantity - order.filled
        partial = self.params.partial_fills
        if partial is not None:
            lots = min(lots, _slice(rules, dec(partial.max_lots)))
        expected = ask if order.side == "buy" else bid
        price = self.params.slippage.price(rules, order.side, expected, lots)
        order.deals += 1
        deal = self._execute(order.symbol, order.side, lots, price, ts, order.ticket, order.client_order_id, "client",
                             deal_ticket(order.client_order_id, order.deals), price - expected, rates)  # fmt: skip
        self._set_levels(order, deal.entry)
        order.filled += lots
        order.status = "filled" if order.filled == order.quantity else "partially_filled"
        if order.status == "partially_filled" and partial is not None and partial.rest == "cancel":
            order.status, order.retcode = "cancelled", rc.DONE_PARTIAL
            message = f"filled {order.filled} of {order.quantity} lots; the rest is cancelled"
            self.notices.append(Notice(order.symbol, order.order_id, ts, "partial_fill", message, rc.DONE_PARTIAL, order.filled))
        if not order.working:
            order.done_ts = ts
            self._open[order.symbol].remove(order)
            self._stopped(order)

    def _set_levels(self, order: _Order, entry: str) -> None:
        """The order's levels become its position's when the deal opened, added to or reversed it (a level the order
        does not give stays, unless the position was reversed: the other side's levels mean nothing now)."""
        held = self.positions.get(order.symbol)
        if held is None or entry == "out":
            return
        if entry == "inout":
            held.stop_loss, held.take_profit = order.stop_loss, order.take_profit
            return
        if order.stop_loss is not None:
            held.stop_loss = order.stop_loss
        if order.take_profit is not None:
            held.take_profit = order.take_profit

    def _levels_on_tick(self, symbol: str, raw: Raw) -> None:
        """Close the position at this price (the market: a gap through a level fills beyond it) if it reached a level."""
        held = self.positions.get(symbol)
        if held is None or (held.stop_loss is None and held.take_profit is None):
            return
        quote = self._exact(symbol, raw)
        long = held.position.quantity > 0
        price = quote.bid if long else quote.ask
        reason = _reached(long, held, price, price)
        if reason is not None:
            self._close_at_level(symbol, held, reason, price, raw[0])

    def _levels_on_bar(self, symbol: str, bar: Mapping[str, Any]) -> None:
        """A level inside the bar's range closes the position at the level (the stop first when both are inside, as
        backtesting.py does: the range does not say which came first), one the open is already beyond at the open."""
        held = self.positions.get(symbol)
        if held is None or (held.stop_loss is None and held.take_profit is None) or in_weekend(bar["ts"]):
            return
        long = held.position.quantity > 0
        spread = bar.get("spread_mean")
        side = (lambda q: q.bid) if long else (lambda q: q.ask)
        opening, high, low = (side(self._exact(symbol, (bar["ts"], bar[k], None, spread))) for k in ("open", "high", "low"))
        gapped = _reached(long, held, opening, opening)
        if gapped is not None:
            self._set(symbol, bar["ts"], bar["open"], None, spread)  # the rates of the deal's instant
            self._close_at_level(symbol, held, gapped, opening, bar["ts"])
            return
        reason = _reached(long, held, high, low)
        if reason is not None:
            level = held.stop_loss if reason == "sl" else held.take_profit
            assert level is not None
            self._set(symbol, bar["ts_close"], bar["close"], None, spread)
            self._close_at_level(symbol, held, reason, level, bar["ts_close"])

    def _close_at_level(self, symbol: str, held: _Held, reason: str, price: Decimal, ts: int) -> None:
        long = held.position.quantity > 0
        lots = abs(held.position.quantity)
        self.ticket += 1  # in the tickets: two closes of one instant (a slice reopened and stopped again) differ
        deal = self._execute(symbol, "sell" if long else "buy", lots, price, ts, ticket(reason, symbol, ts, self.ticket), None,
                             reason, ticket(reason, symbol, ts, self.ticket, "deal"), None, self._rates_at(ts))  # fmt: skip
        self.journal.record("event", reason, {"symbol": symbol, "price": price, "deal": deal.ticket})

    def _stopped(self, order: _Order) -> None:
        """Note that ``order`` no longer works, for :meth:`_prune` (which never runs without a history horizon)."""
        if self.history_ms is None:
            return
        self._pushed += 1
        heapq.heappush(self._done, (order.done_ts or order.ts, self._pushed, order))

    def _execute(
        self,
        symbol: str,
        side: str,
        lots: Decimal,
        price: Decimal,
        ts: int,
        order_ticket: int,
        client_id: str | None,
        reason: str,
        deal_ticket: int,
        slippage: Decimal | None = None,
        rates: Rates | None = None,
    ) -> Deal:
        rates = rates or self.rates
        rules = self.rules[symbol]
        self._roll_to(symbol, ts)
        held = self.positions.get(symbol)
        if held is None:
            held = self.positions[symbol] = _Held(Position(rules), order_ticket, ts, rolled=ts, next_roll=self._roll_after(ts))
        before = held.position.quantity
        realized = held.position.apply(side, lots, price)
        after = held.position.quantity
        profit = book(rates.convert(realized, rules.quote, self.currency)) if realized else ZERO
        swap = ZERO
        if before == 0 or (before > 0) == (side == "buy"):
            entry = "in"
        else:  # this deal reduces the position, closes it, or reverses it
            closed = min(abs(before), lots)
            swap = held.swap if closed == abs(before) else book(held.swap * closed / abs(before))
            held.swap -= swap
            entry = "out" if after == 0 or (after > 0) == (before > 0) else "inout"
        notional = rates.convert(rules.units(lots) * price, rules.quote, self.currency)
        commission = book(self.params.commission.amount(lots, notional))
        self.balance += profit + swap - commission
        if after == 0:
            del self.positions[symbol]
        elif entry == "inout":
            held.ticket, held.opened = order_ticket, ts
        self.ticket += 1
        self.revision += 1
        self._estimate = None
        deal = Deal(deal_ticket, order_ticket, client_id, symbol, side, entry, lots, price, ts, commission, swap, profit, reason, slippage)
        bisect.insort(self.deals, deal, key=_deal_ts)
        order = self.orders.get(client_id) if client_id else None
        self.journal.record("event", "deal", deal.to_json(), order.order_id if order else None)
        return deal

    # --- money ----------------------------------------------------------------------

    def _margin(self, symbol: str, quantity: Decimal, rates: Rates | None = None) -> Decimal:
        if quantity == 0:
            return ZERO
        rules = self.rules[symbol]
        return book((rates or self.rates).convert(rules.units(abs(quantity)) / self.leverage, rules.base, self.currency))

    def _total_margin(self, rates: Rates | None = None) -> Decimal:
        return sum((self._margin(s, h.position.quantity, rates) for s, h in self.positions.items()), ZERO)

    def _floating(self, symbol: str, held: _Held, at: int | None = None, rates: Rates | None = None) -> Decimal:
        """The position's P&L at the latest price, or at the price as of ``at`` (converted with ``rates``, those of that time)."""
        quote = self.quotes[symbol] if at is None else self._quote_at(symbol, at)
        rules = self.rules[symbol]
        return book((rates or self.rates).convert(held.position.unrealized(quote.bid, quote.ask), rules.quote, self.currency))

    def _equity(self, at: int | None = None, rates: Rates | None = None) -> Decimal:
        """Balance, floating P&L and accrued swap: at the latest prices, or as of ``at`` with ``rates`` (:meth:`_rates_at`)."""
        return self.balance + sum((self._floating(s, h, at, rates) + h.swap for s, h in self.positions.items()), ZERO)

    def _check_stop_out(self) -> None:
        """Close the worst position while equity < stop_out × margin (exact), after a cheap float estimate.

        Judged at the broker's time (:attr:`now`, the newest price's) on the latest prices, none of
        them later; a closing deal is dated then, whatever the time of the price that set it off.

        Most prices leave the account far from its stop-out level: an estimate in floats, from the
        conversion rates of the last exact check (at most ``ESTIMATE_FOR_MS`` old) and the latest
        marks, skips the exact check while the level is above ``ESTIMATE_MARGIN`` × stop_out. The
        decision itself is always the exact one."""
        ts = self.now
        assert ts is not None
        estimate = self._estimate
        if estimate is not None and ts < estimate[0]:
            level = self._level_estimate(estimate)
            if level is None or level > estimate[1]:
                return
        self._fresh()
        while self.positions:
            try:
                margin = self._total_margin()
                equity = self._equity()
                if margin == 0 or equity >= self.stop_out * margin:
                    self._estimate = self._estimator(ts)
                    return
                worst = min(sorted(self.positions), key=lambda s: self._floating(s, self.positions[s]))
            except MissingRate:
                return
            held = self.positions[worst]
            quote = self.quotes[worst]
            long = held.position.quantity > 0
            lots = abs(held.position.quantity)
            self.ticket += 1
            closing = ticket("stop_out", worst, ts)
            level = equity / margin
            deal = self._execute(worst, "sell" if long else "buy", lots, quote.bid if long else quote.ask, ts, closing, None,
                                 "stop_out", ticket("stop_out", worst, ts, "deal"))  # fmt: skip
            message = (f"stop out: equity {equity} / margin {margin} = {level:.4f} below {self.stop_out}; "
                       f"closed {worst} {lots} lots at {deal.price}")  # fmt: skip
            self.notices.append(Notice(worst, f"stop-out-{closing}", ts, "stop_out", message))
            self.journal.record("event", "stop_out", {"symbol": worst, "equity": equity, "margin": margin, "deal": deal.ticket})

    def _estimator(self, ts: int) -> Estimate:
        """What :meth:`_level_estimate` needs, from the exact state now, and the level it must stay above."""
        rows = []
        for symbol, held in self.positions.items():
            rules = self.rules[symbol]
            pos = held.position
            rows.append((symbol, float(pos.quantity), float(pos.avg_price), float(rules.units(abs(pos.quantity))),
                         float(self.rates.rate(rules.quote, self.currency)), float(self._margin(symbol, pos.quantity))))  # fmt: skip
        swaps = float(sum((h.swap for h in self.positions.values()), ZERO))
        return ts + ESTIMATE_FOR_MS, ESTIMATE_MARGIN * float(self.stop_out), float(self.balance) + swaps, rows

    def _level_estimate(self, estimate: Estimate) -> float | None:
        _, _, equity, rows = estimate
        margin = 0.0
        for symbol, quantity, avg, units, to_account, symbol_margin in rows:
            _, bid, ask, spread = self._raw[symbol]
            if quantity > 0:
                equity += (float(bid) - avg) * units * to_account
            else:
                offer = float(ask) if ask is not None else float(bid) + float(spread or 0.0)
                equity += (avg - offer) * units * to_account
            margin += symbol_margin
        return equity / margin if margin else None

    # --- queries ----------------------------------------------------------------------

    async def poll(self, since_ms: int | None = None) -> list[Deal]:
        if since_ms is None:
            return list(self.deals)
        return self.deals[bisect.bisect_left(self.deals, since_ms, key=_deal_ts) :]

    def account_view(self) -> AccountView:
        self._fresh()
        margin = self._total_margin_safe()
        try:
            equity = self._equity()
        except MissingRate:
            equity = self.balance + sum((h.swap for h in self.positions.values()), ZERO)
        return AccountView(self.currency, self.balance, equity, margin, equity - margin)

    def _total_margin_safe(self) -> Decimal:
        try:
            return self._total_margin()
        except MissingRate:
            return ZERO

    async def state(self, since_ms: int | None, client_order_ids: Iterable[str] = ()) -> BrokerState:
        ids = list(client_order_ids)
        chosen = [self.orders[i] for i in ids if i in self.orders] if ids else [o for o in self.orders.values() if o.working]
        orders = [
            OrderView(o.client_order_id, o.symbol, o.side, o.quantity, o.filled, o.status, str(o.ticket) if o.ticket else None)
            for o in chosen
        ]
        positions = [
            PositionView(s, h.position.quantity, h.position.avg_price, h.swap) for s, h in sorted(self.positions.items())
        ]
        deals = [] if since_ms is None else await self.poll(since_ms)
        return BrokerState(self.account_view(), positions, orders, deals)

    def _prune(self) -> None:
        horizon = self.history_ms
        if horizon is None or self.now is None:
            return
        cutoff = self.now - horizon
        if self.deals and self.deals[0].ts < cutoff:
            self.deals = self.deals[bisect.bisect_left(self.deals, cutoff, key=_deal_ts) :]
        done, orders, kept = self._done, self.orders, []
        while done and done[0][0] < cutoff:
            order = heapq.heappop(done)[2]
            if orders.get(order.client_order_id) is not order:
                continue
            if order.working or (order.done_ts or order.ts) >= cutoff:
                kept.append(order)
            else:
                del orders[order.client_order_id]
        for order in kept:
            self._stopped(order)

    # --- state ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        self._fresh()
        return {
            "version": STATE_VERSION,
            "balance": str(self.balance),
            "ticket": self.ticket,
            "now": self.now,
            "last_roll": self.last_roll,
            "quotes": {s: [q.ts, str(q.bid), str(q.ask)] for s, q in sorted(self.quotes.items())},
            "positions": {s: self._position_json(h) for s, h in sorted(self.positions.items())},
            "orders": [o.to_json() for o in self.orders.values()],
            "deals": [d.to_json() for d in self.deals],
        }

    def _position_json(self, held: _Held) -> dict[str, Any]:
        """``rolled`` only while a roll the broker's time passed is not booked on the position yet (its symbol has had
        no price since): otherwise the broker's ``last_roll`` says the same."""
        out = {"quantity": str(held.position.quantity), "avg_price": str(held.position.avg_price), "swap": str(held.swap),
               "ticket": held.ticket, "opened": held.opened, **_levels_json(held.stop_loss, held.take_profit)}  # fmt: skip
        if self.last_roll is not None and held.rolled < self.last_roll:
            out["rolled"] = held.rolled
        return out

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"paper broker state version {state.get('version')!r}, expected {STATE_VERSION}")
        self.balance = Decimal(state["balance"])
        self.ticket = state["ticket"]
        self.now = state["now"]
        self.last_roll = state["last_roll"]
        self.quotes, self._raw, self._stale, self._estimate, self._recent = {}, {}, set(), None, {}
        for symbol, (ts, bid, ask) in state["quotes"].items():
            if symbol in self.rules:
                self.quotes[symbol] = _Quote(ts, Decimal(bid), Decimal(ask))
                self._raw[symbol] = (ts, Decimal(bid), Decimal(ask), None)
                self.rates.update(symbol, Decimal(bid), Decimal(ask))
        if self.now is not None:
            self._next_roll = self._roll_after(self.now)
            self._next_prune = 0
        self.positions = {}
        for symbol, p in state["positions"].items():
            position = Position(self.rules[symbol], Decimal(p["quantity"]), Decimal(p["avg_price"]))
            rolled = p.get("rolled", self.last_roll if self.last_roll is not None else p["opened"])
            self.positions[symbol] = _Held(position, p["ticket"], p["opened"], Decimal(p["swap"]), rolled, self._roll_after(rolled),
                                           *_levels(p))  # fmt: skip
        self.orders = {o["client_order_id"]: _Order.from_json(o) for o in state["orders"]}
        self._open, self._done = {}, []
        for o in self.orders.values():
            if o.working:
                self._open.setdefault(o.symbol, []).append(o)
            else:
                self._stopped(o)
        self.deals = [Deal.from_json(d) for d in state["deals"]]


def _slice(rules: Rules, max_lots: Decimal) -> Decimal:
    """The most one price fills with partial fills: ``max_lots`` down to the lot step, never below the minimum lot
    (an MT5 server deals no volume off the step)."""
    return max(rules.min_lot, (max_lots / rules.lot_step).to_integral_value(rounding=ROUND_DOWN) * rules.lot_step)


def _check_levels(order: OrderRequest, quote: _Quote) -> None:
    """MT5's rule for a market order's levels (10016 otherwise): a buy's stop below the bid and target above it (a long
    closes at the bid), a sell's stop above the ask and target below it."""
    if order.side == "buy":
        wrong = (order.stop_loss is not None and order.stop_loss >= quote.bid) or (order.take_profit is not None and order.take_profit <= quote.bid)
        against = f"the bid {quote.bid}"
    else:
        wrong = (order.stop_loss is not None and order.stop_loss <= quote.ask) or (order.take_profit is not None and order.take_profit >= quote.ask)
        against = f"the ask {quote.ask}"
    if wrong:
        raise _Refusal(rc.INVALID_STOPS, f"{order.symbol}: invalid stops for a {order.side}: stop loss {order.stop_loss}, "
                                         f"take profit {order.take_profit} against {against}")  # fmt: skip


def _reached(long: bool, held: _Held, high: Decimal, low: Decimal) -> str | None:
    """Which level a range of closing prices reaches ("sl" first, "tp"), or None. A long closes at the bid, a short at
    the ask: ``high`` and ``low`` are those."""
    sl, tp = held.stop_loss, held.take_profit
    if long:
        if sl is not None and low <= sl:
            return "sl"
        if tp is not None and high >= tp:
            return "tp"
    else:
        if sl is not None and high >= sl:
            return "sl"
        if tp is not None and low <= tp:
            return "tp"
    return None


def _deal_ts(deal: Deal) -> int:
    return deal.ts


def _raw_ts(raw: Raw) -> int:
    return raw[0]


def _islice(prices: deque[Raw], start: int) -> Iterator[Raw]:
    for index in range(start, len(prices)):
        yield prices[index]


def _request_payload(order: OrderRequest) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id, "symbol": order.symbol, "side": order.side,
        "quantity": order.quantity, "order_type": order.order_type, "ts": order.ts,
        **_levels_json(order.stop_loss, order.take_profit),
    }  # fmt: skip


def _ack_payload(ack: Ack) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": ack.status.value, "message": ack.message}
    if ack.retcode is not None:
        payload["retcode"] = ack.retcode
        payload["retcode_name"] = rc.name(ack.retcode)
    if ack.broker_order_id is not None:
        payload["broker_order_id"] = ack.broker_order_id
    return payload
