"""Hypothesis strategies for messages of the contracts in contracts/: variations of the valid
example of each contract (tests/fixtures/contract_examples), and corruptions of them.

Values are drawn from each property's dereferenced schema, so a new contract is covered without
changes here; every generated valid message is checked with ``Contract.is_valid``.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from framework.contracts import Contract, ContractRegistry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).parent / "fixtures" / "contract_examples"


@cache
def registry() -> ContractRegistry:
    return ContractRegistry.load(ROOT / "contracts")


def contract_refs() -> list[str]:
    return registry().refs()


@cache
def example(ref: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{ref}.json").read_text())


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6
)


def _bounded_floats(s: dict) -> st.SearchStrategy[float]:
    lo = s.get("minimum", s.get("exclusiveMinimum"))
    hi = s.get("maximum", s.get("exclusiveMaximum"))
    return st.floats(
        min_value=lo,
        max_value=hi,
        exclude_min="exclusiveMinimum" in s,
        exclude_max="exclusiveMaximum" in s,
        allow_nan=False,
        allow_infinity=False,
    )


def _bounded_ints(s: dict) -> st.SearchStrategy[int]:
    lo = s.get("minimum", None if "exclusiveMinimum" not in s else math.floor(s["exclusiveMinimum"]) + 1)
    hi = s.get("maximum", None if "exclusiveMaximum" not in s else math.ceil(s["exclusiveMaximum"]) - 1)
    return st.integers(min_value=-(2**63) if lo is None else lo, max_value=2**63 - 1 if hi is None else hi)  # orjson's range


def valid_values(s: Any) -> st.SearchStrategy[Any]:
    """Values valid against a dereferenced property schema (filtered where a keyword is not modelled)."""
    if s is True or s == {} or not isinstance(s, dict):
        return JSON
    if "const" in s:
        return st.just(s["const"])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    types = s.get("type", ["null", "boolean", "integer", "number", "string", "object", "array"])
    types = [types] if isinstance(types, str) else types
    options = []
    for t in types:
        if t == "null":
            options.append(st.none())
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "integer":
            options.append(_bounded_ints(s))
        elif t == "number":
            options.append(_bounded_floats(s))
            options.append(_bounded_ints(s))
        elif t == "string":
            if "pattern" in s:
                options.append(st.from_regex(s["pattern"], fullmatch=True))
            else:
                options.append(st.text(min_size=s.get("minLength", 0), max_size=min(s.get("maxLength", 12), 12)))
        elif t == "object" and "properties" in s:
            required = set(s.get("required", []))
            props = s["properties"]
            options.append(
                st.fixed_dictionaries(
                    {k: valid_values(v) for k, v in props.items() if k in required},
                    optional={k: valid_values(v) for k, v in props.items() if k not in required},
                )
            )
        elif t == "object":
            extra = s.get("additionalProperties", True)
            keys = st.from_regex(s["propertyNames"]["pattern"], fullmatch=True) if "propertyNames" in s else st.text(max_size=6)
            options.append(st.dictionaries(keys, JSON if extra is True else valid_values(extra), max_size=4))
        elif t == "array":
            options.append(st.lists(valid_values(s.get("items", True)), max_size=3))
    return st.one_of(options)


def _property_validator(s: Any) -> Any:
    import jsonschema_rs

    return jsonschema_rs.Draft202012Validator(s)


def valid_messages(contract: Contract) -> st.SearchStrategy[dict[str, Any]]:
    """The contract's example with some fields redrawn and some optional fields left out or
    added (rules across fields, such as an ``if``/``then``, are met by filtering)."""
    return _variations(contract).filter(contract.is_valid)


@st.composite
def _variations(draw: st.DrawFn, contract: Contract) -> dict[str, Any]:
    base = example(contract.ref)
    required = set(contract.required())
    out: dict[str, Any] = {}
    for name, s in contract.properties().items():
        choice = draw(st.sampled_from(("keep", "redraw", "drop")))
        if choice == "drop" and name not in required:
            continue
        if choice == "keep" and name in base:
            out[name] = base[name]
            continue
        check = _property_validator(s)
        out[name] = draw(valid_values(s).filter(check.is_valid))
    return out


BAD_VALUES: list[Any] = [
    -1, 0, -0.0, 0.5, 1.5, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 1e300, -1e-300,
    "", "x", "EURUSD", "EURUSD\n", "eurusd", "A" * 13, "a" * 129, "1h", "0h", "buy", "limit", "stop",
    None, True, False, [], [1], ["x"], [""], {}, {"a": 1}, {"a": "x"}, {"1a": 1}, {"a": None},
    math.inf, -math.inf, math.nan,
]
NOT_JSON: list[Any] = [np.float64(1.0), np.int64(5), (1, 2), b"x", Decimal("1.5"), {1: 0.5}, [np.float64(1.0)], {"a": b"x"}]


@st.composite
def corrupted(draw: st.DrawFn, contract: Contract, message: dict[str, Any], not_json: bool = False) -> dict[str, Any]:
    """``message`` with one to three corruptions: a field set to a tricky value, a field
    removed, an undeclared field added, a nested member broken."""
    out = dict(message)
    names = list(contract.properties())
    pool = BAD_VALUES + (NOT_JSON if not_json else [])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("set", "set", "set", "drop", "add", "nested", "json")))
        name = draw(st.sampled_from(names))
        if kind == "set":
            out[name] = draw(st.sampled_from(pool))
        elif kind == "json":
            out[name] = draw(JSON)
        elif kind == "drop":
            out.pop(name, None)
        elif kind == "add":
            out[draw(st.sampled_from(("extra", "bid", "zz")))] = draw(st.sampled_from(pool))
        elif isinstance(out.get(name), dict):
            out[name] = {**out[name], draw(st.sampled_from(("a", "1a", "b_2"))): draw(st.sampled_from(pool))}
        elif isinstance(out.get(name), list):
            out[name] = [*out[name], draw(st.sampled_from(pool))]
    return out


@st.composite
def message_lists(
    draw: st.DrawFn, contract: Contract, *, max_size: int = 40, corrupt: bool = False, not_json: bool = False
) -> list[dict[str, Any]]:
    """Rows drawn from a few valid variations (repeats, as in real chunks), each corrupted
    with probability 1/3 when ``corrupt``."""
    variations = draw(st.lists(valid_messages(contract), min_size=1, max_size=6))
    picks = draw(st.lists(st.integers(0, len(variations) - 1), max_size=max_size))
    rows = [dict(variations[i]) for i in picks]
    if corrupt:
        rows = [draw(corrupted(contract, r, not_json)) if draw(st.integers(0, 2)) == 0 else r for r in rows]
    return rows
