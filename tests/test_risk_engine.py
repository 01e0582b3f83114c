"""The risk decision: each rule alone through the engine (approved at its limit, rejected past it, with its
reason), currency exposure across pairs, the trading state by the verb and by breaches, stale and duplicate
signals, failing closed, and the account view built from order events."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest

from framework.topology.model import Account, Instrument
from nodes.risk.engine import OPENING_CHECKS, BadSignal, RiskEngine, decision_id
from nodes.risk.params import RiskParams
from nodes.trading.instruments import Rules

D = Decimal
T = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
HOUR, DAY = 3_600_000, 86_400_000
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "GBPUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "EURJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}
RULES = {s: Rules.of(s, i) for s, i in INSTRUMENTS.items()}
QUOTES = {"EURUSD": (1.08000, 1.08010), "GBPUSD": (1.25000, 1.25010), "USDJPY": (149.990, 150.010),
          "EURJPY": (161.990, 162.010), "XAUUSD": (2650.00, 2650.30)}  # fmt: skip
ATR = {"EURUSD": 0.001, "GBPUSD": 0.001, "USDJPY": 0.1, "EURJPY": 0.2, "XAUUSD": 3.0}
"""Bars of constant range: the ATR is the range (EURUSD 10 pips: a 20-pip stop at 2 ATR)."""


def make(quotes: bool = True, **params: Any) -> RiskEngine:
    engine = RiskEngine(RiskParams(**{"reconcile": "none", **params}), RULES, Account())
    if quotes:
        prime(engine)
    return engine


def prime(engine: RiskEngine, now: int = T, symbols: tuple[str, ...] = tuple(QUOTES)) -> None:
    for symbol in symbols:
        bid, _ = QUOTES[symbol]
        for i in range(15):
            start = now - (15 - i) * HOUR
            engine.on_bar({"symbol": symbol, "timeframe": "1h", "ts": start, "ts_close": start + HOUR, "open": bid,
                           "high": bid + ATR[symbol] / 2, "low": bid - ATR[symbol] / 2, "close": bid, "spread_mean": None}, now)  # fmt: skip
        quote(engine, symbol, *QUOTES[symbol], now=now)


def quote(engine: RiskEngine, symbol: str, bid: float, ask: float, now: int = T) -> list[dict[str, Any]]:
    return engine.on_quote(symbol, bid, ask, now, now)


_ids = iter(range(1, 10**9))


def signal(side: str = "buy", symbol: str = "EURUSD", ts: int = T, **extra: Any) -> dict[str, Any]:
    return {"signal_id": f"sig-{next(_ids)}", "symbol": symbol, "timeframe": "1h", "ts": ts, "side": side,
            "confidence": 0.8, "model_id": "m", **extra}  # fmt: skip


def decide(engine: RiskEngine, sig: dict[str, Any] | None = None, now: int = T, **kw: Any):
    sig = sig or signal(**kw)
    engine.validate(sig)
    return engine.decide(sig, now)


def fill(engine: RiskEngine, approved: dict[str, Any], price: float, now: int = T) -> list[dict[str, Any]]:
    """The execution service's event for a whole fill of an approval."""
    return engine.on_order_event({
        "order_id": f"o-{approved['decision_id']}", "client_order_id": f"o-{approved['decision_id']}",
        "signal_id": approved["signal_id"], "decision_id": approved["decision_id"], "symbol": approved["symbol"],
        "side": approved["side"], "order_type": "market", "quantity": approved["quantity"], "status": "filled", "ts": now,
        "filled_quantity": approved["quantity"], "avg_price": price}, now)  # fmt: skip


def hold(engine: RiskEngine, side: str, symbol: str, price: float, now: int = T) -> dict[str, Any]:
    out = decide(engine, side=side, symbol=symbol, now=now)
    assert out.approved, out.decision["reasons"]
    fill(engine, out.approved, price, now)
    return out.approved


# --------------------------------------------------------------------------- an approval


def test_an_approval_is_sized_with_atr_stops_and_records_every_check() -> None:
    out = decide(make())
    assert out.decision["decision"] == "approved" and out.decision["reasons"] == []
    assert out.approved == {
        "signal_id": out.decision["signal_id"], "decision_id": out.decision["decision_id"], "symbol": "EURUSD", "side": "buy",
        "quantity": 5.0,  # 1 % of 100,000 over a 20-pip stop: 1,000 / 200 a lot
        "ts": T, "stop_loss": 1.0781, "take_profit": 1.0831,  # the ask ∓ 2 and 3 ATR
        "limits": {"risk_per_trade": 0.01, "max_symbol_exposure": 1_000_000.0, "max_currency_exposure": 2_000_000.0,
                   "max_open_positions": 6.0, "max_leverage": 10.0, "max_daily_loss": 0.03, "max_drawdown": 0.1, "max_spread_pips": 3.0},
    }  # fmt: skip
    checks = out.decision["checks"]
    assert list(checks) == ["reconciled", "stale", "throttle", "position", "trading_state", *OPENING_CHECKS]
    assert all(c["ok"] is True for c in checks.values())
    assert checks["sizing"]["lots"] == 5.0 and checks["sizing"]["stop_distance"] == 0.002 and checks["sizing"]["risk"] == 1000.0
    assert out.decision["decision_id"] == decision_id(out.decision["signal_id"]) and out.decision["quantity"] == 5.0


@pytest.mark.parametrize(("symbol", "lots", "stop_loss"), [("USDJPY", 7.5, 149.81), ("XAUUSD", 1.66, 2644.3)])
def test_sizing_of_yen_and_gold_through_the_engine(symbol: str, lots: float, stop_loss: float) -> None:
    """USDJPY: ATR 0.1, a 0.200 stop costs 20,000 JPY a lot and 1,000 USD is 150,000 JPY at the mid: 7.5 lots.
    XAUUSD: ATR 3.00, a 6.00 stop costs 600 USD a lot (100 oz): 1.666 → 1.66 lots."""
    out = decide(make(), symbol=symbol)
    assert (out.approved["quantity"], out.approved["stop_loss"]) == (lots, stop_loss)  # the stop: the ask minus 2 ATR


def test_a_quiet_atr_widens_the_stop_to_the_minimum() -> None:
    """ATR 2 pips: 2 × 2 = 4 pips < the 10-pip minimum; the stop is 10 pips, the take profit 15 (3:2 kept); 0.5 % of 100,000
    over 100 USD a lot: 5 lots."""
    engine = make(quotes=False, risk_per_trade=0.005)
    for i in range(15):
        start = T - (15 - i) * HOUR
        engine.on_bar({"symbol": "EURUSD", "timeframe": "1h", "ts": start, "ts_close": start + HOUR, "open": 1.08, "high": 1.0801,
                       "low": 1.0799, "close": 1.08, "spread_mean": None}, T)  # fmt: skip
    quote(engine, "EURUSD", 1.08000, 1.08010)
    out = decide(engine)
    assert out.decision["checks"]["sizing"]["min_stop_applied"] is True
    assert (out.approved["quantity"], out.approved["stop_loss"], out.approved["take_profit"]) == (5.0, 1.0791, 1.0816)


def test_a_reversal_closes_and_opens_in_one_order() -> None:
    engine = make()
    hold(engine, "buy", "EURUSD", 1.0801)
    out = decide(engine, side="sell")
    # 5 to close, and 1 % of the equity now (99,950: the long is marked at the bid, 1 pip under its price) over 200 a lot
    assert out.approved["side"] == "sell" and out.approved["quantity"] == 9.99
    assert out.approved["stop_loss"] == 1.082  # the bid + 20 pips
    assert out.decision["checks"]["position"] == {"ok": True, "net": 5.0, "filled": 5.0, "close": 5.0, "open": True}


def test_pending_approvals_count_until_filled() -> None:
    engine = make()
    first = decide(engine).approved
    again = decide(engine)  # not filled yet: the gate knows it is (about to be) long
    assert again.decision["decision"] == "rejected"
    assert again.decision["reasons"] == ["nothing to do: already long 5 lots (pyramiding is off)"]
    flat = decide(engine, side="flat")
    assert (flat.approved["side"], flat.approved["quantity"]) == ("sell", first["quantity"])
    assert "stop_loss" not in flat.approved and flat.decision["checks"]["sizing"] == {"ok": None, "skipped": "nothing opens"}
    nothing = decide(engine, side="flat")
    assert nothing.decision["reasons"] == ["nothing to do: already flat"]
    assert decide(make(pyramiding=True, fixed_lots=1.0), signal()).approved["quantity"] == 1.0


def _order_event(approved: dict[str, Any], status: str, ts: int) -> dict[str, Any]:
    return {"order_id": f"o-{approved['decision_id']}", "client_order_id": f"o-{approved['decision_id']}",
            "signal_id": approved["signal_id"], "decision_id": approved["decision_id"], "symbol": approved["symbol"],
            "side": approved["side"], "order_type": "market", "quantity": approved["quantity"], "status": status, "ts": ts,
            "filled_quantity": 0.0}  # fmt: skip


@pytest.mark.parametrize("heard", ["nothing", "an order that never fills"])
def test_an_approval_that_never_becomes_a_fill_stops_counting_after_the_pending_timeout(heard: str) -> None:
    """Pending approvals block exposure (here: no pyramiding) until their order is done, or nothing was heard of them
    for ``pending_timeout`` of event time: an approval whose order never arrived, and one whose order stays open."""
    engine = make(pending_timeout="10m", default_ttl="1h")
    first = decide(engine).approved
    if heard != "nothing":
        engine.on_order_event(_order_event(first, "submitted", T + 60_000), T + 60_000)
    last = T + (60_000 if heard != "nothing" else 0)
    blocked = decide(engine, signal(ts=last + 10 * 60_000 - 1), now=last + 10 * 60_000 - 1)
    assert blocked.decision["reasons"] == ["nothing to do: already long 5 lots (pyramiding is off)"]
    quote(engine, "EURUSD", *QUOTES["EURUSD"], now=last + 10 * 60_000)
    gone = decide(engine, signal(ts=last + 10 * 60_000), now=last + 10 * 60_000)
    assert gone.approved is not None and gone.decision["checks"]["position"]["net"] == 0.0
    [alert] = [a for a in gone.alerts if a["type"] == "reconciliation"]
    assert alert["message"].startswith(f"approval {first['decision_id']} (buy 5 EURUSD) saw no order event or fill for 10m")
    assert engine.book.pending.keys() == {gone.decision["decision_id"]}


def test_the_pending_timeout_runs_on_event_time_not_on_when_a_signal_arrives() -> None:
    """A signal of T + 5 min that reaches the gate an hour late (a replay, a backlog) still sees the approval of T."""
    engine = make(pending_timeout="10m", default_ttl="2h")
    decide(engine)
    late = decide(engine, signal(ts=T + 5 * 60_000), now=T + HOUR)
    assert late.decision["reasons"] == ["nothing to do: already long 5 lots (pyramiding is off)"]


def test_a_signal_is_judged_on_the_prices_of_its_own_time() -> None:
    """Quotes after the signal's time (live delivery may bring them first) move neither its size, its stops, nor its
    spread check; the newest prices still mark the account."""
    early, late = make(), make()
    for symbol, (bid, ask) in QUOTES.items():
        quote(late, symbol, bid * 1.01, ask * 1.01 + 10 * float(RULES[symbol].pip), now=T + 500)  # moved 1 %, 10 pips wider
    sig = signal()
    a, b = decide(early, dict(sig)), decide(late, dict(sig), now=T + 900)
    assert a.approved == b.approved and a.decision["checks"]["sizing"] == b.decision["checks"]["sizing"]
    assert b.decision["checks"]["spread"]["ok"] is True and b.decision["ts"] == T
    assert late.quotes["EURUSD"].ts == T + 500  # the newest price is kept for marks and later signals


# --------------------------------------------------------------------------- each rule, both ways

Setup = Callable[[RiskEngine], dict[str, Any]]


def _plain(engine: RiskEngine) -> dict[str, Any]:
    return signal()


def _wide(spread: float) -> Setup:
    def setup(engine: RiskEngine) -> dict[str, Any]:
        quote(engine, "EURUSD", 1.08000, round(1.08000 + spread, 5))
        return signal()
    return setup


def _release(at: int) -> Setup:
    def setup(engine: RiskEngine) -> dict[str, Any]:
        engine.on_calendar({"type": "economic_calendar", "ts": at, "source": "ff", "series": "USD.nfp", "value": None,
                            "country": "USD", "impact": "high", "title": "Non-Farm Payrolls"}, T)  # fmt: skip
        return signal()
    return setup


def _aged(age: int) -> Setup:
    """A signal of ``T - age`` (judged on the prices of its time) that reaches the gate at ``T``."""
    def setup(engine: RiskEngine) -> dict[str, Any]:
        engine.quotes.clear()
        engine.recent.clear()
        for symbol, (bid, ask) in QUOTES.items():
            quote(engine, symbol, bid, ask, now=T - age)
        return signal(ts=T - age, ttl_ms=1000)
    return setup


def _second(engine: RiskEngine) -> dict[str, Any]:
    assert decide(engine, symbol="GBPUSD").approved
    return signal()


def _with_gbpusd(engine: RiskEngine) -> dict[str, Any]:
    hold(engine, "buy", "GBPUSD", 1.2501)
    return signal()


EURUSD_5_LOTS = 5 * 100_000 * 1.08005  # the base amount at the mid, in dollars: 540,025
CASES = [
    # rule, params at the limit, params past it, setup, reason (past)
    ("spread", {}, {}, None, "spread 3.1 pips is wider than 3"),
    ("calendar", {}, {}, None, "high-impact release 'Non-Farm Payrolls' (USD)"),
    ("stale", {}, {}, None, "stale signal: 1000 ms old, its time to live is 1000 ms"),
    ("confidence", {"min_confidence": 0.8}, {"min_confidence": 0.81}, _plain, "confidence 0.8 is below 0.81"),
    ("throttle", {"throttle_orders": 2, "max_leverage": 50}, {"throttle_orders": 1, "max_leverage": 50}, _second, "throttled: 1 approvals in the last 60000 ms (limit 1)"),
    ("symbol_exposure", {"max_symbol_exposure": {"default": EURUSD_5_LOTS}}, {"max_symbol_exposure": {"default": EURUSD_5_LOTS - 0.01}},
     _plain, "EURUSD exposure 540,025.00 would exceed 540,024.99"),
    ("currency_exposure", {"max_currency_exposure": EURUSD_5_LOTS}, {"max_currency_exposure": EURUSD_5_LOTS - 0.01}, _plain,
     "EUR exposure 540,025.00 would exceed ±540,024.99"),
    ("leverage", {"max_leverage": 5.40025}, {"max_leverage": 5.4002}, _plain, "gross leverage 5.40025 would exceed 5.4002"),
    ("open_positions", {"max_open_positions": 2, "max_leverage": 50}, {"max_open_positions": 1, "max_leverage": 50}, _with_gbpusd,
     "2 open positions would exceed 1"),
    ("sizing", {"risk_per_trade": 0.00002}, {"risk_per_trade": 0.0000199}, _plain, "EURUSD: volume 0.00995 lots is below the minimum of 0.01"),
]  # fmt: skip
SETUPS = {"spread": (_wide(0.0003), _wide(0.00031)), "calendar": (_release(T + 900_001), _release(T + 900_000)),
          "stale": (_aged(999), _aged(1000))}  # fmt: skip


@pytest.mark.parametrize(("rule", "at", "past", "setup", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_approves_at_its_limit_and_rejects_past_it(rule: str, at: dict, past: dict, setup: Setup | None, reason: str) -> None:
    setup_at, setup_past = SETUPS[rule] if setup is None else (setup, setup)
    engine = make(**at)
    ok = decide(engine, setup_at(engine))
    assert ok.decision["decision"] == "approved", ok.decision["reasons"]
    assert ok.decision["checks"][rule]["ok"] is True
    engine = make(**past)
    out = decide(engine, setup_past(engine))
    assert out.decision["decision"] == "rejected" and out.approved is None
    check = out.decision["checks"][rule]
    assert check["ok"] is False and check["reason"].startswith(reason), check
    assert any(r.startswith(reason) for r in out.decision["reasons"])


def test_currency_exposure_across_pairs_through_the_engine() -> None:
    """Long EURUSD then long EURJPY, 1 lot each: twice the EUR; a USDJPY short adds to the USD short."""
    engine = make(fixed_lots=1.0)
    hold(engine, "buy", "EURUSD", 1.0801)
    eur_one = 100_000 * 1.08005
    second = decide(engine, symbol="EURJPY")
    after = second.decision["checks"]["currency_exposure"]["after"]
    assert after["EUR"] == round(2 * eur_one, 2)
    fill(engine, second.approved, 162.01)
    usd_before = engine.status(T)  # (the status shows positions; the exposure is in the checks)
    assert usd_before["positions"] == {"EURJPY": 1.0, "EURUSD": 1.0}
    short = decide(engine, side="sell", symbol="USDJPY")
    after = short.decision["checks"]["currency_exposure"]["after"]
    assert after["USD"] == round(-eur_one - 100_000, 2)  # short the dollars of EURUSD and 100,000 more
    blocked = decide(make(fixed_lots=1.0, max_currency_exposure=2 * eur_one - 0.01), signal(symbol="EURJPY"))
    assert blocked.approved  # alone, 1 lot of EURJPY is one EUR lot
    engine = make(fixed_lots=1.0, max_currency_exposure=2 * eur_one - 0.01)
    hold(engine, "buy", "EURUSD", 1.0801)
    out = decide(engine, symbol="EURJPY")
    assert out.decision["checks"]["currency_exposure"]["over"] == ["EUR"] and out.approved is None


# --------------------------------------------------------------------------- the trading state


def test_the_trading_state_by_the_verb() -> None:
    engine = make(fixed_lots=1.0)
    hold(engine, "buy", "EURUSD", 1.0801)
    status, alerts = engine.control("halt", "news", T, "c1", "ops@desk")
    assert status["state"] == "halted" and status["set_by"] == "operator" and "news [operator (ops@desk)]" == status["reason"]
    assert [(a["type"], a["severity"]) for a in alerts] == [("trading_state", "critical")]
    for side in ("sell", "flat"):
        out = decide(engine, side=side)
        assert out.decision["reasons"] == ["trading is halted"]
    assert engine.control("halt", None, T + 1, "c1")[1] == []  # the same command again: applied once

    engine.control("reduce", None, T, "c2")
    assert decide(engine, side="buy", symbol="GBPUSD").decision["reasons"] == ["trading is reducing: only orders that reduce a position pass"]
    trimmed = decide(engine, side="sell")  # a reversal: only its closing part passes
    assert (trimmed.approved["side"], trimmed.approved["quantity"]) == ("sell", 1.0) and "stop_loss" not in trimmed.approved
    assert trimmed.decision["reasons"] == ["trading is reducing: the opening part was trimmed"]
    fill(engine, trimmed.approved, 1.0800)
    engine.control("resume", None, T, "c3")
    assert decide(engine, symbol="GBPUSD").approved
    with pytest.raises(ValueError, match="unknown risk command"):
        engine.control("pause", None, T)


def test_the_trading_state_by_breaches() -> None:
    """5 lots long EURUSD at 1.08010: 50 USD a pip. 3 % of 100,000 is 60 pips; 10 % is 200 pips."""
    engine = make()
    hold(engine, "buy", "EURUSD", 1.0801)
    assert quote(engine, "EURUSD", 1.07410, 1.07420) == []  # exactly 3,000 down: at the limit
    alerts = quote(engine, "EURUSD", 1.07409, 1.07419)
    assert [a["type"] for a in alerts] == ["daily_loss", "trading_state"]
    assert alerts[0]["value"] == 0.03005 and alerts[0]["threshold"] == 0.03
    assert engine.state.state.value == "reducing" and engine.state.set_by == "daily_loss"
    assert decide(engine, symbol="GBPUSD").decision["reasons"] == ["trading is reducing: only orders that reduce a position pass"]
    assert decide(engine, side="flat", now=T + 1).decision["checks"]["trading_state"]["ok"]
    assert quote(engine, "EURUSD", 1.07409, 1.07419, now=T + 2) == []  # breached once, alerted once

    next_day = T + DAY
    alerts = quote(engine, "EURUSD", 1.07409, 1.07419, now=next_day)
    assert [a["type"] for a in alerts] == ["trading_state"] and engine.state.state.value == "active"

    engine = make()
    hold(engine, "buy", "EURUSD", 1.0801)
    assert not [a for a in quote(engine, "EURUSD", 1.06010, 1.06020) if a["type"] == "drawdown"]  # exactly 10 %
    alerts = quote(engine, "EURUSD", 1.06009, 1.06019)
    assert [a["type"] for a in alerts] == ["drawdown", "trading_state"] and engine.state.state.value == "halted"
    quote(engine, "EURUSD", 1.06009, 1.06019, now=next_day)
    assert engine.state.state.value == "halted"  # a drawdown halt waits for the operator
    status, _ = engine.control("resume", "seen", next_day, "c9")
    assert status["state"] == "active" and status["peak"] == status["equity"] == 89_995.0
    assert quote(engine, "EURUSD", 1.06009, 1.06019, now=next_day + 1) == []  # counted from the equity of now


def test_what_the_account_books_at_the_time_of_the_last_mark_is_marked() -> None:
    """A mark at the event time of the last one is skipped while nothing changed since: a fill or an order event of that
    very time changes the account, and is marked (a 4,000 commission, then a lot filled 400 pips off the market, each
    4 % of 100,000: past the daily loss)."""
    engine = make()
    fill = {"fill_id": "f-1", "order_id": "o-1", "symbol": "EURUSD", "side": "buy", "quantity": 0.01, "price": 1.0801,
            "ts": T, "commission": 4000}  # fmt: skip
    assert [a["type"] for a in engine.on_fill(fill, T)] == ["daily_loss", "trading_state"]

    engine = make()
    event = {"order_id": "o-2", "client_order_id": "o-2", "symbol": "EURUSD", "side": "buy", "order_type": "market", "quantity": 1.0,
             "status": "filled", "ts": T, "filled_quantity": 1.0, "avg_price": 1.1200}  # fmt: skip
    assert [a["type"] for a in engine.on_order_event(event, T)] == ["daily_loss", "trading_state"]


# --------------------------------------------------------------------------- signals: stale, duplicate, bad


def test_a_signal_gets_one_decision() -> None:
    engine = make()
    sig = signal()
    assert decide(engine, sig).approved
    assert engine.decide(dict(sig), T + 5) is None
    assert engine.decide({**sig, "side": "sell"}, T + 10) is None  # the id decides, not the content


def test_stale_signals_without_ttl_use_the_default() -> None:
    engine = make(default_ttl="30s")
    out = decide(engine, signal(ts=T - 30_000))
    assert out.decision["reasons"] == ["stale signal: 30000 ms old, its time to live is 30000 ms"]
    assert out.decision["checks"]["sizing"] == {"ok": None, "skipped": "the order is rejected as a whole"}


@pytest.mark.parametrize(("change", "reason"), [
    ({"symbol": "BTCUSD"}, "unknown symbol 'BTCUSD'"),
    ({"side": "long"}, "side 'long' is not one of buy, sell, flat"),
    ({"ts": 1.5}, "ts 1.5 is not a time"),
    ({"confidence": 2}, "confidence 2 is not a number from 0 to 1"),
    ({"ttl_ms": 0}, "ttl_ms 0 is not a positive integer"),
    ({"signal_id": ""}, "signal_id '' is missing"),
])  # fmt: skip
def test_bad_signals_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadSignal, match=reason.replace("(", r"\(")):
        make(quotes=False).validate({**signal(), **change})


# --------------------------------------------------------------------------- failing closed


def test_no_prices_no_opening() -> None:
    engine = make(quotes=False)
    out = decide(engine)
    assert out.decision["decision"] == "rejected" and out.decision["reasons"] == ["no price yet for EURUSD"]
    assert [a["type"] for a in out.alerts] == ["stale_data"]
    engine.on_quote("EURJPY", 161.99, 162.01, T, T)
    jpy = decide(engine, symbol="EURJPY")
    assert jpy.decision["reasons"] == ["state unknown: no price yet to convert JPY to USD"]
    prime(engine, symbols=("EURUSD", "USDJPY"))
    assert decide(engine, symbol="EURJPY").decision["reasons"] == ["no ATR yet for EURJPY 1h (0/14 true ranges)"]
    engine.on_quote("EURUSD", 1.08, 1.0801, T - 120_001, T)  # an old quote is ignored (older than the one held)
    old = make(quotes=False)
    prime(old, now=T - 200_000)
    assert decide(old).decision["reasons"] == ["stale price for EURUSD: 200000 ms old (limit 120000 ms)"]


def test_an_unpriced_position_makes_equity_unknown() -> None:
    engine = make(quotes=False)
    prime(engine, symbols=("EURUSD",))
    engine.on_order_event({"order_id": "x", "client_order_id": "x", "signal_id": "s", "decision_id": "d", "symbol": "GBPUSD",
                           "side": "buy", "order_type": "market", "quantity": 1, "status": "filled", "ts": T,
                           "filled_quantity": 1, "avg_price": 1.25}, T)  # fmt: skip
    assert decide(engine).decision["reasons"] == ["state unknown: no price yet for GBPUSD, where a position is open"]
    closing = decide(engine, side="flat", symbol="GBPUSD")
    assert closing.approved["quantity"] == 1.0  # closing needs no price


def test_not_reconciled_rejects_everything() -> None:
    engine = make(reconcile="broker")
    out = decide(engine, side="flat")
    assert out.decision["reasons"] == ["not reconciled: waiting for the broker's state"]
    assert engine.reconcile_due(T) and engine.reconcile_query(T)["query"] == "state" and not engine.reconcile_due(T + 4_999)
    alerts = engine.on_broker_state({"ts": T, "account": {"currency": "EUR", "balance": 1, "equity": 1, "margin": 0},
                                     "positions": [], "orders": [], "fills": []}, T)  # fmt: skip
    assert not engine.reconciled and "the broker's account is in 'EUR'" in alerts[0]["message"]
    engine.on_broker_state({"ts": T, "account": {"currency": "USD", "balance": 50_000, "equity": 50_000, "margin": 0},
                            "positions": [{"symbol": "EURUSD", "quantity": -2, "avg_price": 1.09}], "orders": [], "fills": []}, T)  # fmt: skip
    assert engine.reconciled and engine.status(T)["balance"] == 50_000
    out = decide(engine, side="flat")
    assert (out.approved["side"], out.approved["quantity"]) == ("buy", 2.0)


# --------------------------------------------------------------------------- state and determinism


def scenario(engine: RiskEngine) -> list[Any]:
    out: list[Any] = []
    for i, (side, symbol) in enumerate([("buy", "EURUSD"), ("sell", "USDJPY"), ("buy", "XAUUSD"), ("flat", "EURUSD"), ("buy", "EURJPY")]):
        o = decide(engine, {**signal(side, symbol), "signal_id": f"s{i}"}, now=T + i * 1000)
        out.append([o.decision, o.approved, o.alerts])
        if o.approved:
            fill(engine, o.approved, QUOTES[symbol][1], T + i * 1000)
    out.append(quote(engine, "XAUUSD", 2500.0, 2500.3, now=T + 9000))
    return out


def test_same_input_same_decisions_and_state_survives_a_snapshot() -> None:
    first, second = make(), make()
    a, b = scenario(first), scenario(second)
    assert orjson.dumps(a) == orjson.dumps(b)
    snap = json.loads(json.dumps(first.snapshot()))  # JSON, as the runtime saves it
    restored = make(quotes=False)
    restored.restore(snap)
    prime(restored, now=T + 9000)
    quote(restored, "XAUUSD", 2500.0, 2500.3, now=T + 9000)
    assert restored.decide({**signal(), "signal_id": "s0"}, T + 9000) is None  # remembered across the restart
    assert restored.status(T + 9000)["positions"] == first.status(T + 9000)["positions"]
    assert restored.state == first.state and restored.peak == first.peak
