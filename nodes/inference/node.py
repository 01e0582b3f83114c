"""inference-service: each feature vector through the declared models, one raw signal per model.

**Models.** Each declared model (``params.models``) is a *slot*: a rule (``kind: sma_cross``)
built from its params at start, or a trained model loaded from the artifact
``<name>@promoted``, whose card (the artifact's metadata) says its kind, feature-set version,
features in order, timeframe and horizon. A trained model declared with a ``version`` is pinned:
that version of artifact ``<name>`` is loaded at start (model id ``<name>-v<version>``) and
never swapped, so a backtest names exactly the checkpoint it tests.

**Hot swap.** Every ``poll`` (event time) the service resolves ``<name>@promoted``; a new
promotion is fetched (its sha256 verified by the store), then deserialised off the loop
(``ctx.background``, a thread) and swapped in through the mailbox, so between two messages:
none is lost or reordered, and every signal names the model version that made it. A version
that fails (corrupt blob, unknown kind, a card for another timeframe) is logged once and the
previous model goes on serving; it is tried again only when promoted again.

**Feature sets.** A slot keeps the newest version and the one that served last. Each message
goes to the newest whose card's feature set is the message's (:func:`check_feature_set`), so a
version trained on another set is refused (logged once per version and set) while the previous
one stays live, and takes over by itself once the features move to its set.

**No model.** A message no version of a model can take (none promoted yet, the promoted one
refused, another feature set) gets no signal from it: the reason is logged once, and the
service's metrics count such messages (``ports``: ``unserved:<model>``). It is not
dead-lettered: "not promoted yet" is the normal state of a new deployment (the demo trains its
model while features flow), and the features are archived upstream anyway.

**Bad vectors.** A vector lacking a feature the model takes, or holding a null, NaN, infinity or
anything not a number (:func:`feature_matrix`), never reaches the model: it is dead-lettered with
the reason, as is a message the model fails on.

**Signals.** ``ts`` is the close of the bar whose features were read (``feature_ts +
timeframe``): the moment the signal could first be known, never the bar's start, so a
backtest cannot act on a bar before it closed. ``signal_id`` is ``<model_id>-<symbol>-
<timeframe>-<ts>``, so a replay gives the same ids. A prediction less confident than
``min_confidence`` is a flat signal; ``model_predictions`` keeps the raw prediction.

**Positions (RL).** For a model whose card ``uses_position``, the observation holds the
position the slot's own signals imply for that symbol (buy +1, sell −1, flat 0; for a
continuous agent (``sac``) side × confidence), starting flat, kept across model swaps and, in
the service's snapshot, across restarts. It is the agent's own intent, not the account's
position: the risk gate may refuse a signal the agent then believes it holds.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from framework.artifacts import ArtifactError, ArtifactNotFound, ArtifactRef
from framework.chunk import Chunk
from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.inference.spec import InferenceParams, ModelDecl
from nodes.ml.model import (
    SIDES,
    FeatureSetMismatch,
    FeatureShapeError,
    Model,
    ModelCard,
    ModelError,
    check_feature_set,
    feature_matrix,
    load_model,
    model_class,
)
from nodes.ml.rules import ANY_FEATURE_SET, rule_card

PROMOTED = "@promoted"
CONTINUOUS_KINDS = frozenset({"sac"})
"""Agents whose side × confidence is a position in [-1, 1] (the others' side is the position)."""


@dataclass(slots=True, eq=False)
class Live:
    """A loaded model version and what its signals carry."""

    model: Model
    card: ModelCard
    model_id: str
    horizon: str
    ttl_ms: int
    sha256: str = ""
    checked: dict[str, str | None] = field(default_factory=dict)
    """feature set → None if this version takes it, else why not (checked once per set)."""

    def refusal(self, feature_set: str) -> str | None:
        why = self.checked.get(feature_set, "")
        if why == "":
            why = None
            if self.card.feature_set != ANY_FEATURE_SET:
                try:
                    check_feature_set(self.card, feature_set)
                except FeatureSetMismatch as exc:
                    why = f"{self.model_id}: {exc}"
            self.checked[feature_set] = why
        return why


@dataclass(slots=True, eq=False)
class Slot:
    """One declared model name and the versions it holds."""

    name: str
    decl: ModelDecl
    order: int
    tf_ms: int
    versions: list[Live] = field(default_factory=list)
    """Newest first: the newest version and the one that served last (at most two)."""
    serving: Live | None = None
    seen: int | None = None
    """Version of the ``@promoted`` tag last acted on (loaded, or failed)."""
    installed: int = 0
    """Version of the ``@promoted`` tag whose model is the newest installed (a slower, older load never replaces it)."""
    problem: str = "no model loaded yet"
    """Why there is no version (logged once when its messages get no signal)."""

    @property
    def trained(self) -> bool:
        return self.decl.kind is None


class Inference(Node[InferenceParams]):
    state_version = 1

    def __init__(self, ctx: Any, params: InferenceParams) -> None:
        super().__init__(ctx, params)
        self.positions: dict[str, float] = {}
        """``<model>|<symbol>`` → the position the model's last signal implies (agents with ``uses_position``)."""

    def restore(self, state: Any) -> None:
        self.positions = {str(k): float(v) for k, v in (state or {}).get("positions", {}).items()}

    def snapshot(self) -> Any:
        return {"positions": dict(sorted(self.positions.items()))}

    async def on_start(self) -> None:
        self._said: set[Any] = set()
        self.slots = [
            Slot(name, decl, i, parse_ms(decl.timeframe) or 0) for i, (name, decl) in enumerate(self.params.models.items())
        ]
        for slot in self.slots:
            unknown = [s for s in slot.decl.symbols or () if s not in self.ctx.instruments]
            if unknown or slot.decl.timeframe not in self.ctx.timeframes:
                what = f"symbols {', '.join(unknown)}" if unknown else f"timeframe {slot.decl.timeframe}"
                self.ctx.log.error("model %r: %s not in the topology's instruments and timeframes: no feature vector will reach it", slot.name, what)
            if not slot.trained:
                self._install(slot, self._rule(slot))
        self.routes: dict[tuple[str, str], list[Slot]] = {}
        self._route()
        await self.poll(initial=True)

    # ------------------------------------------------------------------ models

    def _rule(self, slot: Slot) -> Live:
        decl = slot.decl
        card = rule_card(decl.kind or "", decl.params, timeframe=decl.timeframe, symbols=decl.symbols or (),
                         feature_set=decl.feature_set, horizon=decl.horizon)  # fmt: skip
        model = model_class(card.kind)(card)  # a rule is its params: no bytes to read
        digest = hashlib.sha256(model.to_bytes()).hexdigest()
        return self._live(slot, model, card, f"{slot.name}-{digest[:8]}", digest)

    def _live(self, slot: Slot, model: Model, card: ModelCard, model_id: str, sha256: str) -> Live:
        decl = slot.decl
        horizon = decl.horizon or card.horizon or decl.timeframe
        try:
            horizon_ms = parse_ms(horizon)
        except ValueError:
            self._say(("horizon", model_id), f"{slot.name}: horizon {horizon!r} of {model_id} is not a duration; signals hold one bar")
            horizon, horizon_ms = decl.timeframe, slot.tf_ms
        ttl_ms = parse_ms(decl.ttl) if decl.ttl else horizon_ms
        return Live(model, card, model_id, horizon, int(ttl_ms or slot.tf_ms), sha256)

    def _install(self, slot: Slot, live: Live) -> None:
        keep = slot.serving if slot.serving is not None else (slot.versions[0] if slot.versions else None)
        slot.versions = [live] + ([keep] if keep is not None and keep is not live else [])
        slot.problem = ""

    def _route(self) -> None:
        """(symbol, timeframe) → the slots serving it, in declaration order."""
        routes: dict[tuple[str, str], list[Slot]] = {}
        for slot in self.slots:
            symbols = slot.decl.symbols
            if symbols is None and slot.trained and slot.versions:
                symbols = list(slot.versions[0].card.symbols) or None
            for symbol in symbols or self.ctx.pairs:
                routes.setdefault((symbol, slot.decl.timeframe), []).append(slot)
        self.routes = routes

    @every("poll")
    async def poll(self, initial: bool = False) -> None:
        """Look up each trained model's promoted version; load a new one (off the loop unless starting)."""
        for slot in self.slots:
            if slot.trained:
                await self._check(slot, initial)

    async def _check(self, slot: Slot, initial: bool) -> None:
        artifacts = self.ctx.artifacts
        tag = slot.name + PROMOTED
        if artifacts is None:
            slot.problem = f"model {slot.name!r} needs an artifact store (a `kind: files` store in the topology)"
            self._say(("store",), slot.problem, error=True)
            return
        pinned = slot.decl.version
        if pinned is not None and slot.versions:
            return  # a pinned version is loaded once and never swapped
        try:
            ref = await (artifacts.resolve(tag) if pinned is None else artifacts.resolve(slot.name, version=pinned))
        except ArtifactNotFound as exc:
            if not slot.versions:
                if pinned is None:
                    slot.problem = f"no model serves {slot.name!r} yet: {exc}"
                    self._say(("missing", slot.name), slot.problem, error=False)  # a new deployment: training has not promoted one
                else:
                    slot.problem = f"model {slot.name!r} is pinned to version {pinned}, which is not stored: {exc}"
                    self._say(("missing", slot.name), slot.problem, error=True)
            return
        if ref.version == slot.seen:
            return
        slot.seen = ref.version
        current = slot.versions[0] if slot.versions else None
        if current is not None and current.sha256 == ref.sha256:
            return
        try:
            card = ModelCard.from_metadata(ref.metadata)
            if card.timeframe != slot.decl.timeframe:
                raise ModelError(f"its card is for timeframe {card.timeframe!r}, the model is declared for {slot.decl.timeframe!r}")
            data = await artifacts.get(ref)
            model_id = f"{slot.name}-v{ref.version}" if pinned is not None else await self._model_id(slot.name, ref)
        except (ArtifactError, ModelError) as exc:
            await self._failed(slot, ref, exc)
            return
        if initial:
            try:
                model = await self.ctx.offload(load_model, data, card)
            except Exception as exc:
                await self._failed(slot, ref, exc)
                return
            await self._swap(slot, ref, card, model_id, model)
            return
        await self.ctx.background(
            load_model, data, card,
            then=functools.partial(self._swap, slot, ref, card, model_id),
            failed=functools.partial(self._failed, slot, ref),
            name=f"load {slot.name}",
        )  # fmt: skip

    async def _model_id(self, name: str, tag: ArtifactRef) -> str:
        """``<name>-v<version>``: the version of ``name`` whose blob the promotion names (its
        ``promoted_from``, as the training services tag it, else looked up by sha256)."""
        source, _, version = str(tag.metadata.get("promoted_from", "")).rpartition(":")
        if source == name and version.isdigit():
            return f"{name}-v{version}"
        versions = [r.version for r in await self.ctx.artifacts.list(name=name) if r.sha256 == tag.sha256]
        return f"{name}-v{max(versions)}" if versions else f"{name}-{tag.sha256[:12]}"

    async def _swap(self, slot: Slot, ref: ArtifactRef, card: ModelCard, model_id: str, model: Model) -> None:
        """A loaded version takes over (called between messages, through the mailbox)."""
        if ref.version < slot.installed:
            return
        slot.installed = ref.version
        self._install(slot, self._live(slot, model, card, model_id, ref.sha256))
        self._route()
        unserved = self.ctx.metrics.per_port.get(f"unserved:{slot.name}", 0)
        source = slot.name + (PROMOTED if slot.decl.version is None else " pinned")
        self.ctx.log.info("%s: %s loaded (%s v%d, kind %s, feature set %s)%s", slot.name, model_id, source, ref.version,
                          card.kind, card.feature_set, f"; {unserved} feature messages got no signal before" if unserved else "")  # fmt: skip

    async def _failed(self, slot: Slot, ref: ArtifactRef, exc: Exception) -> None:
        keeps = f"{slot.versions[0].model_id} stays live" if slot.versions else "no model serves it yet"
        how = "promoted" if slot.decl.version is None else "pinned"
        reason = f"{slot.name}: {how} v{ref.version} refused ({type(exc).__name__}: {exc}); {keeps}"
        if not slot.versions:
            slot.problem = reason
        self._say(("failed", slot.name, ref.version), reason, error=True)

    def _say(self, key: Any, message: str, error: bool = False) -> None:
        """Log ``message`` once per ``key``."""
        if key not in self._said:
            self._said.add(key)
            (self.ctx.log.error if error else self.ctx.log.warning)(message)

    def _pick(self, slot: Slot, feature_set: str) -> Live | None:
        """The newest version of ``slot`` that takes ``feature_set``; the refusals are logged once."""
        for live in slot.versions:
            why = live.refusal(feature_set)
            if why is None:
                return live
            self._say(("feature_set", live.model_id, feature_set), f"{slot.name}: refusing {why}")
        return None

    # ------------------------------------------------------------------ messages

    @handles("features", batch=True)
    async def on_features(self, chunk: Chunk, origin: str) -> None:
        batch = _Features(chunk)
        routes = self.routes
        picked: dict[tuple[int, str], Live | None] = {}  # a chunk is handled between two swaps: a slot's pick per set holds
        groups: dict[tuple[int, int], tuple[Slot, Live, list[int]]] = {}
        for i, (symbol, timeframe, feature_set) in enumerate(zip(batch.symbol, batch.timeframe, batch.feature_set)):
            slots = routes.get((symbol, timeframe))
            if not slots:
                continue
            for slot in slots:
                if not slot.versions:
                    live = None
                elif type(feature_set) is not str:  # input is not checked against the contract: no version takes it
                    live = self._pick(slot, feature_set)
                elif (slot.order, feature_set) in picked:
                    live = picked[(slot.order, feature_set)]
                else:
                    live = picked[(slot.order, feature_set)] = self._pick(slot, feature_set)
                if live is None:
                    self._unserved(slot, feature_set)
                    continue
                group = groups.get((slot.order, id(live)))
                if group is None:
                    groups[(slot.order, id(live))] = (slot, live, [i])
                else:
                    group[2].append(i)
        if not groups:
            return
        out: list[_Outcome] = []
        for slot, live, index in groups.values():
            await self._predict(slot, live, batch, index, origin, out)
        if not out:
            return
        if len(out) > 1:
            out.sort(key=lambda o: (o.row, o.order))
        at = None if chunk.times is None else chunk.times[[o.row for o in out]]  # a timed chunk: each signal at its vector's time
        signals, predictions = _outputs(out)
        await self.ctx.publish_batch("signals", signals, at=at)
        await self.ctx.publish_batch("predictions", predictions, at=at)

    def _unserved(self, slot: Slot, feature_set: Any) -> None:
        """No version of ``slot`` can take a message of ``feature_set``: no signal; counted (metrics ``ports``:
        ``unserved:<model>``), the why logged once.

        Not a dead letter: the features are archived upstream (ml_features, its Kafka archive),
        and a model that is not promoted yet is a normal state of a new deployment."""
        key = f"unserved:{slot.name}"
        per_port = self.ctx.metrics.per_port
        per_port[key] = per_port.get(key, 0) + 1
        if slot.versions:
            sets = ", ".join(f"{v.model_id} on {v.card.feature_set!r}" for v in slot.versions)
            why = f"no version of {slot.name!r} takes feature set {feature_set!r} ({sets})"
        else:
            why = slot.problem
        self._say(("unserved", slot.name, why), f"{slot.name}: its feature messages get no signal until a model takes them: {why}")

    async def _predict(
        self, slot: Slot, live: Live, batch: _Features, index: list[int], origin: str, out: list[_Outcome],
    ) -> None:  # fmt: skip
        """The model over the rows ``index`` of ``batch``; each row's signal and prediction into ``out``."""
        features = live.card.features
        vectors = batch.values
        try:
            X = feature_matrix([vectors[i] for i in index], features)
        except FeatureShapeError:
            good = []
            for i in index:
                try:
                    feature_matrix([vectors[i]], features)
                    good.append(i)
                except FeatureShapeError as exc:
                    await self.ctx.dead_letter(f"{live.model_id}: {exc}", batch.message(i), origin)
            if not good:
                return
            index = good
            X = feature_matrix([vectors[i] for i in index], features)
        try:
            if live.card.uses_position:
                sides, confidences, positions = self._with_positions(slot, live, batch.symbol, index, X)
            else:
                prediction = live.model.predict(X)
                sides, confidences, positions = prediction.side.tolist(), prediction.confidence.tolist(), None
        except Exception as exc:  # the model's failure, not the message's: dead-lettered with the reason, the service goes on
            why = f"{live.model_id} failed to predict: {type(exc).__name__}: {exc}"
            self._say(("predict", live.model_id), f"{slot.name}: {why}", error=True)
            for i in index:
                await self.ctx.dead_letter(why, batch.message(i), origin)
            return
        decl = slot.decl
        floor = decl.min_confidence
        price_feature = decl.price_feature
        order, tf_ms, model_id, horizon, ttl_ms = slot.order, slot.tf_ms, live.model_id, live.horizon, live.ttl_ms
        symbols, timeframes, feature_sets, stamps = batch.symbol, batch.timeframe, batch.feature_set, batch.ts
        for k, i in enumerate(index):
            side, confidence = int(sides[k]), float(confidences[k])
            if side not in (-1, 0, 1) or not 0.0 <= confidence <= 1.0:  # NaN fails too
                await self.ctx.dead_letter(f"{model_id} predicted side {side}, confidence {confidence}: not a prediction", batch.message(i), origin)
                continue
            feature_ts = stamps[i]
            ts = feature_ts + tf_ms
            symbol, timeframe = symbols[i], timeframes[i]
            price: Any = _ABSENT
            if price_feature is not None:
                value = vectors[i].get(price_feature)
                if type(value) is float and value > 0 and value != float("inf"):
                    price = value
            out.append(_Outcome(
                i, order, f"{model_id}-{symbol}-{timeframe}-{ts}", symbol, timeframe, ts,
                SIDES[side + 1] if confidence >= floor else "flat", confidence, model_id, horizon, feature_sets[i], feature_ts, ttl_ms,
                price, side, 0.0 if positions is None else positions[k],
            ))  # fmt: skip
        slot.serving = live

    def _with_positions(
        self, slot: Slot, live: Live, symbols: list[Any], index: list[int], X: Any
    ) -> tuple[list[int], list[float], list[float]]:
        """Row by row: each observation holds the position the slot's previous signal for that symbol implies."""
        sides, confidences, positions = [], [], []
        continuous = live.card.kind in CONTINUOUS_KINDS
        floor = slot.decl.min_confidence
        for k, i in enumerate(index):
            key = f"{slot.name}|{symbols[i]}"
            position = self.positions.get(key, 0.0)
            prediction = live.model.predict(X[k : k + 1], position=np.array([position]))
            side, confidence = int(prediction.side[0]), float(prediction.confidence[0])
            sides.append(side)
            confidences.append(confidence)
            positions.append(position)
            emitted = side if confidence >= floor else 0
            self.positions[key] = float(emitted * confidence) if continuous else float(emitted)
        return sides, confidences, positions


FEATURE_FIELDS = ("symbol", "timeframe", "ts", "feature_set", "values")
SIGNAL_FIELDS = ("signal_id", "symbol", "timeframe", "ts", "side", "confidence", "model_id", "horizon", "feature_set", "feature_ts", "ttl_ms")
"""``signal.v1`` in the order of its messages' keys; ``price``, when a row has one, comes last."""
PREDICTION_FIELDS = ("signal_id", "ts", "symbol", "timeframe", "model_id", "feature_set", "feature_ts", "side", "confidence", "position")
_ABSENT: Any = object()
"""A signal without a price."""


class _Outcome(NamedTuple):
    """One row's signal and prediction (:func:`_outputs` makes columns of them)."""

    row: int
    order: int
    signal_id: str
    symbol: str
    timeframe: str
    ts: int
    side: str
    """The signal's: buy, sell or flat (below the confidence floor)."""
    confidence: float
    model_id: str
    horizon: Any
    feature_set: Any
    feature_ts: int
    ttl_ms: Any
    price: Any
    """:data:`_ABSENT` for a signal without one."""
    predicted: int
    """The prediction's side: -1, 0 or 1."""
    position: float


class _Features:
    """A chunk of ``features.v1`` messages as the lists of the fields inference reads (no dict per row); the
    message itself only for a dead letter."""

    __slots__ = ("_chunk", "_rows", "feature_set", "symbol", "timeframe", "ts", "values")

    def __init__(self, chunk: Chunk) -> None:
        self._chunk = chunk
        self._rows: list[dict[str, Any]] | None = None
        if all(name in chunk and chunk.masks(name) == (None, None) for name in FEATURE_FIELDS):
            columns = [chunk[name].tolist() for name in FEATURE_FIELDS]  # what rows() would hold, field by field
        else:  # a null or absent field: as the messages have it (or the KeyError they give)
            rows = self._rows = chunk.rows()
            columns = [[row[name] for row in rows] for name in FEATURE_FIELDS]
        self.symbol, self.timeframe, self.ts, self.feature_set, self.values = columns

    def message(self, i: int) -> dict[str, Any]:
        if self._rows is None:
            self._rows = self._chunk.rows()
        return self._rows[i]


def _outputs(out: list[_Outcome]) -> tuple[Chunk, Chunk]:
    """The ``signals`` and ``predictions`` chunks of :meth:`Inference._predict`'s outcomes, as
    :meth:`Chunk.from_rows` makes them of the messages (``price`` absent where a signal has none)."""
    columns = dict(zip(_Outcome._fields, zip(*out)))
    signals = {name: columns[name] for name in SIGNAL_FIELDS}
    absent = None
    priced = [p is not _ABSENT for p in columns["price"]]
    if any(priced):
        signals["price"] = [p if has else None for p, has in zip(columns["price"], priced)]
        absent = {"price": ~np.array(priced)}
    predictions = {name: columns["predicted" if name == "side" else name] for name in PREDICTION_FIELDS}
    return Chunk(signals, absent=absent), Chunk(predictions)
