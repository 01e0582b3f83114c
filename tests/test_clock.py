"""Clocks: the simulated clock driven by event time, and the wall clock with a speed factor."""

from __future__ import annotations

import asyncio
import time

import pytest

from framework.clock import SimulatedClock, WallClock

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a realistic event time


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- simulated


async def test_sleepers_wake_in_deadline_order_seeing_their_own_deadline() -> None:
    clock = SimulatedClock(start_ms=T0)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now_ms()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 3), ("a", 1), ("d", 10), ("b", 2))]
    await settle()
    assert woke == [] and clock.pending == 4

    await clock.advance_to(T0 + 5_000)
    assert woke == [("a", T0 + 1_000), ("b", T0 + 2_000), ("c", T0 + 3_000)]
    assert clock.now_ms() == T0 + 5_000
    assert clock.pending == 1

    await clock.advance_to(T0 + 10_000)
    await asyncio.gather(*tasks)
    assert woke[-1] == ("d", T0 + 10_000)


async def test_equal_deadlines_wake_in_registration_order() -> None:
    clock = SimulatedClock(start_ms=0)
    woke: list[int] = []

    async def sleeper(i: int) -> None:
        await clock.sleep(1)
        woke.append(i)

    tasks = [asyncio.create_task(sleeper(i)) for i in range(5)]
    await settle()
    await clock.advance_to(1_000)
    await asyncio.gather(*tasks)
    assert woke == [0, 1, 2, 3, 4]


async def test_periodic_timer_fires_once_per_period_at_exact_times() -> None:
    clock = SimulatedClock(start_ms=T0)
    fired: list[int] = []

    async def timer() -> None:
        while True:
            await clock.sleep(60)
            fired.append(clock.now_ms())

    task = asyncio.create_task(timer())
    await settle()
    # event time jumps several periods at once: every period fires, each at its own time
    await clock.advance_to(T0 + 5 * 60_000 + 30_000)
    assert fired == [T0 + k * 60_000 for k in range(1, 6)]
    task.cancel()


async def test_timers_registered_before_the_first_event_count_from_it() -> None:
    clock = SimulatedClock()
    assert not clock.started
    fired: list[int] = []

    async def timer() -> None:
        while True:
            await clock.sleep(60)
            fired.append(clock.now_ms())

    task = asyncio.create_task(timer())
    await settle()

    await clock.advance_to(T0)  # the first event: no flood of wake-ups from epoch 0
    assert clock.started
    assert fired == []
    assert clock.now_ms() == T0

    await clock.advance_to(T0 + 150_000)
    assert fired == [T0 + 60_000, T0 + 120_000]
    task.cancel()


async def test_advance_never_goes_backwards() -> None:
    clock = SimulatedClock(start_ms=T0)
    await clock.advance_to(T0 + 10_000)
    await clock.advance_to(T0 + 5_000)
    assert clock.now_ms() == T0 + 10_000
    await clock.wait_until(T0)  # an event in the past does not wait and does not rewind
    assert clock.now_ms() == T0 + 10_000


async def test_sleep_of_zero_returns_without_moving_time() -> None:
    clock = SimulatedClock(start_ms=T0)
    await asyncio.wait_for(clock.sleep(0), timeout=1)
    await asyncio.wait_for(clock.sleep(-5), timeout=1)
    assert clock.now_ms() == T0


async def test_sleeping_does_not_move_simulated_time_by_itself() -> None:
    clock = SimulatedClock(start_ms=T0)
    task = asyncio.create_task(clock.sleep(1))
    await asyncio.sleep(0.05)
    assert not task.done()
    assert clock.now_ms() == T0
    await clock.advance_to(T0 + 1_000)
    await asyncio.wait_for(task, timeout=1)


# --------------------------------------------------------------------------- wall


def test_wall_clock_reads_real_time() -> None:
    clock = WallClock()
    assert abs(clock.now_ms() - time.time() * 1000) < 1_000
    assert not clock.simulated


def test_wall_clock_rejects_a_non_positive_speed() -> None:
    with pytest.raises(ValueError):
        WallClock(speed=0)
    with pytest.raises(ValueError):
        WallClock(speed=-2)


async def test_wall_clock_speed_compresses_sleep() -> None:
    clock = WallClock(speed=100.0)
    started = time.perf_counter()
    await clock.sleep(5.0)  # 50 ms of real time at 100x
    assert time.perf_counter() - started < 2.5


async def test_wall_clock_replays_from_origin_at_speed() -> None:
    origin = T0
    created = time.perf_counter()
    clock = WallClock(speed=50.0, origin_ms=origin)
    first = clock.now_ms()
    # every clock reading lies inside the real-time interval it is compared with: a pause between two
    # statements on a loaded machine moves both sides
    assert origin <= first <= origin + 50 * ((time.perf_counter() - created) * 1000 + 5)
    real_start = time.perf_counter()
    before = clock.now_ms()
    await asyncio.sleep(0.05)
    after = clock.now_ms()
    elapsed_real_ms = (time.perf_counter() - real_start) * 1000
    assert after - before >= 0.9 * 50 * 50  # at least ~50 ms of real time, 50x faster
    assert after - before <= 60 * (elapsed_real_ms + 5)


async def test_wall_clock_wait_until_returns_once_the_clock_reads_the_time() -> None:
    clock = WallClock(speed=100.0, origin_ms=T0)
    target = T0 + 3_000  # 30 ms of real time
    started = time.perf_counter()
    await clock.wait_until(target)
    assert clock.now_ms() >= target
    assert time.perf_counter() - started < 2.0
    before = time.perf_counter()
    await clock.wait_until(T0)  # the past: no wait
    assert time.perf_counter() - before < 0.5


async def test_wall_clock_at_speed_one_with_an_origin_replays_from_the_origin() -> None:
    clock = WallClock(speed=1.0, origin_ms=T0)
    assert T0 <= clock.now_ms() < T0 + 5_000


async def test_wall_clock_with_speed_but_no_origin_keeps_wait_until_consistent() -> None:
    clock = WallClock(speed=20.0)
    target = clock.now_ms() + 1_000  # 50 ms of real time at 20x
    await asyncio.wait_for(clock.wait_until(target), timeout=2)
    assert clock.now_ms() >= target
