"""Chunk: the columnar batch of messages (framework/chunk.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.chunk import Chunk
from tests.chunk_strategies import contract_refs, message_lists, registry

PLAIN = (int, float, str, bool, type(None))


def plain(value: Any) -> bool:
    """A JSON value of plain Python types only (no numpy scalar anywhere)."""
    if type(value) in PLAIN:
        return True
    if type(value) is dict:
        return all(type(k) is str and plain(v) for k, v in value.items())
    if type(value) is list:
        return all(plain(v) for v in value)
    return False


def same_types(before: list[dict], after: list[dict]) -> None:
    """Each value comes back with its type; an int only becomes a float in a column that mixes both."""
    for b, a in zip(before, after):
        for k, v in b.items():
            mixed = type(v) is int and any(type(r.get(k)) is float for r in before)
            assert type(a[k]) is type(v) or (mixed and type(a[k]) is float), (k, v, a[k])


@pytest.mark.parametrize("ref", contract_refs())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_valid_messages_of_every_contract_round_trip(ref: str, data: st.DataObject) -> None:
    contract = registry().resolve(ref)
    rows = data.draw(message_lists(contract))
    chunk = Chunk.from_rows(rows)
    out = chunk.rows()
    assert out == rows
    same_types(rows, out)
    assert all(plain(r) for r in out)
    assert all(contract.is_valid(r) for r in out)
    assert orjson.loads(orjson.dumps(out)) == rows
    for r in rows[:3]:
        one = Chunk.from_rows([r]).rows()
        assert one == [r] and plain(one[0])
        same_types([r], one)
    assert Chunk.from_rows(rows, fields=list(contract.properties())).rows() == rows
    cut = data.draw(st.integers(0, len(rows)))
    joined = Chunk.concat([Chunk.from_rows(rows[:cut]), Chunk.from_rows(rows[cut:])])
    assert joined.rows() == rows


def test_column_types_follow_the_values() -> None:
    rows = [
        {"i": 1, "f": 1.5, "m": 1, "s": "a", "b": True, "big": 2**64, "bi": True, "n": None, "d": {"x": 1}},
        {"i": 2, "f": 2.5, "m": 2.5, "s": "b", "b": False, "big": 1, "bi": 1, "n": None, "d": [1, 2]},
    ]
    c = Chunk.from_rows(rows)
    assert {k: c[k].dtype.kind for k in c.names} == {
        "i": "i", "f": "f", "m": "f", "s": "O", "b": "b", "big": "O", "bi": "O", "n": "O", "d": "O"
    }
    assert c["i"].dtype == np.int64 and c["f"].dtype == np.float64
    assert c.rows()[1]["d"] == [1, 2] and c.rows()[0]["d"] == {"x": 1}
    assert c.rows()[1]["m"] == 2.5 and type(c.rows()[0]["m"]) is float


def test_null_and_absent_are_kept_apart() -> None:
    rows = [{"a": 1, "x": 1.5, "s": "p"}, {"a": None, "x": None, "s": None}, {}]
    c = Chunk.from_rows(rows)
    assert c.rows() == rows
    assert c["a"].dtype == np.int64  # a nullable int column keeps its dtype, with a mask
    assert c.valid("a").tolist() == [True, False, False]
    assert c.absent("a").tolist() == [False, False, True]
    assert math.isnan(c["x"][1]) and math.isnan(c["x"][2])
    assert c["s"][1] is None


def test_nan_in_a_float_column_is_null() -> None:
    c = Chunk({"x": np.array([1.0, np.nan])})
    assert c.rows() == [{"x": 1.0}, {"x": None}]
    assert Chunk.from_rows([{"x": math.nan}, {"x": 2.0}]).rows() == [{"x": None}, {"x": 2.0}]


def test_the_constructor_checks_its_columns() -> None:
    with pytest.raises(ValueError, match="differ in length: a=2, b=3"):
        Chunk({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="must be 1-D"):
        Chunk({"a": np.zeros((2, 2))})
    with pytest.raises(TypeError, match="datetime64.*epoch milliseconds"):
        Chunk({"t": np.array(["2026-01-01"], dtype="datetime64[ms]")})
    with pytest.raises(ValueError, match="valid mask for 'a' has shape"):
        Chunk({"a": np.zeros(2, dtype=np.int64)}, valid={"a": [True]})


def test_the_constructor_gives_plain_values_whatever_the_dtypes() -> None:
    c = Chunk(
        {
            "i32": np.array([1, 2], dtype=np.int32),
            "u8": np.array([3, 4], dtype=np.uint8),
            "f32": np.array([0.5, 1.5], dtype=np.float32),
            "u": np.array(["ab", "c"]),
            "o": np.array([np.float64(1.5), np.int64(2)], dtype=object),
            "l": ["x", None],
        },
        valid={"i32": [True, False]},
        absent={"u8": [False, True]},
    )
    rows = c.rows()
    assert rows == [
        {"i32": 1, "u8": 3, "f32": 0.5, "u": "ab", "o": 1.5, "l": "x"},
        {"i32": None, "f32": 1.5, "u": "c", "o": 2, "l": None},
    ]
    assert all(plain(r) for r in rows) and all(plain(r) for r in c.take(0).rows())
    assert c["u"].dtype == object


def test_masks_put_the_null_value_under_them() -> None:
    values = np.array([1.0, 2.0])
    c = Chunk({"x": values, "s": np.array(["a", "b"], dtype=object)}, valid={"x": [False, True]}, absent={"s": [True, False]})
    assert math.isnan(c["x"][0]) and values[0] == 1.0  # copied, not written through
    assert c["s"][0] is None
    assert c.rows() == [{"x": None}, {"x": 2.0, "s": "b"}]


def test_take() -> None:
    rows = [{"a": i, "s": str(i), "o": None if i % 2 else 1.5} for i in range(6)]
    c = Chunk.from_rows(rows)
    assert c.take(-1).rows() == rows[-1:]
    assert c.take(2).rows() == [rows[2]]
    view = c.take(slice(1, 4))
    assert view.rows() == rows[1:4] and np.shares_memory(view["a"], c["a"])
    assert c.take([4, 0]).rows() == [rows[4], rows[0]]
    assert c.take(np.array([i % 2 == 0 for i in range(6)])).rows() == rows[::2]
    assert len(c.take([])) == 0 and c.take([]).rows() == []
    with pytest.raises(IndexError):
        c.take(6)
    with pytest.raises(IndexError):
        c.take(np.array([True, False]))


def test_concat_makes_missing_columns_absent_and_unifies_dtypes() -> None:
    a = Chunk.from_rows([{"x": 1, "s": "a"}, {"x": 2, "s": "b"}])
    b = Chunk.from_rows([{"x": 2.5, "flag": True}])
    c = Chunk.concat([a, b])
    assert c.rows() == [{"x": 1, "s": "a"}, {"x": 2, "s": "b"}, {"x": 2.5, "flag": True}]
    assert c["x"].dtype == np.float64 and c["s"].dtype == object and c["flag"].dtype == bool
    assert c.absent("flag").tolist() == [True, True, False]
    assert c.to_pandas()["flag"].isna().tolist() == [True, True, False]
    assert len(Chunk.concat([])) == 0
    mixed = Chunk.concat([Chunk.from_rows([{"v": 1}]), Chunk.from_rows([{"v": "one"}]), Chunk.from_rows([{"v": None}])])
    assert mixed.rows() == [{"v": 1}, {"v": "one"}, {"v": None}] and mixed["v"].dtype == object


def test_from_rows_fields_order_the_columns_and_keep_the_other_keys() -> None:
    rows = [{"b": 1, "a": 2}, {"a": 3, "c": "x"}]
    c = Chunk.from_rows(rows, fields=["a", "b", "z"])
    assert c.names == ("a", "b", "z", "c")
    assert c.rows() == rows
    assert c.absent("z").all()
    assert Chunk.from_rows([]).rows() == [] and Chunk.from_rows([{}, {}]).rows() == [{}, {}]
    with pytest.raises(TypeError, match="keys must be str"):
        Chunk.from_rows([{1: "x"}])


def test_pandas_round_trip() -> None:
    rows = [
        {"i": 1, "f": 1.5, "s": "a", "b": True, "o": {"k": 1}},
        {"i": None, "f": None, "s": None, "b": None, "o": None},
    ]
    c = Chunk.from_rows(rows)
    df = c.to_pandas()
    assert str(df["i"].dtype) == "Int64" and str(df["b"].dtype) == "boolean" and df["f"].dtype == np.float64
    back = Chunk.from_pandas(df)
    assert back.rows() == rows
    assert back["i"].dtype == np.int64 and back["b"].dtype == bool
    frame = pd.DataFrame({"x": [1.0, np.nan], "s": ["a", np.nan], "n": pd.array([1, pd.NA], dtype="Int64")})
    assert Chunk.from_pandas(frame).rows() == [{"x": 1.0, "s": "a", "n": 1}, {"x": None, "s": None, "n": None}]
    with pytest.raises(TypeError, match="'t' has dtype datetime64"):
        Chunk.from_pandas(pd.DataFrame({"t": pd.to_datetime(["2026-01-01"])}))


def test_to_arrow() -> None:
    c = Chunk.from_rows([{"i": 1, "f": 1.5, "s": "a"}, {"i": None, "s": "b"}])
    batch = c.to_arrow()
    assert batch.schema.field("i").type == pa.int64() and batch.schema.field("s").type == pa.string()
    assert batch.column("i").null_count == 1 and batch.column("f").null_count == 1
    assert batch.to_pylist() == [{"i": 1, "f": 1.5, "s": "a"}, {"i": None, "f": None, "s": "b"}]
    with pytest.raises(TypeError, match="column 'v' has no Arrow type"):
        Chunk.from_rows([{"v": 1}, {"v": "x"}]).to_arrow()
