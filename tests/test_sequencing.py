"""Sequenced inputs (exactly once, gaps refilled from the archive) and crash-safe sequence numbers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from framework.sequencing import SequencedInput, SequenceNumbers
from framework.transport.base import TopicSpec
from framework.transport.inprocess import InProcessLog

T0 = 1_793_577_600_000


def tick(seq: int, symbol: str = "EURUSD", source: str = "polygon", ts: int | None = None) -> dict[str, Any]:
    return {"symbol": symbol, "source": source, "seq": seq, "ts": T0 + seq * 1000 if ts is None else ts, "bid": 1.1, "ask": 1.1002}


async def _input(
    archive: list[dict[str, Any]], accepts: Callable[[dict[str, Any]], bool] | None = None, began_ms: int | None = None
) -> tuple[SequencedInput, list[tuple[str, dict[str, Any]]]]:
    log = InProcessLog()
    await log.connect()
    await log.ensure_topics([TopicSpec("tick_archive", 2)])
    for t in archive:
        await log.produce("tick_archive", t, key=t["symbol"], timestamp_ms=t["ts"])
    got: list[tuple[str, dict[str, Any]]] = []

    async def deliver(origin: str, message: dict[str, Any], headers: Any = None) -> None:
        got.append((origin, message))

    sequenced = SequencedInput(
        "svc", "ticks", deliver, lambda a, b: log.read(["tick_archive"], a, b),
        sequence_field="seq", stream_fields=("source", "symbol"), time_field="ts", accepts=accepts, began_ms=began_ms,
    )  # fmt: skip
    return sequenced, got


async def test_a_gap_is_refilled_from_the_archive_in_order_and_duplicates_are_dropped() -> None:
    archive = [tick(i) for i in range(1, 11)] + [tick(i, "XAUUSD") for i in range(1, 4)]
    sequenced, got = await _input(archive)
    for seq in (1, 2, 2, 7, 8):  # a repeat, then 3..6 lost
        await sequenced("nats", tick(seq))
    await sequenced("nats", tick(1, "XAUUSD"))  # another stream: its own numbering
    await sequenced.drain()
    assert [(m["symbol"], m["seq"]) for _, m in got] == [
        ("EURUSD", 1), ("EURUSD", 2), ("EURUSD", 7), ("EURUSD", 8), ("XAUUSD", 1),
        ("EURUSD", 3), ("EURUSD", 4), ("EURUSD", 5), ("EURUSD", 6),
    ]  # fmt: skip
    assert all(origin.startswith("replay:tick_archive") for origin, m in got[5:])
    assert sequenced.stats == {"gaps": 1, "recovered": 4, "given_up": 0, "duplicates": 1}
    await sequenced("nats", tick(4))  # a late copy after the replay: already delivered
    assert len(got) == 9 and sequenced.duplicates == 2


async def test_a_missing_message_arriving_late_is_taken_once_even_after_its_replay_gave_up() -> None:
    sequenced, got = await _input([tick(1), tick(5)])  # 2..4 never reached the archive
    for seq in (1, 5):
        await sequenced("nats", tick(seq))
    await sequenced.drain()
    assert sequenced.given_up == 3
    await sequenced("nats", tick(3))  # from a reconnect buffer, after the replay
    await sequenced("nats", tick(3))
    assert [m["seq"] for _, m in got] == [1, 5, 3] and sequenced.duplicates == 1


async def test_a_source_that_restarts_its_numbering_is_followed(caplog: pytest.LogCaptureFixture) -> None:
    sequenced, got = await _input([])
    await sequenced("nats", tick(500))
    await sequenced("nats", tick(1, ts=T0 + 999_000))  # numbers went back, time went on
    await sequenced("nats", tick(2, ts=T0 + 999_500))
    assert [m["seq"] for _, m in got] == [500, 1, 2] and sequenced.gaps == 0
    assert any("restarted without its numbering" in r.getMessage() for r in caplog.records)


async def test_messages_without_a_sequence_number_pass_through() -> None:
    sequenced, got = await _input([])
    message = {"symbol": "EURUSD", "source": "dukascopy", "ts": T0, "bid": 1.1, "ask": 1.2}
    await sequenced("nats", message)
    await sequenced("nats", message)
    assert len(got) == 2


def test_sequence_numbers_never_repeat_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "seq"
    first = SequenceNumbers(path, block=100)
    issued = [first.next("EURUSD") for _ in range(150)] + [first.next("XAUUSD")]
    # killed: no save(); the next instance starts above what was reserved
    second = SequenceNumbers(path, block=100)
    after = second.next("EURUSD")
    assert after > max(issued) and after == 201  # the rest of the reserved block is skipped (a gap, not a repeat)
    assert second.next("XAUUSD") == 101
    second.save()  # a clean stop: the next run continues without a jump
    assert SequenceNumbers(path).next("EURUSD") == 202


def test_sequence_numbers_read_the_single_counter_of_earlier_versions(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("377")
    numbers = SequenceNumbers(tmp_path / "seq")
    assert numbers.next("EURUSD") == 378 and numbers.next("XAUUSD") == 378
    assert json.loads((tmp_path / "seq").read_text())["EURUSD"] >= 378


def test_an_unreadable_sequence_file_is_an_error_not_a_restart_at_one(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("{not json")
    with pytest.raises(OSError, match="cannot read the sequence numbers"):
        SequenceNumbers(tmp_path / "seq")


async def test_replays_run_one_at_a_time() -> None:
    archive = [tick(i) for i in range(1, 30)]
    sequenced, got = await _input(archive)
    for seq in (1, 5, 10, 20):
        await sequenced("nats", tick(seq))
    await asyncio.wait_for(sequenced.drain(), 10)
    assert sorted(m["seq"] for _, m in got) == list(range(1, 21))


async def test_after_an_outage_the_lost_tail_of_a_stream_comes_from_the_archive() -> None:
    """No later message reveals a lost tail: the span of the connection outage is replayed instead."""
    archive = [tick(i) for i in range(1, 9)] + [tick(i, "XAUUSD") for i in range(1, 4)]
    sequenced, got = await _input(archive)
    for seq in (1, 2, 3):
        await sequenced("nats", tick(seq))
    await sequenced("nats", tick(1, "XAUUSD"))  # XAUUSD 2, 3 and EURUSD 4..8 were published during the outage
    sequenced.outage(T0 + 3_500, T0 + 8_000)
    await sequenced.drain()
    assert [(m["symbol"], m["seq"]) for _, m in got[4:]] == [("EURUSD", s) for s in range(4, 9)] + [("XAUUSD", 2), ("XAUUSD", 3)]
    await sequenced("nats", tick(8))  # the live copy after all: delivered once already
    await sequenced("nats", tick(9))
    assert [m["seq"] for _, m in got if m["symbol"] == "EURUSD"] == list(range(1, 10))


async def test_a_gap_the_outage_replay_reveals_is_replayed_too() -> None:
    """A source SIGKILLed after archiving 4 and 5 but before they went out on NATS restarts above its
    reserved block (1001); its first numbers reach this input only through the outage replay, which
    reveals the gap 4..1000: 4 and 5 lie before the outage's span and still come from the archive."""
    archive = [tick(i) for i in range(1, 6)] + [tick(1000 + i, ts=T0 + 20_000 + i * 100) for i in range(1, 4)]
    sequenced, got = await _input(archive)
    for seq in (1, 2, 3):
        await sequenced("nats", tick(seq))
    sequenced.outage(T0 + 19_500, T0 + 20_500)
    await sequenced.drain()
    assert [m["seq"] for _, m in got] == [1, 2, 3, 1001, 1002, 1003, 4, 5]
    assert sequenced.given_up == 995  # 6..1000: never issued
    await sequenced("nats", tick(1002, ts=T0 + 20_200))  # the live copy after all: delivered once already
    assert len(got) == 8


async def test_the_first_numbers_of_a_stream_published_during_an_outage_come_from_the_archive() -> None:
    """A source that began (or a stream whose first messages went out) while this input was cut off:
    its first live message is not its first number, and the outage replay brings the ones before it."""
    archive = [tick(i) for i in range(1, 8)]
    sequenced, got = await _input(archive)
    await sequenced("nats", tick(5))  # the first that reached this input, after the reconnection
    sequenced.outage(T0 + 1_500, T0 + 4_500)
    await sequenced.drain()
    await sequenced("nats", tick(6))
    await sequenced("nats", tick(3))  # a late copy of one the replay brought
    assert [m["seq"] for _, m in got] == [5, 1, 2, 3, 4, 6] and sequenced.duplicates == 2


async def test_an_outage_replay_takes_a_stream_not_seen_yet_only_if_the_input_subscribes_to_it() -> None:
    archive = [tick(i, "XAUUSD") for i in range(1, 4)] + [tick(i, "GBPUSD") for i in range(1, 3)]
    sequenced, got = await _input(archive, accepts=lambda message: message["symbol"] in ("EURUSD", "XAUUSD"))
    sequenced.outage(T0, T0 + 3_000)
    await sequenced.drain()
    await sequenced("nats", tick(3, "XAUUSD"))
    await sequenced("nats", tick(4, "XAUUSD"))
    assert [(m["symbol"], m["seq"]) for _, m in got] == [("XAUUSD", 1), ("XAUUSD", 2), ("XAUUSD", 3), ("XAUUSD", 4)]


# --------------------------------------------------------------------------- a source restarted without its numbering


async def test_a_source_that_restarted_without_its_numbering_during_an_outage_loses_nothing() -> None:
    """Old numbering 1..10 reached the input; during the outage the source restarted without its sequence file
    (numbers back to 1, time forward) and published 1..5; after the reconnection its 6 arrives. The outage replay
    follows the restart as the live path does (it dropped the new 1..5 as 'already delivered')."""
    new = [tick(i, ts=T0 + 14_000 + i * 1000) for i in range(1, 7)]  # new numbering, T0+15 s .. T0+20 s
    sequenced, got = await _input([tick(i) for i in range(1, 11)] + new)
    for seq in range(1, 11):
        await sequenced("nats", tick(seq))
    sequenced.outage(T0 + 10_500, T0 + 20_500)
    await sequenced.drain()
    await sequenced("nats", new[-1])  # 6 of the new numbering, live
    assert [(m["seq"], m["ts"]) for _, m in got[10:]] == [(m["seq"], m["ts"]) for m in new]


async def test_a_restart_seen_live_before_the_outage_replay_takes_the_new_first_numbers_and_not_the_old_ones() -> None:
    """The same restart, its first live message (6) arriving before the outage replay ran: the replay's margin holds
    old 9 and 10, delivered before the outage (not again), and the new numbering's 1..5 (never delivered: taken)."""
    new = [tick(i, ts=T0 + 14_000 + i * 1000) for i in range(1, 7)]
    sequenced, got = await _input([tick(i) for i in range(1, 11)] + new)
    for seq in range(1, 11):
        await sequenced("nats", tick(seq))
    await sequenced("nats", new[-1])  # live, first after the reconnection: a restart of the numbering
    sequenced.outage(T0 + 10_500, T0 + 20_500)
    await sequenced.drain()
    keys = [(m["seq"], m["ts"]) for _, m in got]
    assert len(keys) == len(set(keys)), keys
    assert sorted(keys[10:]) == sorted((m["seq"], m["ts"]) for m in new)


async def test_the_outage_replay_does_not_take_messages_stamped_before_the_input_began() -> None:
    """A restarted service (its node restored from its snapshot, its sequenced input new since T0+7.5 s) hears EURUSD 8
    first; an outage follows within the replay margin. 7 went out before this input existed (the previous process took
    it): not one of the stream's first numbers to take; 9, lost in the outage, is."""
    sequenced, got = await _input([tick(i) for i in range(1, 11)], began_ms=T0 + 7_500)
    await sequenced("nats", tick(8))
    sequenced.outage(T0 + 8_500, T0 + 9_500)  # 9 lost
    await sequenced.drain()
    await sequenced("nats", tick(10))
    assert [m["seq"] for _, m in got] == [8, 9, 10]
