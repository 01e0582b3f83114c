"""inference-service takes a chunk of feature rows whole: a row nothing can serve is counted unserved and the chunk's
other rows go on, whatever the row holds (inbound messages are not validated against features.v1, so a feature_set may
be a list)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from framework.chunk import Chunk
from nodes.inference.node import Inference, Slot
from nodes.inference.spec import ModelDecl


def test_an_unhashable_feature_set_for_a_model_not_loaded_yet_is_unserved() -> None:
    node = Inference.__new__(Inference)
    slot = Slot("signal-1h", ModelDecl(timeframe="1h"), order=0, tf_ms=3_600_000)
    said: list[str] = []
    published: list[Any] = []

    async def publish_batch(port: str, chunk: Chunk, at: Any = None) -> None:
        published.append((port, chunk))

    node.ctx = SimpleNamespace(metrics=SimpleNamespace(per_port={}), log=SimpleNamespace(warning=said.append, error=said.append),
                               publish_batch=publish_batch)  # fmt: skip
    node.routes = {("EURUSD", "1h"): [slot]}
    node._said = set()
    rows = [{"symbol": "EURUSD", "timeframe": "1h", "ts": 0, "feature_set": ["fs-1"], "values": {"x": 1.0}},
            {"symbol": "EURUSD", "timeframe": "1h", "ts": 3_600_000, "feature_set": "fs-1", "values": {"x": 1.0}}]  # fmt: skip
    asyncio.run(node.on_features(Chunk.from_rows(rows), "features"))
    assert node.ctx.metrics.per_port == {"unserved:signal-1h": 2}
