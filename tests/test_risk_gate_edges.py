"""The risk gate by hand: sizing, exposure and limits against hand arithmetic (Decimal, the numbers
written out), and the edges where the gate's view of the account or its trading state can go wrong: a signal stamped in
the future, an order event that arrives after its order ended, a drawdown breached on a day the daily loss already
stopped trading, an operator's resume before the equity is known, a fill redelivered after reconciliation."""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal
from typing import Any

from framework.topology.model import Account, Instrument
from nodes.risk.engine import Outcome, RiskEngine
from nodes.risk.params import RiskParams
from nodes.trading.instruments import Rules
from nodes.trading.orders import client_order_id

D = Decimal
T = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "GBPUSD": Instrument(pip=0.0001, digits=5),
    "EURGBP": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "EURJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}
RULES = {s: Rules.of(s, i) for s, i in INSTRUMENTS.items()}
QUOTES = {"EURUSD": ("1.08000", "1.08010"), "GBPUSD": ("1.24995", "1.25005"), "USDJPY": ("149.990", "150.010"),
          "EURJPY": ("161.990", "162.010"), "XAUUSD": ("1999.90", "2000.10"), "EURGBP": ("0.85995", "0.86005")}  # fmt: skip
ATR = {"EURUSD": 0.001, "GBPUSD": 0.001, "EURGBP": 0.001, "USDJPY": 0.1, "EURJPY": 0.2, "XAUUSD": 2.0}
"""Bars of constant range: the ATR is the range, the stop 2 ATR (EURUSD, GBPUSD, EURGBP and USDJPY: 20 pips; gold 4.00)."""


def engine(balance: float = 100_000.0, symbols: tuple[str, ...] = ("EURUSD", "GBPUSD", "USDJPY", "EURJPY", "XAUUSD"),
           **params: Any) -> RiskEngine:  # fmt: skip
    e = RiskEngine(RiskParams(**{"reconcile": "none", **params}), RULES, Account(balance=balance))
    prime(e, symbols)
    return e


def prime(e: RiskEngine, symbols: tuple[str, ...], now: int = T) -> None:
    for symbol in symbols:
        bid = float(QUOTES[symbol][0])
        for i in range(15):
            start = now - (15 - i) * HOUR
            e.on_bar({"symbol": symbol, "timeframe": "1h", "ts": start, "ts_close": start + HOUR, "open": bid,
                      "high": bid + ATR[symbol] / 2, "low": bid - ATR[symbol] / 2, "close": bid, "spread_mean": None}, now)  # fmt: skip
        e.on_quote(symbol, *QUOTES[symbol], now, now)


_ids = iter(range(1, 10**9))


def signal(side: str = "buy", symbol: str = "EURUSD", ts: int = T, **extra: Any) -> dict[str, Any]:
    return {"signal_id": f"rv-{next(_ids)}", "symbol": symbol, "timeframe": "1h", "ts": ts, "side": side,
            "confidence": 0.8, "model_id": "m", **extra}  # fmt: skip


def decide(e: RiskEngine, sig: dict[str, Any] | None = None, now: int = T, **kw: Any) -> Outcome:
    sig = sig or signal(**kw)
    e.validate(sig)
    out = e.decide(sig, now)
    assert out is not None
    return out


def order_event(approved: dict[str, Any], status: str, ts: int, filled: float = 0.0, avg: float | None = None) -> dict[str, Any]:
    coid = client_order_id(approved["signal_id"])
    event = {"order_id": coid, "client_order_id": coid, "signal_id": approved["signal_id"], "decision_id": approved["decision_id"],
             "symbol": approved["symbol"], "side": approved["side"], "order_type": "market", "quantity": approved["quantity"],
             "status": status, "ts": ts, "filled_quantity": filled}  # fmt: skip
    if avg is not None:
        event["avg_price"] = avg
    return event


def a_fill(order_id: str, fill_id: str, qty: float, price: float, ts: int, side: str = "buy", symbol: str = "EURUSD") -> dict[str, Any]:
    return {"fill_id": fill_id, "order_id": order_id, "symbol": symbol, "side": side, "quantity": qty, "price": price, "ts": ts,
            "commission": 0.0}  # fmt: skip


def mid(symbol: str) -> Decimal:
    bid, ask = QUOTES[symbol]
    return (D(bid) + D(ask)) / 2


def floor_to(value: Decimal, step: str) -> Decimal:
    return (value / D(step)).to_integral_value(rounding=ROUND_DOWN) * D(step)


def broker_state(balance: str, positions: list[dict[str, Any]] = (), fills: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"ts": T, "account": {"currency": "USD", "balance": float(balance), "equity": float(balance), "margin": 0.0},
            "positions": list(positions), "orders": [], "fills": list(fills)}  # fmt: skip


# =========================================================================== sizing by hand (these hold)


def test_usdjpy_10k_account_1pct_20_pip_stop_at_150() -> None:
    """100 USD at risk; 20 pips of USDJPY are 0.20 JPY × 100,000 = 20,000 JPY a lot = 20,000 / 150.00 USD."""
    out = decide(engine(balance=10_000.0), symbol="USDJPY")
    risk = D("10000") * D("0.01")
    loss_per_lot_usd = D("0.20") * D("100000") / mid("USDJPY")
    assert mid("USDJPY") == D("150.000")
    expected = floor_to(risk / loss_per_lot_usd, "0.01")
    assert expected == D("0.75")
    assert D(repr(out.approved["quantity"])) == expected
    assert D(repr(out.approved["stop_loss"])) == D("150.010") - D("0.20")  # the ask minus the stop


def test_gold_at_2000_with_100_ounces_a_lot() -> None:
    """ATR 2.00 → a 4.00 stop (400 pips of 0.01, over the 300-pip floor); 4.00 × 100 oz = 400 USD a lot; 100 USD at risk."""
    out = decide(engine(balance=10_000.0), symbol="XAUUSD")
    expected = floor_to(D("10000") * D("0.01") / (D("4.00") * D("100")), "0.01")
    assert expected == D("0.25")
    assert D(repr(out.approved["quantity"])) == expected
    assert out.decision["checks"]["sizing"]["loss_per_lot"] == 400.0


def test_a_cross_eurgbp_in_a_usd_account_needs_gbpusd_and_fails_closed_without_it() -> None:
    """100 USD at risk is 100 / 1.25 = 80 GBP; 20 pips × 100,000 = 200 GBP a lot: 0.40 lots. Without a price joining GBP
    to USD the risk cannot be turned into pounds, nor the EUR notional into dollars: nothing opens (no guessed rate)."""
    e = engine(balance=10_000.0, symbols=("EURGBP",))
    out = decide(e, symbol="EURGBP")
    assert out.approved is None and out.decision["reasons"] == ["state unknown: no price yet to convert GBP to USD"]
    prime(e, ("GBPUSD",))
    out = decide(e, symbol="EURGBP")
    assert out.approved is None and out.decision["reasons"] == ["state unknown: no price yet to convert EUR to USD"]
    prime(e, ("EURUSD",))
    out = decide(e, symbol="EURGBP")
    assert mid("GBPUSD") == D("1.25")
    expected = floor_to(D("10000") * D("0.01") / mid("GBPUSD") / (D("0.0020") * D("100000")), "0.01")
    assert expected == D("0.40")
    assert D(repr(out.approved["quantity"])) == expected
    # its notional: 0.40 lots × 100,000 EUR at EURUSD 1.08005
    assert D(repr(out.decision["checks"]["symbol_exposure"]["after"])) == D("0.40") * D("100000") * mid("EURUSD")


def test_a_cross_eurgbp_converts_through_eur_when_only_eurusd_is_priced() -> None:
    """GBP → USD as EURUSD / EURGBP = 1.08005 / 0.86000 (a true cross rate, not a guess): 100 USD is 79.63 GBP, 0.398
    lots of 200 GBP, rounded down to 0.39."""
    out = decide(engine(balance=10_000.0, symbols=("EURGBP", "EURUSD")), symbol="EURGBP")
    gbpusd = mid("EURUSD") / mid("EURGBP")
    expected = floor_to(D("10000") * D("0.01") / gbpusd / (D("0.0020") * D("100000")), "0.01")
    assert expected == D("0.39")
    assert D(repr(out.approved["quantity"])) == expected


def test_long_eurusd_and_long_eurjpy_is_twice_the_eur_and_the_yen_is_converted() -> None:
    """1 lot each: EUR +2 × 100,000 × 1.08005; JPY −100,000 × 162.000 yen = −16,200,000 / 150.000 USD; USD −108,005."""
    e = engine(fixed_lots=1.0)
    first = decide(e).approved
    e.on_order_event(order_event(first, "filled", T, 1.0, 1.0801), T)
    after = decide(e, symbol="EURJPY").decision["checks"]["currency_exposure"]["after"]
    eur = 2 * D("100000") * mid("EURUSD")
    jpy = -D("100000") * mid("EURJPY") / mid("USDJPY")
    usd = -D("100000") * mid("EURUSD")
    assert (eur, jpy, usd) == (D("216010.00000"), D("-108000"), D("-108005.000"))
    assert {k: D(repr(v)) for k, v in after.items()} == {"EUR": eur, "JPY": jpy, "USD": usd}


# =========================================================================== edges that hold


def test_the_throttle_window_boundary() -> None:
    """Limit 1 a minute: one millisecond short of a minute after an approval is throttled; a whole minute after, it passes."""
    e = engine(throttle_orders=1, max_leverage=50)
    assert decide(e).approved
    inside = decide(e, symbol="GBPUSD", ts=T + MINUTE - 1, now=T + MINUTE - 1)
    assert inside.decision["reasons"] == ["throttled: 1 approvals in the last 60000 ms (limit 1)"]
    prime(e, ("GBPUSD",), now=T + MINUTE)
    assert decide(e, symbol="GBPUSD", ts=T + MINUTE, now=T + MINUTE).approved


def test_a_release_of_the_quote_currency_alone_blocks_its_pairs_only() -> None:
    e = engine(max_leverage=50)
    e.on_calendar({"type": "economic_calendar", "ts": T + 10 * MINUTE, "source": "ff", "series": "JPY.boj", "value": None,
                   "country": "JPY", "impact": "high", "title": "BoJ rate decision"}, T)  # fmt: skip
    for symbol in ("USDJPY", "EURJPY"):
        check = decide(e, symbol=symbol).decision["checks"]["calendar"]
        assert check["ok"] is False and check["releases"] == [{"series": "JPY.boj", "currency": "JPY", "ts": T + 10 * MINUTE}]
    assert decide(e, symbol="EURUSD").decision["checks"]["calendar"]["ok"] is True


def test_partial_fills_and_order_events_interleaved_count_each_lot_once() -> None:
    """Fill f2 (3 @ 1.0803) first, then the event for f1 (2 @ 1.0801), then f1 itself (and again), then the final event:
    5 lots at (3 × 1.0803 + 2 × 1.0801) / 5 = 1.08022, nothing pending."""
    e = engine(pending_timeout="10m", default_ttl="1h")
    a = decide(e).approved
    coid = client_order_id(a["signal_id"])
    e.on_fill(a_fill(coid, "f2", 3.0, 1.0803, T + 2), T + 2)
    assert (e.book.filled("EURUSD"), e.book.net("EURUSD")) == (D(3), D(5))
    e.on_order_event(order_event(a, "partially_filled", T + 3, 2.0, 1.0801), T + 3)
    assert e.book.filled("EURUSD") == D(3)
    e.on_fill(a_fill(coid, "f1", 2.0, 1.0801, T + 1), T + 4)
    e.on_fill(a_fill(coid, "f1", 2.0, 1.0801, T + 1), T + 4)
    e.on_order_event(order_event(a, "filled", T + 5, 5.0, 1.08022), T + 5)
    assert e.book.filled("EURUSD") == D(5) and e.book.pending == {}
    assert e.book.positions["EURUSD"].avg_price == (3 * D("1.0803") + 2 * D("1.0801")) / 5


# =========================================================================== defects (these fail now)


def test_a_signal_stamped_in_the_future_changes_no_state_pending_and_throttle() -> None:
    """A signal stamped 11 minutes ahead of the clock is refused ("from the future"); it must not move the gate's event
    time: the 5-lot approval still pending must still count, and the throttle must still hold the approval of T."""
    e = engine(throttle_orders=1, max_leverage=50)
    first = decide(e)
    assert first.approved["quantity"] == 5.0
    future = decide(e, symbol="GBPUSD", ts=T + 11 * MINUTE, now=T)
    assert future.approved is None and future.decision["reasons"][0].startswith("signal from the future")
    again = decide(e, ts=T + 1, now=T + 1)
    assert again.approved is None, "the pending 5 lots were dropped: a second 5 lots approved (10 lots, throttle 1)"
    assert again.decision["checks"]["throttle"]["ok"] is False
    assert again.decision["reasons"][0] == "throttled: 1 approvals in the last 60000 ms (limit 1)"


def test_a_signal_stamped_in_the_future_does_not_make_the_gate_forget_the_ids_it_decided() -> None:
    e = engine()
    sig = signal()
    assert decide(e, sig).approved
    decide(e, signal(ts=T + 8 * DAY), now=T)  # refused: from the future
    assert e.decide(dict(sig), T + 1_000) is None, "a redelivered signal got a second decision"


def test_an_order_event_after_its_order_ended_does_not_bring_its_approval_back() -> None:
    """A submitted, accepted, then cancelled order (nothing filled); the 'accepted' event redelivered after the cancel
    must not count 5 lots pending again: a flat signal would then sell 5 lots the broker never bought."""
    e = engine()
    a = decide(e).approved
    for status, ts in (("submitted", T + 1), ("accepted", T + 2), ("cancelled", T + 3)):
        e.on_order_event(order_event(a, status, ts), ts)
    assert e.book.nets() == {}
    e.on_order_event(order_event(a, "accepted", T + 2), T + 4)  # at-least-once delivery: an earlier event again
    assert e.book.nets() == {}
    flat = decide(e, side="flat", ts=T + 5, now=T + 5)
    assert flat.approved is None and flat.decision["reasons"] == ["nothing to do: already flat"]


def test_a_drawdown_breach_on_a_day_the_daily_loss_already_halted_still_waits_for_the_operator() -> None:
    """on_daily_loss and on_drawdown both ``halted``. 5 lots long EURUSD at 1.08010 (50 USD a pip); the bid falls to
    1.05000: equity 100,000 + (1.05000 − 1.08010) × 500,000 = 84,950, a 15.05 % fall of the day and from the peak of
    100,000: both limits breached. The next day the bid is 1.07010: equity 95,000, above the drawdown floor of 90,000.
    The drawdown breach halts until ``fxrun risk resume``; the new day may lift the daily-loss part only."""
    e = engine(on_daily_loss="halted", on_drawdown="halted")
    a = decide(e).approved
    e.on_order_event(order_event(a, "filled", T, 5.0, 1.0801), T)
    equity = D("100000") + (D("1.05000") - D("1.08010")) * 500_000
    assert equity == D("84950") and equity < D("100000") * (1 - D("0.10"))
    e.on_quote("EURUSD", "1.05000", "1.05010", T + 1, T + 1)
    assert e.state.state.value == "halted"
    alerts = e.on_quote("EURUSD", "1.07010", "1.07020", T + DAY, T + DAY)
    assert D("100000") + (D("1.07010") - D("1.08010")) * 500_000 == D("95000")
    assert e.state.state.value == "halted", f"the drawdown halt was lifted by a new day: {[a['message'] for a in alerts]}"


def test_a_resume_before_the_equity_is_known_is_not_undone_by_the_loss_it_acknowledged() -> None:
    """Halted by a drawdown (equity 84,950 against a peak of 100,000), the gate restarts from its snapshot; the operator's
    resume arrives before reconciliation (the mailbox is read at start, before the broker's state and any price): the
    equity is unknown then. Whatever the resume answered must still hold once the equity is known; today the first mark
    after reconciliation breaches the drawdown again against the old peak and halts."""
    e = engine(reconcile="broker")
    e.on_broker_state(broker_state("100000"), T)
    a = decide(e).approved
    e.on_order_event(order_event(a, "filled", T, 5.0, 1.0801), T)
    e.on_quote("EURUSD", "1.05000", "1.05010", T + 1, T + 1)
    assert e.state.state.value == "halted" and e.state.set_by == "drawdown"
    snap = json.loads(json.dumps(e.snapshot()))

    restarted = RiskEngine(RiskParams(reconcile="broker"), RULES, Account())
    restarted.restore(snap)
    status, _ = restarted.control("resume", "loss seen", T + HOUR, "cmd-1", "ops")
    prime(restarted, ("GBPUSD", "USDJPY", "EURJPY", "XAUUSD"), now=T + HOUR)
    restarted.on_quote("EURUSD", "1.05000", "1.05010", T + HOUR, T + HOUR)
    restarted.on_broker_state(broker_state("100000", [{"symbol": "EURUSD", "quantity": 5.0, "avg_price": 1.0801}]), T + HOUR)
    assert restarted.state.state.value == status["state"], (status["state"], restarted.state)


def test_a_fill_redelivered_after_reconciliation_is_counted_once() -> None:
    """The gate held 1 lot long (filled at T, its order done) and went down. At T + 20 min the broker's stop loss closed
    it (fill ``deal-sl``). The gate restarts at T + 1 h and reconciles: the broker is flat. Then the durable
    ``broker.fill.>`` consumer delivers ``deal-sl``, published while the gate was down. The broker's state answered the
    gate's own query (the fills at or after its ``since_ms``), so it is the query's window that decides whether the
    gate knows the fill was already counted. The gate must end flat, as the broker is."""
    e = engine(reconcile="broker", fixed_lots=1.0)
    e.on_broker_state(broker_state("100000"), T)
    a = decide(e).approved
    coid = client_order_id(a["signal_id"])
    e.on_fill(a_fill(coid, "deal-1", 1.0, 1.0801, T), T)
    e.on_order_event(order_event(a, "filled", T, 1.0, 1.0801), T)
    assert e.book.nets() == {"EURUSD": D(1)} and e.book.pending == {}
    snap = json.loads(json.dumps(e.snapshot()))

    stop_loss = a_fill("sl-1", "deal-sl", 1.0, 1.0781, T + 20 * MINUTE, side="sell")
    broker_fills = [a_fill(coid, "deal-1", 1.0, 1.0801, T), stop_loss]
    restarted = RiskEngine(RiskParams(reconcile="broker", fixed_lots=1.0), RULES, Account())
    restarted.restore(snap)
    now = T + HOUR
    prime(restarted, ("EURUSD", "GBPUSD", "USDJPY"), now=now)
    query = restarted.reconcile_query(now)
    answered = [f for f in broker_fills if f["ts"] >= query["since_ms"]]
    restarted.on_broker_state(broker_state("99800", fills=answered), now)
    assert restarted.reconciled and restarted.book.nets() == {}
    restarted.on_fill(stop_loss, now)  # the durable redelivery of the deal published while the gate was down
    assert restarted.book.nets() == {}, f"the gate counts {restarted.book.nets()} lots the broker does not hold"


def test_a_gate_that_lost_its_state_counts_a_redelivered_fill_once() -> None:
    """No snapshot at all (the state file lost, the durable consumer's place in the stream kept): the fills the broker
    reports since the gate's dedup window are known to be in its positions, so a fill of an hour ago, delivered after
    reconciliation, is a duplicate."""
    stop_loss = a_fill("sl-1", "deal-sl", 1.0, 1.0781, T + 20 * MINUTE, side="sell")
    opened = a_fill("o-1", "deal-1", 1.0, 1.0801, T)
    fresh = RiskEngine(RiskParams(reconcile="broker", fixed_lots=1.0), RULES, Account())
    now = T + HOUR
    prime(fresh, ("EURUSD", "GBPUSD", "USDJPY"), now=now)
    query = fresh.reconcile_query(now)
    assert query["since_ms"] == now - 7 * DAY - 10 * MINUTE  # dedup_window, less pending_timeout
    answered = [f for f in (opened, stop_loss) if f["ts"] >= query["since_ms"]]
    fresh.on_broker_state(broker_state("99800", fills=answered), now)
    fresh.on_fill(stop_loss, now)  # published while the gate was down: its consumer had not acknowledged it
    assert fresh.reconciled and fresh.book.nets() == {}, f"the gate counts {fresh.book.nets()} lots the broker does not hold"


# =========================================================================== around the fixes


def test_a_signal_refused_as_from_the_future_is_still_decided_once() -> None:
    """Its decision marks it seen (a redelivery is a duplicate), remembered as of the clock plus the allowed skew, not as
    of its own time: an id dated days ahead must not hold back the pruning of every id decided after it."""
    e = engine()
    sig = signal(ts=T + 8 * DAY)
    assert decide(e, sig, now=T).decision["reasons"][0].startswith("signal from the future")
    assert e.decide(dict(sig), T + 1_000) is None
    assert e.seen[sig["signal_id"]] == T + 5_000


def test_checking_the_throttle_drops_nothing() -> None:
    """A check at a later time (a signal that will be refused) leaves the approvals in the window of an earlier one."""
    from nodes.risk.rules import Throttle

    throttle = Throttle(1, MINUTE)
    throttle.record(T)
    assert throttle.check(T + 2 * MINUTE).ok
    assert not throttle.check(T + 1).ok and list(throttle.times) == [T]
    throttle.expire(T + MINUTE)
    assert throttle.check(T + 1).ok and list(throttle.times) == []


def test_a_late_event_of_an_order_cancelled_part_filled_brings_nothing_back_after_a_restart() -> None:
    """5 lots approved, 2 filled, the rest cancelled; the gate restarts and reconciles (the broker reports the 2-lot fill
    of the order): the order stays done, so its 'partially_filled' event redelivered then does not count 3 lots pending."""
    e = engine(reconcile="broker")
    e.on_broker_state(broker_state("100000"), T)
    a = decide(e).approved
    assert a["quantity"] == 5.0
    coid = client_order_id(a["signal_id"])
    e.on_fill(a_fill(coid, "deal-1", 2.0, 1.0801, T + 1), T + 1)
    e.on_order_event(order_event(a, "partially_filled", T + 1, 2.0, 1.0801), T + 1)
    e.on_order_event(order_event(a, "cancelled", T + 2, 2.0, 1.0801), T + 2)
    assert e.book.nets() == {"EURUSD": D(2)} and e.book.pending == {}
    snap = json.loads(json.dumps(e.snapshot()))

    restarted = RiskEngine(RiskParams(reconcile="broker"), RULES, Account())
    restarted.restore(snap)
    now = T + HOUR
    prime(restarted, ("EURUSD", "GBPUSD", "USDJPY"), now=now)
    query = restarted.reconcile_query(now)
    answered = [f for f in [a_fill(coid, "deal-1", 2.0, 1.0801, T + 1)] if f["ts"] >= query["since_ms"]]
    assert answered
    held = [{"symbol": "EURUSD", "quantity": 2.0, "avg_price": 1.0801}]
    restarted.on_broker_state(broker_state("100000", held, answered), now)
    restarted.on_order_event(order_event(a, "partially_filled", T + 1, 2.0, 1.0801), now)
    assert restarted.book.nets() == {"EURUSD": D(2)} and restarted.book.pending == {}


def test_a_drawdown_breach_under_a_stricter_daily_loss_halt_reduces_from_the_next_day_until_resume() -> None:
    """on_daily_loss ``halted``, on_drawdown ``reducing``: the numbers of the test above. The new day lifts the halt to
    the drawdown's ``reducing``, not to active; the operator's resume makes it active, and it stays so."""
    e = engine(on_daily_loss="halted", on_drawdown="reducing")
    a = decide(e).approved
    e.on_order_event(order_event(a, "filled", T, 5.0, 1.0801), T)
    alerts = e.on_quote("EURUSD", "1.05000", "1.05010", T + 1, T + 1)
    assert (e.state.state.value, e.state.set_by) == ("halted", "daily_loss")
    assert [x["type"] for x in alerts] == ["daily_loss", "trading_state", "drawdown"]
    e.on_quote("EURUSD", "1.07010", "1.07020", T + DAY, T + DAY)
    assert (e.state.state.value, e.state.set_by) == ("reducing", "drawdown")
    status, _ = e.control("resume", "seen", T + DAY, "cmd-r", "ops")
    assert status["state"] == "active" and e.state.until_resume is None
    e.on_quote("EURUSD", "1.07000", "1.07010", T + DAY + 1, T + DAY + 1)
    assert e.state.state.value == "active"


def test_a_resume_waiting_for_the_equity_survives_a_restart() -> None:
    """The resume of the test above, then a snapshot before any mark knew the equity: the gate restored from it restarts
    the peak from the first equity it knows (84,950), and stays active."""
    e = engine(reconcile="broker")
    e.on_broker_state(broker_state("100000"), T)
    a = decide(e).approved
    e.on_order_event(order_event(a, "filled", T, 5.0, 1.0801), T)
    e.on_quote("EURUSD", "1.05000", "1.05010", T + 1, T + 1)
    assert e.state.state.value == "halted"
    first = RiskEngine(RiskParams(reconcile="broker"), RULES, Account())
    first.restore(json.loads(json.dumps(e.snapshot())))
    status, _ = first.control("resume", "loss seen", T + HOUR, "cmd-1", "ops")
    assert status["state"] == "active"
    snap = json.loads(json.dumps(first.snapshot()))
    assert snap["restart_marks"] is True

    second = RiskEngine(RiskParams(reconcile="broker"), RULES, Account())
    second.restore(snap)
    prime(second, ("GBPUSD", "USDJPY", "EURJPY", "XAUUSD"), now=T + HOUR)
    second.on_quote("EURUSD", "1.05000", "1.05010", T + HOUR, T + HOUR)
    second.on_broker_state(broker_state("100000", [{"symbol": "EURUSD", "quantity": 5.0, "avg_price": 1.0801}]), T + HOUR)
    assert second.state.state.value == "active" and second.peak == D("84950") and not second.restart_marks


def test_the_reconciliation_window_reaches_back_to_the_snapshot_when_no_fill_is_remembered() -> None:
    """A gate that counted no fill or order event (none kept: nothing traded) asks for the fills since its snapshot's
    event time (less ``pending_timeout``), not since the ticks that arrived after its restart."""
    e = engine(reconcile="broker")
    e.on_broker_state(broker_state("100000"), T)
    e.book.orders.clear()
    snap = json.loads(json.dumps(e.snapshot()))
    assert snap["watermark"] == T and snap["book"]["orders"] == {} and snap["book"]["fills"] == {}
    restarted = RiskEngine(RiskParams(reconcile="broker"), RULES, Account())
    restarted.restore(snap)
    prime(restarted, ("EURUSD",), now=T + DAY)
    assert restarted.reconcile_query(T + DAY)["since_ms"] == T - 10 * MINUTE
