"""The topology resolved into endpoints: who publishes and who subscribes what, with which contract.

One resolution serves the lint, the generated docs and the runtime, so they cannot disagree
about what a service is wired to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from framework.registry import NodeSpec, Registry
from framework.topology.model import Binding, Service, Topology
from framework.topology.templates import ANY_TOKEN, expand, placeholders

Direction = Literal["in", "out"]
Kind = Literal["nats", "kafka", "table"]
SYMBOL = "symbol"
TIMEFRAME = "timeframe"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One wire of one port: a subject template, a topic or a table."""

    service: str
    port: str
    direction: Direction
    kind: Kind
    name: str
    subjects: tuple[str, ...] = ()
    """For NATS: the template expanded over the value lists (``*`` for run-time variables)."""
    contracts: tuple[str, ...] = ()
    missing_variables: tuple[str, ...] = ()
    enabled: bool = True
    binding: Binding | None = None

    @property
    def path(self) -> tuple[str, ...]:
        """Key path in the topology document (for file:line)."""
        if self.port == "reads" and self.direction == "in" and self.kind == "table" and self.binding is None:
            return ("services", self.service, "reads")
        section = "inputs" if self.direction == "in" else "outputs"
        return ("services", self.service, section, self.port, self.kind if self.kind != "table" else "tables")


@dataclass
class Wiring:
    topology: Topology
    values: dict[str, Sequence[str] | str]
    endpoints: list[Endpoint] = field(default_factory=list)
    specs: dict[str, NodeSpec | None] = field(default_factory=dict)

    def of(self, service: str) -> list[Endpoint]:
        return [e for e in self.endpoints if e.service == service]

    def select(
        self,
        *,
        direction: Direction | None = None,
        kind: Kind | None = None,
        enabled_only: bool = False,
    ) -> Iterator[Endpoint]:
        for e in self.endpoints:
            if direction and e.direction != direction:
                continue
            if kind and e.kind != kind:
                continue
            if enabled_only and not e.enabled:
                continue
            yield e


def template_values(topology: Topology, pairs: Sequence[str] | None = None) -> dict[str, Sequence[str] | str]:
    """Values of every template variable: ``symbol`` (the active pairs), ``timeframe``, then ``variables``."""
    values: dict[str, Sequence[str] | str] = {
        SYMBOL: list(pairs) if pairs else list(topology.instruments),
        TIMEFRAME: list(topology.timeframes),
    }
    values.update(topology.variable_values)
    return values


def port_contracts(spec: NodeSpec | None, port: str, binding: Binding) -> tuple[str, ...]:
    """The node's declaration wins; a binding's own ``contract`` covers nodes not built yet."""
    if spec is not None:
        declared = spec.port(port)
        if declared is not None:
            return declared.contracts
    return tuple(binding.contracts)


def _subjects(template: str, values: dict[str, Sequence[str] | str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = placeholders(template)
    missing = tuple(n for n in names if n not in values or (values[n] != ANY_TOKEN and not values[n]))
    if missing:
        return (), missing
    return tuple(expand(template, values)), ()


def _service_endpoints(name: str, service: Service, spec: NodeSpec | None, values: dict) -> Iterator[Endpoint]:
    for direction, ports in (("in", service.inputs), ("out", service.outputs)):
        for port, binding in ports.items():
            contracts = port_contracts(spec, port, binding)
            common = dict(
                service=name, port=port, direction=direction, contracts=contracts, enabled=service.enabled, binding=binding
            )
            scoped = {**values, **binding.values} if binding.values else values
            for subject in binding.subjects:
                expanded, missing = _subjects(subject, scoped)
                yield Endpoint(kind="nats", name=subject, subjects=expanded, missing_variables=missing, **common)
            for topic in binding.topics:
                yield Endpoint(kind="kafka", name=topic, **common)
            for table in binding.table_names:
                yield Endpoint(kind="table", name=table, **common)
    for table in service.reads:
        yield Endpoint(service=name, port="reads", direction="in", kind="table", name=table, enabled=service.enabled)


def resolve(topology: Topology, registry: Registry | None = None, pairs: Sequence[str] | None = None) -> Wiring:
    values = template_values(topology, pairs)
    wiring = Wiring(topology=topology, values=values)
    for name, service in topology.services.items():
        spec = registry.specs.get(service.node) if registry is not None else None
        wiring.specs[name] = spec
        wiring.endpoints.extend(_service_endpoints(name, service, spec, values))
    return wiring
