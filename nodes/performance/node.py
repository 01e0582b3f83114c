"""performance-monitoring: the account's equity marked to market, its metrics, its round trips and alerts.

**Money.** Broker fills (``broker.fill.{symbol}``: the money that moved, whatever an order says)
move the same :class:`~nodes.trading.ledger.Ledger` execution-service keeps: netting positions,
realized P&L converted to the account currency when realized and booked to the cent, commission
as the broker charged it. Balance is the account's starting balance plus what was booked less
commission; equity adds the open positions marked at the price that would close them (a tick's
bid/ask; where no tick came within a closed bar, the bar's close and close + its mean spread, as
the paper broker quotes a bar); margin is units × price / the account's leverage. All of it in ``Decimal``; floats only in the
rows and the report. Swap is booked as the broker realizes it (a fill's ``swap``); what it accrued on an open position is in
the broker's equity, not in this one, until the position closes (see :mod:`nodes.trading.ledger`).

**The curve.** Equity is recorded once per ``record_every`` step of event time: the point at step
boundary ``B`` is the account after every price and fill stamped at or before ``B``, written
when the first later event arrives (or a timer passes ``B``), so every symbol's bar closing at
``B`` is in it. A step without any event is recorded all the same when the record timer passes it (a quiet
market, a weekend: the last equity again), so the curve's periods are equal. The first point
is the account before the first event; a final point is written at stop. Drawdown, daily loss
(from the equity of the day's first point, UTC) and the alerts follow each point: an alert fires
when its value crosses the limit and again only after the value has come back within it.

**Metrics** — every one from :mod:`nodes.trading.metrics`, never a second formula, on the daily returns of weekdays
(the weekend's points are in the curve, not in its returns: :data:`~nodes.performance.curve.WEEKDAYS_ONLY`) — are computed
over the curve and the closed round trips for each window every ``metrics_every``, at stop, and
for a ``performance.query`` report (request/reply; the report also counts the account as it is
now, so a report at the end of a run equals the final metrics rows). Round trips:
:mod:`nodes.performance.trips`.

**Restarts.** The snapshot keeps the ledger, the latest prices, open trips, the curve's state
(peak, the day's starting equity, the next step, the alerts' arming) and applied fill ids; the
curve's points and the closed trips are read back from the tables this node writes, between the
curve's start and the snapshot, so a restart loses neither and never takes another run's rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.performance.closed import ClosedTrips
from nodes.performance.curve import WEEKDAYS_ONLY, Curve, sample
from nodes.performance.spec import DAY_MS, PerformanceParams
from nodes.performance.trips import Trip, Trips
from nodes.trading import metrics as M
from nodes.trading.fills import fill_problem, fill_profit, fill_swap, is_number
from nodes.trading.instruments import Rules, dec
from nodes.trading.ledger import Ledger

ZERO = Decimal(0)
ALERTS = ("drawdown_limit", "daily_loss_limit", "low_sharpe")
TRADE_FIELDS = ("trade_id", "order_id", "close_order_id", "symbol", "side", "open_ts", "ts", "volume", "entry_price",
                "exit_price", "pnl", "commission", "swap", "slippage", "holding_s")  # fmt: skip

log = logging.getLogger("fxflow.performance")



def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class PerformanceMonitor(Node[PerformanceParams]):
    state_version = 1
    snapshot_every = "snapshot_every"

    def __init__(self, ctx: Any, params: PerformanceParams) -> None:
        super().__init__(ctx, params)
        self.rules = Rules.table(ctx.instruments, ctx.service)
        self.currency = ctx.account.currency
        self.initial = dec(ctx.account.balance)
        self.leverage = dec(ctx.account.leverage)
        self._record_ms = parse_ms(params.record_every) or 60_000
        self._keep_ms = parse_ms(params.keep_fill_ids) or 0
        self._windows = [(w, None if w == "all" else parse_ms(w)) for w in params.windows]
        self._fresh()

    def _fresh(self) -> None:
        self.ledger = Ledger(self.rules, self.currency)
        self.trips = Trips(self.rules)
        self.curve = Curve()
        self.closed = ClosedTrips()
        """Finished round trips (trade_analysis rows), in closing order."""
        self.fill_ids: dict[str, int] = {}
        self.mark_ts: dict[str, int] = {}
        self.tick_ts: dict[str, int] = {}
        """The latest tick per symbol: a bar whose span holds one marks nothing (the tick's ask is the real one)."""
        self.last_ts: int | None = None
        """The latest event time seen (a price or a fill)."""
        self.next_record: int | None = None
        """The step boundary the next point is due at (None: nothing seen yet)."""
        self.started_at: int | None = None
        self.peak: float | None = None
        self.day: int | None = None
        self.day_start: float | None = None
        self.armed = dict.fromkeys(ALERTS, True)
        self._reload: tuple[int, int, int, int] | None = None
        self._waiting = False
        self._unpriced: set[str] = set()
        self._metrics_at: tuple[int, int, int] | None = None

    # --- state ----------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "ledger": self.ledger.to_json(),
            "quotes": {s: list(q) for s, q in self.ledger.quotes.items()},
            "mark_ts": self.mark_ts,
            "tick_ts": self.tick_ts,
            "trips": self.trips.to_json(),
            "fill_ids": self.fill_ids,
            "last_ts": self.last_ts,
            "next_record": self.next_record,
            "started_at": self.started_at,
            "peak": self.peak,
            "day": self.day,
            "day_start": self.day_start,
            "armed": self.armed,
            "last_point": self.curve.last(),
            "points": len(self.curve),
            "trades": len(self.closed),
        }

    def restore(self, state: Any) -> None:
        try:
            self.ledger.load(state["ledger"])
            self.mark_ts = {s: int(t) for s, t in state["mark_ts"].items()}
            for symbol, (bid, ask) in state["quotes"].items():
                if symbol in self.rules:
                    self.ledger.quote(symbol, bid, ask, self.mark_ts.get(symbol))
            self.trips.load(state["trips"])
            self.tick_ts = {s: int(t) for s, t in state["tick_ts"].items()}
            self.fill_ids = {k: int(v) for k, v in state["fill_ids"].items()}
            self.last_ts, self.next_record, self.started_at = state["last_ts"], state["next_record"], state["started_at"]
            self.peak, self.day, self.day_start = state["peak"], state["day"], state["day_start"]
            self.armed = {k: bool(state["armed"].get(k, True)) for k in ALERTS}
            last = state["last_point"]
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            log.error("%s: the saved state is unreadable (%s); starting from the opening balance", self.ctx.service, exc)
            self._fresh()
            return
        self._waiting = any(e.unbooked for e in self.ledger.entries.values())
        if last is not None and self.started_at is not None:
            self.curve.append(int(last[0]), float(last[1]), float(last[2]))
            self._reload = (self.started_at, int(last[0]), int(state["points"]), int(state["trades"]))

    async def on_start(self) -> None:
        if self._reload is not None:
            await self._read_back(*self._reload)

    async def _read_back(self, start: int, end: int, points: int, trades: int) -> None:
        """The curve's points and the closed trips from before the restart, from the tables (see the module docstring)."""
        table = self.params.equity_table
        if table and points > 1:
            try:
                rows = await self.ctx.table(table).query(
                    "SELECT ts, equity, balance FROM {table} FINAL WHERE ts >= {start:Int64} AND ts <= {end:Int64} ORDER BY ts",
                    {"start": start, "end": end},
                )
            except Exception as exc:
                log.error("%s: cannot read %s (%s: %s); the curve restarts from its last point", self.ctx.service, table,
                          type(exc).__name__, exc)  # fmt: skip
            else:
                if rows and int(rows[-1]["ts"]) == end:
                    self.curve = Curve()
                    self.curve.load(rows)
                if len(self.curve) != points:
                    log.warning("%s: %d of the curve's %d points read back from %s", self.ctx.service, len(self.curve), points,
                                table)  # fmt: skip
        table = self.params.trades_table
        if table and trades:
            last_ts = self.last_ts if self.last_ts is not None else end
            try:
                rows = await self.ctx.table(table).query(
                    f"SELECT {', '.join(TRADE_FIELDS)} FROM {{table}} FINAL WHERE ts >= {{start:Int64}} AND ts <= {{end:Int64}} "
                    "ORDER BY ts, trade_id",
                    {"start": start, "end": last_ts},
                )
            except Exception as exc:
                log.error("%s: cannot read %s (%s: %s); metrics count only the trades closed from now on", self.ctx.service,
                          table, type(exc).__name__, exc)  # fmt: skip
            else:
                self.closed = ClosedTrips(dict(r) for r in rows)
                if len(self.closed) != trades:
                    log.warning("%s: %d of %d closed trades read back from %s", self.ctx.service, len(self.closed), trades, table)

    # --- prices ---------------------------------------------------------------------------

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        if not self.params.use_ticks:
            return
        symbol, bid, ask, ts = tick.get("symbol"), tick.get("bid"), tick.get("ask"), tick.get("ts")
        if symbol in self.rules and is_number(bid) and is_number(ask) and isinstance(ts, int):
            self.tick_ts[symbol] = ts
            await self._mark(symbol, ts, bid, ask)

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        if bar.get("timeframe") != self.params.mark_timeframe or bar.get("complete") is False:
            return
        symbol, close, ts = bar.get("symbol"), bar.get("close"), bar.get("ts_close")
        if symbol not in self.rules or not is_number(close) or not isinstance(ts, int):
            return
        if self.tick_ts.get(symbol, -1) >= bar.get("ts", ts):  # a quote within the bar says more: its own ask
            await self._mark(symbol, ts, None, None)
            return
        spread = bar.get("spread_mean")
        ask = float(self.rules[symbol].price(dec(close) + dec(spread))) if is_number(spread) else close
        await self._mark(symbol, ts, close, ask)

    async def _mark(self, symbol: str, ts: int, bid: float | None, ask: float | None) -> None:
        if self.next_record is None or ts > self.next_record:
            await self._advance(ts)
        if bid is not None and ask is not None and ts >= self.mark_ts.get(symbol, ts):  # an older price moves nothing
            self.ledger.quote(symbol, bid, ask, ts)
            self.mark_ts[symbol] = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        if self._waiting:
            await self._publish_trades(self._book_waiting())

    # --- fills ----------------------------------------------------------------------------

    @handles("fills")
    async def on_fill(self, fill: dict[str, Any], origin: str) -> None:
        fill_id = fill.get("fill_id")
        if isinstance(fill_id, str) and fill_id in self.fill_ids:
            return
        problem = fill_problem(fill, self.rules)
        if problem is not None:
            await self.ctx.dead_letter(problem, dict(fill), origin, contract="fill.v1")
            return
        ts = fill["ts"]
        if self.next_record is None or ts > self.next_record:
            await self._advance(ts)
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        self.fill_ids[fill_id] = ts
        symbol, side = fill["symbol"], fill["side"]
        lots, price, commission = dec(fill["quantity"]), dec(fill["price"]), dec(fill["commission"])
        position = self.ledger.entry(symbol).position
        held, avg = position.quantity, position.avg_price
        applied = self.ledger.fill(symbol, side, lots, price, commission, ts, swap=fill_swap(fill), profit=fill_profit(fill))
        self.trips.on_fill(fill, held, avg, lots, price, commission, applied.realized)
        if applied.realized:
            if applied.booked is not None:
                self.trips.book(symbol, applied.booked)
            else:
                self._waiting = True
                if symbol not in self._unpriced and self.ledger.entries[symbol].unbooked_ts is None:  # not a late price
                    self._unpriced.add(symbol)
                    log.warning("%s: %s: no price yet to convert its P&L to %s; booked when one arrives",
                                self.ctx.service, symbol, self.currency)  # fmt: skip
        await self._publish_trades(self._book_waiting() if self._waiting else self.trips.finished())

    def _book_waiting(self) -> list[Trip]:
        """Book what waited for a price where one has come; the round trips that finished."""
        before = {s: e.realized for s, e in self.ledger.entries.items() if e.unbooked}
        for symbol in self.ledger.book_waiting():
            self.trips.book(symbol, self.ledger.entries[symbol].realized - before[symbol])
            self._unpriced.discard(symbol)
        self._waiting = any(e.unbooked for e in self.ledger.entries.values())
        return self.trips.finished()

    async def _publish_trades(self, finished: list[Trip]) -> None:
        for trip in finished:
            row = trip.row()
            self.closed.append(row)
            await self.ctx.publish("trades", row)

    # --- the curve ------------------------------------------------------------------------

    def _value(self) -> tuple[Decimal, Decimal, Decimal, Decimal, int]:
        """Equity, balance, unrealized P&L, margin used and open positions, now (exact)."""
        balance, unrealized, margin, positions = self.initial, ZERO, ZERO, 0
        ledger = self.ledger
        for symbol, entry in ledger.entries.items():
            balance += entry.net
            if entry.position.flat:
                continue
            positions += 1
            ledger.mark(symbol)  # no quote or rate yet: its last mark stands (zero before any)
            unrealized += entry.unrealized
            used = ledger.margin(symbol, self.leverage)
            if used is not None:
                margin += used
        return balance + unrealized, balance, unrealized, margin, positions

    async def _advance(self, ts: int) -> None:
        """Record the step boundary before ``ts`` if it is due (an event at ``ts`` comes after it)."""
        boundary = (ts - 1) // self._record_ms * self._record_ms
        if self.next_record is None or boundary >= self.next_record:
            await self._record(boundary)

    async def _record(self, ts: int) -> None:
        equity_d, balance_d, unrealized, margin, positions = self._value()
        equity, balance = float(equity_d), float(balance_d)
        self.curve.append(ts, equity, balance)
        self.next_record = (ts // self._record_ms + 1) * self._record_ms
        if self.started_at is None:
            self.started_at = ts
        if self.day != ts // DAY_MS:
            self.day, self.day_start = ts // DAY_MS, equity
        if self.peak is None or equity > self.peak:
            self.peak = equity
        drawdown = M.drawdown_from(self.peak, equity)
        await self.ctx.publish("equity", {
            "ts": ts, "equity": equity, "balance": balance, "margin_used": float(margin), "unrealized": float(unrealized),
            "drawdown": drawdown, "open_positions": positions,
        })  # fmt: skip
        limit = self.params.drawdown_limit
        if limit is not None and self._fires("drawdown_limit", drawdown > limit):
            message = f"drawdown {drawdown:.2%} from the equity peak {self.peak:,.2f} {self.currency} is beyond {limit:.2%}"
            await self._publish_alert("drawdown_limit", ts, drawdown, limit, message)
        limit = self.params.daily_loss_limit
        if limit is not None and self.day_start:
            loss = (self.day_start - equity) / self.day_start
            if self._fires("daily_loss_limit", loss > limit):
                message = (f"the day's loss {loss:.2%} of its starting equity {self.day_start:,.2f} {self.currency} is beyond "
                           f"{limit:.2%}")  # fmt: skip
                await self._publish_alert("daily_loss_limit", ts, loss, limit, message)

    def _fires(self, kind: str, breached: bool) -> bool:
        """Once per breach: True when ``breached`` and armed (disarming it); a value back within the limit re-arms.

        Asked before the alert's message is made: a curve point almost never fires one."""
        if not breached:
            self.armed[kind] = True
            return False
        if not self.armed[kind]:
            return False
        self.armed[kind] = False
        return True

    async def _publish_alert(self, kind: str, ts: int, value: float, threshold: float, message: str) -> None:
        log.warning("%s: %s", self.ctx.service, message)
        await self.ctx.publish("alerts", {
            "alert_id": f"{self.ctx.service}-{kind}-{ts}", "ts": ts, "source": self.ctx.service, "type": kind,
            "severity": "warning" if kind == "low_sharpe" else "critical", "message": message,
            "value": round(value, 6), "threshold": threshold,
        })  # fmt: skip

    @every("record_every")
    async def on_record_timer(self) -> None:
        """A step with no event after it is recorded all the same (a quiet market, the end of a feed)."""
        if self.next_record is not None:
            await self._advance(self.ctx.clock.now_ms())

    # --- metrics --------------------------------------------------------------------------

    def _now(self) -> int:
        now = self.ctx.clock.now_ms()
        return max(now, self.last_ts) if self.last_ts is not None else now

    def _summary(self, ts: np.ndarray, equity: np.ndarray, trades: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        return M.summary(ts, equity, [t["pnl"] for t in trades], weekdays_only=WEEKDAYS_ONLY)

    @every("metrics_every")
    async def on_metrics_timer(self) -> None:
        if self.next_record is None:
            return
        await self._advance(self.ctx.clock.now_ms())
        await self._write_metrics(self._now())
        if self._keep_ms and self.last_ts is not None:
            before = self.last_ts - self._keep_ms
            self.fill_ids = {k: t for k, t in self.fill_ids.items() if t >= before}

    async def _write_metrics(self, now: int) -> None:
        key = (now, len(self.curve), len(self.closed))
        if self._metrics_at == key or not len(self.curve):
            return
        self._metrics_at = key
        rows: list[dict[str, Any]] = []
        for window, span in self._windows:
            if span is None:  # the whole curve and every trip: kept up to date as they grew
                values = M.running_summary(self.curve.running, self.closed.pnls())
                by_symbol = self.closed.pnl_by_symbol()
            else:
                trades = self.closed.since(now - span)
                values = self._summary(*self.curve.since(now - span), trades)
                by_symbol = M.pnl_by_symbol(trades)
            values.update({f"pnl.{s}": v for s, v in by_symbol.items()})
            rows += [{"ts": now, "name": n, "window": window, "value": v} for n, v in values.items() if math.isfinite(v)]
        for row in rows:
            await self.ctx.publish("metrics", row)
        await self._check_sharpe(now)

    async def _check_sharpe(self, now: int) -> None:
        """low_sharpe on the whole curve, once it has ``low_sharpe_min_days`` daily returns."""
        limit = self.params.low_sharpe
        if limit is None:
            return
        returns = self.curve.running.returns()
        sharpe = M.sharpe(returns)
        if len(returns) < self.params.low_sharpe_min_days or not math.isfinite(sharpe):
            return
        if self._fires("low_sharpe", sharpe < limit):
            await self._publish_alert("low_sharpe", now, sharpe, limit, f"the Sharpe ratio of the equity curve is {sharpe:.2f}, below {limit:g}")

    async def on_stop(self) -> None:
        """A final point (the account after the last event) and a final set of metrics."""
        if self.last_ts is None:
            return
        last = self.curve.last()
        if last is None or self.last_ts > last[0]:
            await self._record(self.last_ts)
        await self._write_metrics(self._now())

    # --- the run's headline (fxrun's progress and summary) ---------------------------------

    def headline(self, final: bool = False) -> dict[str, Any] | None:
        """Trades and equity while the run goes on (the curve's last point: nothing is marked here); at its end
        the P&L since the opening balance, the Sharpe ratio and the maximum drawdown of the whole curve."""
        last = self.curve.last()
        if last is None:
            return None
        money = f"{{:,.2f}} {self.currency}".format
        if not final:
            return {"trades": len(self.closed), "equity": money(last[1])}
        ts, equity, _ = self.curve.arrays()
        values = self._summary(ts, equity, self.closed)
        pnl = last[1] - float(self.initial)
        sharpe = values["sharpe"]
        return {
            "trades": len(self.closed),
            "P&L": f"{pnl:+,.2f} {self.currency} ({values['total_return']:+.2%})",
            "Sharpe": f"{sharpe:.2f}" if math.isfinite(sharpe) else "n/a (from daily returns: needs 3 weekdays or more)",
            "max drawdown": f"{values['max_drawdown']:.2%}",
            "win rate": f"{values['win_rate']:.0%}" if math.isfinite(values["win_rate"]) else None,
            "equity": money(last[1]),
        }

    # --- the report -----------------------------------------------------------------------

    @handles("query")
    async def on_query(self, query: dict[str, Any]) -> dict[str, Any]:
        """A performance_report.v1: the account now, the metrics of the whole curve (with the account now as its last
        point), the curve (at most ``curve_points`` points) and the closed round trips."""
        equity, balance, _, margin, positions = self._value()
        current = (self.last_ts, float(equity), float(balance)) if self.last_ts is not None else None
        ts, eq, bal = self.curve.arrays(current)
        metrics = {k: _finite(v) for k, v in self._summary(ts, eq, self.closed).items()}
        chosen = sample(len(ts), query.get("curve_points"))
        return {
            "ts": self._now(),
            "currency": self.currency,
            "balance": float(balance),
            "equity": float(equity),
            "margin": float(margin),
            "open_positions": positions,
            "metrics": metrics,
            "equity_curve": [{"ts": int(ts[i]), "equity": float(eq[i]), "balance": float(bal[i])} for i in chosen],
            "trades": [
                {"symbol": t["symbol"], "side": t["side"], "open_ts": t["open_ts"], "close_ts": t["ts"], "volume": t["volume"],
                 "entry_price": t["entry_price"], "exit_price": t["exit_price"], "pnl": t["pnl"], "commission": t["commission"],
                 "swap": t.get("swap", 0.0)}
                for t in self.closed
            ],  # fmt: skip
            "pnl_by_symbol": self.closed.pnl_by_symbol(),
        }
