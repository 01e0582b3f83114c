"""A columnar batch of messages of one contract: named numpy columns of equal length.

Why numpy columns (not a pyarrow RecordBatch or a DataFrame): a slice is a view (no copy), a
chunk of one row (what a live NATS fetch gives) costs a few microseconds to build, and
vectorised kernels (TA-Lib, numpy) take the arrays as they are; pandas and pyarrow convert from
it when a node wants them (:meth:`Chunk.to_pandas`, :meth:`Chunk.to_arrow`).

Column types, as :meth:`Chunk.from_rows` chooses them per field: ``int64`` when every value is
an ``int``, ``float64`` for ``float`` (and ``int`` mixed with ``float``: those ints come back as
floats, the same JSON number), ``bool`` for ``bool``, ``object`` for strings, nested objects
and arrays and any other mix (also an ``int`` beyond int64).

Two kinds of missing value, kept apart so that a row comes back exactly as it went in:

- *null*: the message has the field, with JSON ``null``;
- *absent*: the message does not have the field (an optional field left out, or a column that
  only another chunk of a :meth:`Chunk.concat` had).

A column keeps a *missing* mask (null or absent) and an *absent* mask, each only when some row
needs it. The value under a missing cell is ``NaN`` in a float column, ``None`` in an object
column, ``0``/``False`` in an int/bool column (which keep their dtype: a nullable int column
stays ``int64`` with a mask, as in pandas' ``Int64`` and Arrow). In a float column ``NaN`` *is*
null: JSON has no NaN, and orjson and jsonschema-rs both turn it into ``null``.

**Times.** A chunk may say when each of its rows became known (:attr:`Chunk.times`, epoch ms,
non-decreasing; :meth:`Chunk.timed`): history a source hands on ahead of time, each row
stamped with the moment a live feed would have delivered it. The times are not a column (not
in the rows, not validated, not sent over NATS); ``take`` and ``concat`` keep them. How a run
delivers a timed chunk is the runtime's business (``ctx.publish_batch``, and
:mod:`framework.runtime.simulation`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_NONE_TYPE = type(None)
_INT64_SAFE_IN_FLOAT = 2**53
"""Ints up to this size are exact in float64; a column mixing larger ones with floats stays object."""


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
"""Placeholder for a field a row does not have, while a column is built."""

_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_TRUE1 = np.ones(1, dtype=bool)
_TRUE1.flags.writeable = False

_FILL = {"f": math.nan, "i": 0, "u": 0, "b": False, "O": None}
_KINDS = frozenset("biufO")


def _fill_value(dtype: np.dtype) -> Any:
    return _FILL[dtype.kind]


def _object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` as they are (``np.array`` would unpack nested lists)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _column_from_values(values: list[Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One column from Python values (``_ABSENT`` where a row lacks the field): array, missing, absent."""
    n = len(values)
    types = set(map(type, values))
    absent = missing = None
    if _Absent in types:
        types.discard(_Absent)
        absent = np.fromiter((v is _ABSENT for v in values), dtype=bool, count=n)
    if _NONE_TYPE in types:
        types.discard(_NONE_TYPE)
        missing = np.fromiter((v is None or v is _ABSENT for v in values), dtype=bool, count=n)
    elif absent is not None:
        missing = absent
    if len(types) == 1 or types == {int, float}:
        if float in types and (int not in types or _ints_fit_float(values)):
            fill = values if missing is None else [math.nan if v is None or v is _ABSENT else v for v in values]
            arr = np.array(fill, dtype=np.float64)
            nan = np.isnan(arr)
            return arr, (nan if nan.any() else None), absent
        if types == {int}:
            fill = values if missing is None else [0 if v is None or v is _ABSENT else v for v in values]
            try:
                return np.array(fill, dtype=np.int64), missing, absent
            except OverflowError:
                pass
        elif types == {bool}:
            fill = values if missing is None else [False if v is None or v is _ABSENT else v for v in values]
            return np.array(fill, dtype=bool), missing, absent
    if absent is not None:
        values = [None if v is _ABSENT else v for v in values]
    return _object_array(values), missing, absent


def _ints_fit_float(values: list[Any]) -> bool:
    return all(-_INT64_SAFE_IN_FLOAT <= v <= _INT64_SAFE_IN_FLOAT for v in values if type(v) is int)


def _normalise_array(name: str, values: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A column given to :class:`Chunk`: 1-D, of a kind a message can hold, without numpy
    scalars inside; with its missing mask (NaN in a float column, None in an object column)."""
    if not isinstance(values, np.ndarray):
        arr, missing, _ = _column_from_values(list(values))
        return arr, missing
    if values.ndim != 1:
        raise ValueError(f"chunk column {name!r} must be 1-D, got shape {values.shape}")
    kind = values.dtype.kind
    if kind == "U":
        values = values.astype(object)
    elif kind not in _KINDS:
        raise TypeError(
            f"chunk column {name!r} has dtype {values.dtype}, which no message field holds "
            "(use int64 epoch milliseconds for times, str for text)"
        )
    elif kind == "O" and any(issubclass(t, np.generic) for t in set(map(type, values))):
        values = _object_array([v.item() if isinstance(v, np.generic) else v for v in values])
    return values, _derived_missing(values)


class Chunk:
    """A columnar batch of messages: named 1-D numpy arrays of one length.

    ``Chunk(columns)`` uses the arrays as they are (no copy); lists are converted as by
    :meth:`from_rows`. In a float column ``NaN`` is null, in an object column ``None``;
    ``valid`` marks nulls in int and bool columns (False = null), ``absent`` the rows that
    do not have the field at all.
    """

    __slots__ = ("_absent", "_cols", "_missing", "_n", "_times")

    def __init__(
        self,
        columns: Mapping[str, np.ndarray | Sequence[Any]],
        *,
        valid: Mapping[str, np.ndarray] | None = None,
        absent: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        cols: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            if not isinstance(name, str):
                raise TypeError(f"chunk column names must be str, got {name!r}")
            cols[name], m = _normalise_array(name, values)
            if m is not None:
                missing[name] = m
        lengths = {name: len(arr) for name, arr in cols.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise ValueError(f"chunk columns differ in length: {listed}")
        n = next(iter(lengths.values()), 0)
        gone = _masks_arg("absent", absent, cols, n)
        for name, mask in _masks_arg("valid", valid, cols, n).items():
            missing[name] = ~mask if name not in missing else missing[name] | ~mask
        for name, mask in gone.items():
            missing[name] = mask if name not in missing else missing[name] | mask
        for name, m in list(missing.items()):
            if not m.any():
                del missing[name]
                continue
            arr = cols[name]
            if arr.dtype.kind == "f" and not np.isnan(arr[m]).all():
                cols[name] = arr = arr.copy()
                arr[m] = math.nan
            elif arr.dtype.kind == "O" and any(v is not None for v in arr[m]):
                cols[name] = arr = arr.copy()
                arr[m] = None
        self._cols = cols
        self._missing = missing
        self._absent = {k: v for k, v in gone.items() if v.any()}
        self._n = n
        self._times: np.ndarray | None = None

    @classmethod
    def _make(
        cls, cols: dict[str, np.ndarray], missing: dict[str, np.ndarray], absent: dict[str, np.ndarray], n: int,
        times: np.ndarray | None = None,
    ) -> Chunk:  # fmt: skip
        """Trusted constructor: columns already normalised, masks consistent."""
        self = cls.__new__(cls)
        self._cols = cols
        self._missing = missing
        self._absent = absent
        self._n = n
        self._times = times
        return self

    # ------------------------------------------------------------------ times

    @property
    def times(self) -> np.ndarray | None:
        """When each row became known (epoch ms, non-decreasing), or None: the chunk is untimed."""
        return self._times

    def timed(self, times: Sequence[int] | np.ndarray | None) -> Chunk:
        """This chunk (columns shared, no copy) with ``times`` as its rows' times (None: untimed)."""
        if times is None:
            return self if self._times is None else Chunk._make(self._cols, self._missing, self._absent, self._n)
        at = np.asarray(times)
        if at.shape != (self._n,):
            raise ValueError(f"times of shape {at.shape} for a chunk of {self._n} rows")
        if at.dtype != _I64:
            if at.size and at.dtype.kind not in "iu":
                raise TypeError(f"chunk times must be int epoch milliseconds, got {at.dtype}")
            at = at.astype(np.int64)
        if at.size > 1 and bool((at[1:] < at[:-1]).any()):
            raise ValueError("chunk times must not decrease")
        return Chunk._make(self._cols, self._missing, self._absent, self._n, at)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name]

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._cols)

    def valid(self, name: str) -> np.ndarray:
        """True where the row has a non-null value for ``name``."""
        m = self._missing.get(name)
        return np.ones(self._n, dtype=bool) if m is None else ~m

    def absent(self, name: str) -> np.ndarray:
        """True where the row does not have the field ``name`` at all."""
        m = self._absent.get(name)
        return np.zeros(self._n, dtype=bool) if m is None else m.copy()

    def masks(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(missing, absent)`` of a column without copies; None where no row is."""
        return self._missing.get(name), self._absent.get(name)

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {v.dtype}" for k, v in self._cols.items())
        return f"Chunk({self._n} rows; {cols})"

    # ------------------------------------------------------------------ selection

    def take(self, index: int | slice | Sequence[int] | np.ndarray) -> Chunk:
        """Rows by position: an int (a chunk of that one row), a slice (views, no copy), an
        array of positions, or a boolean mask of ``len(self)``."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -self._n <= i < self._n:
                raise IndexError(f"row {i} out of range for a chunk of {self._n} rows")
            i %= self._n
            key: Any = slice(i, i + 1)
        elif isinstance(index, slice):
            key = index
        else:
            key = np.asarray(index)
            if key.dtype == bool:
                if key.shape != (self._n,):
                    raise IndexError(f"boolean mask of shape {key.shape} for a chunk of {self._n} rows")
            elif key.size == 0:
                key = key.astype(np.intp)
            elif key.dtype.kind not in "iu":
                raise TypeError(f"take() wants an int, a slice, positions or a boolean mask, got {key.dtype}")
        return Chunk._make(
            {k: v[key] for k, v in self._cols.items()},
            {k: v[key] for k, v in self._missing.items()},
            {k: v[key] for k, v in self._absent.items()},
            len(range(self._n)[key]) if isinstance(key, slice) else int(key.sum()) if key.dtype == bool else len(key),
            None if self._times is None else self._times[key],
        )

    @classmethod
    def concat(cls, chunks: Iterable[Chunk]) -> Chunk:
        """One chunk of the rows of ``chunks`` in order. A column that some chunks lack is
        absent in their rows (null in pandas and Arrow); dtypes are unified as numpy does
        (int with float gives float64), bool or object with anything else gives object."""
        parts = [c for c in chunks]
        if not parts:
            return cls({})
        if len(parts) == 1:
            return parts[0]
        n = sum(c._n for c in parts)
        names = dict.fromkeys(chain.from_iterable(c._cols for c in parts))
        cols: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        absent: dict[str, np.ndarray] = {}
        for name in names:
            dtype = _common_dtype(
                [c._cols[name] for c in parts if name in c._cols and not _all_missing(c, name)]
                or [c._cols[name] for c in parts if name in c._cols]
            )
            fill = _fill_value(dtype)
            arrays, miss, gone = [], [], []
            for c in parts:
                arr = c._cols.get(name)
                if arr is None:
                    arrays.append(np.full(c._n, fill, dtype=dtype))
                    miss.append(np.ones(c._n, dtype=bool))
                    gone.append(miss[-1])
                    continue
                if arr.dtype == dtype:
                    arrays.append(arr)
                elif _all_missing(c, name):  # its dtype did not count: None cannot become an int
                    arrays.append(np.full(c._n, fill, dtype=dtype))
                else:
                    arrays.append(arr.astype(dtype))
                miss.append(c._missing.get(name, np.zeros(c._n, dtype=bool)))
                gone.append(c._absent.get(name, np.zeros(c._n, dtype=bool)))
            arr = np.concatenate(arrays)
            m = np.concatenate(miss)
            if m.any():
                if dtype.kind in "fO":
                    arr[m] = fill
                missing[name] = m
                a = np.concatenate(gone)
                if a.any():
                    absent[name] = a
            cols[name] = arr
        times = np.concatenate([c._times for c in parts]) if all(c._times is not None for c in parts) else None
        if times is not None and times.size > 1 and bool((times[1:] < times[:-1]).any()):
            raise ValueError("concatenated chunk times would decrease")
        return cls._make(cols, missing, absent, n, times)

    # ------------------------------------------------------------------ rows

    def rows(self) -> list[dict[str, Any]]:
        """The messages: plain dicts of Python values (int, float, str, bool, None and the
        dicts/lists of object columns, which are shared with the chunk, not copied)."""
        n = self._n
        cols = self._cols
        if n == 1:
            row = {k: v.item(0) for k, v in cols.items()}
            for k, m in self._missing.items():
                if m[0]:
                    row[k] = None
            for k, m in self._absent.items():
                if m[0]:
                    del row[k]
            return [row]
        if not cols:
            return [{} for _ in range(n)]
        names = list(cols)
        lists = [v.tolist() for v in cols.values()]
        for k, m in self._missing.items():
            values = lists[names.index(k)]
            for i in np.flatnonzero(m).tolist():
                values[i] = None
        out = _row_builder(tuple(names))(lists)
        for k, m in self._absent.items():
            for i in np.flatnonzero(m).tolist():
                del out[i][k]
        return out

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], fields: Iterable[str] | None = None) -> Chunk:
        """A chunk of messages, the inverse of :meth:`rows`. ``fields`` come first in that order
        (a field no row has is an all-absent column); other keys follow in order of appearance."""
        rows = rows if isinstance(rows, list) else list(rows)
        n = len(rows)
        names = list(fields) if fields is not None else (list(rows[0]) if n else [])
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"message keys must be str, got {name!r}")
        if n == 1 and fields is None:
            return cls._from_one(rows[0])
        cols: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        absent: dict[str, np.ndarray] = {}
        cells = 0
        for name in names:
            cells += _add_column(name, rows, cols, missing, absent)
        if n and sum(map(len, rows)) != cells:
            known = set(names)
            for name in dict.fromkeys(chain.from_iterable(rows)):
                if name not in known:
                    if not isinstance(name, str):
                        raise TypeError(f"message keys must be str, got {name!r}")
                    _add_column(name, rows, cols, missing, absent)
        return cls._make(cols, missing, absent, n)

    @classmethod
    def _from_one(cls, row: Mapping[str, Any]) -> Chunk:
        """One message, without the scans of the general case (the live path: a few µs)."""
        cols: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        for name, value in row.items():
            if type(name) is not str:
                raise TypeError(f"message keys must be str, got {name!r}")
            t = type(value)
            if t is float:
                cols[name] = np.array((value,), _F64)
                if value != value:
                    missing[name] = _TRUE1
            elif t is int and -(2**63) <= value < 2**63:
                cols[name] = np.array((value,), _I64)
            elif t is bool:
                cols[name] = np.array((value,), bool)
            else:
                cols[name] = arr = np.empty(1, object)
                arr[0] = value
                if value is None:
                    missing[name] = _TRUE1
        return cls._make(cols, missing, {}, 1)

    # ------------------------------------------------------------------ pandas / arrow

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame: float columns with NaN, int and bool columns with nulls as pandas'
        nullable ``Int64``/``boolean``, object columns with None (absent is null there too)."""
        import pandas as pd

        data: dict[str, Any] = {}
        for name, arr in self._cols.items():
            m = self._missing.get(name)
            if m is not None and arr.dtype.kind in "iu":
                data[name] = pd.arrays.IntegerArray(arr, m.copy())
            elif m is not None and arr.dtype.kind == "b":
                data[name] = pd.arrays.BooleanArray(arr, m.copy())
            else:
                data[name] = arr
        return pd.DataFrame(data, index=pd.RangeIndex(self._n), copy=False)

    @classmethod
    def from_pandas(cls, df: pd.DataFrame) -> Chunk:
        """A chunk of a DataFrame's columns (the index is ignored). NaN, None and ``pd.NA`` are null."""
        import pandas as pd

        cols: dict[str, np.ndarray] = {}
        missing: dict[str, np.ndarray] = {}
        n = len(df)
        for name in df.columns:
            if not isinstance(name, str):
                raise TypeError(f"chunk column names must be str, got {name!r}")
            s = df[name]
            dtype = s.dtype
            null = s.isna().to_numpy()
            has_null = bool(null.any())
            if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
                arr = s.to_numpy()
            elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and getattr(dtype, "kind", "O") in "biuf":
                np_dtype = np.dtype(getattr(dtype, "numpy_dtype", None) or dtype.kind)
                fill = math.nan if np_dtype.kind == "f" else _FILL[np_dtype.kind]
                arr = s.to_numpy(dtype=np_dtype, na_value=fill)
            elif isinstance(dtype, np.dtype) and dtype.kind == "O" or isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype)):
                arr = _normalise_array(name, s.to_numpy(dtype=object))[0]
                if has_null:
                    arr = arr.copy()
                    arr[null] = None
            else:
                raise TypeError(
                    f"column {name!r} has dtype {dtype}, which no message field holds "
                    "(use int64 epoch milliseconds for times, str for text)"
                )
            cols[name] = arr
            if has_null:
                missing[name] = null
        return cls._make(cols, missing, {}, n)

    def to_arrow(self) -> pa.RecordBatch:
        """A pyarrow RecordBatch; nulls and absent fields are Arrow nulls."""
        import pyarrow as pa

        arrays = []
        for name, arr in self._cols.items():
            m = self._missing.get(name)
            try:
                arrays.append(pa.array(arr, mask=m) if arr.dtype.kind != "O" else pa.array(arr, from_pandas=False))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise TypeError(f"chunk column {name!r} has no Arrow type: {exc}") from None
        return pa.RecordBatch.from_arrays(arrays, names=list(self._cols))


@functools.lru_cache(maxsize=256)
def _row_builder(names: tuple[str, ...]) -> Callable[[list[list[Any]]], list[dict[str, Any]]]:
    """``lambda lists: [{names[0]: a0, ...} for a0, ... in zip(*lists)]``: a dict display is
    about 1.5x faster than ``dict(zip(names, values))`` per row."""
    args = ", ".join(f"a{i}" for i in range(len(names)))
    body = ", ".join(f"{name!r}: a{i}" for i, name in enumerate(names))
    return eval(f"lambda lists: [{{{body}}} for {args}, in zip(*lists)]")  # noqa: S307 - names are repr()'d literals


def _derived_missing(arr: np.ndarray) -> np.ndarray | None:
    kind = arr.dtype.kind
    if kind == "f":
        m = np.isnan(arr)
        return m if m.any() else None
    if kind == "O":
        if len(arr) == 0 or _NONE_TYPE not in set(map(type, arr)):
            return None
        return np.fromiter((v is None for v in arr), dtype=bool, count=len(arr))
    return None


def _add_column(
    name: str, rows: list[Mapping[str, Any]], cols: dict, missing: dict, absent: dict
) -> int:
    """Builds column ``name`` of ``rows`` into the dicts; the number of rows that have the field."""
    try:
        values = list(map(itemgetter(name), rows))
    except KeyError:
        values = [r.get(name, _ABSENT) for r in rows]
    arr, m, a = _column_from_values(values)
    cols[name] = arr
    if m is not None:
        missing[name] = m
    if a is not None:
        absent[name] = a
        return len(rows) - int(a.sum())
    return len(rows)


def _all_missing(chunk: Chunk, name: str) -> bool:
    m = chunk._missing.get(name)
    return m is not None and bool(m.all())


def _common_dtype(arrays: list[np.ndarray]) -> np.dtype:
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) == 1:
        return dtypes.pop()
    kinds = {d.kind for d in dtypes}
    if kinds <= set("iuf"):
        common = np.result_type(*dtypes)
        if common.kind == "f" and any(a.dtype.kind in "iu" and len(a) and (a.max() > _INT64_SAFE_IN_FLOAT or a.min() < -_INT64_SAFE_IN_FLOAT) for a in arrays):
            return np.dtype(object)  # ints beyond 2**53 are not exact as floats (as in from_rows)
        return common
    return np.dtype(object)


def _masks_arg(label: str, given: Mapping[str, Any] | None, cols: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    out = {}
    for name, mask in (given or {}).items():
        if name not in cols:
            raise KeyError(f"{label} mask for {name!r}, which is not a column")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"{label} mask for {name!r} has shape {mask.shape}, expected ({n},)")
        out[name] = mask
    return out
