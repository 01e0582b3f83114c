"""The data bridge: everything real-time lands in the archive tables once.

Messages are collected into batches; each batch claims its dedup keys in one round trip
to the key-value store (Dragonfly/Redis live, in-process in the demo) and only the newly
claimed messages are written. A tick, bar or event that arrives twice, through NATS and a
Kafka replay or through two collectors, is written once; ReplacingMergeTree ordering keys
catch anything that slips past a dedup key's TTL.

Gaps in the real-time path (NATS is at-most-once) are found three ways: a jump in a
source's tick sequence numbers, a collector's gap marker, and the bridge's own downtime
(on start, from the newest archived tick). Each is filled by replaying that span of the
Kafka archive through the same dedup path.
"""

from __future__ import annotations

import asyncio
from typing import Any

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.data_bridge.spec import DataBridgeParams

EXTERNAL_PORTS = {
    "economic_calendar": "archived_calendar",
    "fred_indicators": "archived_fred",
    "commodity_prices": "archived_commodities",
}


def tick_key(t: dict[str, Any]) -> str:
    return f"t|{t['symbol']}|{t['ts']}|{t['source']}|{t['bid']!r}|{t['ask']!r}"


def bar_key(b: dict[str, Any]) -> str:
    return f"b|{b['symbol']}|{b['timeframe']}|{b['ts']}|{b['source']}"


def external_key(e: dict[str, Any]) -> str:
    return f"e|{e['type']}|{e['series']}|{e['ts']}|{e['source']}"


class DataBridge(Node[DataBridgeParams]):
    async def on_start(self) -> None:
        self.pending: list[tuple[str, str, dict[str, Any]]] = []
        self.last_seq: dict[str, tuple[int, int]] = {}
        self.duplicates = 0
        self.written = 0
        self.replayed = 0
        self.gaps_seen = 0
        self.margin_ms = parse_ms(self.params.replay_margin) or 0
        self._replays: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()
        self._unfilled: list[tuple[int, int, str]] = []
        self._flush_lock = asyncio.Lock()
        self._replayer = asyncio.create_task(self._replay_loop(), name=f"{self.ctx.service}.replay")
        await self._catch_up()

    async def on_stop(self) -> None:
        for start, end, why in self._unfilled:
            self.ctx.log.warning("stopping before the replay of %s (%d..%d): that gap is not filled", why, start, end)
        self._replayer.cancel()
        try:
            await self._replayer
        except (asyncio.CancelledError, Exception):
            pass
        await self.flush()
        self.ctx.log.info(
            "archived %d message(s), dropped %d duplicate(s), replayed %d, %d gap(s) seen",
            self.written, self.duplicates, self.replayed, self.gaps_seen,
        )

    # --- inputs -----------------------------------------------------------------------

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        seq = tick.get("seq")
        if seq is not None and self.params.replay_on_seq_gap:
            last = self.last_seq.get(tick["source"])
            if last is not None and seq > last[0] + 1:
                self.gaps_seen += 1
                self.ctx.log.warning(
                    "%s: %d tick(s) missing between seq %d and %d; replaying them from the archive",
                    tick["source"], seq - last[0] - 1, last[0], seq,
                )
                self._request_replay((last[1], tick["ts"], f"seq gap {last[0]}..{seq} of {tick['source']}"))
            if last is None or seq > last[0]:
                self.last_seq[tick["source"]] = (seq, tick["ts"])
        await self._add("archived_ticks", tick_key(tick), tick)

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        await self._add("archived_bars", bar_key(bar), bar)

    @handles("external")
    async def on_external(self, event: dict[str, Any]) -> None:
        await self._add(EXTERNAL_PORTS[event["type"]], external_key(event), event)

    @handles("gaps")
    async def on_gap(self, gap: dict[str, Any]) -> None:
        self.gaps_seen += 1
        if self.params.replay_on_gap_marker:
            self._request_replay((gap["start_ts"], gap["end_ts"], f"gap marker from {gap['source']} ({gap['reason']})"))

    # --- batching and dedup ------------------------------------------------------------

    async def _add(self, port: str, key: str, message: dict[str, Any]) -> None:
        self.pending.append((port, key, message))
        if len(self.pending) >= self.params.batch_size:
            await self.flush()

    @every("flush_every")
    async def flush(self) -> None:
        async with self._flush_lock:
            while self.pending:
                batch, self.pending = self.pending[: self.params.batch_size], self.pending[self.params.batch_size :]
                fresh = await self.ctx.table(self.params.dedup_table).claim([key for _, key, _ in batch])
                for (port, _, message), new in zip(batch, fresh):
                    if new:
                        await self.ctx.publish(port, message)
                        self.written += 1
                    else:
                        self.duplicates += 1

    # --- gap filling --------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Replay what arrived while this bridge was down: from the newest archived tick, at most ``catch_up`` back."""
        if self.params.catch_up is None:
            return
        now = self.ctx.clock.now_ms()
        if now <= 0:
            return
        rows = await self.ctx.table("historical_ticks").query(
            "SELECT max(ts) AS last FROM historical_ticks WHERE ts >= {since:Int64}",
            {"since": now - (parse_ms(self.params.catch_up) or 0)},
        )
        last = rows[0]["last"] if rows else None
        if last:
            self._request_replay((int(last), now, "catch-up after a restart"))

    def _request_replay(self, span: tuple[int, int, str]) -> None:
        self._unfilled.append(span)
        self._replays.put_nowait(span)

    async def _replay_loop(self) -> None:
        while True:
            span = await self._replays.get()
            start, end, why = span
            try:
                await self.replay_span(start - self.margin_ms, end + self.margin_ms, why)
            except Exception as exc:
                self.ctx.log.error("replay of %s (%d..%d) failed: %s; the gap stays open", why, start, end, exc)
            self._unfilled.remove(span)

    async def replay_span(self, start: int, end: int, why: str) -> int:
        """Feed the archived ticks stamped in ``[start, end)`` through the dedup path; returns how many were read."""
        count = 0
        async for records in self.ctx.replay("ticks", start, end):
            for record in records:
                count += 1
                await self._add("archived_ticks", tick_key(record.value), record.value)
        await self.flush()
        self.replayed += count
        self.ctx.log.info("replayed %d archived tick(s) for %s", count, why)
        return count
