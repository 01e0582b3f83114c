"""framework.outage: one line when an outage begins, one when it ends, reminders in between, paced retries."""

from __future__ import annotations

import logging
import statistics

import pytest

from framework.outage import Outage

LOG = logging.getLogger("test.outage")


def tracker(**kwargs: object) -> Outage:
    return Outage(
        LOG,
        began=lambda o: f"down: {o.last_error}",
        ended=lambda o: f"up after {o.duration:.1f}s ({o.attempts} failed attempts)",
        **kwargs,  # type: ignore[arg-type]
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name]


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    outage = tracker()
    assert not outage.down and outage.recovered() is False  # a success while up logs nothing

    assert outage.failed(ConnectionError("refused")) is True
    assert outage.failed("still refused") is False
    assert outage.failed(OSError("reset")) is False
    assert outage.down and outage.attempts == 3 and outage.failures == 3 and outage.outages == 1
    assert outage.last_error == "OSError: reset" and outage.started_at is not None
    assert outage.recovered() is True
    assert not outage.down and outage.attempts == 0 and outage.started_at is None

    outage.failed("again")
    outage.recovered()
    assert outage.failures == 4 and outage.outages == 2
    assert lines(caplog) == [
        (logging.ERROR, "down: ConnectionError: refused"),
        (logging.WARNING, "up after 0.0s (3 failed attempts)"),
        (logging.ERROR, "down: again"),
        (logging.WARNING, "up after 0.0s (1 failed attempts)"),
    ]


def test_a_long_outage_is_reminded_every_still_every_seconds(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    now = [1000.0]
    monkeypatch.setattr("framework.outage.time.monotonic", lambda: now[0])
    outage = tracker(still=lambda o: f"still down after {o.duration:.0f}s ({o.attempts} attempts)", still_every=30.0)
    for _ in range(100):  # a failed attempt every second for 100 s
        outage.failed("refused")
        now[0] += 1.0
    outage.recovered()
    assert [text for _, text in lines(caplog)] == [
        "down: refused",
        "still down after 30s (31 attempts)",
        "still down after 60s (61 attempts)",
        "still down after 90s (91 attempts)",
        "up after 100.0s (100 failed attempts)",
    ]


def test_delays_double_from_initial_to_maximum_with_jitter() -> None:
    outage = tracker(initial=0.1, maximum=1.0, jitter=(0.5, 1.0))
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for step, base in enumerate(bases):
        outage.failed("x")
        delays = [outage.delay() for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), step
        assert statistics.pstdev(delays) > 0  # jittered: retries of many clients do not line up
    assert 0.05 <= outage.delay(0) <= 0.1 and outage.delay(10_000) <= 1.0  # an explicit step; no overflow
    outage.recovered()
    outage.failed("y")
    assert outage.delay() <= 0.1  # a new outage starts over


def test_bad_pacing_is_refused() -> None:
    with pytest.raises(ValueError):
        tracker(initial=-1)
    with pytest.raises(ValueError):
        tracker(jitter=(1.0, 0.5))
