"""Everything the rules share: the resolved wiring, locations, and cached subject/contract answers.

Rules run against one :class:`LintContext`. Subject expansion, publisher/subscriber links
and contract compatibility are computed once here, so a topology with 14 pairs and 7
timeframes (hundreds of concrete subjects) still lints in milliseconds.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from framework.contracts import Contract, ContractRegistry
from framework.lint.compatibility import compatible
from framework.lint.findings import Finding, Level
from framework.registry import NodeSpec, Registry
from framework.subjects import check_pattern, intersects
from framework.topology.model import Topology
from framework.topology.source import KeyPath, SourceMap
from framework.topology.templates import as_pattern
from framework.wiring import Endpoint, Kind, Wiring, resolve

Rule = Callable[["LintContext"], Iterable[Finding]]
ANY = "any"
TOPOLOGY = "topology"
_REF_NAME = re.compile(r"^(?P<name>.*?)(?:\.v\d+)?$")


def suggestion(close: Sequence[str]) -> str:
    """``" (did you mean 'a'?)"``, or an empty string when nothing is close."""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The single closest known name as a suggestion (see :func:`suggestion`)."""
    return suggestion(difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6))


def contract_name(ref: str) -> str:
    """``signal.v1`` → ``signal`` (works for refs the registry does not know)."""
    match = _REF_NAME.match(ref)
    return match["name"] if match else ref


@dataclass(frozen=True, eq=False)
class Wire:
    """A NATS endpoint with its well-formed expansions; identity-hashed so links can refer to it."""

    endpoint: Endpoint
    patterns: tuple[str, ...]
    wide: str | None
    """``as_pattern`` of the template: a superset of every expansion, used as a cheap pre-filter."""


@dataclass(frozen=True, eq=False)
class Link:
    """``publisher`` output reaches ``subscriber`` input (intersecting subjects or the same topic)."""

    publisher: Endpoint
    subscriber: Endpoint


class LintContext:
    """The inputs of one lint run plus what several rules need, computed once on first use."""

    def __init__(
        self,
        topology: Topology,
        source: SourceMap,
        registry: Registry,
        contracts: ContractRegistry,
        pairs: Sequence[str] | None = None,
    ) -> None:
        self.topology = topology
        self.source = source
        self.registry = registry
        self.contracts = contracts
        self.pairs = list(pairs) if pairs else None
        self.wiring: Wiring = resolve(topology, registry, pairs)
        self._prefix = self._source_prefix(source)
        self._intersects: dict[tuple[str, str], bool] = {}
        self._compatible: dict[tuple[str, str], str | None] = {}

    @staticmethod
    def _source_prefix(source: SourceMap) -> KeyPath:
        """A composed run keeps keys under ``topology``; a single file keeps them at the root."""
        if ("instruments",) not in source.locations and ("topology", "instruments") in source.locations:
            return ("topology",)
        return ()

    # ---------------------------------------------------------------- locations and findings

    def locate(self, path: Sequence[str]) -> tuple[str | None, int | None]:
        loc = self.source.find(self._prefix + tuple(str(p) for p in path))
        if loc is None:
            return None, None
        return loc.file, loc.line or None

    def finding(self, level: Level, code: str, service: str, message: str, path: Sequence[str] | None) -> Finding:
        file, line = self.locate(path) if path is not None else (None, None)
        return Finding(level=level, code=code, service=service, message=message, file=file, line=line)

    def error(self, code: str, service: str, message: str, path: Sequence[str] | None) -> Finding:
        return self.finding("error", code, service, message, path)

    def warning(self, code: str, service: str, message: str, path: Sequence[str] | None) -> Finding:
        return self.finding("warning", code, service, message, path)

    def strip_prefix(self, path: KeyPath) -> KeyPath:
        n = len(self._prefix)
        return path[n:] if path[:n] == self._prefix else path

    def where(self, ep: Endpoint) -> tuple[str, ...]:
        """Key path of an endpoint, down to the list item when a binding lists several names."""
        if ep.binding is None:
            reads = self.topology.services[ep.service].reads
            return ("services", ep.service, "reads", str(reads.index(ep.name)))
        raw = {"nats": ep.binding.nats, "kafka": ep.binding.kafka, "table": ep.binding.tables}[ep.kind]
        if isinstance(raw, list) and ep.name in raw:
            return (*ep.path, str(raw.index(ep.name)))
        return ep.path

    # ---------------------------------------------------------------- specs and contracts

    def undeclared(self, kind: Kind, code: str, declared: Iterable[str], what: str, fix: str) -> Iterator[Finding]:
        """One error per service that uses a topic or table the topology does not declare."""
        names = set(declared)
        seen: set[tuple[str, str]] = set()
        for ep in self.wiring.select(kind=kind):
            if ep.name in names or (ep.service, ep.name) in seen:
                continue
            seen.add((ep.service, ep.name))
            message = f"{what} {ep.name!r} is not declared{did_you_mean(ep.name, names)}; fix the name or {fix}"
            yield self.error(code, ep.service, message, self.where(ep))

    def endpoints_of(self, service: str) -> list[Endpoint]:
        return self._by_service.get(service, [])

    @cached_property
    def _by_service(self) -> dict[str, list[Endpoint]]:
        out: dict[str, list[Endpoint]] = {}
        for ep in self.wiring.endpoints:
            out.setdefault(ep.service, []).append(ep)
        return out

    def spec(self, service: str) -> NodeSpec | None:
        return self.wiring.specs.get(service)

    def contract(self, ref: str) -> Contract | None:
        """The contract of ``ref``; None for ``any`` and for unknown refs (FX104 reports those)."""
        if ref == ANY or ref not in self.contracts:
            return None
        return self.contracts.resolve(ref)

    def ref_name(self, ref: str) -> str:
        found = self.contract(ref)
        return found.name if found is not None else contract_name(ref)

    def carries(self, ep: Endpoint, name: str) -> bool:
        """True if the endpoint's contracts include one named ``name`` (any version)."""
        return any(self.ref_name(ref) == name for ref in ep.contracts)

    def _resolve_all(self, refs: Sequence[str]) -> list[Contract] | None:
        """Every contract of ``refs``, or None if any is ``any``/unknown (then nothing can be checked)."""
        out = []
        for ref in refs:
            found = self.contract(ref)
            if found is None:
                return None
            out.append(found)
        return out or None

    def mismatch(self, producer: Sequence[str], consumer: Sequence[str]) -> str | None:
        """Why some producer contract is acceptable to none of the consumer contracts, else None.

        Unknown refs, ``any`` and undeclared contracts cannot be checked and pass.
        """
        have, want = self._resolve_all(producer), self._resolve_all(consumer)
        if have is None or want is None:
            return None
        for p in have:
            reasons = [(c, self._compat(p, c)) for c in want]
            if all(why for _, why in reasons):
                same = [why for c, why in reasons if c.name == p.name]
                return (same or [reasons[0][1]])[0]
        return None

    def _compat(self, producer: Contract, consumer: Contract) -> str | None:
        key = (producer.ref, consumer.ref)
        if key not in self._compatible:
            self._compatible[key] = compatible(producer, consumer)
        return self._compatible[key]

    # ---------------------------------------------------------------- subjects

    def intersects(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        hit = self._intersects.get(key)
        if hit is None:
            hit = self._intersects[key] = intersects(a, b)
        return hit

    @cached_property
    def wires(self) -> list[Wire]:
        out = []
        for ep in self.wiring.endpoints:
            if ep.kind != "nats":
                continue
            patterns = tuple(s for s in ep.subjects if check_pattern(s) is None)
            wide = as_pattern(ep.name)
            out.append(Wire(ep, patterns, wide if check_pattern(wide) is None else None))
        return out

    @cached_property
    def nats_links(self) -> list[Link]:
        pubs = [w for w in self.wires if w.endpoint.direction == "out" and w.patterns]
        subs = [w for w in self.wires if w.endpoint.direction == "in" and w.patterns]
        return [Link(p.endpoint, s.endpoint) for p in pubs for s in subs if self._wires_meet(p, s)]

    def _wires_meet(self, pub: Wire, sub: Wire) -> bool:
        if pub.wide is not None and sub.wide is not None and not self.intersects(pub.wide, sub.wide):
            return False
        return any(self.intersects(a, b) for a in pub.patterns for b in sub.patterns)

    @cached_property
    def kafka_links(self) -> list[Link]:
        eps = [e for e in self.wiring.endpoints if e.kind == "kafka"]
        pubs = [e for e in eps if e.direction == "out"]
        subs = [e for e in eps if e.direction == "in"]
        return [Link(p, s) for p in pubs for s in subs if p.name == s.name]

    @cached_property
    def links(self) -> list[Link]:
        return self.nats_links + self.kafka_links

    def reached(self, ep: Endpoint) -> bool:
        """True if some link has ``ep`` as its subscriber (inputs) or publisher (outputs)."""
        return id(ep) in self._linked

    @cached_property
    def _linked(self) -> set[int]:
        return {id(x) for link in self.links for x in (link.publisher, link.subscriber)}
