"""The tick aggregator: :class:`~nodes.marketdata.bars.StreamingAggregator` on the node's clock.

Bars close when the watermark (the newest tick, or the clock for quiet symbols) passes the
bucket end plus the lateness window. A tick for a closed bucket is dead-lettered with the
reason. On a bounded run (demo, backtest) the open buckets are closed when the input is
complete; on any other stop they are not published, since they are unfinished: they are
checkpointed under the service's data directory instead, and the next start with the same
settings picks them up, so a bar that spans a restart still has every tick of it.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.marketdata.bars import ClosedBar, LateTickError, StreamingAggregator, closed_messages
from nodes.marketdata.timeframes import DailyRoll
from nodes.tick_aggregator.spec import TickAggregatorParams


log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


class TickAggregator(Node[TickAggregatorParams]):
    async def on_start(self) -> None:
        params = self.params
        self.settings = {
            "version": CHECKPOINT_VERSION,
            "timeframes": list(params.timeframes or self.ctx.timeframes),
            "daily_roll": params.daily_roll,
            "lateness": params.lateness,
            "fill_empty": params.fill_empty,
        }
        restored = self._restore()
        self.restored = restored is not None
        self.aggregator = restored or self._fresh()

    def _fresh(self) -> StreamingAggregator:
        params = self.params
        return StreamingAggregator(
            params.timeframes or self.ctx.timeframes,
            DailyRoll.parse(params.daily_roll),
            lateness_ms=parse_ms(params.lateness) or 0,
            fill_empty=params.fill_empty,
        )

    @property
    def _checkpoint(self) -> Path:
        return Path(self.ctx.data_dir) / "open-buckets.pickle"

    def _restore(self) -> StreamingAggregator | None:
        """The open buckets an earlier stop left, if they were made with the same settings."""
        path = self._checkpoint
        try:
            saved = pickle.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            log.warning("%s: ignoring an unreadable checkpoint %s: %s", self.ctx.service, path, exc)
            return None
        finally:
            path.unlink(missing_ok=True)
        if not isinstance(saved, dict) or saved.get("settings") != self.settings:
            log.warning("%s: the open buckets in %s were made with other settings; starting empty", self.ctx.service, path)
            return None
        aggregator = saved["aggregator"]
        self.ctx.log.info("%s: resumed %d open tick(s) of unfinished bars from the last stop", self.ctx.service, aggregator.open_ticks())
        return aggregator

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        try:
            closed = self.aggregator.add(tick["symbol"], tick["ts"], tick["bid"], tick["ask"])
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
        if self.ctx.input_complete:
            await self._publish(self.aggregator.drain())
            return
        if self.aggregator.states:
            path = self._checkpoint
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({"settings": self.settings, "aggregator": self.aggregator}))
            tmp.replace(path)

    async def _publish(self, closed: list[ClosedBar]) -> None:
        for bar in closed_messages(closed, self.params.source):
            await self.ctx.publish("bars", bar)
