"""The dashboard node: a ``role: server`` node serving a read-only web page (see ``app.py``).

Handlers only update the in-memory picture (:class:`~nodes.dashboard.state.DashboardState`)
and put updates in each open page's bounded queue (:class:`~nodes.dashboard.fanout.Hub`); they
never wait for a browser, and the topology binds the inputs through buffers, so a slow page
never slows the trading path. The server and its refresh loop run beside the handlers; the
refresh (counters, positions, equity, metrics) runs on the wall clock and only while a page is
open.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import time
from typing import Any

from framework.asgi import AsgiServer, is_loopback
from framework.durations import parse_seconds
from framework.errors import UserError
from framework.node import Node, handles
from nodes.dashboard.app import build_app
from nodes.dashboard.fanout import Hub
from nodes.dashboard.history import History
from nodes.dashboard.spec import DashboardParams
from nodes.dashboard.state import DashboardState, clean, merge_bars

TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")
STEP_S = 0.1


class Dashboard(Node[DashboardParams]):
    def __init__(self, ctx: Any, params: DashboardParams) -> None:
        super().__init__(ctx, params)
        p = params
        self.state = DashboardState(keep=p.keep, bars=p.history_bars, max_string=p.max_string, max_message_bytes=p.max_message_bytes)
        self.hub = Hub(p.client_queue)
        self.history = History(ctx, max_string=p.max_string)
        self.server: AsgiServer | None = None
        self._previous: dict[str, tuple[float, int, int]] = {}
        self._graph: dict[str, Any] | None = None
        self._joined = False

    # --- start and stop -------------------------------------------------------------------

    def _token(self) -> str | None:
        p = self.params
        token = os.environ.get(p.token_env) or None
        if token is not None and not TOKEN_CHARACTERS.fullmatch(token):
            raise UserError(
                f"${p.token_env}: a dashboard token is at least 16 characters of A-Z a-z 0-9 . _ ~ + / = -",
                path=f"services.{self.ctx.service}.params.token_env",
            )
        if token is None and not is_loopback(p.host):
            raise UserError(
                f"the dashboard would listen on {p.host}, beyond this machine, without a token: set ${p.token_env} "
                "(e.g. to the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`) or bind 127.0.0.1",
                path=f"services.{self.ctx.service}.params.host",
            )
        return token

    async def on_start(self) -> None:
        p = self.params
        token = self._token()
        app = build_app(hub=self.hub, hello=self._hello, chart=self._chart, token=token, loopback=is_loopback(p.host))
        self.server = AsgiServer(app, p.host, p.port, fallback=p.port_fallback, name=self.ctx.service, ws_max_size=4096)
        try:
            await self.server.start()
        except OSError as exc:  # an address not on this machine, or a port held with port_fallback off: the settings
            field = "port" if exc.errno == errno.EADDRINUSE else "host"
            raise UserError(f"the dashboard cannot listen on {p.host}:{p.port}: {exc.strerror or exc}",
                            path=f"services.{self.ctx.service}.params.{field}") from None  # fmt: skip
        note = f" (token required: open it once as {self.server.url}?token=<${p.token_env}>)" if token else ""
        self.ctx.log.info("dashboard on %s%s", self.server.url, note)

    async def run(self) -> None:
        """The server runs on its own task; this refreshes counters (every second) and what the tables say
        (every ``refresh``) while a page is open, and at once for a page that has just opened."""
        every = parse_seconds(self.params.refresh)
        metrics_due = tables_due = 0.0
        while True:
            await asyncio.sleep(STEP_S)
            if not self.hub.clients:
                continue
            now = time.monotonic()
            if self._joined:
                self._joined = False
                metrics_due = tables_due = now
            if now >= metrics_due:
                metrics_due = now + min(1.0, every)
                self._push_metrics()
            if now >= tables_due:
                tables_due = now + every
                await self._push_tables()

    async def on_stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    # --- messages in ----------------------------------------------------------------------

    async def _take(self, message: Any, origin: str) -> None:
        for key, update in self.state.apply(origin, message):
            self.hub.broadcast(key, update)

    @handles("ticks")
    async def on_tick(self, message: Any, origin: str) -> None:
        await self._take(message, origin)

    @handles("bars")
    async def on_bar(self, message: Any, origin: str) -> None:
        await self._take(message, origin)

    @handles("features")
    async def on_features(self, message: Any, origin: str) -> None:
        self.state.counts["features"] += 1

    @handles("events")
    async def on_event(self, message: Any, origin: str) -> None:
        await self._take(message, origin)

    # --- what pages get ---------------------------------------------------------------------

    def _system(self) -> dict[str, Any]:
        if self._graph is None:
            graph = self.ctx.system.graph() if self.ctx.system is not None else {"services": [], "links": []}
            me = self.ctx.service
            graph["links"] = [lk for lk in graph["links"] if me not in (lk["source"], lk["target"])]
            self._graph = graph  # the topology's own names and descriptions
        return self._graph

    def _hello(self) -> dict[str, Any]:
        self._joined = True
        return {
            "service": self.ctx.service,
            "pairs": list(self.ctx.pairs),
            "timeframes": list(self.ctx.timeframes),
            "currency": self.ctx.account.currency,
            "digits": {s: self.ctx.instruments[s].digits for s in self.ctx.pairs if s in self.ctx.instruments},
            "system": self._system(),
            "metrics": self._metrics(),
            **self.state.snapshot(),
        }

    def _metrics(self) -> dict[str, Any]:
        now = time.monotonic()
        services = []
        for snap in self.ctx.system.metrics() if self.ctx.system is not None else []:
            name = snap["service"]
            before = self._previous.get(name)
            if before is not None and now > before[0]:
                dt = now - before[0]
                in_rate, out_rate = (snap["in"] - before[1]) / dt, (snap["out"] - before[2]) / dt
            else:
                in_rate = out_rate = None
            self._previous[name] = (now, snap["in"], snap["out"])
            buffers = snap.get("buffers") or {}
            services.append({
                "name": name, "state": snap["state"], "in": snap["in"], "out": snap["out"],
                "in_rate": in_rate, "out_rate": out_rate, "errors": snap["errors"], "dead_lettered": snap["dead_lettered"],
                "restarts": snap["restarts"], "latency_ms": snap["handler_latency_ms"]["mean"],
                "last_error": clean(snap.get("last_error"), self.params.max_string),
                "buffer_dropped": sum(b.get("dropped", 0) + b.get("conflated", 0) for b in buffers.values()),
            })  # fmt: skip
        return {
            "services": services,
            "dead_letters": self.ctx.system.dead_letters if self.ctx.system is not None else 0,
            "event_ts": self.state.event_ts,
            "counts": dict(self.state.counts),
            "pages": len(self.hub.clients),
            "dropped": self.hub.dropped,
        }

    def _push_metrics(self) -> None:
        self.hub.broadcast("metrics", {"t": "metrics", **self._metrics()})

    async def _push_tables(self) -> None:
        positions = await self.history.positions()
        self.hub.broadcast("positions", {"t": "positions", "rows": positions})
        equity = await self.history.equity(self.params.equity_points)
        self.hub.broadcast("equity", {"t": "equity", **equity})
        performance = await self.history.performance()
        self.hub.broadcast("performance", {"t": "performance", "metrics": performance})

    async def _chart(self, symbol: str, timeframe: str) -> dict[str, Any] | None:
        if symbol not in self.ctx.pairs or timeframe not in self.ctx.timeframes:
            return None
        limit = self.params.history_bars
        stored = await self.history.candles(symbol, timeframe, limit)
        candles = merge_bars(stored, self.state.live_bars(symbol, timeframe), limit)
        since = candles[0]["ts"] if candles else 0
        signals = {s.get("signal_id") or id(s): s for s in await self.history.signals(symbol, since, self.params.keep * 5)}
        for s in self.state.signals_of(symbol):  # live ones carry their stage (approved, rejected)
            signals[f"{s.get('signal_id')}:{s['stage']}" if s["stage"] != "raw" else s.get("signal_id") or id(s)] = s
        orders = {o["order_id"]: o for o in await self.history.orders(symbol, since, self.params.keep * 5)}
        orders.update({o["order_id"]: o for o in self.state.orders_of(symbol)})
        return {
            "symbol": symbol,
            "timeframe": timeframe,
            "candles": candles,
            "signals": [s for s in signals.values() if (s.get("ts") or 0) >= since],
            "orders": [o for o in orders.values() if (o.get("ts") or 0) >= since],
        }
