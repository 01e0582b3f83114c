"""FX401: template variables without values or with unbounded ones, and literal pairs/timeframes the topology does not declare."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from framework.lint.context import TOPOLOGY, LintContext, did_you_mean
from framework.lint.findings import Finding
from framework.topology.model import RuntimeVariable
from framework.topology.templates import ANY_TOKEN, is_template, placeholders
from framework.wiring import SYMBOL, TIMEFRAME, Endpoint

SYMBOL_LIKE = re.compile(r"^[A-Z0-9]{6,}$")
TIMEFRAME_LIKE = re.compile(r"^\d+[mhdw]$")
VALUE_PARAMS = {"pairs": SYMBOL, "symbols": SYMBOL, "timeframes": TIMEFRAME}


def _no_values(ctx: LintContext, ep: Endpoint, var: str) -> str:
    if var in ctx.topology.variables:
        return f"subject {ep.name!r} uses {{{var}}}, whose `variables.{var}` list is empty; give it values"
    known = [SYMBOL, TIMEFRAME, *ctx.topology.variables]
    return (
        f"subject {ep.name!r} uses {{{var}}}, which has no values{did_you_mean(var, known)}; declare it under "
        f"`variables:` (a list of values, or {{identifier: true}} for a run-time identifier such as a run id)"
    )


def _missing(ctx: LintContext) -> Iterator[Finding]:
    for ep in ctx.wiring.endpoints:
        for var in ep.missing_variables:
            yield ctx.error("FX401", ep.service, _no_values(ctx, ep, var), ctx.where(ep))


def _unbounded_topology_variable(ctx: LintContext, ep: Endpoint, var: str) -> str | None:
    declared = ctx.topology.variables.get(var)
    if declared == ANY_TOKEN or (isinstance(declared, RuntimeVariable) and not declared.identifier):
        return (
            f"publication {ep.name!r} (output {ep.port!r}) makes one subject per value of {{{var}}}, a run-time value "
            f"that is not an identifier: unbounded subject cardinality; move the value into the payload, or declare "
            f"`variables.{var}: {{identifier: true}}` if each value names a long-lived entity such as a run"
        )
    return None


def _unbounded(ctx: LintContext) -> Iterator[Finding]:
    """Publications over a run-time variable not declared an identifier, and bindings that widen a variable to '*'."""
    for ep in ctx.wiring.select(direction="out", kind="nats"):
        scoped = ep.binding.values if ep.binding is not None else {}
        for var in placeholders(ep.name):
            message = None if var in scoped else _unbounded_topology_variable(ctx, ep, var)
            if message:
                yield ctx.error("FX401", ep.service, message, ctx.where(ep))
    for name, service in ctx.topology.services.items():
        for section, ports in (("inputs", service.inputs), ("outputs", service.outputs)):
            for port, binding in ports.items():
                for var, value in binding.values.items():
                    if value != ANY_TOKEN:
                        continue
                    message = (
                        f"port {port!r}: `values: {{{var}: '*'}}` widens {{{var}}} to any run-time value for this "
                        "binding; bindings may only narrow a variable to a list — drop it, or declare a run-time "
                        f"identifier once as `variables.{var}: {{identifier: true}}`"
                    )
                    yield ctx.error("FX401", name, message, ("services", name, section, port, "values", var))


def _literal(ctx: LintContext, ep: Endpoint, token: str) -> str | None:
    topo = ctx.topology
    if SYMBOL_LIKE.match(token) and token not in topo.instruments:
        return (
            f"subject {ep.name!r} names {token!r}, which is not in `instruments`"
            f"{did_you_mean(token, topo.instruments)}; use {{symbol}} or declare the instrument"
        )
    if TIMEFRAME_LIKE.match(token) and token not in topo.timeframes:
        return (
            f"subject {ep.name!r} names timeframe {token!r}, which is not in `timeframes` "
            f"({', '.join(topo.timeframes)}); use {{timeframe}} or declare it"
        )
    return None


def _literals(ctx: LintContext) -> Iterator[Finding]:
    for ep in ctx.wiring.select(kind="nats"):
        for token in ep.name.split("."):
            if is_template(token):
                continue
            message = _literal(ctx, ep, token)
            if message:
                yield ctx.error("FX401", ep.service, message, ctx.where(ep))


def _declared_values(ctx: LintContext, kind: str) -> Sequence[str]:
    return list(ctx.topology.instruments) if kind == SYMBOL else list(ctx.topology.timeframes)


def _param_values(value: Any) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(value, str):
        return [((), value)]
    if isinstance(value, list):
        return [((str(i),), v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def _walk_params(params: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """``(key path, kind, value)`` for every pairs/symbols/timeframes value, at any depth."""
    if not isinstance(params, dict):
        return
    for key, value in params.items():
        here = (*path, str(key))
        kind = VALUE_PARAMS.get(str(key))
        if kind is not None:
            for sub, item in _param_values(value):
                yield (*here, *sub), kind, item
        else:
            yield from _walk_params(value, here)


def _params(ctx: LintContext) -> Iterator[Finding]:
    for name, service in ctx.topology.services.items():
        for path, kind, value in _walk_params(service.params, ()):
            declared = _declared_values(ctx, kind)
            if value == "*" or value in declared:
                continue
            section = "instruments" if kind == SYMBOL else "timeframes"
            message = (
                f"params.{'.'.join(path)} names {value!r}, which is not in `{section}`"
                f"{did_you_mean(value, declared)}; fix it or declare it"
            )
            yield ctx.error("FX401", name, message, ("services", name, "params", *path))


def _pairs(ctx: LintContext) -> Iterator[Finding]:
    instruments = ctx.topology.instruments
    for pair in ctx.pairs or ():
        if pair in instruments:
            continue
        message = f"pairs selects {pair!r}, which is not in `instruments`{did_you_mean(pair, instruments)}; fix the selection"
        loc = ctx.source.locations.get(("pairs",))
        file, line = (loc.file, loc.line or None) if loc else (None, None)
        yield Finding(level="error", code="FX401", service=TOPOLOGY, message=message, file=file, line=line)


def variables(ctx: LintContext) -> Iterator[Finding]:
    """FX401: every template variable has values, bounded ones in publications; literal pairs and timeframes are declared."""
    yield from _missing(ctx)
    yield from _unbounded(ctx)
    yield from _literals(ctx)
    yield from _params(ctx)
    yield from _pairs(ctx)
