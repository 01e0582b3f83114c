"""ChunkValidator (framework/chunk_validation.py) against the independent reference: jsonschema-rs
row by row (``Contract.validate``), for every contract in contracts/."""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

import jsonschema_rs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.chunk import Chunk
from framework.chunk_validation import ROWWISE_BELOW, ChunkValidator
from framework.contracts import Contract, _format_path
from tests.chunk_strategies import contract_refs, example, message_lists, registry

MORE = re.compile(r" \(\+\d+ more\)$")


@cache
def vectorised(ref: str) -> ChunkValidator:
    return ChunkValidator(registry().resolve(ref), rowwise_below=0)


@cache
def reference(contract: Contract) -> Any:
    return jsonschema_rs.Draft202012Validator(contract.schema, registry=contract.registry)


def all_errors(contract: Contract, row: dict) -> list[str] | None:
    """Every error jsonschema-rs reports for ``row``, formatted as Contract.validate does."""
    try:
        return [f"{_format_path(e.instance_path)}: {e.message}".replace("\n", " ") for e in reference(contract).iter_errors(row)]
    except (ValueError, TypeError):
        return None


def assert_agrees(contract: Contract, validator: ChunkValidator, chunk: Chunk) -> None:
    rows = chunk.rows()
    got = validator.check(chunk)
    expected = [i for i, row in enumerate(rows) if contract.validate(row) is not None]
    assert [i for i, _ in got] == expected, [(i, rows[i], contract.validate(rows[i])) for i in set(expected) ^ {i for i, _ in got}]
    assert (~validator.valid_mask(chunk)).nonzero()[0].tolist() == expected
    for i, reason in got:
        first = MORE.sub("", contract.validate(rows[i]) or "")
        errors = all_errors(contract, rows[i])
        if errors is None:  # jsonschema-rs could not read the row, or print a value of it
            assert reason == first or "not a JSON message" not in reason
        elif len(errors) == 1:
            assert reason == first, rows[i]
        else:
            assert reason in errors, (reason, errors)


@st.composite
def chunks_of(draw: st.DrawFn, rows: list[dict]) -> Chunk:
    """``rows`` as one chunk, as a concat of chunks of parts of them, or as a take of a larger chunk."""
    how = draw(st.sampled_from(("rows", "parts", "take")))
    if how == "rows" or not rows:
        return Chunk.from_rows(rows)
    if how == "parts":
        cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
        bounds = [0, *cuts, len(rows)]
        return Chunk.concat([Chunk.from_rows(rows[a:b]) for a, b in zip(bounds, bounds[1:])])
    order = draw(st.permutations(range(len(rows))))
    return Chunk.from_rows([rows[i] for i in order]).take(np.argsort(order))


@pytest.mark.parametrize("ref", contract_refs())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_failing_rows_are_the_rows_jsonschema_rejects(ref: str, data: st.DataObject) -> None:
    contract = registry().resolve(ref)
    rows = data.draw(message_lists(contract, corrupt=True, not_json=True))
    chunk = data.draw(chunks_of(rows))
    assert_agrees(contract, vectorised(ref), chunk)
    as_given = [{k: None if type(v) is float and math.isnan(v) else v for k, v in row.items()} for row in rows]
    rejected = [i for i, row in enumerate(as_given) if contract.validate(row) is not None]
    assert [i for i, _ in vectorised(ref).check(chunk)] == rejected  # the rows as given (NaN is null in a chunk)


@pytest.mark.parametrize("ref", ["tick.v1", "order_event.v1", "features.v1"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_short_chunks_go_row_by_row_with_the_same_result(ref: str, data: st.DataObject) -> None:
    contract = registry().resolve(ref)
    rows = data.draw(message_lists(contract, max_size=ROWWISE_BELOW - 1, corrupt=True))
    chunk = Chunk.from_rows(rows)
    assert ChunkValidator(contract).check(chunk) == vectorised(ref).check(chunk)


def tick_rows(**changes: Any) -> list[dict]:
    base = example("tick.v1")
    rows = []
    for name, value in changes.items():
        row = dict(base)
        if value is ...:
            del row[name]
        else:
            row[name] = value
        rows.append(row)
    return [base, *rows]


def test_reasons_are_those_of_contract_validate() -> None:
    rows = tick_rows(bid=-0.5, symbol="eurusd", ask=..., extra=1, ts=1.5, source="")
    rows.append({**example("tick.v1"), "bid": 0.0, "ask": "x"})  # two errors: the first column's
    assert vectorised("tick.v1").check(Chunk.from_rows(rows)) == [
        (1, "bid: -0.5 is less than or equal to the minimum of 0"),
        (2, 'symbol: "eurusd" does not match "^[A-Z0-9]{3,12}$"'),
        (3, '$: "ask" is a required property'),
        (4, "$: Additional properties are not allowed ('extra' was unexpected)"),
        (5, 'ts: 1.5 is not of type "integer"'),
        (6, 'source: "" is shorter than 1 character'),
        (7, "bid: 0.0 is less than or equal to the minimum of 0"),
    ]


def test_if_then_across_columns() -> None:
    base = example("order_event.v1")
    rows = [base, {k: v for k, v in base.items() if k != "limit_price"}, {**base, "order_type": "stop"}, {**base, "order_type": "market"}]
    assert vectorised("order_event.v1").check(Chunk.from_rows(rows)) == [
        (1, '$: "limit_price" is a required property'),
        (2, '$: "stop_price" is a required property'),
    ]


def test_nested_members_are_checked_and_named() -> None:
    base = example("features.v1")
    rows = [base, {**base, "values": {"rsi": "high"}}, {**base, "values": {"1x": 1.0}}, {**base, "values": {"a": None, "b": 2}}]
    assert vectorised("features.v1").check(Chunk.from_rows(rows)) == [
        (1, 'values.rsi: "high" is not of types "null", "number"'),
        (2, 'values: "1x" does not match "^[A-Za-z][A-Za-z0-9_]*$"'),
    ]


def test_values_of_no_json_type_are_judged_by_jsonschema_rs() -> None:
    rows = tick_rows(bid=np.float64(1.1), source=b"polygon")
    assert vectorised("tick.v1").check(Chunk.from_rows(rows)) == [
        (1, "$: not a JSON message (Unsupported type: 'float64')"),
        (2, "$: not a JSON message (Unsupported type: 'bytes')"),
    ]


def test_nan_is_null_and_infinity_is_no_json_type() -> None:
    bar = example("bar.v1")
    rows = [bar, {**bar, "spread_mean": math.inf}, {**bar, "open": math.nan}, {**bar, "spread_max": math.nan}]
    assert vectorised("bar.v1").check(Chunk.from_rows(rows)) == [
        (1, 'spread_mean: null is not of types "null", "number"'),  # jsonschema-rs prints inf as null
        (2, 'open: null is not of type "number"'),
    ]
    features = example("features.v1")
    rows = [features, {**features, "values": {"a": math.nan}}, {**features, "values": {"a": None}}]
    assert [i for i, _ in vectorised("features.v1").check(Chunk.from_rows(rows))] == [1]


def test_typed_columns_built_by_a_kernel() -> None:
    n = 5
    chunk = Chunk(
        {
            "symbol": np.array(["EURUSD"] * n, dtype=object),
            "ts": np.arange(n, dtype=np.int32),
            "bid": np.array([1.1, 1.2, 0.0, 1.3, np.nan], dtype=np.float32),
            "ask": np.full(n, 1.5),
            "source": ["x"] * n,
            "seq": np.array([1, 2, 3, 4, 5], dtype=np.uint64),
        },
        valid={"seq": [True, True, True, False, True]},
    )
    assert vectorised("tick.v1").check(chunk) == [
        (2, "bid: 0.0 is less than or equal to the minimum of 0"),
        (3, 'seq: null is not of type "integer"'),
        (4, 'bid: null is not of type "number"'),
    ]
    assert_agrees(registry().resolve("tick.v1"), vectorised("tick.v1"), chunk)


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:fxflow:contract:probe.v1",
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"type": "integer", "multipleOf": 5},
        "b": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "c": {"enum": [1, "one", None, [1]]},
        "d": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    },
    "anyOf": [{"required": ["b"]}, {"required": ["c"]}],
    "additionalProperties": {"type": "string", "maxLength": 2},
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "d", "e", "ff"]),
            st.sampled_from([0, 5, 7, 1.0, 10.0, 2.5, -1, "one", "x", "xyz", None, True, [1], [], ["s"], [2], {"k": 1}, {"k": -1}, {"k": 1.5}]),
        ),
        max_size=30,
    )
)
def test_keywords_without_a_column_form_fall_back_to_jsonschema(rows: list[dict]) -> None:
    contract = Contract.from_schema(SCHEMA)
    assert_agrees(contract, ChunkValidator(contract, rowwise_below=0), Chunk.from_rows(rows))
