"""``docs/architecture.md``: diagram, messaging summary, one card per service, and the declared resources."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from framework.contracts import Contract
from framework.docgen.flow import (
    ANY_CONTRACT,
    DEADLETTER_CONTRACT,
    DEADLETTER_TEMPLATE,
    FRAMEWORK,
    Flow,
    generated_note,
    host_of,
    is_secret_key,
    redact,
    unique,
)
from framework.docgen.mermaid import render_mermaid
from framework.topology.model import PHASE_TITLES, PHASES, Binding, Service
from framework.wiring import Endpoint, port_contracts

NONE = "-"
STORE_NAMES = {"clickhouse": "ClickHouse", "postgres": "PostgreSQL", "redis": "Redis"}


# ---------------------------------------------------------------- markdown helpers


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or NONE


def code(text: str) -> str:
    clean = text.replace("`", "'")
    return f"`{clean}`"


def codes(items: Iterable[str], sep: str = ", ") -> str:
    return sep.join(code(i) for i in items) or NONE


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)
    return lines


HIDDEN = "(hidden)"


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: HIDDEN if is_secret_key(str(k)) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def value_text(value: Any) -> str:
    """A param value as JSON (models and their lists as their JSON form): no credentials, secret keys hidden."""
    if isinstance(value, str):
        return redact(value)
    data = to_jsonable_python(value, fallback=str)
    return redact(json.dumps(_masked(data), ensure_ascii=False, default=str))


def who(endpoints: Iterable[Endpoint]) -> str:
    names = (f"{FRAMEWORK} (for every service)" if e.service == FRAMEWORK else e.service for e in endpoints)
    return ", ".join(unique(names)) or NONE


# ---------------------------------------------------------------- summary


def _names(flow: Flow, service: str, kind: str, direction: str) -> list[str]:
    return unique(e.name for e in flow.endpoints(service) if e.kind == kind and e.direction == direction)


def _messaging(publish: list[str], subscribe: list[str], sub_word: str) -> str:
    parts = []
    if publish:
        parts.append("Publish: " + codes(publish))
    if subscribe:
        parts.append(f"{sub_word}: " + codes(subscribe))
    return "<br>".join(parts) or NONE


def pattern_of(flow: Flow, service: str) -> str:
    """The seed's "Pattern" column, derived from which transports the service uses and how.

    A service publishing on NATS without subscribing counts as batch ("NATS status only") when
    its node says so, or, for a node not built yet, when it queries tables (``reads``).
    """
    nats_pub, nats_sub = (bool(_names(flow, service, "nats", d)) for d in ("out", "in"))
    kafka_pub, kafka_sub = (bool(_names(flow, service, "kafka", d)) for d in ("out", "in"))
    nats, kafka = nats_pub or nats_sub, kafka_pub or kafka_sub
    spec = flow.spec(service)
    if nats and kafka:
        if nats_pub and kafka_pub:
            return "Both (real-time + archive)"
        if not nats_pub and not kafka_pub:
            return "Both (subscriber + consumer)"
        return "Both (archive → real-time)" if nats_pub else "Both (real-time → archive)"
    if nats:
        if not nats_pub:
            return "NATS only (read-only)"
        batch = spec.role == "batch" if spec is not None else bool(flow.topology.services[service].reads)
        if not nats_sub and batch:
            return "NATS status only"
        return "NATS only"
    if kafka:
        return "Kafka only"
    stores = _written_stores(flow, service)
    return f"None (batch to {', '.join(stores)})" if stores else "None"


def _written_stores(flow: Flow, service: str) -> list[str]:
    kinds = []
    for name in _names(flow, service, "table", "out"):
        table_node = flow.tables.get(name)
        store = flow.topology.stores.get(table_node.table.store) if table_node and table_node.table else None
        if store is not None:
            kinds.append(STORE_NAMES.get(store.kind, store.kind))
    return unique(kinds)


def _service_title(flow: Flow, service: str) -> str:
    return service if flow.topology.services[service].enabled else f"{service} (disabled)"


def summary_section(flow: Flow) -> list[str]:
    rows = []
    for service in flow.services:
        nats = _messaging(_names(flow, service, "nats", "out"), _names(flow, service, "nats", "in"), "Subscribe")
        kafka = _messaging(_names(flow, service, "kafka", "out"), _names(flow, service, "kafka", "in"), "Consume")
        rows.append([str(flow.number(service)), _service_title(flow, service), nats, kafka, pattern_of(flow, service)])
    header = ["#", "Service", "NATS (Real-time)", "Kafka (Archive)", "Pattern"]
    return ["## Messaging summary", "", *table(header, rows)]


# ---------------------------------------------------------------- service cards


def _port_rows(flow: Flow, service_name: str, service: Service, direction: str) -> list[list[str]]:
    spec = flow.spec(service_name)
    bound = service.inputs if direction == "in" else service.outputs
    declared = (spec.inputs if direction == "in" else spec.outputs) if spec else {}
    rows = []
    for port in unique([*bound, *declared]):
        binding = bound.get(port, Binding())
        refs = port_contracts(spec, port, binding)
        description = binding.description or (declared[port].description if port in declared else "")
        if port not in bound:
            description = f"(not wired) {description}".strip()
        scoped = "; ".join(f"`{{{k}}}`: {_values_text(v)}" for k, v in binding.values.items())
        description = " — ".join(t for t in (scoped, description) if t)
        rows.append([
            code(port),
            codes(_display_refs(flow, refs)),
            codes(binding.subjects),
            codes(binding.topics),
            codes(binding.table_names),
            description,
        ])
    return rows


def _values_text(values: list[str] | str) -> str:
    return "any value, known at run time" if values == "*" else ", ".join(values)


def _display_refs(flow: Flow, refs: Iterable[str]) -> list[str]:
    shown = []
    for ref in refs:
        if ref == ANY_CONTRACT or ref in flow.contracts:
            shown.append(flow.contract_ref(ref))
        else:
            shown.append(f"{ref} (unknown)")
    return shown


def _type_name(annotation: Any) -> str:
    """A readable, stable type: ``Annotated`` types show their alias name (``Duration``) or base type."""
    alias = _ALIASES.get(id(annotation))
    if alias is not None:
        return alias
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and not args:
        return annotation.__name__
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is not None and args:
        name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    return repr(annotation).replace("typing.", "")


def _param_aliases() -> dict[int, str]:
    from framework import params

    return {id(v): k for k, v in vars(params).items() if typing.get_origin(v) is typing.Annotated}


_ALIASES = _param_aliases()


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            return value_text(info.default_factory())  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    return value_text(info.default)


def _param_rows(flow: Flow, service_name: str, service: Service) -> list[list[str]]:
    spec = flow.spec(service_name)
    fields: dict[str, FieldInfo] = dict(spec.params.model_fields) if spec else {}
    rows = []
    for key in unique([*service.params, *fields]):
        secret = is_secret_key(key)
        value = NONE
        if key in service.params:
            value = code(HIDDEN if secret else value_text(service.params[key]))
        info = fields.get(key)
        if info is None:
            rows.append([code(key), value, NONE, NONE, "(not in the node's params schema)" if spec else ""])
            continue
        default = _default(info)
        if default != "required":
            default = code(HIDDEN if secret and isinstance(info.default, str) and info.default else default)
        rows.append([code(key), value, code(_type_name(info.annotation)), default, info.description or ""])
    return rows


def _node_text(flow: Flow, service: Service) -> str:
    spec = flow.registry.specs.get(service.node)
    if spec is None:
        return f"{code(service.node)} — **not built** (no plugin registered)"
    extras = f", extras: {codes(spec.extras)}" if spec.extras else ""
    return f"{code(service.node)} (role: {spec.role}{extras})"


def service_card(flow: Flow, name: str) -> list[str]:
    service = flow.topology.services[name]
    spec = flow.spec(name)
    description = service.description or (spec.description if spec else "")
    facts = [
        ["Node", _node_text(flow, service)],
        ["Phase", PHASE_TITLES[service.phase]],
        ["Enabled", "yes" if service.enabled else "no"],
        ["Replicas", str(service.replicas)],
    ]
    lines = [f"### {flow.number(name)}. {name}", ""]
    if description:
        lines += [" ".join(description.split()), ""]
    lines += [*table(["Property", "Value"], facts), ""]
    port_header = ["Port", "Contract", "NATS", "Kafka", "Tables", "Description"]
    for title, direction in (("Inputs", "in"), ("Outputs", "out")):
        rows = _port_rows(flow, name, service, direction)
        if rows:
            lines += [f"**{title}**", "", *table(port_header, rows), ""]
    if service.reads:
        lines += [f"**Reads**: {codes(service.reads)}", ""]
    params = _param_rows(flow, name, service)
    if params:
        lines += ["**Params**", "", *table(["Param", "Value", "Type", "Default", "Description"], params), ""]
    return lines


def services_section(flow: Flow) -> list[str]:
    lines = ["## Services", ""]
    for name in flow.services:
        lines += service_card(flow, name)
    return lines[:-1]


# ---------------------------------------------------------------- resources


def _number(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".")


def instruments_section(flow: Flow) -> list[str]:
    rows = [
        [code(symbol), i.kind, _number(i.pip), str(i.digits), i.description or ""]
        for symbol, i in flow.topology.instruments.items()
    ]
    return ["## Instruments", "", *table(["Symbol", "Kind", "Pip", "Digits", "Description"], rows)]


def timeframes_section(flow: Flow) -> list[str]:
    lines = ["## Timeframes and template variables", "", f"- `{{timeframe}}`: {codes(flow.topology.timeframes)}"]
    lines.append(f"- `{{symbol}}`: every instrument ({len(flow.topology.instruments)})")
    for name, values in flow.topology.variables.items():
        if isinstance(values, list):
            shown = codes(values)
        elif isinstance(values, str):
            shown = _values_text(values)
        else:
            shown = "an identifier, known at run time" if values.identifier else _values_text("*")
            shown += f" ({values.description})" if values.description else ""
        lines.append(f"- `{{{name}}}`: {shown}")
    return lines


def _subject_contracts(flow: Flow, endpoints: Iterable[Endpoint]) -> list[str]:
    return unique(r for e in endpoints for r in _display_refs(flow, e.contracts))


def subjects_section(flow: Flow) -> list[str]:
    via: dict[str, list[str]] = {}
    for node in flow.subjects.values():
        if not node.published:
            for source in node.sources:
                via.setdefault(source, []).extend(f"{s} (via `{node.template}`)" for s in unique(e.service for e in node.subscribers))
    rows = []
    for node in flow.subjects.values():
        if node.published:
            subscribers = [*unique(e.service for e in node.subscribers), *unique(via.get(node.template, []))]
            rows.append([
                code(node.template),
                codes(_subject_contracts(flow, node.publishers)),
                who(node.publishers),
                ", ".join(subscribers) or NONE,
                "yes" if flow.durable(node.template) else "no",
            ])
    lines = ["## NATS subjects", ""]
    lines += table(["Subject", "Contract", "Publishers", "Subscribers", "JetStream"], rows)
    patterns = [n for n in flow.subjects.values() if not n.published]
    if patterns:
        rows = [[code(n.template), who(n.subscribers), codes(n.sources)] for n in patterns]
        lines += ["", "Subscriptions that are not a published template:", ""]
        lines += table(["Subscription", "Subscribers", "Receives from"], rows)
    return lines


def topics_section(flow: Flow) -> list[str]:
    rows = []
    for node in flow.topics.values():
        t = node.topic
        if t is None:
            rows.append([code(node.name), NONE, NONE, NONE, NONE, NONE, NONE, who(node.producers), who(node.consumers), "(not declared in `topics`)"])
            continue
        rows.append([
            code(node.name),
            str(t.partitions) if t.partitions else NONE,
            code(t.key) if t.key else NONE,
            t.retention or "forever",
            t.cleanup,
            str(t.replication),
            codes(_display_refs(flow, t.contracts)),
            who(node.producers),
            who(node.consumers),
            t.description or "",
        ])
    header = ["Topic", "Partitions", "Key", "Retention", "Cleanup", "Replication", "Contract", "Producers", "Consumers", "Description"]
    return ["## Kafka topics", "", *table(header, rows)]


def _store_text(flow: Flow, store: str) -> str:
    config = flow.topology.stores.get(store)
    return f"{store} ({STORE_NAMES.get(config.kind, config.kind)})" if config else f"{store} (undeclared)"


def _columns_text(flow: Flow, node_contract: str | None, columns: dict[str, str] | None) -> str:
    if node_contract:
        return codes(_display_refs(flow, [node_contract]))
    if columns:
        return ", ".join(f"{code(k)} {v}" for k, v in columns.items())
    return NONE


def tables_section(flow: Flow) -> list[str]:
    rows = []
    for node in flow.tables.values():
        t = node.table
        if t is None:
            rows.append([code(node.name), NONE, NONE, NONE, NONE, NONE, who(node.writers), who(node.readers), "(not declared in `tables`)"])
            continue
        rows.append([
            code(node.name),
            _store_text(flow, t.store),
            t.engine or NONE,
            _columns_text(flow, t.contract, t.columns),
            codes(t.order_by) + (f"; unique key {codes(t.key)}" if t.key else ""),
            t.retention or "forever",
            who(node.writers),
            who(node.readers),
            t.description or "",
        ])
    header = ["Table", "Store", "Engine", "Contract / columns", "Order by", "Retention", "Writers", "Readers", "Description"]
    return ["## Tables", "", *table(header, rows)]


def _schema_file(contract: Contract) -> str:
    return code(f"contracts/{contract.file.name}") if contract.file is not None else NONE


def contracts_section(flow: Flow) -> list[str]:
    rows = []
    for ref in flow.used_contracts():
        c = flow.contracts.resolve(ref)
        rows.append([code(ref), str(c.schema.get("title", "")), code(c.key_field) if c.key_field else NONE, code(c.time_field) if c.time_field else NONE, _schema_file(c)])
    return ["## Message contracts", "", *table(["Contract", "Title", "Key", "Time", "Schema"], rows)]


def infrastructure_section(flow: Flow) -> list[str]:
    topo = flow.topology
    lines = ["## Infrastructure", "", "Hosts only: credentials come from environment variables and are never written here.", ""]
    if topo.nats:
        auth = ", authenticated" if topo.nats.auth else ""
        tls = ", TLS" if topo.nats.tls else ""
        lines.append(f"- NATS: {codes(host_of(s) for s in topo.nats.servers)}{auth}{tls}")
        if topo.nats.durable:
            lines.append(f"  - JetStream keeps: {codes(topo.nats.durable)}")
    if topo.kafka:
        auth = f", SASL {topo.kafka.auth.mechanism}" if topo.kafka.auth else ""
        tls = ", TLS" if topo.kafka.tls else ""
        lines.append(f"- Kafka: {codes(host_of(s) for s in topo.kafka.bootstrap)}{auth}{tls}")
    if topo.stores:
        if topo.nats or topo.kafka:
            lines.append("")
        rows = [[code(name), STORE_NAMES.get(s.kind, s.kind), code(host_of(s.url))] for name, s in topo.stores.items()]
        lines += table(["Store", "Kind", "Host"], rows)
    return lines


# ---------------------------------------------------------------- document


def intro(flow: Flow) -> list[str]:
    topo = flow.topology
    enabled = sum(1 for s in topo.services.values() if s.enabled)
    used_phases = sum(1 for p in PHASES if any(s.phase == p for s in topo.services.values()))
    return [
        f"# {topo.name} architecture",
        "",
        f"{len(topo.services)} services ({enabled} enabled) in {used_phases} phases, "
        f"{len(topo.instruments)} instruments, {len(topo.timeframes)} timeframes, "
        f"{len(flow.subjects)} NATS subject templates, {len(flow.topics)} Kafka topics, {len(flow.tables)} tables.",
        "",
        "NATS subjects carry real-time messages between services; Kafka topics keep the replayable archive; "
        "tables are what services write to and read from the stores. In the diagram, a subscription that is not "
        "itself a published subject (`bars.>`) is a dashed node fed by dotted edges from the subjects it matches; "
        f"disabled services are dashed. The framework publishes `{DEADLETTER_TEMPLATE}` (`{DEADLETTER_CONTRACT}`) for "
        "every service: one node, without an edge from each service.",
    ]


def render_markdown(flow: Flow, source: str) -> str:
    sections = [
        [f"<!-- {generated_note(source)} -->", "", *intro(flow)],
        ["## Flow", "", render_mermaid(flow)],
        summary_section(flow),
        services_section(flow),
        instruments_section(flow),
        timeframes_section(flow),
        subjects_section(flow),
        topics_section(flow),
        tables_section(flow),
        contracts_section(flow),
        infrastructure_section(flow),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
