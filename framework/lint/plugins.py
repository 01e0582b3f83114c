"""FX100 to FX103: services against their node plugins (existence, params, ports)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from framework.lint.context import LintContext, did_you_mean, suggestion
from framework.lint.findings import Finding
from framework.registry import NodeSpec, Port, UnknownNode
from framework.topology.model import Binding, Service


TYPO_CUTOFF = 0.8
"""How close a disabled service's unknown node must be to a registered one to be taken for a misspelling.

Stricter than the suggestions for enabled services: a disabled service may name a node that is
simply not built yet, and ``polygon_rest`` next to ``polygon_live`` (0.75) is not a typo.
"""


def misspelt(ctx: LintContext, node: str) -> list[str]:
    """Registered nodes ``node`` is probably a misspelling of (empty when it is known or nothing is close)."""
    if node in ctx.registry or node in ctx.registry.load_errors:
        return []
    return difflib.get_close_matches(node, sorted(ctx.registry.specs), n=3, cutoff=TYPO_CUTOFF)


def disabled_services(ctx: LintContext) -> Iterator[Finding]:
    """FX100: a disabled service does not run; say why if its plugin does not exist yet."""
    for name, service in ctx.topology.services.items():
        if service.enabled:
            continue
        if service.node in ctx.registry or misspelt(ctx, service.node):
            message = "service is disabled (enabled: false) and will not run; remove `enabled: false` to run it"
        else:
            message = (
                f"service is disabled: node {service.node!r} is not built yet; "
                "set `enabled: true` once a plugin provides it"
            )
        yield ctx.warning("FX100", name, message, ("services", name, "enabled"))


def _misspelt_disabled(ctx: LintContext, name: str, service: Service) -> Finding | None:
    close = misspelt(ctx, service.node)
    if not close:
        return None
    message = (
        f"unknown node plugin {service.node!r}{suggestion(close)}; the service is disabled, but it would not "
        "start once enabled — fix `node:`"
    )
    return ctx.error("FX101", name, message, ("services", name, "node"))


def unknown_plugins(ctx: LintContext) -> Iterator[Finding]:
    """FX101: a service whose node plugin is not installed (or failed to load).

    A disabled service is only reported when its node is close to a registered one (a typo);
    otherwise FX100 says the node is not built yet.
    """
    for name, service in ctx.topology.services.items():
        if service.node in ctx.registry:
            shadowed = ctx.registry.load_errors.get(service.node)
            if shadowed and service.enabled:
                # two installed plugins claim this node name: which one runs depends on the install order
                yield ctx.error("FX101", name, f"node plugin {service.node!r} is ambiguous: {shadowed}", ("services", name, "node"))
            continue
        if not service.enabled:
            typo = _misspelt_disabled(ctx, name, service)
            if typo is not None:
                yield typo
            continue
        failure = ctx.registry.load_errors.get(service.node)
        if failure:
            message = f"node plugin {service.node!r} failed to load ({failure}); fix or reinstall the plugin"
        else:
            close = UnknownNode(service.node, ctx.registry.specs).suggestions
            message = (
                f"unknown node plugin {service.node!r}{suggestion(close)}; fix `node:`, "
                "install the plugin that provides it, or set `enabled: false`"
            )
        yield ctx.error("FX101", name, message, ("services", name, "node"))


def _specs(ctx: LintContext) -> Iterator[tuple[str, Service, NodeSpec]]:
    for name, service in ctx.topology.services.items():
        spec = ctx.spec(name)
        if spec is not None:
            yield name, service, spec


def _param_message(node: str, spec: NodeSpec, err: Any, dotted: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        accepted = sorted(spec.params.model_fields)
        known = ", ".join(accepted) if accepted else "none"
        return f"node {node!r} has no param {dotted!r}{did_you_mean(dotted.split('.')[-1], accepted)}; accepted: {known}"
    if kind == "missing":
        return f"node {node!r} needs param {dotted!r}; add it under params"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return f"params.{dotted}: {err['msg']}{shown}; fix the value"


def params(ctx: LintContext) -> Iterator[Finding]:
    """FX102: each error of the node's params schema, at the line of the offending param.

    A schema that ignores unknown keys is a warning: a misspelt param would be dropped silently.
    """
    for name, service, spec in _specs(ctx):
        if spec.params.model_config.get("extra") != "forbid":
            yield ctx.warning(
                "FX102",
                name,
                f"node {service.node!r}: its params model accepts unknown keys, so a misspelt param is ignored "
                "silently; the plugin should set model_config = ConfigDict(extra='forbid')",
                ("services", name, "node"),
            )
        try:
            spec.params.model_validate(service.params)
        except ValidationError as exc:
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                dotted = ".".join(loc) or "params"
                message = _param_message(service.node, spec, err, dotted)
                yield ctx.error("FX102", name, message, ("services", name, "params", *loc))


def _bound(binding: Binding | None) -> bool:
    return binding is not None and bool(binding.subjects or binding.topics or binding.table_names)


def _stray_ports(name: str, service: Service, spec: NodeSpec, ctx: LintContext) -> Iterator[Finding]:
    sides = (("inputs", service.inputs, spec.inputs, spec.outputs), ("outputs", service.outputs, spec.outputs, spec.inputs))
    for section, bound, own, other in sides:
        other_section = "outputs" if section == "inputs" else "inputs"
        for port in bound:
            if port in own:
                continue
            path = ("services", name, section, port)
            if port in other:
                message = f"{port!r} is an {other_section[:-1]} port of node {service.node!r}; move it under {other_section}"
            else:
                declared = ", ".join(sorted(own)) or "none"
                message = (
                    f"node {service.node!r} has no {section[:-1]} port {port!r}{did_you_mean(port, own)}; "
                    f"declared {section}: {declared} — rename or remove the binding"
                )
            yield ctx.error("FX103", name, message, path)


def _unbound_ports(name: str, service: Service, spec: NodeSpec, ctx: LintContext) -> Iterator[Finding]:
    sides: tuple[tuple[str, dict[str, Binding], dict[str, Port]], ...] = (
        ("inputs", service.inputs, spec.inputs),
        ("outputs", service.outputs, spec.outputs),
    )
    for section, bound, declared in sides:
        for port, decl in declared.items():
            if not decl.required or _bound(bound.get(port)):
                continue
            contract = "|".join(decl.contracts)
            where = ("services", name, section, port) if port in bound else ("services", name, section)
            message = (
                f"required {section[:-1]} port {port!r} ({contract}) of node {service.node!r} is not bound; "
                f"add `{section}: {{{port}: {{nats: ...}}}}` (or kafka/tables)"
            )
            yield ctx.error("FX103", name, message, where)


def ports(ctx: LintContext) -> Iterator[Finding]:
    """FX103: bindings must name declared ports of the right direction; required ports must be bound."""
    for name, service, spec in _specs(ctx):
        yield from _stray_ports(name, service, spec, ctx)
        if service.enabled:
            yield from _unbound_ports(name, service, spec, ctx)
