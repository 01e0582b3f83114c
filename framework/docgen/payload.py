"""Message payloads of ``docs/asyncapi.yaml``: a 2020-12 contract written as an equivalent draft-07 schema.

The contracts are JSON Schema 2020-12, but the AsyncAPI 3.0 schema only checks a payload whose
``schemaFormat`` it knows (draft-07 or its own Schema Object): a 2020-12 payload, however
broken, passes every AsyncAPI validator. Once cross-file ``$ref`` are inlined, a contract that
uses only the keywords both drafts share means the same under either, so the payload is
declared draft-07 and AsyncAPI tools check it. A keyword whose meaning differs (or that exists
in one draft only) is refused with the contract's file and path instead of being documented
with a meaning it does not have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from framework.contracts import Contract
from framework.errors import UserError, UserErrors

SCHEMA_FORMAT = "application/schema+json;version=draft-07"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_NOT_SHARED = {
    "prefixItems": "2020-12 only",
    "unevaluatedProperties": "2019-09+ only",
    "unevaluatedItems": "2019-09+ only",
    "dependentRequired": "2019-09+ only",
    "dependentSchemas": "2019-09+ only",
    "minContains": "2019-09+ only",
    "maxContains": "2019-09+ only",
    "contentSchema": "2019-09+ only",
    "$dynamicRef": "2020-12 only",
    "$dynamicAnchor": "2020-12 only",
    "$recursiveRef": "2019-09 only",
    "$recursiveAnchor": "2019-09 only",
    "$anchor": "2019-09+ only",
    "$vocabulary": "2019-09+ only",
    "dependencies": "draft-07 only (2020-12 ignores it)",
    "additionalItems": "draft-07 only (2020-12 ignores it)",
    "$ref": "a reference left after inlining would resolve against the AsyncAPI document",
}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = (
    "additionalProperties", "items", "contains", "propertyNames", "if", "then", "else", "not",
    "unevaluatedProperties", "unevaluatedItems", "additionalItems", "contentSchema",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def payload_schema(contract: Contract) -> dict[str, Any]:
    """The contract's schema with cross-file ``$ref`` inlined, keeping the keywords written beside a ``$ref``.

    The dereferenced schema alone loses them (a property's own ``description`` next to
    ``$ref: common.v1#/$defs/name`` would become the shared one), and the raw schema alone
    has ``urn:`` references AsyncAPI tools cannot follow.
    """
    return _merge_refs(contract.schema, contract.resolved if contract.resolved is not None else contract.schema)


def draft07_payload(contract: Contract) -> dict[str, Any]:
    """:func:`payload_schema` as draft-07; :class:`UserError` naming every keyword the drafts do not share."""
    schema = payload_schema(contract)
    where = f"contracts/{contract.file.name}" if contract.file is not None else contract.ref
    problems = [
        UserError(
            f"{keyword!r} is {why}; docs/asyncapi.yaml gives payloads as JSON Schema draft-07 so AsyncAPI "
            "tools can check them: write the contract with keywords draft-07 and 2020-12 share",
            file=where,
            path=path or "$",
        )
        for path, keyword, why in unshared_keywords(schema)
    ]
    if problems:
        raise UserErrors(problems) if len(problems) > 1 else problems[0]
    return {"$schema": DRAFT_07, **{k: v for k, v in schema.items() if k != "$schema"}}


def unshared_keywords(schema: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, keyword, why) of every keyword in a schema position whose meaning is not the same in both drafts."""
    if not isinstance(schema, dict):
        return
    for keyword, why in _NOT_SHARED.items():
        if keyword in schema:
            yield path, keyword, why
    if isinstance(schema.get("items"), list):
        yield path, "items", "an array (a tuple in draft-07, invalid in 2020-12)"
    for keyword in _SCHEMA_MAPS:
        sub = schema.get(keyword)
        if isinstance(sub, dict):
            for name, value in sub.items():
                yield from unshared_keywords(value, _join(path, keyword, name))
    for keyword in _SCHEMA_VALUES:
        if keyword in schema and not isinstance(schema[keyword], list):
            yield from unshared_keywords(schema[keyword], _join(path, keyword))
    for keyword in (*_SCHEMA_LISTS, "items"):
        sub = schema.get(keyword)
        if isinstance(sub, list):
            for i, value in enumerate(sub):
                yield from unshared_keywords(value, f"{_join(path, keyword)}[{i}]")


def _join(path: str, *parts: str) -> str:
    return ".".join([path, *parts] if path else parts)


def _merge_refs(raw: Any, resolved: Any) -> Any:
    if isinstance(raw, dict) and isinstance(resolved, dict):
        if "$ref" in raw:
            merged = dict(resolved)
            merged.update({k: _merge_refs(v, resolved.get(k, v)) for k, v in raw.items() if k != "$ref"})
            return merged
        return {k: _merge_refs(v, resolved.get(k, v)) for k, v in raw.items()}
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return [_merge_refs(a, b) for a, b in zip(raw, resolved)]
    return raw
