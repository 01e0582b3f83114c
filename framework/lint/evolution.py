"""FX105: a released contract version changes only in ways its consumers and its archives survive.

Each released version ``contracts/<name>.v<N>.json`` has a snapshot, the file as it was
released, in ``contracts/published/`` (written by ``fxrun contracts publish``). The current
file is compared with its snapshot through :func:`framework.lint.compatibility.compatible`, both ways:
messages of the edited contract must satisfy consumers of the published one (services not
redeployed yet), and messages of the published one must satisfy the edited contract (archives
replayed, producers not upgraded yet). A failure is breaking: the change belongs in the next
major version. Since the contracts forbid unknown fields, removing a field is breaking too:
archived messages that carry it would no longer validate.

``x-fxflow`` key, time, sequence and stream are fixed once a version is published: Kafka
partitioning, replays by time and gap detection of archived messages depend on them. Only
adding a sequence to a version that had none is compatible (older messages simply have no
number). What the structural rule cannot judge (a changed ``minimum``, ``pattern`` or nested
object) is a warning to check by hand; other compatible changes are listed as info until the
version is published again.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from framework.contracts import Contract, ContractRegistry
from framework.errors import UserError, UserErrors
from framework.lint.compatibility import compatible
from framework.lint.context import LintContext
from framework.lint.findings import Finding, Level, exit_code, format_finding
from framework.topology.source import display_path

CODE = "FX105"
PUBLISHED = "published"
"""Subdirectory of ``contracts/`` holding the released snapshots (``ContractRegistry.load`` does not descend into it)."""
ANNOTATIONS = frozenset({"title", "description", "examples", "$comment", "default", "deprecated", "readOnly", "writeOnly"})
"""Keywords that document a field without constraining its values."""
COMPARED = frozenset({"type", "enum", "const"})
"""Keywords :func:`compatible` judges; other constraint keywords it does not see."""
FIXED_META = {"key": "Kafka partitioning", "time": "replays by time and retention"}
SEQUENCE_META = ("sequence", "stream")
_ROLE = re.compile(r"\b(producer|consumer)\b")


@dataclass(frozen=True)
class Change:
    """One difference between a published version and its current file; ``path`` locates it in the current file."""

    level: Level
    message: str
    path: tuple[str, ...] = ()


# ---------------------------------------------------------------- comparing one version


def _reasons(producer: Contract, consumer: Contract, roles: tuple[str, str]) -> list[str]:
    """:func:`compatible`'s reasons for two versions of one contract, one per field, producer and consumer named ``roles``.

    The versions are compared under distinct names: :func:`compatible` takes two majors of
    one name for a breaking change without looking further, and one ref for the same contract.
    """
    a, b = (dataclasses.replace(c, ref=f"{c.ref} ({r})", name=f"{c.name} ({r})") for c, r in zip((producer, consumer), roles))
    why = compatible(a, b)
    if why is None:
        return []
    named = dict(zip(("producer", "consumer"), roles))
    why = why.removeprefix(f"{a.ref} does not satisfy {b.ref}: ")
    return [_ROLE.sub(lambda m: named[m[1]], reason) for reason in why.split("; ")]


def _field_path(new: Contract, field: str, reason: str) -> tuple[str, ...]:
    if "required" in reason or "missing" in reason:
        return ("required", field) if field in new.required() else ("required",)
    return ("properties", field) if field in new.properties() else ("properties",)


def _breaking_fields(old: Contract, new: Contract) -> list[Change]:
    out: list[Change] = []
    flagged: set[str] = set()
    directions = (
        (new, old, ("edited", "published"), "its messages would fail consumers of the published version"),
        (old, new, ("published", "edited"), "published messages (archives, producers not upgraded yet) would fail it"),
    )
    for producer, consumer, roles, what in directions:
        for reason in _reasons(producer, consumer, roles):
            field = reason.split(":", 1)[0]
            flagged.add(field)
            out.append(Change("error", f"{what}: {reason}", _field_path(new, field, reason)))
    if new.schema.get("additionalProperties") is False:
        for field in sorted(old.properties().keys() - new.properties().keys() - flagged):
            message = f"field {field!r} was removed while unknown fields are refused: published messages that carry it would fail"
            out.append(Change("error", message, ("properties",)))
        if old.schema.get("additionalProperties") is not False:
            message = "`additionalProperties: false` was added: published messages with fields it does not list would fail"
            out.append(Change("error", message, ("additionalProperties",)))
    return out


def _meta_changes(old: Contract, new: Contract) -> list[Change]:
    was, now = old.schema.get("x-fxflow") or {}, new.schema.get("x-fxflow") or {}
    out: list[Change] = []
    for key, relies in FIXED_META.items():
        if was.get(key) != now.get(key):
            message = f"x-fxflow.{key} changed from {was.get(key)!r} to {now.get(key)!r}: {relies} of archived messages depend on it"
            out.append(Change("error", message, ("x-fxflow", key)))
    before, after = (tuple(m.get(k) for k in SEQUENCE_META) for m in (was, now))
    if before != after:
        if before == (None, None):
            stream = ", ".join(now.get("stream") or ())
            out.append(Change("info", f"added x-fxflow.sequence {now.get('sequence')!r} (stream: {stream or '-'})", ("x-fxflow", "sequence")))
        else:
            message = (
                f"x-fxflow sequence/stream changed from {list(before)} to {list(after)}: gap detection and replays "
                "of archived messages count on them"
            )
            out.append(Change("error", message, ("x-fxflow", "sequence" if "sequence" in now else "stream")))
    for key in sorted((was.keys() | now.keys()) - FIXED_META.keys() - set(SEQUENCE_META)):
        if was.get(key) != now.get(key):
            out.append(Change("info", f"x-fxflow.{key} changed", ("x-fxflow", key)))
    return out


def _stripped(prop: dict, drop: frozenset[str]) -> dict:
    return {k: v for k, v in prop.items() if k not in drop}


def _field_changes(old: Contract, new: Contract) -> list[Change]:
    """Compatible differences of the fields (the breaking ones are :func:`_breaking_fields`'s)."""
    was, now = old.properties(), new.properties()
    out: list[Change] = []
    added = [f for f in now if f not in was]
    if added:
        out.append(Change("info", f"added optional field(s) {', '.join(added)}", ("properties", added[0])))
    removed = [f for f in was if f not in now]
    if removed:
        out.append(Change("info", f"removed field(s) {', '.join(removed)}", ("properties",)))
    described = []
    for field in (f for f in now if f in was and was[f] != now[f]):
        a, b = _stripped(was[field], ANNOTATIONS), _stripped(now[field], ANNOTATIONS)
        keywords = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in COMPARED)
        if not keywords:
            described.append(field)
            continue
        message = (
            f"field {field!r} changed beyond what the structural check compares ({', '.join(keywords)}): check by hand "
            "that published messages still validate and that consumers of the published version accept the new ones"
        )
        out.append(Change("warning", message, ("properties", field)))
    if described:
        out.append(Change("info", f"reworded or restated field(s) {', '.join(described)}", ("properties", described[0])))
    return out


def compare(old: Contract, new: Contract) -> list[Change]:
    """Every difference of ``new`` (the current file) from ``old`` (its published snapshot); empty if none."""
    if old.schema == new.schema and old.resolved == new.resolved:
        return []
    changes = [*_breaking_fields(old, new), *_meta_changes(old, new)]
    if not any(c.level == "error" for c in changes):
        changes += _field_changes(old, new)
    documented = [k for k in ("title", "description") if old.schema.get(k) != new.schema.get(k)]
    if documented:
        changes.append(Change("info", f"reworded {' and '.join(documented)}", (documented[0],)))
    if not changes:
        keys = sorted(k for k in old.schema.keys() | new.schema.keys() if old.schema.get(k) != new.schema.get(k))
        changes.append(Change("info", f"changed {', '.join(keys) or 'shared definitions it uses'}", (keys[0],) if keys else ()))
    return changes


# ---------------------------------------------------------------- findings


def _line(text: str, path: Sequence[str]) -> int | None:
    """Line of the innermost key of ``path`` (searched after its parents); items of ``required`` by value."""
    pos, line = 0, None
    for i, part in enumerate(path):
        quoted = json.dumps(part)
        found = -1 if i and path[i - 1] == "required" else text.find(quoted + ":", pos)
        if found < 0:
            found = text.find(quoted, pos)
        if found < 0:
            return line
        pos, line = found, text.count("\n", 0, found) + 1
    return line


def _shown(contract: Contract) -> tuple[str | None, str]:
    """The contract's file and its snapshot's, as findings show them (relative to the working directory)."""
    if contract.file is None:
        return None, f"{PUBLISHED}/{contract.ref}.json"
    return display_path(contract.file), display_path(contract.file.parent / PUBLISHED / f"{contract.ref}.json")


def _findings(new: Contract, changes: list[Change]) -> Iterator[Finding]:
    file, snapshot = _shown(new)
    try:
        text = new.file.read_text(encoding="utf-8") if new.file else ""
    except OSError:
        text = ""
    major = f"{new.name}.v{new.version + 1}"

    def finding(level: Level, message: str, path: tuple[str, ...]) -> Finding:
        return Finding(level, CODE, new.ref, message, file, _line(text, path) if path else None)

    for c in (c for c in changes if c.level == "error"):
        message = (
            f"{new.ref} changed incompatibly since it was published: {c.message}; publish the change as the next major "
            f"version, {major} (a new file {major}.json), and restore {new.ref} from {snapshot}"
        )
        yield finding("error", message, c.path)
    for c in (c for c in changes if c.level == "warning"):
        yield finding("warning", f"{new.ref}: {c.message}; then `fxrun contracts publish {new.ref}`, or make it {major}", c.path)
    infos = [c for c in changes if c.level == "info"]
    if infos and not any(c.level == "error" for c in changes):
        message = (
            f"{new.ref} changed compatibly since it was published: {'; '.join(c.message for c in infos)}; "
            f"`fxrun contracts publish {new.ref}` records it ({snapshot}) when it is released"
        )
        yield finding("info", message, infos[0].path)


_cache: dict[tuple, dict[str, Contract]] = {}


def load_published(directory: Path) -> dict[str, Contract]:
    """The snapshots of ``directory`` by ref (none if it does not exist); cached while its files are unchanged."""
    if not directory.is_dir():
        return {}
    files = sorted(directory.glob("*.json"))
    stamp = (str(directory.resolve()), tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    if stamp not in _cache:
        registry = ContractRegistry.load(directory) if files else ContractRegistry({})
        _cache.clear()
        _cache[stamp] = {ref: registry.resolve(ref) for ref in registry.refs()}
    return _cache[stamp]


def _directory(contracts: ContractRegistry) -> Path | None:
    return next((c.file.parent for r in contracts.refs() if (c := contracts.resolve(r)).file is not None), None)


def check(contracts: ContractRegistry, published: dict[str, Contract] | None = None) -> list[Finding]:
    """FX105 findings of every contract against its snapshot (loaded from ``<contracts>/published/`` by default)."""
    directory = _directory(contracts)
    if directory is None:
        return []
    if published is None:
        try:
            published = load_published(directory / PUBLISHED)
        except UserError as exc:
            errors = exc.errors if isinstance(exc, UserErrors) else [exc]
            message = "published snapshot unusable: {}; restore it from git (snapshots are only written by `fxrun contracts publish`)"
            return [Finding("error", CODE, PUBLISHED, message.format(e.message), e.file, e.line) for e in errors]
    out: list[Finding] = []
    for ref in contracts.refs():
        new = contracts.resolve(ref)
        old = published.get(ref)
        if old is None:
            file, snapshot = _shown(new)
            message = (
                f"{ref} is not published yet; `fxrun contracts publish {ref}` records it as released "
                f"({snapshot}), and from then on it may change only compatibly"
            )
            out.append(Finding("info", CODE, ref, message, file))
            continue
        out.extend(_findings(new, compare(old, new)))
    return out


def published_contracts(ctx: LintContext) -> list[Finding]:
    """FX105: every contract against its released snapshot in ``contracts/published/``."""
    return check(ctx.contracts)


# ---------------------------------------------------------------- fxrun contracts publish|check


def _select(directory: Path, names: Sequence[str]) -> list[str]:
    """File stems (``bar.v1``, ``common.v1``) the names pick: a ref, or a name for each of its versions."""
    stems = sorted(p.name.removesuffix(".json") for p in directory.glob("*.json"))
    if not names:
        return stems
    picked: list[str] = []
    for name in names:
        hits = [s for s in stems if s == name or s.rsplit(".v", 1)[0] == name]
        if not hits:
            close = difflib.get_close_matches(name, stems + [s.rsplit(".v", 1)[0] for s in stems], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (contracts: {', '.join(stems)})"
            raise UserError(f"no contract {name!r} in {display_path(directory)}{hint}")
        picked += [s for s in hits if s not in picked]
    return picked


def publish(directory: Path, names: Sequence[str] = ()) -> list[str]:
    """Write the snapshots of the named contracts (all without names); refuse a breaking change.

    The snapshots are checked together as they would be after publishing: each against the one
    it replaces, so a shared definition file published with them is judged by every contract
    that uses it. Shared files are published when named, when no name is given, or when the
    published directory lacks them (the snapshots refer to them).
    """
    current = ContractRegistry.load(directory)
    target = directory / PUBLISHED
    stems = _select(directory, names)
    shared = [p.name.removesuffix(".json") for p in directory.glob("*.json") if p.name.removesuffix(".json") not in current]
    stems += [s for s in shared if s not in stems and not (target / f"{s}.json").exists()]
    before = load_published(target)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        if target.is_dir():
            for path in target.glob("*.json"):
                shutil.copyfile(path, staged / path.name)
        for stem in stems:
            shutil.copyfile(directory / f"{stem}.json", staged / f"{stem}.json")
        try:
            after = ContractRegistry.load(staged)
        except UserError as exc:
            raise UserError(f"the snapshots would not load together ({exc.message}); publish the shared files they use too") from None
        problems = []
        for ref in after.refs():
            if ref in before:
                fresh = dataclasses.replace(after.resolve(ref), file=directory / f"{ref}.json")
                problems += [f for f in _findings(fresh, compare(before[ref], fresh)) if f.level == "error"]
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more: `fxrun contracts check`)" if len(problems) > 1 else ""
        raise UserError(f"refusing to publish: {first.message}{more}", file=first.file, line=first.line)
    target.mkdir(exist_ok=True)
    done = []
    for stem in stems:
        source, snapshot = directory / f"{stem}.json", target / f"{stem}.json"
        if snapshot.is_file() and snapshot.read_bytes() == source.read_bytes():
            done.append(f"{stem}: unchanged")
            continue
        shutil.copyfile(source, snapshot)
        done.append(f"published {stem} ({display_path(snapshot)})")
    return done


def main(argv: Sequence[str]) -> int:
    """``fxrun contracts publish [NAME...]`` and ``fxrun contracts check`` (FX105 alone)."""
    from framework.topology.load import find_project

    parser = argparse.ArgumentParser(prog="fxrun contracts", description="Released contract versions (lint FX105).")
    verbs = parser.add_subparsers(dest="verb", required=True)
    pub = verbs.add_parser("publish", help="record the current contracts as released (contracts/published/)")
    pub.add_argument("names", nargs="*", metavar="NAME", help="contract refs or names (default: every contract)")
    verbs.add_parser("check", help="compare every contract with its released snapshot (lint FX105 alone)")
    args = parser.parse_args(list(argv))
    directory = find_project() / "contracts"
    if args.verb == "publish":
        for line in publish(directory, args.names):
            print(line)
        return 0
    findings = check(ContractRegistry.load(directory))
    for finding in findings:
        print(format_finding(finding))
    errors = sum(f.level == "error" for f in findings)
    print(f"{errors} error(s), {sum(f.level == 'warning' for f in findings)} warning(s)", file=sys.stderr)
    return exit_code(findings)
