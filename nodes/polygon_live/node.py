"""The live collector: Polygon/Massive forex quotes → validated tick.v1, plus gap markers.

Each ``C`` event is normalised (``EUR/USD`` → ``EURUSD``), pairs outside ``ctx.pairs`` are
ignored, and :func:`~nodes.marketdata.quotes.quote_problem` decides what is published: a
crossed, non-positive, non-numeric or stale quote goes to the dead letters with the reason,
as does every frame or event the client cannot read. Good quotes are published on ``ticks``
with ``source: polygon`` and a ``seq`` per symbol that only grows, across crashes too
(:class:`~framework.sequencing.SequenceNumbers`).

On a simulated clock (demo, backtest) the node waits on the clock until each quote's time
before checking and publishing it, so the feed drives event time and the other services'
timers fire in order; live, a quote's time is already now and nothing waits.

After a reconnect the node publishes one ``data_gap.v1`` per pair on ``gaps``: from the
pair's last quote before the drop (or the drop time, when the pair had none) to the first
quote after the reconnect, just before that quote is published.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from framework.durations import parse_ms, parse_seconds
from framework.errors import UserError
from framework.node import Node
from framework.params import utc_ms
from framework.sequencing import SequenceNumbers
from nodes.marketdata.http import redact
from nodes.marketdata.quotes import quote_problem
from nodes.marketdata.symbols import normalize, slashed
from nodes.polygon_live.client import (
    AuthError,
    Backoff,
    Disconnected,
    ForexQuote,
    PolygonForexSocket,
    Reconnected,
    StreamItem,
)
from nodes.polygon_live.simulator import PolygonSimulator
from nodes.polygon_live.spec import PolygonLiveParams

SOURCE = "polygon"
MAX_TS = 253_402_300_799_999
"""The contracts' upper bound for a timestamp (year 9999): beyond it, a unit mistake."""


class MissingApiKey(UserError):
    """Live mode without the API key in the environment: one line naming the variable."""


@dataclass(slots=True)
class _Outage:
    """What the node knew when the feed went away, kept until quotes flow again."""

    reason: str
    at_ms: int | None
    last_ts: dict[str, int]
    drops: int = 1


class PolygonLiveCollector(Node[PolygonLiveParams]):
    client: PolygonForexSocket | None = None
    simulator: PolygonSimulator | None = None
    outage: _Outage | None = None

    async def on_start(self) -> None:
        params = self.params
        self.api_key = self._api_key()
        self.tickers: list[str] = []
        for symbol in self.ctx.pairs:
            try:
                self.tickers.append(slashed(symbol))
            except ValueError:
                self.ctx.log.warning("%s: %s is not a six-letter currency pair; not subscribed", self.ctx.service, symbol)
        if not self.tickers:
            raise UserError(f"service {self.ctx.service}: no subscribable pair in {self.ctx.pairs}")
        self.symbols = [normalize(t) for t in self.tickers]
        self.wanted = frozenset(self.symbols)
        self._symbols: dict[str, str] = {}
        self.max_age_ms = parse_ms(params.max_quote_age) if params.max_quote_age else None
        self.seq = SequenceNumbers(Path(self.ctx.data_dir) / "seq")
        self.last_ts: dict[str, int] = {}
        self.resumed: dict[str, int] = {}
        self.reconnected = False
        self.ignored: dict[str, int] = {}
        if params.simulate:
            self.simulator = self._simulator()
            await self.simulator.start()
            self.ctx.log.info("%s: simulating the Polygon feed on %s", self.ctx.service, self.simulator.url)

    def event_span(self) -> tuple[int, int] | None:
        """The simulated feed's window (the run's progress shows how far it is)."""
        sim = self.simulator
        if sim is None or sim.end_ms is None or self.params.simulation.start is None:
            return None
        return utc_ms(self.params.simulation.start), sim.end_ms

    def _position_file(self) -> Path:
        return Path(self.ctx.data_dir) / "simulation-position.json"

    def _window(self) -> dict[str, Any]:
        sim = self.params.simulation
        return {"start": utc_ms(sim.start) if sim.start else None, "seed": sim.seed, "mean_interval_ms": sim.mean_interval_ms}

    def _load_position(self) -> dict[str, int]:
        """Where an earlier run of the same fixed simulation window stopped, per symbol.

        The synthetic feed is reproducible, so a restarted demo continues after the last
        quote it published instead of publishing the window again.
        """
        try:
            saved = json.loads(self._position_file().read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict) or saved.get("window") != self._window():
            return {}
        last = saved.get("last_ts", {})
        return {s: int(ts) for s, ts in last.items() if s in self.wanted and isinstance(ts, int)}

    def _save_position(self) -> None:
        if not (self.params.simulate and self.params.simulation.start is not None and self.last_ts):
            return
        path = self._position_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        reached = {s: self._feed_time(ts) for s, ts in self.last_ts.items()}
        tmp.write_text(json.dumps({"window": self._window(), "last_ts": {**self.resumed, **reached}}))
        tmp.replace(path)

    def _feed_time(self, ts: int) -> int:
        return self.simulator.feed_time(ts) if self.simulator is not None else ts

    def _api_key(self) -> str:
        env = self.params.api_key_env
        key = os.environ.get(env, "").strip()
        if key:
            return key
        if self.params.simulate:
            return "simulated"
        raise MissingApiKey(
            f"service {self.ctx.service}: environment variable {env} is not set (the Polygon/Massive API key); "
            f"export it, or set params.simulate: true"
        )

    def _simulator(self) -> PolygonSimulator:
        sim = self.params.simulation
        clock = self.ctx.clock
        pace = sim.pace if sim.pace != "auto" else ("fast" if clock.simulated else "realtime")
        if sim.start is not None:
            start = utc_ms(sim.start)
            self.resumed = self._load_position()
            if self.resumed:
                start = max(start, min(self.resumed.get(s, start - 1) for s in self.symbols) + 1)
        elif pace == "realtime":
            start = clock.now_ms()
        else:
            raise UserError(
                f"service {self.ctx.service}: params.simulation.start is required when the simulator runs "
                "as fast as possible (a simulated clock); e.g. start: '2026-11-02T00:00:00Z'"
            )
        span = parse_ms(sim.duration) if sim.duration else None
        end = None if span is None else (utc_ms(sim.start) if sim.start is not None else start) + span
        if self.resumed:
            done = end is not None and start >= end
            self.ctx.log.info(
                "%s: resuming the simulated feed after %s (an earlier run in this data_dir got that far)%s",
                self.ctx.service,
                datetime.fromtimestamp((start - 1) / 1000, timezone.utc).isoformat(),
                "; the window is complete, nothing left to send (use another data_dir for a fresh run)" if done else "",
            )
            if done:
                start = end
        symbols = self.symbols
        return PolygonSimulator(
            symbols,
            start_ms=start,
            end_ms=end,
            seed=sim.seed,
            mean_interval_ms=sim.mean_interval_ms,
            digits={s: self.ctx.instrument(s).digits for s in symbols},
            pace=pace,
            events_per_frame=sim.events_per_frame,
            close_when_done=True,
            record=False,
        )

    async def run(self) -> None:
        params = self.params
        simulator = self.simulator
        if simulator is not None and simulator.end_ms is not None and simulator.start_ms >= simulator.end_ms:
            if self.ctx.clock.simulated:
                await self.ctx.clock.wait_until(simulator.end_ms)  # the feed's time is over: say so to the timers
            return
        self.client = client = PolygonForexSocket(
            simulator.url if simulator is not None else params.url,
            self.api_key,
            self.tickers,
            backoff=Backoff(parse_seconds(params.backoff_initial), parse_seconds(params.backoff_max), jitter=params.backoff_jitter),
            max_reconnects=params.max_reconnects,
            heartbeat=parse_seconds(params.heartbeat) if params.heartbeat else None,
            connect_timeout=parse_seconds(params.connect_timeout),
            handshake_timeout=parse_seconds(params.connect_timeout),
            on_malformed=self._malformed,
            stop_when=(lambda: simulator.finished) if simulator is not None else None,
            logger=self.ctx.log,
        )
        try:
            async with contextlib.aclosing(client.stream()) as stream:
                async for item in stream:
                    await self._on_item(item)
        except AuthError as exc:
            # Not raised: the runtime would restart the node and retry a key that cannot work.
            self.ctx.metrics.errors += 1
            self.ctx.metrics.last_error = str(exc)
            self.ctx.log.error(
                "%s: %s (key from $%s, url %s); not retrying: fix the key and restart the service",
                self.ctx.service, exc, params.api_key_env, redact(client.url),
            )
        finally:
            await client.close()

    async def _on_item(self, item: StreamItem) -> None:
        if isinstance(item, list):
            for quote in item:
                await self._on_quote(quote)
        elif isinstance(item, Disconnected):
            self._on_disconnect(item.reason)
        elif isinstance(item, Reconnected):
            self.reconnected = True

    async def on_stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.outage is not None:
            await self._publish_gaps(self.ctx.clock.now_ms())
        self.seq.save()
        self._save_position()
        if self.simulator is not None:
            await self.simulator.close()
            self.simulator = None

    # ------------------------------------------------------------------ quotes

    async def _on_quote(self, quote: ForexQuote) -> None:
        ctx = self.ctx
        ctx.metrics.received += 1
        symbol = self._symbols.get(quote.pair)
        if symbol is None:
            symbol = self._symbols[quote.pair] = normalize(quote.pair)
        if symbol not in self.wanted:
            if symbol not in self.ignored:
                ctx.log.debug("%s: ignoring quotes of %s (not in pairs)", ctx.service, quote.pair)
            self.ignored[symbol] = self.ignored.get(symbol, 0) + 1
            return
        ts = quote.ts
        if not 0 <= ts <= MAX_TS:
            await ctx.dead_letter(f"quote time out of range: {ts} (not Unix milliseconds?)", quote.raw, origin=f"polygon:{quote.pair}")
            return
        if ctx.clock.simulated:
            await ctx.clock.wait_until(ts)
        if self.resumed and self._feed_time(ts) <= self.resumed.get(symbol, -1):
            return  # published by the run this one resumes
        problem = quote_problem(quote.bid, quote.ask, ts, now_ms=ctx.clock.now_ms(), max_age_ms=self.max_age_ms)
        if problem is not None:
            await ctx.dead_letter(problem, quote.raw, origin=f"polygon:{quote.pair}")
            return
        if self.outage is not None and self.reconnected:
            await self._publish_gaps(ts)
        self.last_ts[symbol] = ts
        seq = self.seq.next(symbol)
        await ctx.publish("ticks", {"symbol": symbol, "ts": ts, "bid": quote.bid, "ask": quote.ask, "source": SOURCE, "seq": seq})

    async def _malformed(self, reason: str, payload: object) -> None:
        await self.ctx.dead_letter(reason, payload, origin="polygon:frame")

    # ------------------------------------------------------------------ gaps

    def _on_disconnect(self, reason: str) -> None:
        if self.outage is None:
            clock = self.ctx.clock
            at_ms = clock.now_ms() if getattr(clock, "started", True) else None  # a simulated clock before any event
            self.outage = _Outage(reason, at_ms, dict(self.last_ts))
        else:  # dropped again before quotes came back: the gap keeps its start
            self.outage.drops += 1
        self.reconnected = False

    async def _publish_gaps(self, end_ms: int) -> None:
        outage, self.outage = self.outage, None
        if outage is None:
            return
        reason = f"reconnect: {outage.reason}" + (f" (and {outage.drops - 1} more drop(s))" if outage.drops > 1 else "")
        for symbol in self.symbols:
            start = outage.last_ts.get(symbol, end_ms if outage.at_ms is None else outage.at_ms)
            await self.ctx.publish(
                "gaps",
                {"symbol": symbol, "source": SOURCE, "start_ts": start, "end_ts": max(start, end_ms), "reason": reason},
            )
        self.ctx.log.info("%s: published gap markers for %d pair(s): %s", self.ctx.service, len(self.symbols), reason)
