"""The risk-management service through the real runtime (framework.testing, demo profile, simulated clock):
decisions published, archived and written; bad input dead-lettered; the same input gives the same bytes;
`fxrun risk` over the bus and through the mailbox; the trading state across restarts; reconciliation with the
broker; and, on a real NATS server, the verb reaching a running `fxrun` process whose halt survives SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal as signals
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from framework.errors import UserError
from framework.testing import contracts, load, make_runtime, query, recording_bus
from framework.transport.inprocess import InProcessLog
from nodes.risk_gate import command
from nodes.risk_gate.files import STATE_FILE, service_dir

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "risk-management"
T = 1_793_577_600_000  # Monday 2026-11-02 00:00 UTC, the demo's start
HOUR = 3_600_000
TIMEOUT = 60.0
ENABLE = (f"topology.services.{SERVICE}.enabled=true", "pairs=[EURUSD,USDJPY,XAUUSD]",
          f"++topology.services.{SERVICE}.params.risk_per_trade=0.01")  # the services.yaml limits, whatever the demo sets
NO_BROKER = (*ENABLE, f"++topology.services.{SERVICE}.params.reconcile=none")
CONTRACTS = contracts()


def bar(symbol: str, start: int, close: float, rng: float) -> dict[str, Any]:
    return {"symbol": symbol, "timeframe": "1h", "ts": start, "ts_close": start + HOUR, "open": close, "high": close + rng / 2,
            "low": close - rng / 2, "close": close, "volume": 1.0, "tick_count": 1, "spread_mean": None, "spread_min": None,
            "spread_max": None, "source": "test"}  # fmt: skip


def tick(symbol: str, bid: float, ask: float, ts: int = T) -> dict[str, Any]:
    return {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "test"}


def sig(sid: str, side: str = "buy", symbol: str = "EURUSD", ts: int = T, **extra: Any) -> dict[str, Any]:
    return {"signal_id": sid, "symbol": symbol, "timeframe": "1h", "ts": ts, "side": side, "confidence": 0.9, "model_id": "m", **extra}


async def prime(bus: Any, rt: Any) -> None:
    """15 hourly bars (ATR 10 pips) and a quote, on the simulated clock."""
    await rt.clock.wait_until(T)
    for i in range(15):
        await bus.publish("bars.EURUSD.1h", bar("EURUSD", T - (15 - i) * HOUR, 1.08, 0.001))
    await bus.publish("ticks.EURUSD", tick("EURUSD", 1.08, 1.0801))


def order_event(approved: dict[str, Any], status: str, filled: float, price: float | None = None) -> dict[str, Any]:
    out = {"order_id": "o-" + approved["decision_id"], "client_order_id": "o-" + approved["decision_id"], "signal_id": approved["signal_id"],
           "decision_id": approved["decision_id"], "symbol": approved["symbol"], "side": approved["side"], "order_type": "market",
           "quantity": approved["quantity"], "status": status, "ts": T, "filled_quantity": filled}  # fmt: skip
    if price is not None:
        out["avg_price"] = price
    return out


def letters(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "deadletter" / f"{SERVICE}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- decisions through the runtime


async def run_scenario(data_dir: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[Any], list[dict[str, Any]]]:
    loaded = load(data_dir, *NO_BROKER)
    bus, got = await recording_bus("signals.approved.>", "signals.rejected.>", "risk.alert.>")
    log = InProcessLog()
    rt = make_runtime(loaded, data_dir, pubsub=bus, log_transport=log, only=[SERVICE])
    await rt.start()
    try:
        await prime(bus, rt)
        await bus.publish("signals.raw.EURUSD", sig("s1"), {"fxflow-id": "inference-sim-1"})  # approved: 5 lots
        await bus.publish("signals.raw.EURUSD", sig("s1"))  # the same signal again: no second decision
        approved = got[-1][1]
        await bus.publish("broker.fill.EURUSD", {"fill_id": "f1", "order_id": "o-" + approved["decision_id"], "symbol": "EURUSD",
                                                 "side": "buy", "quantity": 5.0, "price": 1.0801, "ts": T, "commission": 5.0})  # fmt: skip
        await bus.publish("orders.filled.EURUSD", order_event(approved, "filled", 5.0, 1.0801))  # the same 5 lots: counted once
        await bus.publish("signals.raw.EURUSD", sig("s2"))  # already long: rejected
        await bus.publish("signals.raw.EURUSD", sig("s3", side="flat", ts=T - 60_000))  # stale (default ttl 1m)
        await bus.publish("ticks.EURUSD", tick("EURUSD", 1.0700, 1.0701))  # 101 pips down: 5,050 USD > 3 %: reducing
        await bus.publish("signals.raw.USDJPY", sig("s4", symbol="USDJPY"))  # reducing, nothing to reduce
        await bus.publish("signals.raw.EURUSD", sig("s5", side="flat"))  # closing passes
        archived = [r.value for batch in [b async for b in log.read(["risk_events_archive"], 0)] for r in batch]
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    rows = await query(data_dir, "SELECT decision_id, signal_id, decision, reasons, checks, quantity, msg_id, cause_id "
                                 "FROM risk_decisions ORDER BY msg_id")  # fmt: skip
    return got, archived, rows


async def test_decisions_are_published_archived_and_written(tmp_path: Path) -> None:
    got, archived, rows = await run_scenario(tmp_path)
    subjects = [(s, p.get("signal_id") or p["type"]) for s, p in got]
    assert subjects == [
        ("signals.approved.EURUSD", "s1"),
        ("signals.rejected.EURUSD", "s2"),
        ("signals.rejected.EURUSD", "s3"),
        ("risk.alert.daily_loss", "daily_loss"),
        ("risk.alert.trading_state", "trading_state"),
        ("signals.rejected.USDJPY", "s4"),
        ("signals.approved.EURUSD", "s5"),
    ]
    by_id = {p["signal_id"]: p for s, p in got if s.startswith("signals.")}
    assert (by_id["s1"]["side"], by_id["s1"]["quantity"], by_id["s1"]["stop_loss"]) == ("buy", 5.0, 1.0781)
    assert by_id["s2"]["reasons"] == ["nothing to do: already long 5 lots (pyramiding is off)"]
    assert by_id["s3"]["reasons"] == ["stale signal: 60000 ms old, its time to live is 60000 ms"]
    assert by_id["s4"]["reasons"] == ["trading is reducing: only orders that reduce a position pass"]
    assert (by_id["s5"]["side"], by_id["s5"]["quantity"]) == ("sell", 5.0)
    for subject, payload in got:
        contract = {"approved": "approved_signal.v1", "rejected": "risk_decision.v1", "alert": "alert.v1"}[subject.split(".")[1]]
        assert CONTRACTS.resolve(contract).validate(payload) is None
    assert sorted(d["signal_id"] for d in archived) == ["s1", "s2", "s3", "s4", "s5"]  # every decision, once, in Kafka (keyed by symbol)
    assert sorted(r["signal_id"] for r in rows) == ["s1", "s2", "s3", "s4", "s5"]  # and in risk_decisions
    row = next(r for r in rows if r["signal_id"] == "s2")
    checks = row["checks"] if isinstance(row["checks"], dict) else json.loads(row["checks"])
    assert checks["position"]["ok"] is False and checks["sizing"] == {"ok": None, "skipped": "nothing opens"}
    assert next(r for r in rows if r["signal_id"] == "s1")["cause_id"] == "inference-sim-1"  # the signal that caused it (fxrun trace)


async def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    first = await run_scenario(tmp_path / "a")
    second = await run_scenario(tmp_path / "b")
    assert orjson.dumps(first[0]) == orjson.dumps(second[0]) and orjson.dumps(first[1]) == orjson.dumps(second[1])
    strip = [{k: v for k, v in r.items()} for r in first[2]]
    assert strip == second[2]


async def test_bad_input_is_dead_lettered_with_a_reason(tmp_path: Path) -> None:
    loaded = load(tmp_path, *NO_BROKER)
    bus, got = await recording_bus("signals.approved.>", "signals.rejected.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    try:
        await prime(bus, rt)
        await bus.publish("signals.raw.EURUSD", sig("bad-1", symbol="EURXYZ"))
        await bus.publish("signals.raw.EURUSD", sig("bad-2", side="long"))
        await bus.publish("orders.filled.EURUSD", {**order_event({"decision_id": "d", "signal_id": "s", "symbol": "EURXYZ",
                                                                    "side": "buy", "quantity": 1.0}, "filled", 1.0, 1.1)})  # fmt: skip
        await bus.publish("signals.raw.EURUSD", sig("good"))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [p["signal_id"] for _, p in got] == ["good"]  # bad input decided nothing, the rest went on
    reasons = [(d["reason"], d["origin"]) for d in letters(tmp_path)]
    assert reasons == [
        ("bad signal: unknown symbol 'EURXYZ': not an instrument of this topology", "signals.raw.EURUSD"),
        ("bad signal: side 'long' is not one of buy, sell, flat", "signals.raw.EURUSD"),
        ("order event not applied: ValueError: order event for unknown symbol 'EURXYZ'", "orders.filled.EURUSD"),
    ]
    m = {s["service"]: s for s in rt.metrics()}[SERVICE]
    assert (m["errors"], m["dead_lettered"]) == (0, 3)


# --------------------------------------------------------------------------- the topology


@pytest.mark.parametrize("profile", ["demo", "live", "backtest"])
def test_every_profile_lints_clean_with_the_gate_enabled(profile: str) -> None:
    found = _lint(f"topology={profile}", f"topology.services.{SERVICE}.enabled=true")
    assert not [f for f in found if f.level == "error"], [f.message for f in found if f.level == "error"]


def test_the_topology_lists_every_alert_type_the_gate_raises() -> None:
    from framework.topology.load import load_run
    from nodes.risk.engine import ALERT_TYPES

    alerts = load_run(["topology=demo"], ROOT).topology.services[SERVICE].outputs["alerts"]
    assert alerts.values["type"] == list(ALERT_TYPES)


def test_only_a_services_own_control_subject_counts_as_published() -> None:
    """``control.<service>`` is published by `fxrun` (framework/control.py); any other unpublished subject is FX201."""
    found = _lint("topology=demo", f"topology.services.{SERVICE}.inputs.control.nats=risk.control")
    assert [(f.code, f.service) for f in found if f.level == "error"] == [("FX201", SERVICE)]


def _lint(*overrides: str) -> list[Any]:
    from framework.contracts import ContractRegistry
    from framework.lint import lint
    from framework.registry import Registry
    from framework.topology.load import load_run

    loaded = load_run(list(overrides), ROOT)
    return lint(loaded.topology, loaded.source, Registry.discover(), ContractRegistry.load(ROOT / "contracts"), pairs=loaded.config.pairs)


# --------------------------------------------------------------------------- the verb, the files, restarts


async def test_the_verb_over_the_bus_and_through_the_mailbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load(tmp_path, *NO_BROKER)
    bus, got = await recording_bus("signals.approved.>", "signals.rejected.>", "risk.alert.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    directory = service_dir(tmp_path, SERVICE)
    try:
        await prime(bus, rt)
        status = await bus.request(f"control.{SERVICE}", {"command": "reduce", "ts": T, "command_id": "c1", "reason": "CPI at 13:30"})
        assert (status["state"], status["set_by"], status["reason"]) == ("reducing", "operator", "CPI at 13:30 [operator]")
        assert json.loads((directory / STATE_FILE).read_text())["state"] == "reducing"  # recorded at once
        await bus.publish("signals.raw.EURUSD", sig("s1"))
        assert got[-1][1]["reasons"] == ["trading is reducing: only orders that reduce a position pass"]

        # in-process, `fxrun risk` cannot reach the running gate: it queues the command in the mailbox
        assert command.main(["resume", "--reason", "done", "topology=demo", f"data_dir={tmp_path}"]) == 0
        assert "resume queued" in capsys.readouterr().out
        await bus.publish("signals.raw.EURUSD", sig("s2"))  # applied before this decision
        assert got[-1][0] == "signals.approved.EURUSD"
        assert command.main(["halt", "topology=demo", f"data_dir={tmp_path}"]) == 0
        assert command.main(["status", "topology=demo", f"data_dir={tmp_path}"]) == 0
        assert "queued, not applied yet: halt" in capsys.readouterr().out
        await bus.publish("signals.raw.USDJPY", sig("s3", symbol="USDJPY"))
        assert got[-1][1]["reasons"] == ["trading is halted"]
        assert command.main(["status", "--json", "topology=demo", f"data_dir={tmp_path}"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["state"], shown["set_by"]) == ("halted", "operator") and "queued" not in shown
        bad = await bus.request(f"control.{SERVICE}", {"command": "pause", "ts": T})
        assert "unknown risk command 'pause'" in bad["error"] and bad["state"] == "halted"
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    states = [p["message"] for s, p in got if s == "risk.alert.trading_state"]
    assert [m.split(" (")[0] for m in states] == ["trading active → reducing", "trading reducing → active", "trading active → halted"]
    with pytest.raises(UserError, match="--service 'nope' is not a risk gate of this topology"):
        command.main(["halt", "--service", "nope", "topology=demo", f"data_dir={tmp_path}"])


async def test_state_survives_a_restart_and_a_lost_snapshot(tmp_path: Path) -> None:
    async def run(*signals_in: dict[str, Any], control: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        bus, got = await recording_bus("signals.approved.>", "signals.rejected.>")
        rt = make_runtime(load(tmp_path, *NO_BROKER), tmp_path, pubsub=bus, only=[SERVICE])
        await rt.start()
        try:
            await prime(bus, rt)
            if control:
                await bus.request(f"control.{SERVICE}", control)
            for s in signals_in:
                await bus.publish(f"signals.raw.{s['symbol']}", s)
        finally:
            await asyncio.wait_for(rt.stop(), TIMEOUT)
        return got

    first = await run(sig("s1"), control=None)
    assert [p["signal_id"] for _, p in first] == ["s1"]
    again = await run(sig("s1"), sig("s2", symbol="USDJPY"), sig("s2b"), control={"command": "halt", "ts": T, "command_id": "h1"})
    assert [p["signal_id"] for _, p in again] == ["s2", "s2b"]  # s1 was decided before the restart: not again
    assert again[0][1]["reasons"] == ["trading is halted"]
    assert again[1][1]["checks"]["position"]["net"] == 5.0  # the approval of s1 still pending after the restart
    (service_dir(tmp_path, SERVICE) / "state.json").unlink()  # as after a SIGKILL: no snapshot at stop
    third = await run(sig("s3"))
    assert third[0][1]["reasons"] == ["trading is halted"]  # the state of record outlives the snapshot


async def test_a_queued_verb_applies_at_start_and_an_unreadable_state_halts(tmp_path: Path) -> None:
    assert command.main(["reduce", "--reason", "weekend", "topology=demo", f"data_dir={tmp_path}"]) == 0  # the gate is not running

    async def run(*signals_in: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        bus, got = await recording_bus("signals.rejected.>", "risk.alert.trading_state")
        rt = make_runtime(load(tmp_path, *NO_BROKER), tmp_path, pubsub=bus, only=[SERVICE])
        await rt.start()
        try:
            await prime(bus, rt)
            for s in signals_in:
                await bus.publish(f"signals.raw.{s['symbol']}", s)
        finally:
            await asyncio.wait_for(rt.stop(), TIMEOUT)
        return got

    got = await run(sig("s1"))
    assert [s for s, _ in got] == ["risk.alert.trading_state", "signals.rejected.EURUSD"]  # the alert of the start goes out first
    assert got[1][1]["reasons"] == ["trading is reducing: only orders that reduce a position pass"]
    (service_dir(tmp_path, SERVICE) / STATE_FILE).write_text("{not json")
    got = await run(sig("s2"))
    assert got[-1][1]["reasons"] == ["trading is halted"]  # fail closed


async def test_reconciliation_with_the_broker(tmp_path: Path) -> None:
    loaded = load(tmp_path, *ENABLE)  # reconcile: broker (the default)
    bus, got = await recording_bus("signals.approved.>", "signals.rejected.>", "risk.alert.reconciliation")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    queries: list[dict[str, Any]] = []
    try:
        await prime(bus, rt)
        await bus.publish("signals.raw.EURUSD", sig("s1", side="flat"))
        assert got[-1][1]["reasons"][0].startswith("not reconciled: the broker did not answer: NoResponders")
        assert got[-2][0] == "risk.alert.reconciliation"

        async def broker(subject: str, query: dict[str, Any], headers: Any) -> dict[str, Any]:
            queries.append(query)
            return {"ts": query["ts"], "connected": True,
                    "account": {"currency": "USD", "balance": 98_000.0, "equity": 98_100.0, "margin": 3600.0},
                    "positions": [{"symbol": "EURUSD", "quantity": -1.0, "avg_price": 1.081}], "orders": [], "fills": []}  # fmt: skip

        await bus.subscribe("broker.query", broker)
        await rt.clock.wait_until(T + 5_000)  # asked again after reconcile_retry
        await bus.publish("ticks.EURUSD", tick("EURUSD", 1.08, 1.0801, T + 5_000))
        await bus.publish("signals.raw.EURUSD", sig("s2", side="flat", ts=T + 5_000))
        await bus.publish("signals.raw.EURUSD", sig("s3", side="flat", ts=T + 5_000))
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    assert [q["query"] for q in queries] == ["state"] and CONTRACTS.resolve("broker_query.v1").validate(queries[0]) is None
    approved = [p for s, p in got if s.startswith("signals.approved")]
    assert [(p["signal_id"], p["side"], p["quantity"]) for p in approved] == [("s2", "buy", 1.0)]  # closes the broker's short
    assert got[-1][1]["reasons"] == ["nothing to do: already flat"]  # the short and the pending close of s2 net to nothing


async def test_atr_warms_up_from_historical_bars_at_a_live_start(tmp_path: Path) -> None:
    """On a wall clock the gate reads the last bars of historical_aggregates at start, so a fresh deployment sizes at
    once; the same ATR as TA-Lib over those bars."""
    import numpy as np
    import talib

    from framework.stores.clickhouse import ClickHouseStore

    loaded = load(tmp_path, *NO_BROKER, "topology.runtime.clock=wall", f"++topology.services.{SERVICE}.params.atr_warmup=30")
    rt = make_runtime(loaded, tmp_path, only=[SERVICE])
    await rt.start()
    await asyncio.wait_for(rt.stop(), TIMEOUT)  # the tables exist now
    now = int(time.time() * 1000) // HOUR * HOUR
    closes = 1.08 + 0.001 * np.sin(np.arange(40) / 3)
    rows = [bar("EURUSD", now - (40 - i) * HOUR, float(c), 0.0008 + 0.0001 * (i % 5)) for i, c in enumerate(closes)]
    store = ClickHouseStore("check", f"chdb://{tmp_path}/clickhouse")
    await store.connect()
    try:
        values = ",".join(f"('EURUSD','1h',{r['ts']},{r['ts_close']},{r['open']!r},{r['high']!r},{r['low']!r},{r['close']!r},1,1,'test')" for r in rows)
        await store.command("INSERT INTO historical_aggregates (symbol, timeframe, ts, ts_close, open, high, low, close, volume, "
                            f"tick_count, source) VALUES {values}")  # fmt: skip
    finally:
        await store.close()
    rt = make_runtime(loaded, tmp_path, only=[SERVICE])
    await rt.start()
    try:
        atr = rt.hosts[SERVICE].node.engine.atr[("EURUSD", "1h")]
    finally:
        await asyncio.wait_for(rt.stop(), TIMEOUT)
    last = rows[-30:]  # atr_warmup: 30 bars
    expected = talib.ATR(*(np.array([r[k] for r in last]) for k in ("high", "low", "close")), 14)[-1]
    assert atr.value == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- live: NATS, a real process, SIGKILL


def _env(nats_url: str) -> dict[str, str]:
    return {**os.environ, "FXFLOW_NATS_URL": nats_url, "NATS_USER": "fxflow", "NATS_PASSWORD": "unused", "PYTHONUNBUFFERED": "1"}


def _fxrun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv/bin/fxrun"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


LIVE = ("topology=live", "only=[risk-management]", f"topology.services.{SERVICE}.enabled=true", "topology.runtime.log=inprocess",
        f"++topology.services.{SERVICE}.params.reconcile=none", "pairs=[EURUSD]")  # fmt: skip


def _wait_answering(data_dir: Path, env: dict[str, str], proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the service exited: {proc.stdout.read().decode() if proc.stdout else ''}"
        out = _fxrun("risk", "status", *LIVE[:1], f"data_dir={data_dir}", "--timeout", "2", env=env)
        if out.returncode == 0:
            return out.stdout
        time.sleep(0.5)
    raise AssertionError("the risk gate never answered on its control subject")


def test_the_verb_reaches_a_running_process_and_a_halt_survives_sigkill(tmp_path: Path, nats_server: Any) -> None:
    env = _env(nats_server.url)
    data = tmp_path / "live"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(ROOT / ".venv/bin/fxrun"), *LIVE, f"data_dir={data}"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    proc = start()
    try:
        assert "risk-management: active" in _wait_answering(data, env, proc)
        halted = _fxrun("risk", "halt", "--reason", "drill", "topology=live", f"data_dir={data}", env=env)
        assert halted.returncode == 0, halted.stderr
        assert "risk-management: halted" in halted.stdout and "by operator: drill" in halted.stdout
        os.killpg(proc.pid, signals.SIGKILL)  # no stop, no snapshot
        proc.wait(30)
        assert not (service_dir(data, SERVICE) / "state.json").exists()
        proc = start()
        assert "risk-management: halted" in _wait_answering(data, env, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signals.SIGKILL)
            proc.wait(30)
    gone = _fxrun("risk", "status", "topology=live", f"data_dir={data}", "--timeout", "1", env=env)
    assert gone.returncode == 1 and "no risk gate answered on control.risk-management" in gone.stderr
