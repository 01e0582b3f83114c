"""performance-monitoring through the real runtime (demo profile: in-process bus, embedded ClickHouse, simulated clock).

Scripted fills and prices go in; the equity curve, the metrics, the round trips and the alerts that come out are
checked against values computed here by hand (the account after each event) and with pandas (the curve, daily
returns, ratios, drawdown), never with the node's own code.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from framework.testing import contracts, load, make_runtime, query, recording_bus
from framework.topology.model import Instrument
from nodes.trading.instruments import Rules
from nodes.trading.ledger import Ledger

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday
SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
SERVICE = "performance-monitoring"
PAIRS = "pairs=[EURUSD,USDJPY,EURJPY,XAUUSD]"


def _params(**params: Any) -> list[str]:
    return [f"++topology.services.{SERVICE}.params.{k}={'null' if v is None else v}" for k, v in params.items()]


class Run:
    def __init__(self, data: Path, **params: Any) -> None:
        self.data, self.params = data, {"snapshot_every": "1d", **params}  # saved at stop: a file per simulated minute is slow

    async def __aenter__(self) -> Run:
        self.bus, self.events = await recording_bus("performance.alert.>", "deadletter.>")
        loaded = load(self.data, PAIRS, *_params(**self.params))
        self.rt = make_runtime(loaded, self.data, pubsub=self.bus, only=[SERVICE])
        await self.rt.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.rt.stop()

    async def send(self, ts: int, subject: str, message: dict[str, Any]) -> None:
        await self.rt.clock.wait_until(ts)
        await self.bus.publish(subject, message)

    async def feed(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        for ts, subject, message in events:
            await self.send(ts, subject, message)

    async def report(self, **extra: Any) -> dict[str, Any]:
        return await self.bus.request("performance.query", {"query": "report", "ts": self.rt.clock.now_ms(), **extra})

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [p for s, p in self.events if s == f"performance.alert.{kind}"]

    def dead(self) -> list[dict[str, Any]]:
        return [p for s, p in self.events if s.startswith("deadletter.")]


def bar(symbol: str, ts_close: int, close: float, spread: float | None = 0.0001) -> tuple[int, str, dict[str, Any]]:
    message = {"symbol": symbol, "timeframe": "1m", "ts": ts_close - MIN, "ts_close": ts_close, "open": close, "high": close,
               "low": close, "close": close, "volume": 1.0, "tick_count": 1, "spread_mean": spread, "spread_min": spread,
               "spread_max": spread, "source": "test"}  # fmt: skip
    return ts_close, f"bars.{symbol}.1m", message


def tick(symbol: str, ts: int, bid: float, ask: float) -> tuple[int, str, dict[str, Any]]:
    return ts, f"ticks.{symbol}", {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def fill(fill_id: str, symbol: str, side: str, quantity: float, price: float, ts: int, commission: float = 0.0,
         **extra: Any) -> tuple[int, str, dict[str, Any]]:  # fmt: skip
    message = {"fill_id": fill_id, "order_id": f"o-{fill_id}", "symbol": symbol, "side": side, "quantity": quantity,
               "price": price, "ts": ts, "commission": commission, **extra}  # fmt: skip
    return ts, f"broker.fill.{symbol}", message


# --------------------------------------------------------------------------- a scripted account over four days

D1, D2, D3 = T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY
SCENARIO = [
    bar("EURUSD", T0 + MIN, 1.10000),
    fill("f1", "EURUSD", "buy", 1.0, 1.10010, T0 + MIN + 5 * SEC, 3.5, slippage=0.00002),
    bar("EURUSD", T0 + 2 * HOUR, 1.10200),
    bar("EURUSD", D1 + HOUR, 1.09800),
    fill("f2", "EURUSD", "sell", 2.0, 1.09800, D1 + HOUR + 5 * SEC, 7.0),
    bar("EURUSD", D1 + 5 * HOUR, 1.09500),
    bar("EURUSD", D2 + HOUR, 1.09000),
    fill("f3", "EURUSD", "buy", 1.0, 1.09010, D2 + HOUR + 5 * SEC, 3.5, slippage=-0.00001),
    bar("EURUSD", D3 + HOUR, 1.09100),
]
# The account after each event, by hand: equity, balance, unrealized, margin used, open positions. A bar's ask is its
# close + its spread (0.0001); a long is marked at the bid, a short at the ask; margin = 100,000 × mid / leverage 30.
STATES = [
    ("100000", "100000", "0", "0", 0),  # a price, nothing open
    ("99986.50", "99996.50", "-10.00", "3666.83", 1),  # long 1 @ 1.10010, commission 3.50; bid 1.10000; 110,005 / 30
    ("100186.50", "99996.50", "190.00", "3673.50", 1),  # bid 1.10200: (1.10200 − 1.10010) × 100,000; 110,205 / 30
    ("99786.50", "99996.50", "-210.00", "3660.17", 1),  # bid 1.09800; 109,805 / 30 = 3660.1666…
    ("99769.50", "99779.50", "-10.00", "3660.17", 1),  # sold 2: −210 realized, commission 7; short 1 @ 1.09800, ask 1.09810
    ("100069.50", "99779.50", "290.00", "3650.17", 1),  # ask 1.09510: (1.09800 − 1.09510) × 100,000
    ("100569.50", "99779.50", "790.00", "3633.50", 1),  # ask 1.09010
    ("100566.00", "100566.00", "0", "0", 0),  # bought 1 @ 1.09010: +790 realized, commission 3.50
    ("100566.00", "100566.00", "0", "0", 0),
]
TRADES = [  # by hand: P&L after commission (the 7.00 of f2 is shared by lots: 3.50 closes, 3.50 opens)
    {"trade_id": "f1", "order_id": "o-f1", "close_order_id": "o-f2", "symbol": "EURUSD", "side": "buy",
     "open_ts": T0 + MIN + 5 * SEC, "ts": D1 + HOUR + 5 * SEC, "volume": 1.0, "entry_price": 1.1001, "exit_price": 1.098,
     "pnl": -217.0, "commission": 7.0, "swap": 0.0, "slippage": 0.2, "holding_s": (D1 + HOUR - T0 - MIN) / 1000},
    {"trade_id": "f2", "order_id": "o-f2", "close_order_id": "o-f3", "symbol": "EURUSD", "side": "sell",
     "open_ts": D1 + HOUR + 5 * SEC, "ts": D2 + HOUR + 5 * SEC, "volume": 1.0, "entry_price": 1.098, "exit_price": 1.0901,
     "pnl": 783.0, "commission": 7.0, "swap": 0.0, "slippage": -0.1, "holding_s": DAY / 1000},
]  # fmt: skip
LIMITS = {"drawdown_limit": 0.003, "daily_loss_limit": 0.0035, "low_sharpe": None}


def expected_curve(points: np.ndarray) -> pd.DataFrame:
    """The account at each of ``points`` (ms): as left by the last event at or before it."""
    times = np.array([ts for ts, _, _ in SCENARIO])
    rows = []
    for ts in points:
        i = int(np.searchsorted(times, ts, side="right")) - 1
        equity, balance, unrealized, margin, positions = STATES[i] if i >= 0 else ("100000", "100000", "0", "0", 0)
        rows.append({"ts": int(ts), "equity": float(Decimal(equity)), "balance": float(Decimal(balance)),
                     "unrealized": float(Decimal(unrealized)), "margin_used": float(Decimal(margin)), "open_positions": positions})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["drawdown"] = 1 - frame["equity"] / frame["equity"].cummax()
    return frame


def minute_curve() -> pd.DataFrame:
    """Every minute from the one before the first event to the last event (a timer records the quiet minutes)."""
    return expected_curve(np.arange(T0, D3 + HOUR + 1, MIN))


def expected_metrics(curve: pd.DataFrame, pnls: list[float]) -> dict[str, float]:
    """The 'all' window by pandas and by hand: daily returns from the last point of each UTC day."""
    equity = pd.Series(curve["equity"].to_numpy(), index=pd.to_datetime(curve["ts"], unit="ms"))
    returns = equity.resample("D").last().pct_change().dropna()
    annual = float((1 + returns).prod() ** (252 / len(returns)) - 1)
    max_dd = float((1 - equity / equity.cummax()).max())
    wins, losses = [p for p in pnls if p > 0], [p for p in pnls if p < 0]
    return {
        "equity": float(equity.iloc[-1]),
        "total_return": float(equity.iloc[-1] / equity.iloc[0] - 1),
        "annual_return": annual,
        "sharpe": float(returns.mean() / returns.std(ddof=1) * math.sqrt(252)),
        "sortino": float(returns.mean() / math.sqrt((returns.clip(upper=0) ** 2).mean()) * math.sqrt(252)),
        "calmar": annual / max_dd,
        "max_drawdown": max_dd,
        # the peak 100,186.50 last held at D1 00:59, regained at D2 01:00 (100,569.50)
        "max_drawdown_duration_ms": float(D2 + HOUR - (D1 + HOUR - MIN)),
        "current_drawdown": float(1 - equity.iloc[-1] / equity.max()),
        "trades": float(len(pnls)),
        "win_rate": len(wins) / len(pnls),
        "profit_factor": sum(wins) / -sum(losses),
        "expectancy": sum(pnls) / len(pnls),
        "pnl.EURUSD": sum(pnls),
    }


async def _rows(data: Path) -> tuple[pd.DataFrame, dict[str, float], list[dict[str, Any]]]:
    curve = pd.DataFrame(await query(data, "SELECT ts, equity, balance, unrealized, margin_used, open_positions, drawdown "
                                           "FROM portfolio_value FINAL ORDER BY ts"))  # fmt: skip
    last = await query(data, "SELECT max(ts) AS ts FROM performance_metrics")
    rows = await query(data, f"SELECT name, value FROM performance_metrics FINAL WHERE window = 'all' AND ts = {last[0]['ts']}")
    trades = await query(data, "SELECT * FROM trade_analysis FINAL ORDER BY ts")
    return curve, {r["name"]: r["value"] for r in rows}, trades


def _assert_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


async def test_equity_drawdown_trades_and_metrics_of_a_scripted_account(tmp_path: Path) -> None:
    async with Run(tmp_path, **LIMITS) as run:
        await run.feed(SCENARIO)
        report = await run.report(curve_points=50)
        assert not run.dead()
    curve, metrics, trades = await _rows(tmp_path)
    want = minute_curve()
    assert len(curve) == len(want) == 3 * 1440 + 61
    pd.testing.assert_frame_equal(curve[want.columns], want, check_dtype=False, rtol=0, atol=1e-12)
    assert trades == TRADES
    _assert_metrics(metrics, expected_metrics(want, [t["pnl"] for t in TRADES]))

    [drawdown] = run.alerts("drawdown_limit")  # once, though the fall lasted four hours
    assert drawdown["ts"] == D1 + HOUR and drawdown["value"] == pytest.approx(1 - 99786.5 / 100186.5, abs=1e-6)
    [daily] = run.alerts("daily_loss_limit")  # from D1's starting equity, 100,186.50
    assert daily["ts"] == D1 + HOUR and daily["value"] == pytest.approx((100186.5 - 99786.5) / 100186.5, abs=1e-6)
    assert daily["severity"] == "critical" and daily["threshold"] == 0.0035

    assert contracts().resolve("performance_report.v1").validate(report) is None
    assert (report["balance"], report["equity"], report["margin"], report["open_positions"]) == (100566.0, 100566.0, 0.0, 0)
    assert {k: v for k, v in report["metrics"].items() if v is not None} == {k: metrics[k] for k in report["metrics"] if k in metrics}
    assert len(report["equity_curve"]) <= 50
    assert report["equity_curve"][0] == {"ts": T0, "equity": 100000.0, "balance": 100000.0}
    assert report["equity_curve"][-1] == {"ts": D3 + HOUR, "equity": 100566.0, "balance": 100566.0}
    assert [(t["side"], t["open_ts"], t["close_ts"], t["volume"], t["entry_price"], t["exit_price"], t["pnl"], t["commission"])
            for t in report["trades"]] == [(t["side"], t["open_ts"], t["ts"], t["volume"], t["entry_price"], t["exit_price"],
                                            t["pnl"], t["commission"]) for t in TRADES]  # fmt: skip
    assert report["pnl_by_symbol"] == {"EURUSD": 566.0}


async def test_a_restart_keeps_the_curve_open_trades_peak_and_alerts(tmp_path: Path) -> None:
    split = 5  # stopped after f2: a short trip open, the drawdown and the day's loss beyond their limits
    async with Run(tmp_path, **LIMITS) as run:
        await run.feed(SCENARIO[:split])
    assert (tmp_path / "services" / SERVICE / "state.json").exists()
    async with Run(tmp_path, **LIMITS) as again:
        await again.feed(SCENARIO[split:])
        report = await again.report()
    curve, metrics, trades = await _rows(tmp_path)
    # the second process has no timer before its first event: the quiet minutes in between have no point; the first
    # process's last point is the account after its last event (f2 at D1 01:00:05)
    want = expected_curve(curve["ts"].to_numpy())
    pd.testing.assert_frame_equal(curve[want.columns], want, check_dtype=False, rtol=0, atol=1e-12)
    assert set(curve["ts"]) >= {D1 + HOUR + 5 * SEC, D1 + 5 * HOUR, D2 + HOUR - MIN, D2 + HOUR, D3 + HOUR}
    assert trades == TRADES  # the short trip opened before the restart closed after it
    _assert_metrics(metrics, expected_metrics(minute_curve(), [t["pnl"] for t in TRADES]))
    assert len(run.alerts("drawdown_limit")) == 1 and not again.alerts("drawdown_limit")  # still the same breach
    assert len(report["equity_curve"]) == len(curve)


# --------------------------------------------------------------------------- money in other currencies


async def test_jpy_and_gold_pnl_in_the_account_currency_and_a_fill_with_no_price_yet(tmp_path: Path) -> None:
    async with Run(tmp_path) as run:
        first = fill("e1", "EURJPY", "buy", 1.0, 160.000, T0 + 10 * SEC, 4.0)
        await run.feed([first, first])  # no EURJPY, no USDJPY price yet; delivered twice: counted once
        await run.feed([fill("e2", "EURJPY", "sell", 1.0, 160.500, T0 + 20 * SEC, 4.0)])  # 50,000 JPY wait for a rate
        node = run.rt.hosts[SERVICE].node
        assert not node.closed
        await run.feed([
            tick("USDJPY", T0 + 30 * SEC, 149.990, 150.010),  # mid 150.000: 50,000 / 150 = 333.33 USD
            tick("USDJPY", T0 + 40 * SEC, 150.490, 150.510),
            fill("u1", "USDJPY", "buy", 1.0, 150.510, T0 + 50 * SEC),
            tick("USDJPY", T0 + 70 * SEC, 150.990, 151.010),
            tick("USDJPY", T0 + 125 * SEC, 151.490, 151.510),
            # dated before the last price (a broker reporting late): 48,000 JPY at the mid of its time, 151.000
            # (317.8807… USD), not at the latest (151.500: 316.83)
            fill("u2", "USDJPY", "sell", 1.0, 150.990, T0 + 120 * SEC),
            tick("XAUUSD", T0 + 140 * SEC, 2650.00, 2650.50),
            fill("x1", "XAUUSD", "buy", 0.1, 2650.50, T0 + 150 * SEC, 1.0),  # 0.1 lot = 10 oz
            tick("XAUUSD", T0 + 170 * SEC, 2662.35, 2662.85),
            bar("XAUUSD", T0 + 3 * MIN, 2662.35, spread=1.0),  # its span holds the tick: the tick's ask stands, not 2663.35
        ])  # fmt: skip
        report = await run.report()
        assert contracts().resolve("performance_report.v1").validate(report) is None
        # balance 100,000 + 333.33 − 8 + 317.88 − 1; gold marked at the bid: (2662.35 − 2650.50) × 10 = 118.50;
        # margin 10 oz × mid 2662.60 / 30 = 887.5333…
        assert (report["balance"], report["equity"], report["margin"], report["open_positions"]) == (100642.21, 100760.71, 887.53, 1)
        assert report["pnl_by_symbol"] == {"EURJPY": 325.33, "USDJPY": 317.88}
        await run.feed([fill("x2", "XAUUSD", "sell", 0.1, 2662.35, T0 + 180 * SEC, 1.0)])
        _, _, bad = fill("bad", "ABCDEF", "sell", 0.1, 1.0, T0 + 190 * SEC)
        await run.send(T0 + 190 * SEC, "broker.fill.EURUSD", bad)
    [dead] = run.dead()
    assert "unknown symbol 'ABCDEF'" in dead["reason"]
    trades = await query(tmp_path, "SELECT symbol, ts, volume, entry_price, exit_price, pnl, commission FROM trade_analysis FINAL ORDER BY ts")
    assert trades == [
        {"symbol": "EURJPY", "ts": T0 + 20 * SEC, "volume": 1.0, "entry_price": 160.0, "exit_price": 160.5, "pnl": 325.33, "commission": 8.0},
        {"symbol": "USDJPY", "ts": T0 + 120 * SEC, "volume": 1.0, "entry_price": 150.51, "exit_price": 150.99, "pnl": 317.88, "commission": 0.0},
        {"symbol": "XAUUSD", "ts": T0 + 180 * SEC, "volume": 0.1, "entry_price": 2650.5, "exit_price": 2662.35, "pnl": 116.5, "commission": 2.0},
    ]  # fmt: skip
    [last] = await query(tmp_path, "SELECT balance, equity, margin_used FROM portfolio_value FINAL ORDER BY ts DESC LIMIT 1")
    assert last == {"balance": 100759.71, "equity": 100759.71, "margin_used": 0.0}
    usdjpy = await query(tmp_path, f"SELECT unrealized, margin_used FROM portfolio_value FINAL WHERE ts = {T0 + 2 * MIN}")
    # at 00:02 (USDJPY long 1 @ 150.510, bid 150.990): 48,000 JPY at mid 151.000; margin 100,000 × 151 / 30 JPY
    assert usdjpy == [{"unrealized": 317.88, "margin_used": 3333.33}]


async def test_a_fill_or_a_booking_between_points_moves_the_next_point_and_quiet_minutes_repeat_the_last(tmp_path: Path) -> None:
    """The monitor marks the account again only after a price, a fill or a booking: each must show in the next point,
    a fill with no price after it and a P&L booked when a late price comes included, and a quiet minute repeats it."""
    async with Run(tmp_path) as run:
        await run.feed([
            tick("EURUSD", T0 + 10 * SEC, 1.10000, 1.10010),
            fill("b1", "EURUSD", "buy", 1.0, 1.10010, T0 + 20 * SEC, 3.5),
            tick("EURUSD", T0 + 4 * MIN + 10 * SEC, 1.10100, 1.10110),
            fill("s1", "EURUSD", "sell", 1.0, 1.10100, T0 + 6 * MIN + 10 * SEC, 3.5),  # no price after it
            tick("USDJPY", T0 + 8 * MIN + 10 * SEC, 150.000, 150.020),
            fill("u1", "USDJPY", "buy", 1.0, 150.020, T0 + 8 * MIN + 20 * SEC),
            # on a USDJPY price not given yet: its 48,000 JPY wait for it
            fill("u2", "USDJPY", "sell", 1.0, 150.500, T0 + 8 * MIN + 30 * SEC),
            # books them at the mid of the fill's time (150.010): 319.98 USD
            tick("USDJPY", T0 + 10 * MIN + 10 * SEC, 150.490, 150.510),
        ])  # fmt: skip
        await run.rt.clock.wait_until(T0 + 13 * MIN)
    rows = await query(tmp_path, "SELECT ts, equity, balance, unrealized, margin_used, open_positions FROM portfolio_value FINAL "
                                 f"WHERE ts <= {T0 + 11 * MIN} ORDER BY ts")  # fmt: skip
    flat = (100000.0, 100000.0, 0.0, 0.0, 0)
    long_at_bid = (99986.5, 99996.5, -10.0, 3666.83, 1)  # bid 1.10000; margin 110,005 / 30
    long_up = (100086.5, 99996.5, 90.0, 3670.17, 1)  # bid 1.10100; margin 110,105 / 30
    closed = (100083.0, 100083.0, 0.0, 0.0, 0)  # (1.10100 − 1.10010) × 100,000 realized, 7.00 commission in all
    booked = (100402.98, 100402.98, 0.0, 0.0, 0)
    want = [flat, *[long_at_bid] * 4, *[long_up] * 2, *[closed] * 4, booked]
    assert [(r["ts"], r["equity"], r["balance"], r["unrealized"], r["margin_used"], r["open_positions"]) for r in rows] == [
        (T0 + i * MIN, *point) for i, point in enumerate(want)
    ]


def test_the_ledger_converts_a_late_fill_at_the_prices_of_its_time_and_tells_the_margin() -> None:
    rules = {s: Rules.of(s, Instrument(pip=0.01, digits=3)) for s in ("USDJPY", "EURJPY")}
    ledger = Ledger(rules, "USD")
    ledger.quote("USDJPY", 149.99, 150.01, T0)
    ledger.quote("EURJPY", 159.99, 160.01, T0)
    assert ledger.fill("EURJPY", "buy", Decimal("1"), Decimal("160.01"), Decimal("0"), T0).booked == 0
    # 100,000 × EURJPY mid 160.000 / 30 = 533,333.33… JPY at USDJPY mid 150.000
    assert ledger.margin("EURJPY", Decimal(30)) == Decimal("3555.56")
    ledger.quote("EURJPY", 160.49, 160.51, T0 + SEC)  # the price the next fill is made on
    ledger.quote("USDJPY", 159.99, 160.01, T0 + 2 * SEC)  # after the fill's time
    applied = ledger.fill("EURJPY", "sell", Decimal("1"), Decimal("160.51"), Decimal("0"), T0 + SEC)
    assert applied.realized == Decimal("50000.000")  # (160.51 − 160.01) × 100,000 JPY
    assert applied.booked == Decimal("333.33")  # at USDJPY 150.000 (its time), not 160.000 (312.50)
    assert ledger.margin("EURJPY", Decimal(30)) == 0
    # a fill on a USDJPY price this ledger has not been given yet (the broker got the tick first): it waits for it
    ledger.fill("USDJPY", "buy", Decimal("1"), Decimal("160.01"), Decimal("0"), T0 + 2 * SEC)
    applied = ledger.fill("USDJPY", "sell", Decimal("1"), Decimal("160.49"), Decimal("0"), T0 + 3 * SEC)
    assert (applied.realized, applied.booked, ledger.book_waiting()) == (Decimal("48000.00"), None, [])
    ledger.quote("USDJPY", 160.49, 160.51, T0 + 3 * SEC)
    ledger.quote("USDJPY", 170.49, 170.51, T0 + 4 * SEC)
    assert ledger.book_waiting() == ["USDJPY"]
    assert ledger.entries["USDJPY"].realized == Decimal("299.07")  # 48,000 at its time's mid 160.500, not 170.500


# --------------------------------------------------------------------------- alerts


async def test_alerts_fire_once_per_breach_and_again_after_a_recovery(tmp_path: Path) -> None:
    """Long 10 lots of EURUSD (a pip is 100 USD) marked by ticks, each in a minute of its own."""
    async with Run(tmp_path, drawdown_limit=0.01, daily_loss_limit=0.01, low_sharpe=0.0, low_sharpe_min_days=2) as run:
        await run.feed([
            tick("EURUSD", T0 + MIN, 1.10000, 1.10010),
            fill("b", "EURUSD", "buy", 10.0, 1.10010, T0 + 2 * MIN),  # 99,900 at the bid 1.10000
            tick("EURUSD", T0 + 10 * MIN, 1.10100, 1.10110),  # 100,900: the peak
            tick("EURUSD", T0 + 20 * MIN, 1.09980, 1.09990),  # 99,700: drawdown 1.19 % → alert
            tick("EURUSD", T0 + 30 * MIN, 1.09950, 1.09960),  # 99,400: 1.49 %, the same breach
            tick("EURUSD", T0 + 40 * MIN, 1.10050, 1.10060),  # 100,400: 0.50 %, recovered
            tick("EURUSD", T0 + 50 * MIN, 1.09900, 1.09910),  # 98,900: 1.98 % → alert; the day lost 1.10 % → alert
            tick("EURUSD", T0 + 60 * MIN, 1.09850, 1.09860),  # 98,400: still both
            tick("EURUSD", D1 + HOUR, 1.09840, 1.09850),  # 98,300: a new day from 98,400, loss 0.10 %
            tick("EURUSD", D1 + 2 * HOUR, 1.09700, 1.09710),  # 96,900: the day lost 1.52 % → alert
            tick("EURUSD", D2 + HOUR, 1.09650, 1.09660),  # 96,400 (the day lost 0.52 %); Sharpe < 0 since D2 → alert
        ])  # fmt: skip
        await run.rt.clock.wait_until(D2 + 5 * HOUR)  # four more metrics rounds: no second low_sharpe
        await run.bus.publish("ticks.EURUSD", tick("EURUSD", D2 + 5 * HOUR, 1.09650, 1.09660)[2])
    point = {T0 + 20 * MIN: 99700, T0 + 50 * MIN: 98900, D1 + 2 * HOUR: 96900}
    drawdowns = run.alerts("drawdown_limit")
    assert [(a["ts"], a["value"]) for a in drawdowns] == [
        (T0 + 20 * MIN, round(1 - point[T0 + 20 * MIN] / 100900, 6)),
        (T0 + 50 * MIN, round(1 - point[T0 + 50 * MIN] / 100900, 6)),
    ]
    daily = run.alerts("daily_loss_limit")
    assert [(a["ts"], a["value"]) for a in daily] == [
        (T0 + 50 * MIN, round((100000 - 98900) / 100000, 6)),
        (D1 + 2 * HOUR, round((98400 - 96900) / 98400, 6)),
    ]
    [sharpe] = run.alerts("low_sharpe")
    # the first metrics round of D2 (00:01, before its tick) has two daily returns: closes 98,400, 96,900, 96,900
    returns = np.array([96900 / 98400 - 1, 0.0])
    assert sharpe["value"] == pytest.approx(returns.mean() / returns.std(ddof=1) * math.sqrt(252), abs=1e-6)
    assert sharpe["severity"] == "warning" and sharpe["threshold"] == 0.0
    assert len({a["alert_id"] for a in drawdowns + daily}) == 4


def test_closed_trips_and_curve_windows_equal_a_scan_of_every_row() -> None:
    """What the monitor keeps up to date for its metrics (P&L per symbol, a window's trips and points) equals what a
    scan of every row gives, in order, also once a row arrives out of time order."""
    import random

    from nodes.performance.closed import ClosedTrips
    from nodes.performance.curve import Curve
    from nodes.trading import metrics as M

    rng = random.Random(3)
    for _ in range(300):
        closed, curve, rows, points = ClosedTrips(), Curve(), [], []
        t = 1_767_225_600_000
        for _ in range(rng.randint(0, 60)):
            t += rng.choice([0, 60_000, 3_600_000, 86_400_000, -60_000 if rng.random() < 0.05 else 60_000])
            row = {"ts": t, "pnl": round(rng.gauss(0, 20), 2), "symbol": rng.choice(["EURUSD", "USDJPY", "XAUUSD"])}
            closed.append(row)
            rows.append(row)
            equity = round(rng.gauss(100_000, 500), 2)
            curve.append(t, equity, equity)
            points.append((t, equity))
        assert closed.pnl_by_symbol() == M.pnl_by_symbol(rows)
        assert list(closed.pnls()) == [r["pnl"] for r in rows]
        start = t - rng.choice([0, 60_000, 86_400_000, 10 * 86_400_000])
        assert closed.since(start) == [r for r in rows if r["ts"] >= start]
        ts, equity = curve.since(start)
        assert [(int(a), float(b)) for a, b in zip(ts, equity)] == [p for p in points if p[0] >= start]
