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
