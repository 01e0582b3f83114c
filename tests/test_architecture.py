"""The layering the design rests on: framework/ never imports nodes/, nodes reach transports and stores only through
their context, and lint and docgen (which only read a topology) import nothing that runs one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENT_LIBRARIES = ("nats", "aiokafka", "clickhouse_connect", "asyncpg", "redis", "framework.stores", "framework.transport")


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def offending(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_framework_never_imports_nodes() -> None:
    assert offending("framework", ("nodes",)) == []


def test_nodes_never_import_a_transport_or_a_database_client() -> None:
    assert offending("nodes", CLIENT_LIBRARIES) == []


RUNTIME_MODULES = (
    "framework.runtime",
    "framework.context",
    "framework.node",
    "framework.deadletter",
    "framework.refill",
    "framework.sequencing",
    "framework.observability",
    "framework.transport",
)
"""Modules that run a topology; what only reads one (lint, docgen) takes its names from static modules."""


def test_lint_and_docgen_import_no_runtime_module() -> None:
    assert offending("framework/lint", RUNTIME_MODULES) == []
    assert offending("framework/docgen", RUNTIME_MODULES) == []
