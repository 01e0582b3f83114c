"""The risk gate node: the engine (nodes/risk) wired to its ports, its files and its clock.

- ``signals``: validated (bad input is dead-lettered with the reason), decided once per id;
  each decision goes to ``decisions`` (Kafka risk_events_archive, table risk_decisions), then
  to ``approved`` or ``rejected``.
- ``ticks``, ``bars``, ``orders``, ``fills``, ``calendar``: the engine's view of the market and
  the account; breaches found while marking to market change the trading state at once.
- ``control``: ``fxrun risk …`` over the bus; the handler's return value (the status) is the reply.
- Reconciliation: with ``reconcile: broker`` the gate asks the broker's state on its ``broker``
  port before it decides anything (on the first tick or signal, again every ``reconcile_retry``
  until answered); until then every signal is rejected, "not reconciled".
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from framework.node import Node, handles
from nodes.risk.engine import BadSignal, RiskEngine
from nodes.risk.params import RiskParams
from nodes.risk.state import COMMANDS, StateOfRecord, TradingState
from nodes.risk_gate.files import MAILBOX, STATE_FILE, Mailbox, read_json, write_json
from nodes.trading.fills import fill_problem
from nodes.trading.instruments import Rules

WARMUP_SQL = (
    "SELECT symbol, timeframe, ts, high, low, close FROM {table} FINAL "
    "WHERE ts_close <= {now:Int64} AND coalesce(complete, true) "
    "ORDER BY symbol, timeframe, ts DESC LIMIT {n:UInt32} BY symbol, timeframe"
)


class RiskGate(Node[RiskParams]):
    state_version = 1

    def __init__(self, ctx: Any, params: RiskParams) -> None:
        super().__init__(ctx, params)
        rules = {symbol: Rules.of(symbol, instrument) for symbol, instrument in ctx.instruments.items()}
        self.engine = RiskEngine(params, rules, ctx.account, ctx.service)
        self.duplicates = 0
        directory = Path(ctx.data_dir)
        self.state_path = directory / STATE_FILE if params.state_file else None
        self.mailbox = Mailbox(directory / MAILBOX) if params.state_file else None
        self._recorded: StateOfRecord | None = None
        self._started = False
        self._deferred: list[dict[str, Any]] = []

    def snapshot(self) -> Any:
        return self.engine.snapshot()

    def restore(self, state: Any) -> None:
        self.engine.restore(state)

    async def on_start(self) -> None:
        if self.state_path is not None:
            self._read_state_of_record(self.state_path)
        self._recorded = self.engine.state
        await self._poll_mailbox(self._now())
        self._started = True
        await self._warm_up()

    def _read_state_of_record(self, path: Path) -> None:
        """The trading state the gate last recorded wins over the snapshot's (it is written on every change). One
        that cannot be read halts the gate: fail closed, until an operator looks and resumes."""
        try:
            doc = read_json(path)
            if doc is None:
                return
            self.engine.state = StateOfRecord.from_json(doc)
            for command_id in doc.get("applied_commands", ()):
                self.engine.applied_commands.setdefault(str(command_id), self.engine.state.since)
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"{path.name} unreadable ({type(exc).__name__}: {exc}); check it, then fxrun risk resume"
            self.ctx.log.error("risk gate halted: %s", reason)
            self.engine.state = StateOfRecord(TradingState.HALTED, "operator", reason, self._now())

    def _now(self) -> int:
        return self.ctx.clock.now_ms()

    # ------------------------------------------------------------------ inputs

    @handles("signals")
    async def on_signal(self, signal: dict[str, Any], origin: str = "signals") -> None:
        try:
            self.engine.validate(signal)
        except BadSignal as exc:
            await self.ctx.dead_letter(f"bad signal: {exc}", signal, origin, "signal.v1")
            return
        now = self._now()
        await self._poll_mailbox(now)
        await self._reconcile(now)
        outcome = self.engine.decide(signal, now)
        if outcome is None:
            self.duplicates += 1
            self.ctx.log.debug("signal %s decided before: no second decision", signal["signal_id"])
            return
        await self.ctx.publish("decisions", outcome.decision)
        if outcome.approved is not None:
            await self.ctx.publish("approved", outcome.approved)
        else:
            await self.ctx.publish("rejected", outcome.decision)
        await self._after(outcome.alerts)

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        now = self._now()
        await self._reconcile(now)
        await self._after(self.engine.on_quote(tick["symbol"], tick["bid"], tick["ask"], tick["ts"], now))

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        await self._after(self.engine.on_bar(bar, self._now()))

    @handles("orders")
    async def on_order(self, event: dict[str, Any], origin: str = "orders") -> None:
        try:
            alerts = self.engine.on_order_event(event, self._now())
        except (KeyError, ValueError, ArithmeticError) as exc:
            await self.ctx.dead_letter(f"order event not applied: {type(exc).__name__}: {exc}", event, origin, "order_event.v1")
            return
        await self._after(alerts)

    @handles("fills")
    async def on_fill(self, fill: dict[str, Any], origin: str = "fills") -> None:
        problem = fill_problem(fill, self.engine.rules)  # the check execution and performance make of the same fills
        if problem is not None:
            await self.ctx.dead_letter(problem, fill, origin, "fill.v1")
            return
        try:
            alerts = self.engine.on_fill(fill, self._now())
        except (KeyError, ValueError, ArithmeticError) as exc:
            await self.ctx.dead_letter(f"fill not applied: {type(exc).__name__}: {exc}", fill, origin, "fill.v1")
            return
        await self._after(alerts)

    @handles("calendar")
    async def on_calendar(self, event: dict[str, Any]) -> None:
        self.engine.on_calendar(event, self._now())

    @handles("control")
    async def on_control(self, command: dict[str, Any], origin: str = "control") -> dict[str, Any]:
        """Apply ``fxrun risk <verb>``; the status is the reply."""
        verb = command.get("command") if isinstance(command, dict) else None
        if verb not in (*COMMANDS, "status"):
            await self.ctx.dead_letter(f"unknown risk command {verb!r} (halt, reduce, resume, status)", command, origin, "risk_control.v1")
            return {"error": f"unknown risk command {verb!r}", **self.engine.status(self._now())}
        return await self._apply(command, self._now())

    # ------------------------------------------------------------------ state

    async def _apply(self, command: dict[str, Any], now: int) -> dict[str, Any]:
        status, alerts = self.engine.control(
            command["command"], command.get("reason"), now, command.get("command_id") or uuid.uuid4().hex, command.get("source")
        )
        await self._after(alerts)
        if command["command"] != "status":
            self.ctx.log.warning("risk command %s (%s): trading is %s", command["command"], command.get("source") or "?", status["state"])
        return status

    async def _poll_mailbox(self, now: int) -> None:
        if self.mailbox is None:
            return
        try:
            command = self.mailbox.take()
        except ValueError as exc:
            self.ctx.log.error("risk control mailbox unreadable, ignored: %s", exc)
            return
        if command is None:
            return
        if command.get("command") not in COMMANDS:
            self.ctx.log.error("risk control mailbox: %r is not a command (halt, reduce, resume); ignored", command.get("command"))
            return
        await self._apply(command, now)

    async def _after(self, alerts: list[dict[str, Any]]) -> None:
        """Publish the alerts (those raised in on_start, before subscribers run, go with the next ones); record the
        trading state if it changed."""
        if not self._started:
            self._deferred.extend(alerts)
            alerts = []
        elif self._deferred:
            alerts, self._deferred = [*self._deferred, *alerts], []
        for alert in alerts:
            await self.ctx.publish("alerts", alert)
        state = self.engine.state
        if state is not self._recorded:
            self._recorded = state
            if self.state_path is not None:
                applied = list(self.engine.applied_commands)[-50:]
                write_json(self.state_path, {**state.to_json(), "applied_commands": applied})

    async def _reconcile(self, now: int) -> None:
        engine = self.engine
        if not engine.reconcile_due(now):
            return
        query = engine.reconcile_query(now)
        try:
            reply = await self.ctx.request("broker", query, timeout=engine.ms["reconcile_timeout"] / 1000)
        except KeyError:
            alerts = engine.reconcile_failed("reconcile: broker needs the output port `broker` bound to the connector's query subject", now)
        except Exception as exc:  # no responder, a timeout, a refused request: not reconciled yet, asked again later
            alerts = engine.reconcile_failed(f"the broker did not answer: {type(exc).__name__}: {exc}", now)
        else:
            alerts = engine.on_broker_state(reply, now)
        await self._after(alerts)

    async def _warm_up(self) -> None:
        """ATR from the last ``atr_warmup`` bars in historical_aggregates, where no snapshot brought it (never bars
        from after the clock: a backtest's clock has not started here, so it warms up on its own bars)."""
        if not self.params.atr_warmup or not getattr(self.ctx.clock, "started", True):
            return
        try:
            table = self.ctx.table("historical_aggregates")
        except KeyError:
            return
        try:
            rows = await table.query(WARMUP_SQL, {"now": self._now(), "n": self.params.atr_warmup})
        except Exception as exc:  # the gate works without: it fails closed on sizing until bars arrive
            self.ctx.log.warning("ATR warm-up skipped: %s: %s", type(exc).__name__, exc)
            return
        rows.sort(key=lambda r: (r["symbol"], r["timeframe"], r["ts"]))
        taken = self.engine.warm_up(rows)
        self.ctx.log.info("ATR warm-up: %d series from %d bars", taken, len(rows))
