"""Contract validation of a :class:`~framework.chunk.Chunk`, per column instead of per row.

A :class:`ChunkValidator` compiles a contract's dereferenced schema once into checks over
whole columns; ``check(chunk)`` gives ``(row, reason)`` for the rows that fail, and the set of
rows is the one ``Contract.validate`` (jsonschema-rs, row by row) rejects. How the JSON Schema
keywords map onto columns:

- ``required``: the column exists and the row does not have the field *absent* (a null value
  is present: ``required`` says nothing about null, ``type`` does);
- ``properties``, each column against its property schema:

  - an int, float or bool column in numpy: ``type`` from the dtype (``integer`` admits floats
    with no fraction, as jsonschema-rs does), ``enum``/``const`` with ``np.isin``,
    ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` as array comparisons;
    string, object and array keywords do not apply to its values;
  - an object column (strings, nested objects and arrays, mixed types), or a typed column
    whose schema has another keyword (``multipleOf``, ``not``...): jsonschema-rs checks the
    whole column in one call, as an array against ``{"type": "array", "items": <property>}``
    (about 16 ns a string with its pattern, less than finding the distinct values in Python).
    Only when that fails are the cells checked one by one, each distinct string once;

- ``additionalProperties: false``: a column not declared fails the rows that have it; a schema
  there checks the undeclared columns like properties;
- ``allOf`` and ``if``/``then``/``else`` combine these checks over the rows; any other keyword at
  the top (``anyOf``, ``patternProperties``, ...) is checked row by row, for itself only.

Values as jsonschema-rs sees them: NaN in a float column is null (the chunk's representation);
±inf, and NaN inside an object column, are no JSON type (they fail every ``type``, ``enum`` and
``const`` and pass every bound). A value jsonschema-rs cannot read (a numpy scalar, bytes, a
str subclass, a key that is not a str...) hands its row to ``Contract.validate`` as it is.

Reasons are computed only for rows that failed, by jsonschema-rs on the failing value, so the
text is the one ``Contract.validate`` gives (``bid: -1 is less than or equal to the minimum of
0``). A row that breaks several rules gets one reason: the first of required, then the
properties in column order, then undeclared columns, then the rest (jsonschema-rs orders its
keywords its own way, so with several errors its first may be another one of them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import numpy as np
import orjson

from framework.chunk import Chunk
from framework.contracts import Contract, _format_path

ROWWISE_BELOW = 48
"""Chunks shorter than this are validated row by row: below it the fixed cost of the column
checks is more than jsonschema-rs per row (measured in bench/bench_chunks.py)."""

NULL, BOOL, INT, FLOAT, NONFINITE = range(5)
_CODES_OF_TYPE = {"null": (NULL,), "boolean": (BOOL,), "integer": (INT,), "number": (INT, FLOAT)}
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$anchor", "$comment", "$defs", "definitions", "title", "description",
     "examples", "default", "deprecated", "readOnly", "writeOnly"}
)
_NUMPY_KEYWORDS = frozenset({"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_NOT_FOR_SCALARS = frozenset(
    {"minLength", "maxLength", "pattern", "format", "contentEncoding", "contentMediaType", "contentSchema",
     "properties", "required", "additionalProperties", "patternProperties", "propertyNames", "minProperties",
     "maxProperties", "dependentRequired", "dependentSchemas", "unevaluatedProperties", "items", "prefixItems",
     "contains", "minContains", "maxContains", "minItems", "maxItems", "uniqueItems", "unevaluatedItems"}
)
"""Keywords that only look at strings, objects or arrays: nothing to check in a numeric or bool column."""
_ORDER_DEPENDENT = frozenset(
    {"patternProperties", "unevaluatedProperties", "unevaluatedItems", "dependentSchemas", "$ref", "$dynamicRef"}
)
"""Top-level keywords whose meaning depends on the others: the whole schema goes row by row."""
_MORE = re.compile(r" \(\+\d+ more\)$")


def _keywords(schema: dict) -> set[str]:
    return {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}


def _compile(schema: Any) -> Any:
    """A jsonschema-rs validator of a dereferenced (sub)schema, or None if it does not compile alone."""
    try:
        return jsonschema_rs.Draft202012Validator(schema)
    except Exception:  # jsonschema_rs raises its own types (unresolvable $ref, ...)
        return None


def _quote(name: str) -> str:
    return orjson.dumps(name).decode()


def _or(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def _cell(values: np.ndarray, missing: np.ndarray | None, i: int) -> Any:
    """Cell ``i`` as the Python value a message carries."""
    if missing is not None and missing[i]:
        return None
    v = values[i]
    return v.item() if isinstance(v, np.generic) else v


# ---------------------------------------------------------------- one column


class _Leaf:
    """The schema of one column, compiled for typed (numpy) and object columns."""

    def __init__(self, schema: Any) -> None:
        keys = _keywords(schema) if isinstance(schema, dict) else set()
        self.always_ok = schema is True or (isinstance(schema, dict) and not keys)
        self.validator = _compile(schema)
        self.column_validator = _compile({"type": "array", "items": schema})
        self.rowwise = self.validator is None or self.column_validator is None
        self.numpy = isinstance(schema, dict) and not (keys - _NUMPY_KEYWORDS - _NOT_FOR_SCALARS)
        self.type_table: np.ndarray | None = None
        self.integer_only = False
        self.enum: list | None = None
        self.bounds: list[tuple[str, Any]] = []
        if not self.numpy or self.always_ok:
            return
        if "type" in schema:
            types = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
            table = np.zeros(5, dtype=bool)
            for t in types:
                table[list(_CODES_OF_TYPE.get(t, ()))] = True
            table[FLOAT] |= "integer" in types  # 1.0 is an integer; 1.5 is caught by integer_only
            self.type_table = table
            self.integer_only = "integer" in types and "number" not in types
        if "enum" in schema or "const" in schema:
            self.enum = list(schema["enum"]) if "enum" in schema else [schema["const"]]
            self.enum_null = any(v is None for v in self.enum)
            self.enum_bools = [v for v in self.enum if type(v) is bool]
            self.enum_numbers = [v for v in self.enum if type(v) in (int, float)]
        self.bounds = [(k, schema[k]) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]

    def fails(self, values: np.ndarray, missing: np.ndarray | None, absent: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(bad, unreadable)``: the cells that fail, and those whose row goes to jsonschema-rs
        whole; either None when no cell is. Absent cells never fail."""
        if self.always_ok:
            return None, None
        if self.rowwise:
            return None, np.ones(len(values), dtype=bool) if absent is None else ~absent
        if self.numpy and values.dtype.kind in "biuf":
            bad = self._typed(values, missing)
            if bad is not None and absent is not None:
                bad &= ~absent
            return (bad if bad is not None and bad.any() else None), None
        return self._cells(values, missing, absent)

    # -- numpy: int, float and bool columns

    def _typed(self, values: np.ndarray, missing: np.ndarray | None) -> np.ndarray | None:
        kind = values.dtype.kind
        if kind == "f" and values.dtype != np.float64:  # compared as the message's Python floats
            values = values.astype(np.float64)
        codes = None
        if kind == "f":
            inf = np.isinf(values)
            if missing is not None or inf.any():
                codes = np.full(len(values), FLOAT, np.int8)
                codes[inf] = NONFINITE
        elif missing is not None:
            codes = np.full(len(values), BOOL if kind == "b" else INT, np.int8)
        if codes is not None and missing is not None:
            codes[missing] = NULL
        uniform = (FLOAT if kind == "f" else BOOL if kind == "b" else INT) if codes is None else None
        bad = None
        if self.type_table is not None:
            if uniform is None:
                bad = ~self.type_table[codes]
            elif not self.type_table[uniform]:
                return np.ones(len(values), dtype=bool)
            if self.integer_only and kind == "f":
                bad = _or(bad, (np.floor(values) != values) & ~np.isnan(values))  # ±inf: no fraction
        if self.enum is not None:
            bad = _or(bad, ~self._in_enum(values, codes, kind))
        if self.bounds and kind != "b":
            out = _VIOLATES[self.bounds[0][0]](values, self.bounds[0][1])
            for k, limit in self.bounds[1:]:
                out |= _VIOLATES[k](values, limit)
            if codes is not None:
                out &= (codes == INT) | (codes == FLOAT)
            bad = _or(bad, out)
        return bad

    def _in_enum(self, values: np.ndarray, codes: np.ndarray | None, kind: str) -> np.ndarray:
        allowed = self.enum_bools if kind == "b" else self.enum_numbers
        ok = np.isin(values, allowed) if allowed else np.zeros(len(values), dtype=bool)
        if codes is not None:
            ok &= (codes != NULL) & (codes != NONFINITE)
            if self.enum_null:
                ok |= codes == NULL
        return ok

    # -- jsonschema-rs: object columns, and schemas numpy does not cover

    def _cells(self, values: np.ndarray, missing: np.ndarray | None, absent: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        idx = None if absent is None else np.flatnonzero(~absent)
        cells = _python_list(values, missing, idx)
        try:
            if self.column_validator.is_valid(cells):
                return None, None
        except (ValueError, TypeError):  # a value jsonschema-rs cannot read: find it below
            pass
        bad = np.zeros(len(cells), dtype=bool)
        unreadable = np.zeros(len(cells), dtype=bool)
        is_valid = self.validator.is_valid
        seen: dict[str, bool] = {}
        for i, v in enumerate(cells):
            if type(v) is str:
                ok = seen.get(v)
                if ok is None:
                    ok = seen[v] = is_valid(v)
                bad[i] = not ok
                continue
            try:
                bad[i] = not is_valid(v)
            except (ValueError, TypeError):
                unreadable[i] = True
        return _spread(idx, bad, len(values)), _spread(idx, unreadable, len(values))

    def reason(self, name: str, value: Any) -> str:
        """Why ``value`` fails this schema, as ``Contract.validate`` says it."""
        try:
            for error in self.validator.iter_errors(value):
                return f"{_format_path([name, *error.instance_path])}: {error.message}".replace("\n", " ")
        except (ValueError, TypeError) as exc:
            return f"$: not a JSON message ({exc})".replace("\n", " ")
        return f"{name}: invalid value"


_VIOLATES: dict[str, Callable[[Any, Any], Any]] = {
    "minimum": lambda v, limit: v < limit,
    "maximum": lambda v, limit: v > limit,
    "exclusiveMinimum": lambda v, limit: v <= limit,
    "exclusiveMaximum": lambda v, limit: v >= limit,
}


def _python_list(values: np.ndarray, missing: np.ndarray | None, idx: np.ndarray | None) -> list[Any]:
    """The cells at ``idx`` (None: all) as the Python values of the messages."""
    cells = (values if idx is None else values[idx]).tolist()
    if missing is not None and values.dtype.kind != "O":
        for i in np.flatnonzero(missing if idx is None else missing[idx]).tolist():
            cells[i] = None
    return cells


def _spread(idx: np.ndarray | None, flags: np.ndarray, n: int) -> np.ndarray | None:
    """Flags over the cells ``idx`` (None: all) as flags over all ``n`` rows; None if none is set."""
    if not flags.any():
        return None
    if idx is None:
        return flags
    out = np.zeros(n, dtype=bool)
    out[idx] = flags
    return out


# ---------------------------------------------------------------- the rows of one object schema


class _Context:
    """What one ``check`` learns about a chunk, computed once per column."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.n = len(chunk)
        self.unreadable: np.ndarray | None = None
        self._memo: dict[tuple[int, str], np.ndarray | None] = {}
        self._rows: list[dict] | None = None
        self._all = np.ones(self.n, dtype=bool)

    def absent(self, name: str) -> np.ndarray | None:
        """Rows without the field ``name`` (all of them if the chunk has no such column)."""
        return self.chunk.masks(name)[1] if name in self.chunk else self._all

    def present(self, name: str) -> np.ndarray:
        absent = self.chunk.masks(name)[1]
        return self._all if absent is None else ~absent

    def column_fails(self, name: str, leaf: _Leaf) -> np.ndarray | None:
        key = (id(leaf), name)
        if key not in self._memo:
            bad, unreadable = leaf.fails(self.chunk[name], *self.chunk.masks(name))
            self.unreadable = _or(self.unreadable, unreadable)
            self._memo[key] = bad
        return self._memo[key]

    def memo(self, unit: Any) -> np.ndarray | None:
        key = (id(unit), "")
        if key not in self._memo:
            self._memo[key] = unit.fails(self)
        return self._memo[key]

    def rows(self) -> list[dict]:
        if self._rows is None:
            self._rows = self.chunk.rows()
        return self._rows


class _Plan:
    """An object schema over the rows of a chunk: its units, in the order reasons are taken."""

    def __init__(self, units: list[Any]) -> None:
        self.units = units

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for unit in self.units:
            out = _or(out, ctx.memo(unit))
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str | None]:
        out: list[str | None] = [None] * len(idx)
        todo = np.ones(len(idx), dtype=bool)
        for unit in self.units:
            fails = ctx.memo(unit)
            if fails is None:
                continue
            hit = np.flatnonzero(todo & fails[idx])
            if len(hit):
                for p, text in zip(hit.tolist(), unit.reasons(ctx, idx[hit])):
                    out[p] = text
                todo[hit] = False
        return out


class _Required:
    def __init__(self, names: list[str]) -> None:
        self.names = list(names)

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for name in self.names:
            out = _or(out, ctx.absent(name))
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str]:
        out: list[str | None] = [None] * len(idx)
        for name in self.names:
            absent = ctx.absent(name)
            if absent is not None:
                for p in np.flatnonzero(absent[idx]).tolist():
                    if out[p] is None:
                        out[p] = f"$: {_quote(name)} is a required property"
        return out  # type: ignore[return-value]


class _Columns:
    """``properties`` (each declared column against its schema), or an ``additionalProperties``
    schema (every column not declared against it)."""

    def __init__(self, leaves: dict[str, _Leaf], *, others: tuple[set[str], _Leaf] | None = None) -> None:
        self.leaves = leaves
        self.others = others

    def _columns(self, ctx: _Context) -> list[tuple[str, _Leaf]]:
        if self.others is None:
            return [(name, self.leaves[name]) for name in ctx.chunk.names if name in self.leaves]
        declared, leaf = self.others
        return [(name, leaf) for name in ctx.chunk.names if name not in declared]

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for name, leaf in self._columns(ctx):
            out = _or(out, ctx.column_fails(name, leaf))
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str]:
        out: list[str | None] = [None] * len(idx)
        for name, leaf in self._columns(ctx):
            bad = ctx.column_fails(name, leaf)
            if bad is None:
                continue
            values, missing = ctx.chunk[name], ctx.chunk.masks(name)[0]
            for p in np.flatnonzero(bad[idx]).tolist():
                if out[p] is None:
                    out[p] = leaf.reason(name, _cell(values, missing, int(idx[p])))
        return out  # type: ignore[return-value]


class _NoOthers:
    """``additionalProperties: false``: rows that have a column the schema does not declare."""

    def __init__(self, declared: set[str]) -> None:
        self.declared = declared

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for name in ctx.chunk.names:
            if name not in self.declared:
                out = _or(out, ctx.present(name))
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str]:
        others = [(name, ctx.present(name)) for name in ctx.chunk.names if name not in self.declared]
        out = []
        for i in idx.tolist():
            names = [name for name, present in others if present[i]]
            listed = ", ".join(f"'{name}'" for name in names)
            out.append(f"$: Additional properties are not allowed ({listed} {'was' if len(names) == 1 else 'were'} unexpected)")
        return out


class _AllOf:
    def __init__(self, plans: list[_Plan]) -> None:
        self.plans = plans

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for plan in self.plans:
            out = _or(out, plan.fails(ctx))
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str]:
        return _Plan([_Sub(p) for p in self.plans]).reasons(ctx, idx)  # type: ignore[return-value]


class _Sub:
    """A plan as a unit of another plan."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan

    def fails(self, ctx: _Context) -> np.ndarray | None:
        return self.plan.fails(ctx)

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str | None]:
        return self.plan.reasons(ctx, idx)


class _IfThenElse:
    def __init__(self, if_plan: _Plan, then_plan: _Plan | None, else_plan: _Plan | None) -> None:
        self.if_plan, self.then_plan, self.else_plan = if_plan, then_plan, else_plan

    def _branches(self, ctx: _Context) -> list[tuple[_Plan, np.ndarray]]:
        holds = self.if_plan.fails(ctx)
        holds = ctx._all if holds is None else ~holds
        out = []
        if self.then_plan is not None:
            out.append((self.then_plan, holds))
        if self.else_plan is not None:
            out.append((self.else_plan, ~holds))
        return out

    def fails(self, ctx: _Context) -> np.ndarray | None:
        out = None
        for plan, rows in self._branches(ctx):
            bad = plan.fails(ctx)
            if bad is not None:
                out = _or(out, bad & rows)
        return out

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str | None]:
        out: list[str | None] = [None] * len(idx)
        for plan, rows in self._branches(ctx):
            mine = np.flatnonzero(rows[idx])
            if len(mine):
                for p, text in zip(mine.tolist(), plan.reasons(ctx, idx[mine])):
                    out[p] = out[p] or text
        return out


class _RowByRow:
    """Keywords with no column form, checked by jsonschema-rs on each row (for those keywords only)."""

    def __init__(self, schema: Any) -> None:
        self.validator = _compile(schema)

    def fails(self, ctx: _Context) -> np.ndarray | None:
        if self.validator is None:
            ctx.unreadable = ctx._all
            return None
        out = np.zeros(ctx.n, dtype=bool)
        for i, row in enumerate(ctx.rows()):
            try:
                out[i] = not self.validator.is_valid(row)
            except (ValueError, TypeError):
                ctx.unreadable = _or(ctx.unreadable, np.arange(ctx.n) == i)
        return out if out.any() else None

    def reasons(self, ctx: _Context, idx: np.ndarray) -> list[str]:
        rows = ctx.rows()
        out = []
        for i in idx.tolist():
            error = next(iter(self.validator.iter_errors(rows[i])), None)
            out.append("$: invalid message" if error is None else f"{_format_path(error.instance_path)}: {error.message}".replace("\n", " "))
        return out


def _plan(schema: Any) -> _Plan:
    """Compiles an object schema (a contract, or a part of its ``allOf``/``if``) into units."""
    if schema is True:
        return _Plan([])
    if not isinstance(schema, dict) or _keywords(schema) & _ORDER_DEPENDENT:
        return _Plan([_RowByRow(schema)])
    keys = _keywords(schema)
    units: list[Any] = []
    properties = schema.get("properties", {})
    if "required" in keys:
        units.append(_Required(schema["required"]))
    if properties:
        units.append(_Columns({name: _Leaf(sub) for name, sub in properties.items()}))
    extra = schema.get("additionalProperties", True)
    if extra is False:
        units.append(_NoOthers(set(properties)))
    elif extra is not True:
        units.append(_Columns({}, others=(set(properties), _Leaf(extra))))
    if "allOf" in keys:
        units.append(_AllOf([_plan(sub) for sub in schema["allOf"]]))
    if "if" in keys:
        units.append(
            _IfThenElse(
                _plan(schema["if"]),
                _plan(schema["then"]) if "then" in schema else None,
                _plan(schema["else"]) if "else" in schema else None,
            )
        )
    rest = {k: schema[k] for k in keys - {"required", "properties", "additionalProperties", "allOf", "if", "then", "else", "type"}}
    types = schema.get("type", "object")
    if "object" not in ([types] if isinstance(types, str) else types):
        rest["type"] = types
    if rest:
        units.append(_RowByRow(rest))
    return _Plan(units)


# ---------------------------------------------------------------- public


class ChunkValidator:
    """A contract compiled once into column checks; ``check(chunk)`` lists the rows that fail."""

    def __init__(self, contract: Contract, *, rowwise_below: int = ROWWISE_BELOW) -> None:
        self.contract = contract
        self.rowwise_below = rowwise_below
        self._plan = _plan(contract.resolved if contract.resolved is not None else contract.schema)

    def check(self, chunk: Chunk) -> list[tuple[int, str]]:
        """``(row, reason)`` of every row that fails, in row order; one reason per row (its first)."""
        if len(chunk) < self.rowwise_below:
            return self._row_by_row(chunk, range(len(chunk)))
        ctx, bad = self._run(chunk)
        out: list[tuple[int, str]] = []
        if bad is not None:
            idx = np.flatnonzero(bad)
            out = list(zip(idx.tolist(), self._plan.reasons(ctx, idx)))  # type: ignore[arg-type]
        if ctx.unreadable is not None:
            out.extend(self._row_by_row(chunk, np.flatnonzero(ctx.unreadable).tolist()))
            out.sort()
        return out

    def valid_mask(self, chunk: Chunk) -> np.ndarray:
        """True for the rows that pass (no reasons computed)."""
        if len(chunk) < self.rowwise_below:
            return np.array([self.contract.is_valid(row) for row in chunk.rows()], dtype=bool)
        ctx, bad = self._run(chunk)
        ok = np.ones(len(chunk), dtype=bool) if bad is None else ~bad
        if ctx.unreadable is not None:
            idx = np.flatnonzero(ctx.unreadable)
            ok[idx] = [self.contract.is_valid(row) for row in chunk.take(idx).rows()]
        return ok

    def _run(self, chunk: Chunk) -> tuple[_Context, np.ndarray | None]:
        ctx = _Context(chunk)
        bad = self._plan.fails(ctx)
        if bad is not None and ctx.unreadable is not None:
            bad = bad & ~ctx.unreadable
        return ctx, (bad if bad is not None and bad.any() else None)

    def _row_by_row(self, chunk: Chunk, positions: Any) -> list[tuple[int, str]]:
        positions = list(positions)
        rows = chunk.rows() if len(positions) == len(chunk) else chunk.take(np.asarray(positions, dtype=np.intp)).rows()
        out = []
        for i, row in zip(positions, rows):
            if not self.contract.is_valid(row):
                reason = self.contract.validate(row) or "invalid message"
                out.append((i, _MORE.sub("", reason)))
        return out
