"""Node plugins, found through the ``fxflow.nodes`` entry-point group.

An entry point names a :class:`NodeSpec`: the node's *declaration* (params schema, typed
ports, description). The implementation is referenced by an import string and loaded only
when a runtime instantiates the node, so lint and docs read every declaration without
importing a node's heavy dependencies (xgboost, torch…).

``pyproject.toml`` of a plugin::

    [project.entry-points."fxflow.nodes"]
    my_node = "my_package.my_node.spec:SPEC"
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from framework.node import Node

ENTRY_POINT_GROUP = "fxflow.nodes"
log = logging.getLogger(__name__)


class NoParams(BaseModel):
    """Params schema of a node that takes none (unknown keys are still rejected)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Port:
    """A typed port. ``contract`` lists the contract refs it carries (``"any"`` accepts everything)."""

    contract: str | tuple[str, ...]
    description: str = ""
    required: bool = True

    @property
    def contracts(self) -> tuple[str, ...]:
        return (self.contract,) if isinstance(self.contract, str) else tuple(self.contract)


@dataclass(frozen=True)
class NodeSpec:
    """What a node plugin declares about itself.

    ``role`` marks nodes the lint treats specially: ``risk_gate`` (FX501: every path from a
    signal to an order passes one), ``execution`` (turns approved signals into orders).
    """

    name: str
    factory: str
    description: str = ""
    params: type[BaseModel] = NoParams
    inputs: dict[str, Port] = field(default_factory=dict)
    outputs: dict[str, Port] = field(default_factory=dict)
    role: Literal["source", "transform", "sink", "risk_gate", "execution", "batch"] = "transform"
    extras: tuple[str, ...] = ()
    """Optional-dependency groups the implementation needs (``pip install fxflow[ml]``)."""

    def load(self) -> type[Node]:
        """Import the implementation (this is where heavy dependencies load)."""
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (install the extra: pip install 'fxflow[{','.join(self.extras)}]')" if self.extras else ""
            raise ImportError(f"node {self.name!r}: cannot import {module_name}: {exc}{hint}") from exc
        node_cls = getattr(module, attr)
        node_cls.spec = self
        return node_cls

    def port(self, name: str) -> Port | None:
        return self.inputs.get(name) or self.outputs.get(name)


class UnknownNode(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown node plugin {name!r}{hint}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Registry:
    specs: dict[str, NodeSpec] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def discover(cls, group: str = ENTRY_POINT_GROUP) -> Registry:
        """Every spec the installed distributions declare; broken plugins are recorded, not fatal."""
        registry = cls()
        for ep in entry_points(group=group):
            try:
                spec = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop the others
                registry.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("node plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            if not isinstance(spec, NodeSpec):
                registry.load_errors[ep.name] = f"{ep.value} is a {type(spec).__name__}, not a NodeSpec"
                continue
            registry.register(spec)
        return registry

    def register(self, spec: NodeSpec) -> None:
        if spec.name in self.specs and self.specs[spec.name] is not spec:
            raise ValueError(f"node plugin {spec.name!r} is registered twice")
        self.specs[spec.name] = spec

    def get(self, name: str) -> NodeSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownNode(name, self.specs) from None

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(self.specs.values())

    def names(self) -> list[str]:
        return sorted(self.specs)
