"""``docs/asyncapi.yaml``: the topology as an AsyncAPI 3.0.0 document.

Channels: one per NATS subject template (parameters enumerate the declared values) and one
per Kafka topic. A subscription that is not itself a published template (``bars.>``) gets one
``receive`` operation per channel it matches, the pattern kept in ``x-fxflow.subscription``;
a subscription nothing publishes to gets a channel of its own so it is still documented.
The runtime's own ``deadletter.{service}`` is a channel with a ``send`` operation of the framework.

Channel, operation and message keys use ``[A-Za-z0-9_-]`` only (``nats_ticks_symbol``,
``tick_v1``): the specification also allows dots, but some AsyncAPI libraries do not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import yaml

from framework.contracts import Contract
from framework.docgen.flow import (
    ANY_CONTRACT,
    DEADLETTER_TEMPLATE,
    DEADLETTER_VARIABLE,
    FRAMEWORK,
    TRANSPORT,
    Flow,
    generated_note,
    host_of,
    scheme_of,
)
from framework.docgen.payload import SCHEMA_FORMAT, draft07_payload
from framework.topology.model import PHASE_TITLES, Topic
from framework.topology.templates import placeholders
from framework.wiring import SYMBOL, TIMEFRAME, Endpoint

ASYNCAPI_VERSION = "3.0.0"
NATS_BINDING_VERSION = "0.1.0"
KAFKA_BINDING_VERSION = "0.5.0"
_PARAM_DESCRIPTIONS = {
    SYMBOL: "Instrument symbol (topology `instruments`).",
    TIMEFRAME: "Bar timeframe (topology `timeframes`).",
}
_DEADLETTER_PARAM = f"Service whose message was dead-lettered (`{TRANSPORT}`: a message no codec could decode)."


ChannelIds = dict[tuple[str, str], str]


def key(*parts: str) -> str:
    """A component key: ``[A-Za-z0-9_-]`` only, the parts joined by ``_``."""
    text = "_".join(parts).replace(">", "all").replace("*", "any")
    text = re.sub(r"[{}]", "", text)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def channel_id(kind: str, name: str) -> str:
    """``nats`` + ``bars.{symbol}.{timeframe}`` → ``nats_bars_symbol_timeframe``."""
    return key(kind, name)


def message_key(ref: str) -> str:
    """``tick.v1`` → ``tick_v1``."""
    return key(ref)


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def channel_ids(flow: Flow) -> ChannelIds:
    """(kind, subject template or topic) → channel id, unique (``-2``… on collision), in document order."""
    taken: set[str] = set()
    names = [("nats", n.template) for n in flow.subjects.values() if n.published or not n.sources]
    names += [("kafka", t) for t in flow.topics]
    return {(kind, name): _unique(channel_id(kind, name), taken) for kind, name in names}


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def _package_version() -> str:
    try:
        return version("fxflow")
    except PackageNotFoundError:
        return "0.0.0"


# ---------------------------------------------------------------- servers


def _server_ids(kind: str, count: int) -> list[str]:
    return [kind] if count == 1 else [f"{kind}-{i}" for i in range(1, count + 1)]


def servers(flow: Flow) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    nats = flow.topology.nats
    if nats:
        for sid, url in zip(_server_ids("nats", len(nats.servers)), nats.servers):
            out[sid] = {"host": host_of(url), "protocol": "nats", "description": "NATS: real-time pub/sub."}
    kafka = flow.topology.kafka
    if kafka:
        secure = kafka.tls is not None or scheme_of(kafka.bootstrap[0]) in ("ssl", "sasl_ssl")
        for sid, url in zip(_server_ids("kafka", len(kafka.bootstrap)), kafka.bootstrap):
            out[sid] = {
                "host": host_of(url),
                "protocol": "kafka-secure" if secure else "kafka",
                "description": "Kafka: archive and replay.",
            }
    return out


def _server_refs(all_servers: dict[str, Any], protocol_prefix: str) -> list[dict[str, str]]:
    return [_ref("servers", sid) for sid, s in all_servers.items() if s["protocol"].startswith(protocol_prefix)]


# ---------------------------------------------------------------- channels


def _messages(refs: Iterable[str]) -> dict[str, dict[str, str]]:
    return {message_key(ref): _ref("components", "messages", message_key(ref)) for ref in refs}


def _parameters(flow: Flow, template: str, refs: list[str]) -> dict[str, dict[str, Any]]:
    values = flow.variable_values(template)
    params: dict[str, dict[str, Any]] = {}
    for name in placeholders(template):
        param: dict[str, Any] = {}
        value = values.get(name)
        if value is None:
            param["description"] = f"Undeclared template variable `{name}`."
        elif value == "*":
            param["description"] = _PARAM_DESCRIPTIONS.get(name, f"`{name}`: any value, known at run time.")
        else:
            if template == DEADLETTER_TEMPLATE and name == DEADLETTER_VARIABLE:
                param["description"] = _DEADLETTER_PARAM
            else:
                param["description"] = _PARAM_DESCRIPTIONS.get(name, f"Template variable `{name}`.")
            param["enum"] = list(value)
        if refs and all(name in flow.contracts.resolve(r).properties() for r in refs):
            param["location"] = f"$message.payload#/{name}"
        params[name] = param
    return params


def _endpoint_refs(flow: Flow, endpoints: Iterable[Endpoint]) -> list[str]:
    return flow.known_contracts(r for e in endpoints for r in e.contracts)


def nats_channels(flow: Flow, ids: ChannelIds, all_servers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    channels: dict[str, dict[str, Any]] = {}
    server_refs = _server_refs(all_servers, "nats")
    for node in flow.subjects.values():
        if ("nats", node.template) not in ids:
            continue
        refs = _endpoint_refs(flow, node.publishers) or _endpoint_refs(flow, node.subscribers)
        channel: dict[str, Any] = {"address": node.template}
        if server_refs:
            channel["servers"] = server_refs
        parameters = _parameters(flow, node.template, refs)
        if parameters:
            channel["parameters"] = parameters
        if refs:
            channel["messages"] = _messages(refs)
        meta: dict[str, Any] = {"transport": "nats", "jetstream": flow.durable(node.template)}
        if not node.published:
            meta["published"] = False
        channel["x-fxflow"] = meta
        channels[ids[("nats", node.template)]] = channel
    return channels


def _kafka_binding(topic: Topic) -> dict[str, Any]:
    config: dict[str, Any] = {"cleanup.policy": topic.cleanup.split(",")}
    if topic.retention_ms is not None:
        config["retention.ms"] = topic.retention_ms
    binding: dict[str, Any] = {}
    if topic.partitions:
        binding["partitions"] = topic.partitions
    binding["replicas"] = topic.replication
    binding["topicConfiguration"] = config
    binding["bindingVersion"] = KAFKA_BINDING_VERSION
    return binding


def kafka_channels(flow: Flow, ids: ChannelIds, all_servers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    channels: dict[str, dict[str, Any]] = {}
    server_refs = _server_refs(all_servers, "kafka")
    for node in flow.topics.values():
        declared = node.topic.contracts if node.topic else []
        refs = flow.known_contracts([*declared, *(r for e in node.producers for r in e.contracts)])
        refs = refs or _endpoint_refs(flow, node.consumers)
        channel: dict[str, Any] = {"address": node.name}
        if node.topic and node.topic.description:
            channel["description"] = node.topic.description
        if server_refs:
            channel["servers"] = server_refs
        if refs:
            channel["messages"] = _messages(refs)
        meta: dict[str, Any] = {"transport": "kafka"}
        if node.topic is None:
            meta["declared"] = False
        else:
            channel["bindings"] = {"kafka": _kafka_binding(node.topic)}
            if node.topic.key:
                meta["key"] = node.topic.key
            if node.topic.retention:
                meta["retention"] = node.topic.retention
        channel["x-fxflow"] = meta
        channels[ids[("kafka", node.name)]] = channel
    return channels


# ---------------------------------------------------------------- operations


def _targets(flow: Flow, ids: ChannelIds, e: Endpoint) -> list[str]:
    """Channel ids an endpoint talks to: its own, or for an unpublished subscription the ones it matches."""
    if e.kind == "nats" and (e.kind, e.name) not in ids:
        return [ids[("nats", s)] for s in flow.subjects[e.name].sources]
    return [ids[(e.kind, e.name)]]


def _operation_messages(flow: Flow, e: Endpoint, channel: dict[str, Any], cid: str) -> list[dict[str, str]]:
    offered = list(channel.get("messages", {}))
    wanted = [message_key(r) for r in flow.known_contracts(e.contracts)]
    if e.direction == "in" and (not e.contracts or ANY_CONTRACT in e.contracts):
        wanted = offered
    return [_ref("channels", cid, "messages", m) for m in wanted if m in offered]


def _operation_bindings(flow: Flow, e: Endpoint) -> dict[str, Any]:
    binding = e.binding
    if e.direction != "in" or binding is None:
        return {}
    if e.kind == "nats":
        replicas = flow.topology.services[e.service].replicas
        queue = binding.queue or (e.service if replicas > 1 else None)
        return {"nats": {"queue": queue, "bindingVersion": NATS_BINDING_VERSION}} if queue else {}
    if binding.group:
        group = {"type": "string", "enum": [binding.group]}
        return {"kafka": {"groupId": group, "bindingVersion": KAFKA_BINDING_VERSION}}
    return {}


def _summary(flow: Flow, e: Endpoint) -> str:
    spec = flow.spec(e.service)
    port = spec.port(e.port) if spec else None
    text = (e.binding.description if e.binding else None) or (port.description if port else "")
    verb = "publishes" if e.direction == "out" else "receives"
    return text or f"{e.service} {verb} {e.port}."


def _operation(flow: Flow, e: Endpoint, cid: str, channels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "action": "send" if e.direction == "out" else "receive",
        "channel": _ref("channels", cid),
        "summary": _summary(flow, e),
    }
    messages = _operation_messages(flow, e, channels[cid], cid)
    if messages:
        op["messages"] = messages
    if e.service == FRAMEWORK:
        op["x-fxflow"] = {"publisher": FRAMEWORK, "source": "framework/deadletter.py"}
        return op
    bindings = _operation_bindings(flow, e)
    if bindings:
        op["bindings"] = bindings
    svc = flow.topology.services[e.service]
    meta: dict[str, Any] = {
        "service": e.service,
        "node": svc.node,
        "port": e.port,
        "phase": PHASE_TITLES[svc.phase],
        "enabled": svc.enabled,
    }
    if e.kind == "nats" and channels[cid]["address"] != e.name:
        meta["subscription"] = e.name
    op["x-fxflow"] = meta
    return op


def operations(flow: Flow, ids: ChannelIds, channels: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every service's sends and receives, then the framework's; the first of duplicate (endpoint, channel) wins."""
    endpoints = [e for s in flow.services for e in flow.endpoints(s) if e.kind != "table"] + flow.framework
    seen: set[tuple[str, str, str, str]] = set()
    taken: set[str] = set()
    ops: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        word = "to" if e.direction == "out" else "from"
        for cid in _targets(flow, ids, e):
            if (e.service, e.port, word, cid) in seen:
                continue
            seen.add((e.service, e.port, word, cid))
            ops[_unique(key(e.service, e.port, word, cid), taken)] = _operation(flow, e, cid, channels)
    return ops


# ---------------------------------------------------------------- messages


def message(contract: Contract) -> dict[str, Any]:
    msg: dict[str, Any] = {"name": contract.name, "title": str(contract.schema.get("title", contract.ref))}
    if contract.schema.get("description"):
        msg["summary"] = str(contract.schema["description"])
    msg["contentType"] = "application/json"
    msg["payload"] = {"schemaFormat": SCHEMA_FORMAT, "schema": draft07_payload(contract)}
    meta: dict[str, Any] = {"contract": contract.ref, "key": contract.key_field, "time": contract.time_field}
    if contract.file is not None:
        meta["file"] = f"contracts/{contract.file.name}"
    msg["x-fxflow"] = meta
    return msg


def asyncapi_document(flow: Flow) -> dict[str, Any]:
    topo = flow.topology
    all_servers = servers(flow)
    ids = channel_ids(flow)
    channels = {**nats_channels(flow, ids, all_servers), **kafka_channels(flow, ids, all_servers)}
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{topo.name} event flows",
            "version": _package_version(),
            "description": (
                f"Messages between the {len(topo.services)} services of {topo.name}: NATS subjects (real-time) "
                "and Kafka topics (archive), and the dead letters the framework publishes. Generated from the "
                "topology; payloads are the JSON Schema 2020-12 contracts of `contracts/`, given as draft-07 "
                "(they use only keywords both drafts share, so the rules are the same)."
            ),
        },
        "defaultContentType": "application/json",
    }
    if all_servers:
        doc["servers"] = all_servers
    doc["channels"] = channels
    doc["operations"] = operations(flow, ids, channels)
    refs = flow.used_contracts()  # every channel's messages come from these
    doc["components"] = {"messages": {message_key(ref): message(flow.contracts.resolve(ref)) for ref in refs}}
    return doc


def render_yaml(flow: Flow, source: str) -> str:
    doc = json.loads(json.dumps(asyncapi_document(flow)))  # plain data, no shared objects (YAML anchors)
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return f"# {generated_note(source)}\n{body}"
