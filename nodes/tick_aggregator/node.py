"""The tick aggregator: :class:`~nodes.marketdata.bars.StreamingAggregator` on the node's clock.

Bars close when the watermark (the newest tick, or the clock for quiet symbols) passes the
bucket end plus the lateness window. A tick that reached the system ends up in its bar: one
that arrives after its bar was published (a reconnect buffer delivering late, a gap the
runtime refilled from the archive) revises the bar and every coarser bar containing it,
published again on the same subject with the next ``revision`` (tables keep the latest);
only a tick beyond ``revision_horizon`` is dead-lettered with the reason. On a bounded run (demo, backtest) the open buckets are closed when the input is
complete; on any other stop they are not published, since they are unfinished: they are the
node's snapshot (JSON, :mod:`framework.runtime.state`), and the next start with the same
settings picks them up, so a bar that spans a restart still has every tick of it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from framework.durations import parse_ms
from framework.node import Node, every, handles
from framework.sequencing import SequenceNumbers
from nodes.marketdata.bars import ClosedBar, LateTickError, StreamingAggregator, closed_messages
from nodes.marketdata.timeframes import DailyRoll
from nodes.tick_aggregator.spec import TickAggregatorParams


log = logging.getLogger(__name__)


class TickAggregator(Node[TickAggregatorParams]):
    state_version = 3
    _saved: dict[str, Any] | None = None

    def _settings(self) -> dict[str, Any]:
        params = self.params
        return {
            "timeframes": list(params.timeframes or self.ctx.timeframes),
            "daily_roll": params.daily_roll,
            "lateness": params.lateness,
            "fill_empty": params.fill_empty,
            "revision_horizon": params.revision_horizon,
        }

    def restore(self, state: Any) -> None:
        self._saved = state

    async def on_start(self) -> None:
        self.settings = self._settings()
        self.aggregator = self._fresh()
        self.restored = False
        saved = self._saved
        if saved is not None:
            if saved.get("settings") == self.settings:
                self.aggregator = self._fresh(complete_from=saved["aggregator"].get("complete_from"))
                self.aggregator.load_state(saved["aggregator"])
                self.restored = True
                self.ctx.log.info(
                    "%s: resumed %d open tick(s) of unfinished bars from the last stop", self.ctx.service, self.aggregator.open_ticks()
                )
            else:
                log.warning("%s: the open buckets of the last stop were made with other settings; starting empty", self.ctx.service)
        self.seq = SequenceNumbers(Path(self.ctx.data_dir) / "seq")

    def snapshot(self) -> Any:
        """The open buckets, unless the input is complete (then they are all published at stop)."""
        if self.ctx.input_complete or not self.aggregator.states:
            return None
        return {"settings": self.settings, "aggregator": self.aggregator.to_state()}

    def _fresh(self, complete_from: int | None = None) -> StreamingAggregator:
        """A new aggregator. Live, its input begins now, in the middle of a feed that ran before
        it: buckets that began earlier would lack those ticks, so their bars are left to the
        historical downloader (published, they would also replace the full bars an earlier
        instance wrote). A replay (simulated or paced clock) starts its sources with it."""
        params = self.params
        clock = self.ctx.clock
        if complete_from is None and clock.live:
            complete_from = clock.now_ms()
            self.ctx.log.info(
                "%s: bars of buckets that began before %s are not published (their earlier ticks were never seen here)",
                self.ctx.service, datetime.fromtimestamp(complete_from / 1000, timezone.utc).isoformat(timespec="seconds"),
            )  # fmt: skip
        return StreamingAggregator(
            params.timeframes or self.ctx.timeframes,
            DailyRoll.parse(params.daily_roll),
            lateness_ms=parse_ms(params.lateness) or 0,
            fill_empty=params.fill_empty,
            revision_horizon_ms=parse_ms(params.revision_horizon) or 0,
            complete_from=complete_from,
        )

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        try:
            closed = self.aggregator.add(tick["symbol"], tick["ts"], tick["bid"], tick["ask"], tick.get("seq"))
        except LateTickError as exc:
            if self.restored:
                # the feed went back before the checkpoint (replayed from its start): the
                # restored buckets belong to another pass over the data
                self.ctx.log.warning("%s: input restarted before the resumed buckets; discarding them", self.ctx.service)
                self.restored = False
                self.aggregator = self._fresh()
                await self.on_tick(tick)
                return
            await self.ctx.dead_letter(str(exc), tick, origin="ticks")
            return
        self.restored = False
        if closed:
            await self._publish(closed)

    @every("close_every")
    async def on_clock(self) -> None:
        closed = self.aggregator.advance(self.ctx.clock.now_ms())
        if closed:
            await self._publish(closed)

    async def on_stop(self) -> None:
        try:
            if self.ctx.input_complete:
                await self._publish(self.aggregator.drain())
        finally:
            self.seq.save()

    async def _publish(self, closed: list[ClosedBar]) -> None:
        for bar in closed_messages(closed, self.params.source):
            bar["seq"] = self.seq.next(f"{bar['symbol']}/{bar['timeframe']}")
            await self.ctx.publish("bars", bar)
