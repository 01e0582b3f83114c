"""The configuration hash of a run (``ctx.config_hash``): what reproduces a result.

The sha256 of the run's resolved topology (every default filled in, every interpolation
resolved) and its pairs, as canonical JSON (sorted keys, no whitespace). The data directory (as
written, and made absolute, as the artifact store's URL has it) is written back as ``${data_dir}`` first: where a run keeps its files does not change what it
computes, so the same configuration run in two directories (two sweeps' runs, a rerun) has
one hash, and any other difference, a param or an instrument, gives another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framework.topology.model import Topology

DATA_DIR = "${data_dir}"


def canonical(topology: Topology, pairs: Sequence[str], data_dir: str | Path | None = None) -> str:
    """The canonical JSON the hash is taken of."""
    doc: Any = {"topology": topology.model_dump(mode="json"), "pairs": sorted(pairs)}
    if data_dir is not None and str(data_dir) not in ("", "."):
        path = Path(data_dir)
        for form in sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len, reverse=True):  # as written, absolute
            doc = _unplace(doc, form)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(topology: Topology, pairs: Sequence[str], data_dir: str | Path | None = None) -> str:
    return hashlib.sha256(canonical(topology, pairs, data_dir).encode()).hexdigest()


def _unplace(value: Any, data_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace(data_dir, DATA_DIR)
    if isinstance(value, dict):
        return {k: _unplace(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplace(v, data_dir) for v in value]
    return value
