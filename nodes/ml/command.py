"""``fxrun models list | show ID | promote ID [overrides…]``: the trained models of a topology's artifact store.

A model is named ``name:version`` (``signal-1h:3``), by its name alone (its latest version) or
by a prefix of its sha256 (six hex digits at least). ``list`` prints one line per model: id,
sha256, kind, feature set, training window end, walk-forward metrics, and whether it is the
promoted one (``<name>@promoted``, what inference loads). ``show`` prints its card and its
promotion decisions. ``promote`` tags it ``<name>@promoted`` by hand and records the decision in
``model_promotions``; it refuses a model whose card is unreadable or whose blob does not hash
to its sha256. Overrides (``topology=live``, ``data_dir=…``) choose the stores, as for a run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from framework.artifacts import ArtifactError, ArtifactNotFound, ArtifactRef, ArtifactStore
from framework.command_parser import CommandParser
from framework.errors import UserError
from nodes.ml import promotion
from nodes.ml.model import KINDS, ModelCard, ModelError

EXIT_OK, EXIT_FAILED = 0, 1
PROMOTIONS = "model_promotions"
SHOWN_METRICS = ("balanced_accuracy", "auc", "log_loss", "sharpe", "hit_rate")
_SHA_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
_VERSIONED = re.compile(r"^(?P<name>.+):(?P<version>[0-9]+)$")



def _parser() -> CommandParser:
    parser = CommandParser(prog="fxrun models", description="Trained models in the artifact store (overrides key=value choose the topology and data_dir)")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    verbs.add_parser("list", help="every model version: id, kind, feature set, metrics, promoted?")
    show = verbs.add_parser("show", help="a model's card and its promotion decisions")
    show.add_argument("id", help="name:version, name (latest) or a sha256 prefix")
    promote = verbs.add_parser("promote", help="make a model the promoted one (<name>@promoted)")
    promote.add_argument("id", help="name:version, name (latest) or a sha256 prefix")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = _parser().parse(list(sys.argv[1:] if argv is None else argv))
    if isinstance(parsed, int):
        return parsed
    args, overrides = parsed
    from framework.topology.load import load_run

    loaded = load_run(overrides)
    data_dir = Path(loaded.config.data_dir)
    try:
        lines = asyncio.run(_run(args, loaded.topology, data_dir))
    except (ArtifactError, ModelError) as exc:
        print(f"fxrun models: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    for line in lines:
        print(line)
    return EXIT_OK


async def _run(args: argparse.Namespace, topology: Any, data_dir: Path) -> list[str]:
    from framework.offline import open_offline

    tables = [PROMOTIONS] if PROMOTIONS in topology.tables else []
    async with open_offline(topology, data_dir, tables, service="fxrun models") as offline:
        if offline.artifacts is None:
            raise UserError("the topology declares no artifact store (a `kind: files` store)", path="stores")
        store = offline.artifacts
        promotions = offline.tables.get(PROMOTIONS)
        if args.verb == "list":
            return await _list(store, data_dir)
        ref = await resolve(store, args.id)
        if args.verb == "show":
            return await _show(store, ref, promotions)
        return await _promote(store, ref, promotions)


# ---------------------------------------------------------------- ids


def model_id(ref: ArtifactRef) -> str:
    return f"{ref.name}:{ref.version}"


async def _models(store: ArtifactStore) -> list[ArtifactRef]:
    refs = [r for r in await store.list() if r.kind in KINDS and "@" not in r.name]
    return sorted(refs, key=lambda r: (r.name, r.version))


async def resolve(store: ArtifactStore, key: str) -> ArtifactRef:
    """The model ``key`` names: ``name:version``, ``name`` (latest version) or a sha256 prefix."""
    match = _VERSIONED.match(key)
    if match:
        return await store.resolve(match["name"], version=int(match["version"]))
    models = await _models(store)
    if _SHA_PREFIX.match(key):
        found = {(r.name, r.version): r for r in models if r.sha256.startswith(key)}
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise ArtifactError(f"sha256 prefix {key} is ambiguous: {', '.join(model_id(r) for r in found.values())}; give more digits or name:version")
        if not any(r.name == key for r in models):
            raise ArtifactNotFound(f"no model has a sha256 starting {key} ({_holding(models)})")
    return await store.resolve(key)


def _holding(models: Sequence[ArtifactRef]) -> str:
    return f"models: {', '.join(model_id(r) for r in models[:8])}" + (" …" if len(models) > 8 else "") if models else "no model stored yet"


async def promoted_of(store: ArtifactStore, name: str) -> ArtifactRef | None:
    try:
        return await store.resolve(promotion.promoted_name(name))
    except ArtifactNotFound:
        return None


def is_promoted(ref: ArtifactRef, tag: ArtifactRef | None) -> bool:
    if tag is None:
        return False
    source = tag.metadata.get("promoted_from")
    return source == model_id(ref) if source else tag.sha256 == ref.sha256


# ---------------------------------------------------------------- verbs


def _iso(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


async def _list(store: ArtifactStore, data_dir: Path) -> list[str]:
    models = await _models(store)
    if not models:
        return [f"no model in {data_dir} (no training has stored one yet)"]
    tags = {name: await promoted_of(store, name) for name in sorted({r.name for r in models})}
    rows = [["ID", "SHA256", "KIND", "FEATURE SET", "TRAINED TO", *(m.upper() for m in SHOWN_METRICS), "PROMOTED"]]
    for ref in models:
        meta = ref.metadata
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        rows.append([
            model_id(ref), ref.sha256[:12], ref.kind, str(meta.get("feature_set", "?")), _iso(meta.get("train_end_ms")),
            *(_metric(metrics.get(m)) for m in SHOWN_METRICS), "yes" if is_promoted(ref, tags[ref.name]) else "",
        ])  # fmt: skip
    return _table(rows)


def _card(ref: ArtifactRef) -> ModelCard:
    try:
        return ModelCard.from_metadata(ref.metadata)
    except (ModelError, TypeError, ValueError) as exc:
        raise ModelError(f"model {model_id(ref)} has an unreadable card ({str(exc).splitlines()[0]}); refused") from None


async def _decisions(promotions: Any, ref: ArtifactRef) -> list[dict[str, Any]]:
    if promotions is None:
        return []
    rows = await promotions.query(
        "SELECT ts, decision, reason, by FROM {table} WHERE name = {name:String} AND version = {version:Int64} ORDER BY ts",
        {"name": ref.name, "version": ref.version},
    )
    return rows


async def _show(store: ArtifactStore, ref: ArtifactRef, promotions: Any) -> list[str]:
    tag = await promoted_of(store, ref.name)
    lines = [
        f"model      {model_id(ref)}",
        f"sha256     {ref.sha256}",
        f"kind       {ref.kind}, {ref.size} bytes, stored {_iso(ref.ts)} by {ref.service or '?'}",
        f"promoted   {'yes' if is_promoted(ref, tag) else 'no'}" + (f" (promoted now: {tag.metadata.get('promoted_from') or tag.sha256[:12]})" if tag and not is_promoted(ref, tag) else ""),
    ]  # fmt: skip
    try:
        card = _card(ref)
    except ModelError as exc:
        lines.append(f"card       unreadable: {exc}")
        lines.append(f"metadata   {orjson.dumps(ref.metadata).decode()}")
        return lines
    lines += [
        f"run        {card.run_id}",
        f"features   {card.feature_set}: {len(card.features)} ({', '.join(card.features[:8])}{' …' if len(card.features) > 8 else ''})",
        f"data       {', '.join(card.symbols)} {card.timeframe}, {_iso(card.train_start_ms)} to {_iso(card.train_end_ms)}, seed {card.seed}",
        f"target     {orjson.dumps(card.params.get('target', {}), option=orjson.OPT_SORT_KEYS).decode()}, horizon {card.horizon}",
        f"params     {orjson.dumps(card.params.get('model', {}), option=orjson.OPT_SORT_KEYS).decode()}, threshold {card.params.get('threshold', 0.5)}",
        f"folds      {orjson.dumps(card.params.get('folds', {}), option=orjson.OPT_SORT_KEYS).decode()}",
        "metrics    " + ", ".join(f"{k} {_metric(v)}" for k, v in card.metrics.items())
        + ("  (held-out period)" if KINDS.get(card.kind, "").startswith("nodes.ml.agents:") else "  (walk-forward mean)"),
    ]  # fmt: skip
    for row in await _decisions(promotions, ref):
        lines.append(f"decision   {_iso(int(row['ts']))} {row['decision']} by {row['by']}: {row['reason']}")
    return lines


async def _promote(store: ArtifactStore, ref: ArtifactRef, promotions: Any) -> list[str]:
    _card(ref)
    await store.path(ref)  # verifies the blob against its sha256 (ArtifactCorrupt: refused)
    tag = await promoted_of(store, ref.name)
    if is_promoted(ref, tag):
        return [f"model {model_id(ref)} is already the promoted one"]
    before = (tag.metadata.get("promoted_from") or tag.sha256[:12]) if tag else None
    await store.tag(ref, promotion.promoted_name(ref.name), metadata={"promoted_from": model_id(ref)})
    reason = "promoted by hand" + (f", replacing {before}" if before else "")
    decision = promotion.Decision(True, reason, "", None)
    if promotions is not None:
        now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
        await promotions.insert([promotion.record(decision, name=ref.name, version=ref.version, sha256=ref.sha256,
                                                  run_id=str(ref.metadata.get("run_id", "")), ts=now, by="fxrun models promote")])  # fmt: skip
    return [promotion.log_line(decision, model_id(ref))]
