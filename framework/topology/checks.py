"""Checks of a composed run that need more than its shape: names, selections, column types.

Each mistake is a :class:`~framework.errors.UserError` with the file and line to edit. Those
that are lint rules too (FX401, FX402) are :class:`CodedError`, so ``fxrun lint`` reports them
as findings of that rule instead of a bare error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from framework.errors import UserError, UserErrors
from framework.topology.model import PORTABLE_TYPES, RunConfig
from framework.topology.source import KeyPath, SourceMap

TOPOLOGY = "topology"
LOAD_ERROR = "FX000"
"""Lint code of a load error that belongs to no rule (unreadable YAML, a wrong type…)."""
SECTIONS = {"services": "service", "topics": "topic", "tables": "table"}


class CodedError(UserError):
    """A load error that is also a lint finding: ``code`` and ``owner`` (service, topic, table or topology)."""

    def __init__(self, code: str, owner: str, detail: str, **where: Any) -> None:
        super().__init__(f"{code} {detail}", **where)
        self.code = code
        self.owner = owner
        self.detail = detail


def _where(smap: SourceMap, path: KeyPath) -> dict[str, Any]:
    loc = smap.find(path)
    return {"file": loc.file if loc else None, "line": loc.line if loc and loc.line else None}


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def in_document(path: Sequence[str]) -> list[str]:
    """A run's key path as the path inside the topology document (``services.x``, not ``topology.services.x``)."""
    return list(path[1:]) if len(path) > 1 and path[0] == TOPOLOGY else list(path)


def check_duplicates(smap: SourceMap) -> None:
    """FX402: a key written twice in one mapping (YAML would silently keep the last one)."""
    errors: list[UserError] = []
    for full, first, dup in smap.duplicates:
        path = in_document(full)
        where = f"line {first.line}" if first.file == dup.file else str(first)
        kind = SECTIONS.get(path[0]) if len(path) == 2 else None
        if kind:
            owner = path[1]
            detail = f"duplicate {kind} {owner!r} (first defined at {where}); YAML keeps only the last one, so rename or merge them"
        else:
            owner = TOPOLOGY
            detail = f"duplicate key {'.'.join(path)!r} (first defined at {where}); YAML keeps only the last one"
        errors.append(CodedError("FX402", owner, detail, file=dup.file, line=dup.line, path=".".join(path)))
    if errors:
        raise UserErrors(errors)


def check_declared_services(services: Any, declared: Iterable[str], base: str, smap: SourceMap) -> None:
    """A service a profile or an override names must be declared in the base file, or declare its node.

    Otherwise a misspelt name composes into a new, half-empty service, and the error is a
    confusing "missing required key 'node'".
    """
    if not isinstance(services, Mapping):
        return
    known = list(declared)
    errors: list[UserError] = []
    for name, body in services.items():
        if name in known or (isinstance(body, Mapping) and "node" in body):
            continue
        path = (TOPOLOGY, "services", str(name))
        message = f"service {name!r} is not declared in {base}{_did_you_mean(str(name), known)}"
        errors.append(UserError(message, path=".".join(path[1:]), **_where(smap, path)))
    if errors:
        raise UserErrors(errors)


def check_selection(config: RunConfig, smap: SourceMap) -> None:
    """``pairs`` and ``only`` select something, and only declared instruments and services."""
    errors: list[UserError] = []
    checks = (("pairs", config.pairs, config.topology.instruments), ("only", config.only, config.topology.services))
    for key, chosen, declared in checks:
        where = _where(smap, (key,))
        if chosen is not None and not chosen:
            errors.append(UserError(f"[] selects nothing; leave {key} out to select all", path=key, **where))
        for name in chosen or []:
            if name in declared:
                continue
            hint = _did_you_mean(name, declared) or f"; declared: {', '.join(declared)}"
            message = f"{name!r} is not declared{hint}"
            if key == "pairs":
                errors.append(CodedError("FX401", TOPOLOGY, message, path=key, **where))
            else:
                errors.append(UserError(message, path=key, **where))
    if errors:
        raise UserErrors(errors)


def check_columns(config: RunConfig, smap: SourceMap) -> None:
    """A ClickHouse table's native column types are ClickHouse type names (``String``, ``DateTime64(3)``).

    The stores pass a non-portable type through as written, so a misspelt portable type
    (``strng``) would otherwise fail only when the table is created, at run time.
    """
    topology = config.topology
    errors: list[UserError] = []
    for name, table in topology.tables.items():
        store = topology.stores.get(table.store)
        if store is None or store.kind != "clickhouse":
            continue
        for column, kind in (table.columns or {}).items():
            base = kind.rstrip("?")
            if base in PORTABLE_TYPES or base[:1].isupper():
                continue
            hint = _did_you_mean(base, PORTABLE_TYPES) or f"; portable types: {', '.join(PORTABLE_TYPES)}"
            message = f"unknown column type {kind!r} for ClickHouse{hint} (or a ClickHouse type name such as String)"
            path = (TOPOLOGY, "tables", name, "columns", column)
            errors.append(UserError(message, path=".".join(path[1:]), **_where(smap, path)))
    if errors:
        raise UserErrors(errors)


_LIST_SECTIONS = frozenset({"timeframes", "domains", "defaults"})


def check_section_types(documents: Sequence[tuple[Any, SourceMap]]) -> None:
    """Each file's top level and sections have the shape the model needs, before Hydra merges them.

    Merging a list into a mapping fails inside Hydra with no file or line, and a scalar where a
    mapping belongs is silently replaced by the profile's mapping; both are reported here instead.
    """
    from framework.topology.model import Topology

    mapping_sections = {name for name, f in Topology.model_fields.items() if _is_mapping(f.annotation)}
    errors: list[UserError] = []
    for data, part in documents:
        top = part.find(())
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.append(UserError(f"the document must be a mapping of sections, not a {_kind(data)}", file=top.file if top else None, line=top.line if top else None))
            continue
        for key, value in data.items():
            expected = "list" if key in _LIST_SECTIONS else "mapping" if key in mapping_sections else None
            if expected is None or value is None:
                continue
            if (expected == "list") != isinstance(value, list) or (expected == "mapping" and not isinstance(value, dict)):
                loc = part.find((str(key),))
                errors.append(
                    UserError(f"should be a {expected}, not a {_kind(value)}", file=loc.file if loc else None, line=loc.line if loc else None, path=str(key))
                )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise UserErrors(errors)


def _is_mapping(annotation: Any) -> bool:
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    return any(typing.get_origin(a) is dict or _is_model(a) for a in typing.get_args(annotation)) or _is_model(annotation)


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), type(value).__name__)
