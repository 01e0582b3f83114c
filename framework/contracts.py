"""Message contracts: JSON Schema 2020-12 files in ``contracts/``, loaded, checked and compiled.

A contract file is ``<name>.v<major>.json`` with ``$id`` ``urn:fxflow:contract:<name>.v<major>``
and an ``x-fxflow`` object ``{"key": <partition-key field or null>, "time": <timestamp field>}``.

Shared definitions (symbol, ts, price...) live in ``common.v1.json``, marked
``"x-fxflow": {"shared": true}``, and are used through cross-file ``$ref``
(``urn:fxflow:contract:common.v1#/$defs/price``). Such files are loaded only to resolve
references: they are not message contracts, so ``resolve``/``refs`` do not list them.
Cross-file refs are resolved by one :class:`jsonschema_rs.Registry` holding every file
(offline: no URL is ever fetched), and every ``$ref`` is checked at load time, so a
dangling reference is a load error rather than a surprise on the first message.

Two validators, on purpose: the pure-Python ``jsonschema`` library checks each schema
against the 2020-12 metaschema once at load (clear errors for schema authors); the
compiled ``jsonschema_rs`` validator checks messages (fast path, built lazily once per
contract). Detailed reasons are only computed for messages that already failed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs

from framework.errors import UserError, UserErrors

ID_PREFIX = "urn:fxflow:contract:"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_FILE_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.json$")
_REF_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)(?:\.v(?P<version>[1-9][0-9]*))?$")


class UnknownContract(KeyError):
    """``resolve`` of a ref no file defines; the message carries a did-you-mean hint."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _format_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``["values", "rsi", 0]`` → ``values.rsi[0]``; the message root is ``$``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "$"


@dataclass(frozen=True, eq=False)
class Contract:
    """One message contract. Identity equality: two loads give two distinct contracts."""

    ref: str
    name: str
    version: int
    schema: dict
    file: Path | None
    key_field: str | None
    time_field: str | None
    sequence_field: str | None = None
    """A per-stream sequence number (consecutive integers): a jump is a gap, a repeat a duplicate."""
    stream_fields: tuple[str, ...] = ()
    """The fields naming the stream a sequence number counts in (e.g. source and symbol)."""
    # Shared resources for cross-file $ref, and the fully dereferenced schema.
    registry: jsonschema_rs.Registry | None = field(default=None, repr=False)
    resolved: dict | None = field(default=None, repr=False)
    _compiled: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_schema(
        cls,
        schema: dict,
        *,
        file: Path | None = None,
        registry: jsonschema_rs.Registry | None = None,
    ) -> Contract:
        """A contract from a schema dict (its ``$id`` gives the ref); used by the registry and tests."""
        sid = schema.get("$id", "")
        m = _REF_RE.match(sid.removeprefix(ID_PREFIX)) if sid.startswith(ID_PREFIX) else None
        if not m or not m["version"]:
            raise ValueError(f"$id must be {ID_PREFIX}<name>.v<major>, got {sid!r}")
        meta = schema.get("x-fxflow") or {}
        resolved = jsonschema_rs.dereference(schema, registry=registry, offline=True) if registry else schema
        return cls(
            ref=f"{m['name']}.v{m['version']}",
            name=m["name"],
            version=int(m["version"]),
            schema=schema,
            file=file,
            key_field=meta.get("key"),
            time_field=meta.get("time"),
            sequence_field=meta.get("sequence"),
            stream_fields=tuple(meta.get("stream") or ()),
            registry=registry,
            resolved=resolved,
        )

    def _validator(self) -> Any:
        v = self._compiled
        if v is None:
            v = jsonschema_rs.Draft202012Validator(self.schema, registry=self.registry)
            object.__setattr__(self, "_compiled", v)
        return v

    def is_valid(self, message: Mapping) -> bool:
        """Fast yes/no through the compiled validator."""
        v = self._compiled
        if v is None:
            v = self._validator()
        try:
            return v.is_valid(message if type(message) is dict else dict(message))
        except (ValueError, TypeError):  # values that are not JSON (Decimal, datetime, ...)
            return False

    def validate(self, message: Mapping) -> str | None:
        """None if valid, else one line: ``bid: -1 is less than or equal to the minimum of 0``."""
        try:
            errors = list(self._validator().iter_errors(message if type(message) is dict else dict(message)))
        except (ValueError, TypeError) as exc:
            return f"$: not a JSON message ({exc})".replace("\n", " ")
        if not errors:
            return None
        first = errors[0]
        reason = f"{_format_path(first.instance_path)}: {first.message}".replace("\n", " ")
        if len(errors) > 1:
            reason += f" (+{len(errors) - 1} more)"
        return reason

    def properties(self) -> dict[str, dict]:
        """Top-level properties, with ``$ref`` inlined."""
        return dict((self.resolved or self.schema).get("properties", {}))

    def required(self) -> tuple[str, ...]:
        return tuple(self.schema.get("required", ()))

    def __repr__(self) -> str:
        return f"Contract({self.ref})"


class ContractRegistry:
    """Every contract of a directory, by ref (``tick.v1``) or by name (latest version)."""

    def __init__(self, contracts: Mapping[str, Contract], shared: Mapping[str, dict] | None = None) -> None:
        self._by_ref = dict(contracts)
        self._shared = dict(shared or {})
        self._latest: dict[str, Contract] = {}
        for c in self._by_ref.values():
            if c.name not in self._latest or c.version > self._latest[c.name].version:
                self._latest[c.name] = c

    @classmethod
    def load(cls, directory: Path | str) -> ContractRegistry:
        """Load and check every ``*.json`` of ``directory``; all problems are reported at once."""
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError("contracts directory not found", file=str(directory))
        problems: list[UserError] = []
        docs: dict[str, tuple[Path, dict]] = {}  # ref -> (file, schema)
        for path in sorted(directory.glob("*.json")):
            schema = _read_schema(path, problems)
            if schema is not None:
                docs[schema["$id"].removeprefix(ID_PREFIX)] = (path, schema)

        try:
            rs_registry = jsonschema_rs.Registry([(s["$id"], s) for _, s in docs.values()])
        except Exception as exc:  # jsonschema_rs raises its own types; report, don't crash
            problems.append(UserError(f"cannot build the schema registry: {exc}", file=str(directory)))
            raise UserErrors(problems) if len(problems) > 1 else problems[0] from None

        contracts: dict[str, Contract] = {}
        shared: dict[str, dict] = {}
        for ref, (path, schema) in docs.items():
            try:
                contract = Contract.from_schema(schema, file=path, registry=rs_registry)
            except (jsonschema_rs.ReferencingError, ValueError) as exc:
                problems.append(UserError(f"unresolvable $ref: {exc}", file=str(path)))
                continue
            if schema["x-fxflow"].get("shared"):
                shared[ref] = schema
            else:
                contracts[ref] = contract

        if problems:
            raise UserErrors(problems) if len(problems) > 1 else problems[0]
        return cls(contracts, shared)

    def resolve(self, ref: str) -> Contract:
        """``tick.v1`` exactly, or ``tick`` for its highest version."""
        found = self._by_ref.get(ref) or self._latest.get(ref)
        if found is not None:
            return found
        known = sorted(self._by_ref) + sorted(self._latest)
        close = difflib.get_close_matches(ref, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(self._by_ref))})"
        raise UnknownContract(f"unknown contract {ref!r}{hint}")

    def __contains__(self, ref: object) -> bool:
        return ref in self._by_ref or ref in self._latest

    def __len__(self) -> int:
        return len(self._by_ref)

    def refs(self) -> list[str]:
        """Refs of all message contracts (shared definition files excluded), sorted."""
        return sorted(self._by_ref)


def _read_schema(path: Path, problems: list[UserError]) -> dict | None:
    """Parse and check one file; append problems and return None if it is unusable."""
    where = str(path)
    m = _FILE_RE.match(path.name)
    if not m:
        problems.append(UserError("file name must be <name>.v<major>.json (lower_snake name, major >= 1)", file=where))
        return None
    try:
        text = path.read_text(encoding="utf-8")
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(UserError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=where, line=exc.lineno))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(UserError(f"cannot read: {exc}", file=where))
        return None
    if not isinstance(schema, dict):
        problems.append(UserError("a contract must be a JSON object", file=where, line=1))
        return None

    before = len(problems)
    if schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        problems.append(UserError(f"$schema must be {DRAFT_2020_12!r}", file=where, path="$schema"))
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        spath = ".".join(str(p) for p in exc.absolute_path) or None
        problems.append(
            UserError(f"invalid JSON Schema: {exc.message}", file=where, line=_line_of(text, exc.absolute_path), path=spath)
        )
    expected_id = f"{ID_PREFIX}{m['name']}.v{m['version']}"
    if schema.get("$id") != expected_id:
        problems.append(UserError(f"$id is {schema.get('$id')!r}, the file name requires {expected_id!r}", file=where, path="$id"))
    meta = schema.get("x-fxflow")
    if not isinstance(meta, dict):
        problems.append(UserError('missing "x-fxflow": {"key": ..., "time": ...}', file=where, path="x-fxflow"))
    elif not meta.get("shared"):
        problems.extend(_check_contract_shape(schema, meta, where))
    return schema if len(problems) == before else None


def _check_contract_shape(schema: dict, meta: dict, where: str) -> list[UserError]:
    """Conventions beyond the metaschema: an object with title, key/time fields that exist."""
    out = []
    for k in ("title", "description"):
        if not isinstance(schema.get(k), str) or not schema[k].strip():
            out.append(UserError(f"a contract needs a {k}", file=where, path=k))
    if schema.get("type") != "object":
        out.append(UserError('a contract must have "type": "object"', file=where, path="type"))
    props = schema.get("properties", {})
    required = schema.get("required", [])
    for k in ("key", "time"):
        if k not in meta:
            out.append(UserError(f"x-fxflow.{k} is missing (use null if there is none)", file=where, path=f"x-fxflow.{k}"))
            continue
        fld = meta[k]
        if fld is None and k == "key":
            continue
        if not isinstance(fld, str) or fld not in props or fld not in required:
            out.append(
                UserError(f"x-fxflow.{k} {fld!r} must name a required property", file=where, path=f"x-fxflow.{k}")
            )
    sequence = meta.get("sequence")
    if sequence is not None and (not isinstance(sequence, str) or sequence not in props):
        out.append(UserError(f"x-fxflow.sequence {sequence!r} must name a property", file=where, path="x-fxflow.sequence"))
    stream = meta.get("stream")
    if stream is not None and (
        sequence is None or not isinstance(stream, list) or any(not isinstance(f, str) or f not in required for f in stream)
    ):
        out.append(
            UserError("x-fxflow.stream must list required properties, with x-fxflow.sequence set", file=where, path="x-fxflow.stream")
        )
    return out


def _line_of(text: str, schema_path: Any) -> int | None:
    """Best-effort line of the innermost key of ``schema_path`` (first match after its parents)."""
    pos, line = 0, None
    for part in schema_path:
        if isinstance(part, int):
            continue
        i = text.find(json.dumps(part) + ":", pos)
        if i < 0:
            i = text.find(json.dumps(part), pos)
        if i < 0:
            return line
        pos = i
        line = text.count("\n", 0, i) + 1
    return line


# ---------------------------------------------------------------- publish-boundary validation


class ValidationMode(str, Enum):
    STRICT = "strict"
    SAMPLED = "sampled"
    OFF = "off"


class BoundaryValidator:
    """Validation at publish boundaries.

    strict: every message; sampled: one in ``sample_every`` (deterministic counter, per
    contract — the 1st, then the (N+1)th, ...); off: none. ``checked`` counts messages
    actually validated, ``rejected`` the invalid ones among them.
    """

    def __init__(self, mode: ValidationMode | str = "strict", sample_every: int = 100) -> None:
        try:
            self.mode = ValidationMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in ValidationMode)
            raise UserError(f"validation mode {mode!r} is not one of: {choices}") from None
        if not isinstance(sample_every, int) or isinstance(sample_every, bool) or sample_every < 1:
            raise UserError(f"sample_every must be an integer >= 1, got {sample_every!r}")
        self.sample_every = sample_every
        self.checked = 0
        self.rejected = 0
        self._seen: dict[str, int] = {}

    def check(self, contract: Contract, message: Mapping) -> str | None:
        """The reason if the message was checked and is invalid, else None."""
        mode = self.mode
        if mode is ValidationMode.OFF:
            return None
        if mode is ValidationMode.SAMPLED:
            n = self._seen.get(contract.ref, 0)
            self._seen[contract.ref] = n + 1
            if n % self.sample_every:
                return None
        self.checked += 1
        if contract.is_valid(message):
            return None
        self.rejected += 1
        return contract.validate(message) or "invalid message"
