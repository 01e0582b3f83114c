"""The runtime keeps what start-up made out of the cycle collector's sight while it runs (gc.freeze at start) and gives
it back at stop (gc.unfreeze), also when the stop fails half-way (here the bus's close raises, as a connection to a server
that went away can): otherwise garbage cycles among start-up objects could never be collected in that process."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from framework.testing import load, make_runtime, recording_bus


async def test_a_stop_that_fails_still_unfreezes(tmp_path: Path) -> None:
    loaded = load(tmp_path, "pairs=[EURUSD]")
    bus, _ = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["feature-engineering-service"])
    await rt.start()
    assert gc.get_freeze_count() > 0  # start-up's objects are frozen while the run goes on

    async def broken_close() -> None:
        raise OSError("connection reset by peer")

    bus.close = broken_close  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError):
            await rt.stop()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()  # this test leaves nothing frozen for the rest of the suite
        for store in rt.stores.values():  # the failed stop never reached them: chdb takes one path per process
            await store.close()


async def test_a_simulated_run_collects_young_objects_less_often_and_gives_the_thresholds_back(tmp_path: Path) -> None:
    """On simulated time the runtime raises the collector's thresholds for the run (a backtest allocates millions of
    short-lived messages; nothing waits on a pause) and restores them at stop."""
    from framework.runtime.core import SIMULATED_GC_THRESHOLDS

    before = gc.get_threshold()
    loaded = load(tmp_path, "pairs=[EURUSD]")
    assert loaded.topology.runtime.clock == "simulated"
    bus, _ = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["feature-engineering-service"])
    await rt.start()
    try:
        assert gc.get_threshold() == SIMULATED_GC_THRESHOLDS
    finally:
        await rt.stop()
    assert gc.get_threshold() == before


async def test_a_live_run_keeps_the_collectors_thresholds(tmp_path: Path) -> None:
    before = gc.get_threshold()
    loaded = load(tmp_path, "pairs=[EURUSD]", "++topology.runtime.clock=wall")
    bus, _ = await recording_bus("features.>")
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=["feature-engineering-service"])
    await rt.start()
    try:
        assert gc.get_threshold() == before
    finally:
        await rt.stop()


async def test_two_simulated_runs_in_one_process_give_back_the_thresholds_from_before_the_first(tmp_path: Path) -> None:
    """The second run starts while the first holds the raised thresholds; whichever stops first, the process ends with
    the thresholds it had before either (not the raised ones the second saw at its start)."""
    from framework.runtime.core import SIMULATED_GC_THRESHOLDS

    before = gc.get_threshold()
    loaded = load(tmp_path, "pairs=[EURUSD]")
    bus, _ = await recording_bus("features.>")
    first = make_runtime(loaded, tmp_path, pubsub=bus, only=["feature-engineering-service"])
    second = make_runtime(loaded, tmp_path, pubsub=bus, only=["inference-service"])
    await first.start()
    try:
        await second.start()
        try:
            await first.stop()
            assert gc.get_threshold() == SIMULATED_GC_THRESHOLDS  # the second still runs
        finally:
            await second.stop()
    finally:
        await first.stop()
    assert gc.get_threshold() == before
