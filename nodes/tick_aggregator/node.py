"""The tick aggregator: :class:`~nodes.marketdata.bars.StreamingAggregator` on the node's clock.

Bars close when the watermark (the newest tick, or the clock for quiet symbols) passes the
bucket end plus the lateness window. A tick that reached the system ends up in its bar: one
that arrives after its bar was published (a reconnect buffer delivering late, a gap the
runtime refilled from the archive) revises the bar and every coarser bar containing it,
published again on the same subject with the next ``revision`` (tables keep the latest);
only a tick beyond ``revision_horizon`` is dead-lettered with the reason. On a bounded run (demo, backtest) the open buckets are closed when the input is
complete; on any other stop they are not published, since they are unfinished: they are
checkpointed under the service's data directory instead, and the next start with the same
settings picks them up, so a bar that spans a restart still has every tick of it.
"""

from __future__ import annotations

import logging
import pickle
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
CHECKPOINT_VERSION = 2


class TickAggregator(Node[TickAggregatorParams]):
    async def on_start(self) -> None:
        params = self.params
        self.settings = {
            "version": CHECKPOINT_VERSION,
            "timeframes": list(params.timeframes or self.ctx.timeframes),
            "daily_roll": params.daily_roll,
            "lateness": params.lateness,
            "fill_empty": params.fill_empty,
            "revision_horizon": params.revision_horizon,
        }
        restored = self._restore()
        self.restored = restored is not None
        self.aggregator = restored or self._fresh()
        self.seq = SequenceNumbers(Path(self.ctx.data_dir) / "seq")

    def _fresh(self) -> StreamingAggregator:
        """A new aggregator. Live, its input begins now, in the middle of a feed that ran before
        it: buckets that began earlier would lack those ticks, so their bars are left to the
        historical downloader (published, they would also replace the full bars an earlier
        instance wrote). A replay (simulated or paced clock) starts its sources with it."""
        params = self.params
        clock = self.ctx.clock
        complete_from = clock.now_ms() if clock.live else None
        if complete_from is not None:
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
            await self._stop()
        finally:
            self.seq.save()

    async def _stop(self) -> None:
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
            bar["seq"] = self.seq.next(f"{bar['symbol']}/{bar['timeframe']}")
            await self.ctx.publish("bars", bar)
