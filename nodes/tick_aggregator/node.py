"""The tick aggregator: :class:`~nodes.marketdata.bars.StreamingAggregator` on the node's clock.

Bars close when the watermark (the newest tick, or the clock for quiet symbols) passes the
bucket end plus the lateness window. A tick for a closed bucket is dead-lettered with the
reason. On a bounded run (demo, backtest) the open buckets are closed when the input is
complete; on a live stop they are not published, since they are unfinished.
"""

from __future__ import annotations

from typing import Any

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.marketdata.bars import ClosedBar, LateTickError, StreamingAggregator, closed_messages
from nodes.marketdata.timeframes import DailyRoll
from nodes.tick_aggregator.spec import TickAggregatorParams


class TickAggregator(Node[TickAggregatorParams]):
    async def on_start(self) -> None:
        params = self.params
        self.aggregator = StreamingAggregator(
            params.timeframes or self.ctx.timeframes,
            DailyRoll.parse(params.daily_roll),
            lateness_ms=parse_ms(params.lateness) or 0,
            fill_empty=params.fill_empty,
        )

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        try:
            closed = self.aggregator.add(tick["symbol"], tick["ts"], tick["bid"], tick["ask"])
        except LateTickError as exc:
            await self.ctx.dead_letter(str(exc), tick, origin="ticks")
            return
        if closed:
            await self._publish(closed)

    @every("close_every")
    async def on_clock(self) -> None:
        closed = self.aggregator.advance(self.ctx.clock.now_ms())
        if closed:
            await self._publish(closed)

    async def on_stop(self) -> None:
        if self.ctx.input_complete:
            await self._publish(self.aggregator.drain())

    async def _publish(self, closed: list[ClosedBar]) -> None:
        for bar in closed_messages(closed, self.params.source):
            await self.ctx.publish("bars", bar)
