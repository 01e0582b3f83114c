"""Table columns derived from a contract, in portable types each store maps to its own."""

from __future__ import annotations

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
