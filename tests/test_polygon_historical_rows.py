"""Polygon aggregate → bar.v1 (checks and conversion) and the memory of buckets empty at the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from framework.contracts import ContractRegistry
from nodes.marketdata.timeframes import Buckets
from nodes.polygon_historical.memory import EmptyBuckets
from nodes.polygon_historical.rows import problem_of, to_bar

CONTRACTS = ContractRegistry.load(Path(__file__).resolve().parents[1] / "contracts")
MON = 1_793_577_600_000
GOOD: dict[str, Any] = {"v": 125, "vw": 1.0851, "o": 1.0850, "c": 1.0852, "h": 1.0855, "l": 1.0849, "t": MON + 3_600_000, "n": 120}


def test_a_good_aggregate_becomes_a_valid_bar() -> None:
    buckets = Buckets("1h")
    assert problem_of(GOOD, buckets) is None
    bar = to_bar(GOOD, "EURUSD", buckets)
    assert CONTRACTS.resolve("bar.v1").validate(bar) is None
    assert (bar["ts"], bar["ts_close"], bar["timeframe"]) == (MON + 3_600_000, MON + 7_200_000, "1h")
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (1.0850, 1.0855, 1.0849, 1.0852)
    assert (bar["volume"], bar["tick_count"], bar["source"], bar["complete"]) == (125.0, 120, "polygon", True)
    assert bar["spread_mean"] is bar["spread_min"] is bar["spread_max"] is None
    without_n = {k: v for k, v in GOOD.items() if k != "n"}
    assert to_bar(without_n, "EURUSD", buckets)["tick_count"] == 125  # tick count from v when n is absent
    daily = to_bar({**GOOD, "t": MON}, "EURUSD", Buckets("1d"))
    assert daily["ts_close"] - daily["ts"] == 86_400_000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"c": None}, "aggregate lacks c"),
        ({"o": None, "t": None}, "aggregate lacks o, t"),
        ({"h": "1.09"}, "not a finite number: h='1.09'"),
        ({"v": True}, "not a finite number: v=True"),
        ({"l": float("nan")}, "not a finite number: l=nan"),
        ({"o": 0.0, "l": 0.0}, "non-positive price"),
        ({"h": 1.0840}, "high 1.084 < low 1.0849"),
        ({"o": 1.0860, "h": 1.0858}, "open/close outside the high-low range"),
        ({"v": -1}, "negative volume -1"),
        ({"t": MON + 1.5}, "bad timestamp"),
        ({"n": -3}, "bad transaction count n=-3"),
        ({"t": MON + 1_800_000}, "is not the start of a 1h bucket (that starts at 1793577600000)"),
    ],
)
def test_bad_aggregates_are_named(change: dict[str, Any], reason: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    problem = problem_of(raw, Buckets("1h"))
    assert problem is not None and reason in problem


def test_a_non_object_aggregate() -> None:
    assert problem_of([1, 2], Buckets("1m")) == "aggregate is a list, not an object"


def test_empty_bucket_memory_survives_a_restart_and_forgets_old_buckets(tmp_path: Path) -> None:
    path = tmp_path / "state" / "empty_buckets.json"
    memory = EmptyBuckets.load(path)
    assert memory.add("EURUSD", "1m", [MON, MON + 60_000]) == 2
    assert memory.add("EURUSD", "1m", [MON]) == 0
    memory.add("XAUUSD", "1h", [MON - 86_400_000])
    memory.save()
    again = EmptyBuckets.load(path)
    assert again.get("EURUSD", "1m") == {MON, MON + 60_000} and again.get("XAUUSD", "1h") == {MON - 86_400_000}
    assert again.get("EURUSD", "1h") == set()
    again.prune(MON - 1000)
    again.save()
    assert len(EmptyBuckets.load(path)) == 2 and EmptyBuckets.load(path).get("XAUUSD", "1h") == set()


def test_an_unreadable_memory_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "empty_buckets.json"
    path.write_text("{not json")
    assert len(EmptyBuckets.load(path)) == 0
    assert "ignoring unreadable" in caplog.text
