"""Documentation generated from the topology: ``docs/architecture.md`` and ``docs/asyncapi.yaml``.

Both renderings are deterministic (no timestamps, topology order or sorted order everywhere),
so ``fxrun docs --check`` can compare them byte for byte with the committed files. Hosts are
shown without credentials and secret-looking params are hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from framework.contracts import ContractRegistry
from framework.docgen.asyncapi import render_yaml
from framework.docgen.flow import SOURCE, Flow, build_flow
from framework.docgen.markdown import render_markdown
from framework.registry import Registry
from framework.topology.model import Topology

__all__ = ["ARCHITECTURE", "ASYNCAPI", "check_docs", "render_all", "render_architecture", "render_asyncapi", "write_docs"]

ARCHITECTURE = "architecture.md"
ASYNCAPI = "asyncapi.yaml"
_RENDERERS: dict[str, Callable[[Flow, str], str]] = {ARCHITECTURE: render_markdown, ASYNCAPI: render_yaml}


def render_architecture(
    topology: Topology, registry: Registry, contracts: ContractRegistry, *, source: str = SOURCE
) -> str:
    return render_markdown(build_flow(topology, registry, contracts), source)


def render_asyncapi(
    topology: Topology, registry: Registry, contracts: ContractRegistry, *, source: str = SOURCE
) -> str:
    return render_yaml(build_flow(topology, registry, contracts), source)


def render_all(
    topology: Topology, registry: Registry, contracts: ContractRegistry, *, source: str = SOURCE
) -> dict[str, str]:
    """File name → text of every generated document."""
    flow = build_flow(topology, registry, contracts)
    return {name: render(flow, source) for name, render in _RENDERERS.items()}


def write_docs(
    out_dir: Path, topology: Topology, registry: Registry, contracts: ContractRegistry, *, source: str = SOURCE
) -> list[Path]:
    """Write every document into ``out_dir`` (files already up to date are left untouched)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_all(topology, registry, contracts, source=source).items():
        path = out_dir / name
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        paths.append(path)
    return paths


def check_docs(
    out_dir: Path, topology: Topology, registry: Registry, contracts: ContractRegistry, *, source: str = SOURCE
) -> list[str]:
    """File names (``architecture.md``…) in ``out_dir`` that are missing or differ from a fresh render."""
    stale = []
    for name, text in render_all(topology, registry, contracts, source=source).items():
        path = out_dir / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            stale.append(name)
    return stale
