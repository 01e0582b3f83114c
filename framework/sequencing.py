"""Exactly-once, gap-filled delivery of a real-time input that a Kafka archive backs.

NATS is at most once: a server restart, a slow consumer or a reconnect can lose messages,
and a client's reconnect buffer can deliver them late. A contract that declares a sequence
number (``x-fxflow: {sequence: seq, stream: [source, symbol]}``) lets a subscriber see
both: within one stream the numbers are consecutive, so a jump is a gap and a repeat is a
duplicate. For an input port bound to NATS *and* to a Kafka archive marked
``replay: true``, the runtime wraps the port's delivery in a :class:`SequencedInput`:

- each sequence number of a stream reaches the node once (repeats are dropped and counted);
- a jump schedules a replay of the archive over the gap's span (by the records' stamps,
  the time they became known, with a margin); the missing numbers found there are
  delivered to the same handler, late, in order; numbers the archive does not hold (a
  restarted source skips a reserved block; the source itself never had them) are counted
  as ``given_up`` once the replay has read the span;
- a missing message that still arrives over NATS (late, from a reconnect buffer) is
  delivered then (even after its replay), and not again from the replay;
- a stream whose numbers go back while its time moves forward is a source that restarted
  without its state: tracking starts over (logged), live or in an outage replay, and a message
  of the numbering before (a late copy, the replay's margin) is not taken again;
- after the transport lost its connection (:meth:`PubSubTransport.on_connection`), the
  span of the outage is replayed: what a stream published then and never delivered, its
  last messages included (no later message reveals that gap), arrives from the archive;
  so do a stream's first messages when they went out during the outage (its first live
  message is then not its first number; a stream not seen at all is taken when the input
  ``accepts`` it, i.e. subscribes to it), if stamped after the input began (before, a previous
  process of the service had them), and a gap the replay reveals (a source that
  restarted above its reserved block while the input was cut off) is replayed as one a
  live message reveals: its missing messages lie before the outage's span.

The node sees late messages as such (their times are behind what it has seen) and decides
what they mean: the data bridge archives them, the tick aggregator revises its bars.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from framework.transport.base import Record

log = logging.getLogger("fxflow.sequencing")

Deliver = Callable[..., Awaitable[None]]
MAX_RANGES = 10_000
"""Missing ranges remembered per stream (a late copy of one is still delivered once); the oldest go first."""
Replay = Callable[[int, int], AsyncIterator[list[Record]]]


@dataclass(slots=True)
class _Stream:
    high: int
    high_ts: int
    low: int
    """The first number followed here: the ones below it never reached this input."""
    before: int | None = None
    """After the source restarted without its numbering: the newest time of the numbering before, whose
    messages (a late copy, an outage replay's margin) are not this numbering's and were handled then."""
    missing: list[list[int]] = field(default_factory=list)
    """Sorted, disjoint ``[first, last]`` ranges of numbers not delivered yet."""

    def take(self, seq: int) -> bool:
        """Remove ``seq`` from the missing ranges; True if it was missing."""
        i = bisect.bisect_right(self.missing, [seq, float("inf")]) - 1
        if i < 0:
            return False
        lo, hi = self.missing[i]
        if not lo <= seq <= hi:
            return False
        pieces = [r for r in ([lo, seq - 1], [seq + 1, hi]) if r[0] <= r[1]]
        self.missing[i : i + 1] = pieces
        return True

    def count(self, lo: int, hi: int) -> int:
        """How many numbers in ``[lo, hi]`` are still missing."""
        return sum(max(0, min(b, hi) - max(a, lo) + 1) for a, b in self.missing)

    def note(self, lo: int, hi: int) -> None:
        bisect.insort(self.missing, [lo, hi])
        if len(self.missing) > MAX_RANGES:
            del self.missing[0]


class SequencedInput:
    """Wraps one input port's delivery function (see the module docstring)."""

    def __init__(
        self,
        service: str,
        port: str,
        deliver: Deliver,
        replay: Replay,
        *,
        sequence_field: str,
        stream_fields: Sequence[str],
        time_field: str | None,
        margin_ms: int = 2_000,
        spawn: Callable[[Awaitable[Any], str], asyncio.Task[Any]] | None = None,
        accepts: Callable[[Mapping[str, Any]], bool] | None = None,
        began_ms: int | None = None,
    ) -> None:
        """``accepts`` tells whether an archived message of a stream not seen here yet would have
        reached this input (its subject is one the input subscribes to); without it an outage
        replay skips such streams. ``began_ms``: when this input started listening; an outage
        replay never takes a message stamped before it as one it missed (a previous process of
        the service had it, and the node's restored state holds it)."""
        self.service = service
        self.port = port
        self.deliver = deliver
        self.replay = replay
        self.sequence_field = sequence_field
        self.stream_fields = tuple(stream_fields)
        self.time_field = time_field
        self.margin_ms = margin_ms
        self.accepts = accepts
        self.began_ms = began_ms
        self._spawn = spawn or (lambda coro, name: asyncio.ensure_future(coro))
        self.streams: dict[tuple[Any, ...], _Stream] = {}
        self.duplicates = 0
        self.gaps = 0
        self.recovered = 0
        self.given_up = 0
        self._replays: set[asyncio.Task[Any]] = set()
        self._lock = asyncio.Lock()

    @property
    def stats(self) -> dict[str, int]:
        return {"gaps": self.gaps, "recovered": self.recovered, "given_up": self.given_up, "duplicates": self.duplicates}

    async def __call__(self, origin: str, message: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        if type(message) is not dict:  # a chunk, in-process: nothing between it and its publisher loses messages
            await self.deliver(origin, message, headers)
            return
        seq = message.get(self.sequence_field)
        if type(seq) is not int:
            await self.deliver(origin, message, headers)
            return
        key = tuple(message.get(f) for f in self.stream_fields)
        if not self._follow(key, seq, self._ts(message), message, replayed=False):
            self.duplicates += 1
            return
        await self.deliver(origin, message, headers)

    def _follow(self, key: tuple[Any, ...], seq: int, ts: int, message: Mapping[str, Any], *, replayed: bool) -> bool:
        """Whether message ``seq`` of stream ``key`` (stamped ``ts``) is one to deliver now; moves the stream on.

        One rule for a live message and for one an outage replay offers; the replay also takes what no live
        message can reveal: a stream's first numbers and streams not seen yet, if stamped after :attr:`began_ms`."""
        stream = self.streams.get(key)
        if stream is None:
            if replayed and (self.accepts is None or not self.accepts(message) or not self._since_began(ts)):
                return False
            self.streams[key] = _Stream(seq, ts, seq)
            return True
        if stream.before is not None and ts <= stream.before:
            return False  # the numbering before the source's restart
        if seq == stream.high + 1:
            stream.high, stream.high_ts = seq, max(stream.high_ts, ts)
        elif seq > stream.high + 1:
            self._gap(key, stream, seq, ts)
        elif stream.take(seq):
            self.recovered += not replayed  # a late copy of a missing one (a replay counts what it delivers)
        elif ts > stream.high_ts:
            log.warning(
                "service %s, input %s: %s went back from seq %d to %d with newer data: the source restarted "
                "without its numbering; following it from here",
                self.service, self.port, "/".join(map(str, key)), stream.high, seq,
            )  # fmt: skip
            self.streams[key] = _Stream(seq, ts, seq, before=stream.high_ts)
        elif replayed and seq < stream.low and self._since_began(ts):
            if seq + 1 < stream.low:
                stream.note(seq + 1, stream.low - 1)
            stream.low = seq
        else:
            return False
        return True

    def _since_began(self, ts: int) -> bool:
        return self.began_ms is None or ts >= self.began_ms

    def _ts(self, message: Mapping[str, Any]) -> int:
        ts = message.get(self.time_field) if self.time_field else None
        return ts if isinstance(ts, int) else 0

    def _gap(self, key: tuple[Any, ...], stream: _Stream, seq: int, ts: int) -> None:
        """``seq`` jumped above ``stream.high``: note the numbers between, replay them, follow ``seq``."""
        self.gaps += 1
        first, last = stream.high + 1, seq - 1
        stream.note(first, last)
        log.warning(
            "service %s, input %s: %d message(s) of %s missing (seq %d..%d); replaying them from the archive",
            self.service, self.port, last - first + 1, "/".join(map(str, key)), first, last,
        )  # fmt: skip
        self._schedule(key, first, last, stream.high_ts, ts)
        stream.high, stream.high_ts = seq, max(stream.high_ts, ts)

    def _schedule(self, key: tuple[Any, ...], first: int, last: int, start_ts: int, end_ts: int) -> None:
        self._spawn_fill(self._fill(key, first, last, start_ts, end_ts))

    def _spawn_fill(self, work: Awaitable[None]) -> None:
        task = self._spawn(work, f"{self.service}.{self.port}.gap-fill")
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    def outage(self, start_ms: int, end_ms: int) -> None:
        """The transport was down from ``start_ms`` to ``end_ms`` (the clock's time): replay that span."""
        self._spawn_fill(self._fill_outage(start_ms, end_ms))

    async def _fill_outage(self, start_ms: int, end_ms: int) -> None:
        found = 0
        try:
            async with self._lock:
                async for records in self.replay(start_ms - self.margin_ms, end_ms + self.margin_ms):
                    for record in records:
                        found += await self._offer_unseen(record)
        except Exception as exc:
            log.error("service %s, input %s: replay of an outage failed: %s", self.service, self.port, exc)
        if found:
            log.warning(
                "service %s, input %s: %d message(s) published during a connection outage came from the archive",
                self.service, self.port, found,
            )  # fmt: skip

    async def _offer_unseen(self, record: Record) -> int:
        """Deliver ``record`` (of an outage's span) if it never reached this input (:meth:`_follow`)."""
        message = record.value
        seq = message.get(self.sequence_field)
        if type(seq) is not int:
            return 0
        key = tuple(message.get(f) for f in self.stream_fields)
        if not self._follow(key, seq, self._ts(message), message, replayed=True):
            return 0
        self.recovered += 1
        await self.deliver(f"replay:{record.topic}[{record.partition}]@{record.offset}", message, record.headers)
        return 1

    async def _fill(self, key: tuple[Any, ...], first: int, last: int, start_ts: int, end_ts: int) -> None:
        found = 0
        try:
            async with self._lock:  # one replay at a time: they deliver in order, and the log is read once per gap
                async for records in self.replay(start_ts - self.margin_ms, end_ts + self.margin_ms):
                    for record in records:
                        found += await self._offer(key, first, last, record)
        except Exception as exc:
            log.error(
                "service %s, input %s: replay of seq %d..%d of %s failed: %s",
                self.service, self.port, first, last, "/".join(map(str, key)), exc,
            )  # fmt: skip
        stream = self.streams.get(key)
        lost = stream.count(first, last) if stream is not None else 0
        self.given_up += lost
        log.info(
            "service %s, input %s: gap seq %d..%d of %s: %d recovered from the archive, %d not there "
            "(never archived, or still on their way: a late copy is still taken once)",
            self.service, self.port, first, last, "/".join(map(str, key)), found, lost,
        )  # fmt: skip

    async def _offer(self, key: tuple[Any, ...], first: int, last: int, record: Record) -> int:
        message = record.value
        seq = message.get(self.sequence_field)
        if type(seq) is not int or not first <= seq <= last:
            return 0
        if tuple(message.get(f) for f in self.stream_fields) != key:
            return 0
        stream = self.streams.get(key)
        if stream is None or not stream.take(seq):
            return 0
        self.recovered += 1
        await self.deliver(f"replay:{record.topic}[{record.partition}]@{record.offset}", message, record.headers)
        return 1

    async def drain(self) -> None:
        """Let running replays finish (a bounded run ends only after its gaps are filled)."""
        while self._replays:
            await asyncio.gather(*list(self._replays), return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._replays):
            task.cancel()
        await asyncio.gather(*list(self._replays), return_exceptions=True)


class SequenceNumbers:
    """The issuing side: consecutive numbers per stream that only grow, across crashes too.

    Numbers are reserved ahead in blocks: the file under the source's data directory holds,
    per stream, a number no issued one exceeds, rewritten (atomically) each time a block
    runs out and exactly on a clean :meth:`save`. After a crash the source resumes above
    the last reservation, so nothing is issued twice; subscribers see the skipped rest of
    the block as a gap, replay it from the archive and find the numbers that were archived
    before the crash.
    """

    def __init__(self, path: Path | str, block: int = 1000) -> None:
        self.path = Path(path)
        self.block = max(1, block)
        self.issued: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._floor = 0
        self._load()

    def _load(self) -> None:
        try:
            saved = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            raise OSError(f"cannot read the sequence numbers in {self.path}: {exc}; delete it only if this source's "
                          "subscribers may see its numbers start over") from exc
        if isinstance(saved, int):  # the single counter of earlier versions
            self._floor = max(saved, 0)
        elif isinstance(saved, dict):
            self.issued = {str(k): int(v) for k, v in saved.items() if isinstance(v, int) and v >= 0}
        self._reserved = dict(self.issued)

    def next(self, stream: str) -> int:
        seq = self.issued.get(stream, self._floor) + 1
        self.issued[stream] = seq
        if seq > self._reserved.get(stream, self._floor):
            self._reserved[stream] = seq + self.block - 1
            self._write(self._reserved)
        return seq

    def save(self) -> None:
        """Record exactly what was issued (a clean stop: the next run continues without a jump)."""
        if self.issued:
            self._write(self.issued)
            self._reserved = dict(self.issued)

    def _write(self, numbers: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(numbers))
        os.replace(tmp, self.path)
