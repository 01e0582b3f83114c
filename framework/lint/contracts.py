"""FX104 (unknown contract refs) and FX203 (contract mismatches along the wiring and against the plugins)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from framework.lint.context import ANY, LintContext, contract_name, did_you_mean
from framework.lint.findings import Finding
from framework.wiring import Endpoint


def _unknown(ctx: LintContext, refs: Sequence[str]) -> Iterator[str]:
    for ref in refs:
        if ref != ANY and ref not in ctx.contracts:
            yield ref


def _hint(ctx: LintContext, ref: str) -> str:
    refs = ctx.contracts.refs()
    known = [*refs, *(contract_name(r) for r in refs)]
    return f"unknown contract {ref!r}{did_you_mean(ref, known)}"


def unknown_contracts(ctx: LintContext) -> Iterator[Finding]:
    """FX104: every contract ref must name a file in contracts/ (or be ``any``)."""
    topo = ctx.topology
    for name, topic in topo.topics.items():
        for ref in _unknown(ctx, topic.contracts):
            yield ctx.error("FX104", name, f"topic {name!r}: {_hint(ctx, ref)}; fix `contract:`", ("topics", name, "contract"))
    for name, table in topo.tables.items():
        for ref in _unknown(ctx, [table.contract] if table.contract else []):
            yield ctx.error("FX104", name, f"table {name!r}: {_hint(ctx, ref)}; fix `contract:`", ("tables", name, "contract"))
    for name, service in topo.services.items():
        for section, ports in (("inputs", service.inputs), ("outputs", service.outputs)):
            for port, binding in ports.items():
                for ref in _unknown(ctx, binding.contracts):
                    message = f"port {port!r}: {_hint(ctx, ref)}; fix `contract:`"
                    yield ctx.error("FX104", name, message, ("services", name, section, port, "contract"))
        spec = ctx.spec(name)
        if spec is None:
            continue
        for port, decl in sorted({**spec.inputs, **spec.outputs}.items()):
            for ref in _unknown(ctx, decl.contracts):
                message = f"node {service.node!r} port {port!r}: {_hint(ctx, ref)}; fix the plugin's NodeSpec"
                yield ctx.error("FX104", name, message, ("services", name, "node"))


def _shown(refs: Sequence[str]) -> str:
    return "|".join(refs)


def _declared(ctx: LintContext, ep: Endpoint) -> tuple[str, ...]:
    """Contracts the topic or table an endpoint uses declares (empty when undeclared or silent)."""
    if ep.kind == "kafka" and ep.name in ctx.topology.topics:
        return tuple(ctx.topology.topics[ep.name].contracts)
    if ep.kind == "table" and ep.name in ctx.topology.tables:
        contract = ctx.topology.tables[ep.name].contract
        return (contract,) if contract else ()
    return ()


def _between_ports(ctx: LintContext) -> Iterator[Finding]:
    for link in ctx.links:
        pub, sub = link.publisher, link.subscriber
        if pub.service == sub.service or _declared(ctx, pub):
            continue
        why = ctx.mismatch(pub.contracts, sub.contracts)
        if why is None:
            continue
        via = f"subject {pub.name!r}" if pub.kind == "nats" else f"topic {pub.name!r}"
        message = (
            f"input {sub.port!r} ({_shown(sub.contracts)}) receives {via} from {pub.service} "
            f"({_shown(pub.contracts)}): {why}; narrow the subscription or change one of the contracts"
        )
        yield ctx.error("FX203", sub.service, message, ctx.where(sub))


def _against_storage(ctx: LintContext) -> Iterator[Finding]:
    for ep in ctx.wiring.endpoints:
        declared = _declared(ctx, ep)
        if not declared or not ep.contracts:
            continue
        kind = "topic" if ep.kind == "kafka" else "table"
        if ep.direction == "out":
            why = ctx.mismatch(ep.contracts, declared)
            verb = "writes"
        else:
            why = ctx.mismatch(declared, ep.contracts)
            verb = "reads"
        if why is None:
            continue
        label = "reads" if ep.binding is None else f"port {ep.port!r}"
        message = (
            f"{label} ({_shown(ep.contracts)}) {verb} {kind} {ep.name!r} ({_shown(declared)}): {why}; "
            f"change the port's or the {kind}'s contract"
        )
        yield ctx.error("FX203", ep.service, message, ctx.where(ep))


def _resolved(ctx: LintContext, refs: Sequence[str]) -> set[str] | None:
    """Full refs (``tick`` → ``tick.v1``) of known contracts; None when ``any`` is among them."""
    if ANY in refs:
        return None
    return {found.ref for ref in refs if (found := ctx.contract(ref)) is not None}


def _against_plugins(ctx: LintContext) -> Iterator[Finding]:
    """A binding's ``contract:`` the node's own port declaration contradicts (the declaration wins at run time)."""
    for name, service in ctx.topology.services.items():
        spec = ctx.spec(name)
        if spec is None:
            continue
        for section, ports, declared in (("inputs", service.inputs, spec.inputs), ("outputs", service.outputs, spec.outputs)):
            for port, binding in ports.items():
                if port not in declared or not binding.contracts:
                    continue
                stated, own = _resolved(ctx, binding.contracts), _resolved(ctx, declared[port].contracts)
                if stated is None or own is None or stated <= own:
                    continue
                message = (
                    f"port {port!r}: `contract: {_shown(binding.contracts)}` contradicts node {service.node!r}, whose "
                    f"port carries {_shown(declared[port].contracts)}; the node's declaration is what runs, so fix "
                    "or remove the binding's `contract:`"
                )
                yield ctx.error("FX203", name, message, ("services", name, section, port, "contract"))


def mismatches(ctx: LintContext) -> Iterator[Finding]:
    """FX203: contracts must agree along every link.

    A topic or table that declares a contract is the interface: ports are checked against
    it, not against each other. Links without a declared contract are checked port to port.
    Self-links are FX204's business. A binding's own ``contract:`` must agree with the node's
    declaration of the port, which is the one that runs.
    """
    yield from _between_ports(ctx)
    yield from _against_storage(ctx)
    yield from _against_plugins(ctx)

