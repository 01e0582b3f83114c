"""Dead letters: on disk and on the bus, except a dead letter of a dead letter (no loop through a monitor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from framework.deadletter import DeadLetters


async def test_a_dead_letter_is_kept_and_published_but_one_of_a_dead_letter_only_kept(tmp_path: Path) -> None:
    published: list[tuple[str, dict[str, Any]]] = []

    async def publish(subject: str, record: dict[str, Any]) -> None:
        published.append((subject, record))

    letters = DeadLetters(tmp_path, publish=publish)
    first = await letters.put("risk", "bad size", {"v": -1}, "signals.raw.EURUSD", 1)
    # a monitor subscribed to deadletter.> that cannot take it (stopped, given up, failing): kept, not published again,
    # or every such dead letter would be delivered to it once more, without end
    await letters.put("dashboard", "service dashboard gave up", first, "deadletter.risk", 2)
    letters.close()
    assert [s for s, _ in published] == ["deadletter.risk"]
    assert letters.count == 2
    kept = [orjson.loads(line) for line in (tmp_path / "dashboard.jsonl").read_bytes().splitlines()]
    assert kept == [{"ts": 2, "service": "dashboard", "reason": "service dashboard gave up", "origin": "deadletter.risk", "payload": first}]


async def test_a_flood_of_one_reason_is_logged_a_few_times_and_kept_whole(tmp_path: Path, caplog: Any) -> None:
    from framework.deadletter import LOGGED_PER_REASON

    caplog.set_level("WARNING", logger="framework.deadletter")
    letters = DeadLetters(tmp_path)
    for n in range(500):
        await letters.put("risk", "service risk is stopping", {"n": n}, "bars.EURUSD.1m", n)
    await letters.put("risk", "bad size", {"n": -1}, "signals.raw.EURUSD", 501)
    letters.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("is stopping" in line for line in lines) == LOGGED_PER_REASON
    assert any("not logged any more" in line for line in lines) and any("bad size" in line for line in lines)
    assert len((tmp_path / "risk.jsonl").read_bytes().splitlines()) == 501 and letters.count == 501
