"""Topology lint: wiring, contracts, naming and the risk gate, checked before anything runs.

Each rule is a function ``(LintContext) -> Iterable[Finding]`` in a small module per group;
:data:`RULES` lists them in code order. ``fxrun lint`` and CI call :func:`lint`.
"""

from __future__ import annotations

from collections.abc import Sequence

from framework.contracts import ContractRegistry
from framework.lint import contracts as contract_rules
from framework.lint import evolution, kafka, names, plugins, risk, subjects, tables, templates
from framework.lint.context import LintContext, Rule
from framework.lint.findings import (
    Finding,
    exit_code,
    findings_json,
    format_finding,
    sort_key,
)
from framework.registry import Registry
from framework.topology.model import Topology
from framework.topology.source import SourceMap

RULES: tuple[Rule, ...] = (
    plugins.disabled_services,  # FX100
    plugins.unknown_plugins,  # FX101
    plugins.params,  # FX102
    plugins.ports,  # FX103
    contract_rules.unknown_contracts,  # FX104
    evolution.published_contracts,  # FX105
    subjects.unreachable,  # FX201
    subjects.unconsumed,  # FX202
    contract_rules.mismatches,  # FX203
    subjects.self_loops,  # FX204
    subjects.malformed,  # FX205
    kafka.topics,  # FX301
    tables.tables,  # FX302
    templates.variables,  # FX401
    names.duplicates,  # FX402
    risk.risk_gate,  # FX501
)


def lint(
    topology: Topology,
    source: SourceMap,
    registry: Registry,
    contracts: ContractRegistry,
    pairs: Sequence[str] | None = None,
) -> list[Finding]:
    """Every finding of every rule, without repeats, sorted by file, line, then code."""
    ctx = LintContext(topology, source, registry, contracts, pairs)
    found = {finding for rule in RULES for finding in rule(ctx)}
    return sorted(found, key=sort_key)


__all__ = ["RULES", "Finding", "LintContext", "exit_code", "findings_json", "format_finding", "lint"]
