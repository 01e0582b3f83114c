"""Table columns derived from a contract, in portable types each store maps to its own."""

from __future__ import annotations

import re
from collections.abc import Mapping

from framework.contracts import Contract

_JSON_TO_PORTABLE = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}


def portable_type(name: str, prop: dict, time_field: str | None) -> str:
    if name == time_field:
        return "timestamp_ms"
    types = prop.get("type")
    if types is None and "enum" in prop:
        kinds = {type(v).__name__ for v in prop["enum"] if v is not None}
        types = ["string"] if kinds <= {"str"} else ["number"]
        if None in prop["enum"]:
            types.append("null")
    if isinstance(types, str):
        types = [types]
    types = list(types or [])
    nullable = "null" in types
    concrete = [t for t in types if t != "null"]
    if len(concrete) == 1 and concrete[0] in _JSON_TO_PORTABLE:
        base = _JSON_TO_PORTABLE[concrete[0]]
    elif set(concrete) == {"integer", "number"}:
        base = "float"
    else:
        base = "json"
    return base + ("?" if nullable else "")


def columns_from_contract(contract: Contract) -> dict[str, str]:
    """Column → portable type; optional fields are nullable."""
    required = set(contract.required())
    out: dict[str, str] = {}
    for name, prop in contract.properties().items():
        kind = portable_type(name, prop, contract.time_field)
        if name not in required and not kind.endswith("?"):
            kind += "?"
        out[name] = kind
    return out


PORTABLE = frozenset({"int", "float", "str", "bool", "json", "timestamp_ms"})
_NATIVE = re.compile(r"^[A-Za-z][\w (),'.]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def split_type(portable: str) -> tuple[str, bool]:
    """``("int", True)`` for ``int?``."""
    return portable.rstrip("?"), portable.endswith("?")


def native_type(portable: str, mapping: Mapping[str, str]) -> str:
    """The store's type for a portable one; any other name passes through as a native type
    (``LowCardinality(String)``) once it looks like a type, not like more SQL."""
    base, _ = split_type(portable)
    if base in mapping:
        return mapping[base]
    if not _NATIVE.match(base) or "--" in base:
        raise ValueError(f"{portable!r} is neither a portable type ({', '.join(sorted(PORTABLE))}) nor a type name")
    return base


def checked_ident(name: str) -> str:
    """``name`` if it is a plain identifier; table and column names go into DDL, so nothing else may."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a valid table or column name (letters, digits, _)")
    return name


def time_column_of(columns: Mapping[str, str], declared: str | None) -> str | None:
    """The column retention and partitioning count on: the contract's time field, else the
    first ``timestamp_ms`` column of a table declared by its columns."""
    if declared is not None:
        return declared if declared in columns else None
    return next((c for c, t in columns.items() if split_type(t)[0] == "timestamp_ms"), None)
