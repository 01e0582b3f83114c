"""Structural compatibility of two contracts: can messages of one go where the other is expected?

Used by the lint: FX203 along each publisher/subscriber link (:mod:`framework.lint.context`) and
FX105 between a released contract version and its edited file (:mod:`framework.lint.evolution`).
"""

from __future__ import annotations

from typing import Any

from framework.contracts import Contract


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(prop: dict) -> frozenset[str] | None:
    """JSON types a property schema admits; None = any (unconstrained)."""
    if "const" in prop:
        return frozenset({_json_type(prop["const"])})
    if "enum" in prop:
        return frozenset(_json_type(v) for v in prop["enum"])
    if "type" in prop:
        t = prop["type"]
        return frozenset([t] if isinstance(t, str) else t)
    for union in ("anyOf", "oneOf"):
        if union in prop:
            parts = [_types(p) for p in prop[union]]
            return None if any(p is None for p in parts) else frozenset().union(*parts)
    return None


def _values(prop: dict) -> list | None:
    """The closed set of values (const/enum), or None if open."""
    if "const" in prop:
        return [prop["const"]]
    return list(prop["enum"]) if "enum" in prop else None


def _field_mismatch(name: str, have: dict, want: dict) -> str | None:
    want_t, have_t = _types(want), _types(have)
    if want_t is not None:
        if have_t is None:
            return f"{name}: producer allows any type, consumer wants {'|'.join(sorted(want_t))}"
        widened = set(have_t) - ({"integer"} if "number" in want_t else set())
        extra = widened - want_t
        if extra:
            return f"{name}: producer type {'|'.join(sorted(have_t))} vs consumer {'|'.join(sorted(want_t))}"
    want_v, have_v = _values(want), _values(have)
    if want_v is not None:
        if have_v is None:
            return f"{name}: consumer only accepts {want_v}, producer's values are open"
        extra_v = [v for v in have_v if v not in want_v]
        if extra_v:
            return f"{name}: producer may send {extra_v}, consumer only accepts {want_v}"
    return None


def compatible(producer: Contract, consumer: Contract) -> str | None:
    """None if ``producer`` messages are acceptable where ``consumer`` is expected, else why not.

    Same ref: fine. Same name, other major: a breaking change by definition. Different names:
    structural subtyping — every field the consumer requires must be required by the producer,
    and every field both declare must have compatible JSON types (integer fits number) and,
    if the consumer has an enum, a producer enum within it. Extra producer fields are ignored:
    consumers read fields by name (a consumer re-validating with ``additionalProperties:
    false`` would still reject them, which is a separate, stricter question).
    """
    if producer.ref == consumer.ref:
        return None
    if producer.name == consumer.name:
        return f"{producer.ref} vs {consumer.ref}: major versions differ (breaking change)"
    have, want = producer.properties(), consumer.properties()
    have_req = set(producer.required())
    problems = []
    for name in consumer.required():
        if name not in have:
            problems.append(f"{name}: missing")
        elif name not in have_req:
            problems.append(f"{name}: optional in producer, required by consumer")
    for name, want_schema in want.items():
        if name in have:
            why = _field_mismatch(name, have[name], want_schema)
            if why:
                problems.append(why)
    if not problems:
        return None
    return f"{producer.ref} does not satisfy {consumer.ref}: " + "; ".join(problems)
