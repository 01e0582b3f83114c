"""The configuration hash of a run (``ctx.config_hash``): what reproduces a result.

The sha256 of the run's resolved topology (every default filled in, every interpolation
resolved), its pairs and the identity of the code (:func:`code_identity`), as canonical JSON (sorted keys, no whitespace). The data directory (as
written, and made absolute, as the artifact store's URL has it) is written back as ``${data_dir}`` first: where a run keeps its files does not change what it
computes, so the same configuration run in two directories (two sweeps' runs, a rerun) has
one hash, and any other difference, a param or an instrument, gives another.

A service's params enter as its node's params model reads them (:func:`canonical_params`): defaults filled in, and
times and durations in their canonical forms (:mod:`framework.params`), so ``start: 2026-10-01T00:00Z`` and
``2026-10-01T00:00:00+00:00``, or ``1h`` and ``60m``, are one configuration, as they are one run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from framework.params import CANONICAL
from framework.topology.model import Service, Topology

DATA_DIR = "${data_dir}"


def source_digest(roots: Iterable[Path]) -> str:
    """The sha256 of every ``.py`` file under ``roots`` (relative path and bytes, in path order)."""
    digest = hashlib.sha256()
    for root in sorted({r.resolve() for r in roots}):
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_identity() -> str:
    """What the code that runs is: the digest of the framework's sources and of every installed node plugin's
    top-level package (found from the entry points, not imported). A changed default of a node's params, or any
    other change of code, is another configuration: a result computed by other code is never handed back as this one's."""
    from importlib.metadata import entry_points
    from importlib.util import find_spec

    from framework.registry import ENTRY_POINT_GROUP

    roots = {Path(__file__).resolve().parent}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        top = point.value.split(":", 1)[0].split(".", 1)[0]
        spec = find_spec(top)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            roots.add(Path(location))
    return source_digest(roots)


def canonical(topology: Topology, pairs: Sequence[str], data_dir: str | Path | None = None) -> str:
    """The canonical JSON the hash is taken of."""
    doc: Any = {"topology": topology.model_dump(mode="json"), "pairs": sorted(pairs), "code": code_identity()}
    for name, service in topology.services.items():
        doc["topology"]["services"][name]["params"] = canonical_params(service)
    if data_dir is not None and str(data_dir) not in ("", "."):
        path = Path(data_dir)
        for form in sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len, reverse=True):  # as written, absolute
            doc = _unplace(doc, form)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(topology: Topology, pairs: Sequence[str], data_dir: str | Path | None = None) -> str:
    return hashlib.sha256(canonical(topology, pairs, data_dir).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _params_models() -> dict[str, type[BaseModel]]:
    """Each installed node's params model, from the same entry points as :func:`code_identity` (every caller of
    :func:`config_hash` sees the same models, whichever registry its runtime was given)."""
    from framework.registry import Registry

    return {spec.name: spec.params for spec in Registry.discover()}


def canonical_params(service: Service) -> Any:
    """``service``'s params as its node's params model reads them, every typed value in its canonical form.

    Params of a node that is not installed, or that its model refuses (the run itself will not start), enter as written."""
    model = _params_models().get(service.node)
    if model is None:
        return _jsonable(service.params)
    try:
        return _jsonable(model.model_validate(service.params).model_dump(context={CANONICAL: True}))
    except ValueError:  # a ValidationError, or a value with no JSON form
        return _jsonable(service.params)


def _jsonable(value: Any) -> Any:
    """JSON data of ``value`` that is the same in every process: a set becomes a sorted list, not one in hash order."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k), sort_keys=True): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return _jsonable(to_jsonable_python(value))


def _unplace(value: Any, data_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace(data_dir, DATA_DIR)
    if isinstance(value, dict):
        return {k: _unplace(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplace(v, data_dir) for v in value]
    return value
