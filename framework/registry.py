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
import os
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from framework.node import Node

ENTRY_POINT_GROUP = "fxflow.nodes"
_IMPORT_MACHINERY = os.path.dirname(importlib.__file__) + os.sep


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


@dataclass(frozen=True, slots=True)
class Serves:
    """Where a ``server`` node listens: the names of its params holding the bind address, the port and
    the environment variable of its access token. The deploy generator binds it to every interface
    inside its container, publishes the port on the host's loopback and makes the token required."""

    port_param: str = "port"
    host_param: str = "host"
    token_env_param: str | None = "token_env"


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
    role: Literal["source", "transform", "sink", "risk_gate", "execution", "batch", "server"] = "transform"
    """``server``: a long-running ``run()`` (an HTTP server) that is no source: it does not keep a
    bounded run alive and never holds simulated time back."""
    serves: Serves | None = None
    """For a ``server``: how it is reached from outside (see :class:`Serves`)."""
    concurrent: bool = False
    """True if the node's handlers may run at the same time (it guards its own state): it skips
    the mailbox that otherwise gives a node one message at a time."""
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
        """Every spec the installed distributions declare; a broken plugin is recorded, not fatal.

        A plugin is refused (recorded in ``load_errors``, one line each) when it cannot be
        imported, is not a :class:`NodeSpec`, is registered under an entry-point name other
        than its ``NodeSpec.name`` (the topology would have to use a name its ``pyproject.toml``
        does not show), or declares a node name another plugin already took; the first one
        found keeps the name.
        """
        registry = cls()
        origins: dict[str, str] = {}
        for ep in entry_points(group=group):
            where = _origin(ep)
            try:
                spec = ep.load()
            except Exception as exc:  # a broken third-party plugin must not stop the others
                registry.load_errors[ep.name] = f"{where}: {_failure(exc)}"
                continue
            if not isinstance(spec, NodeSpec):
                registry.load_errors[ep.name] = f"{where} is a {type(spec).__name__}, not a NodeSpec"
            elif spec.name != ep.name:
                registry.load_errors[ep.name] = (
                    f"{where} declares node {spec.name!r}; the entry-point name and NodeSpec.name must be "
                    "the same, rename one"
                )
            elif spec.name in registry.specs and registry.specs[spec.name] is not spec:
                registry.load_errors[spec.name] = (
                    f"two plugins declare node {spec.name!r}: {origins[spec.name]} is used, {where} is ignored; "
                    "uninstall one or rename its node"
                )
            else:
                registry.specs[spec.name] = spec
                origins[spec.name] = where
        return registry

    def register(self, spec: NodeSpec) -> None:
        """Add a spec built in code (tests, embedding); a second spec under a taken name is a bug, so it raises."""
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


def _origin(ep: EntryPoint) -> str:
    """``entry point NAME = module:attr (distribution version)``, for messages naming a plugin."""
    dist = getattr(ep, "dist", None)
    owner = f" ({dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{owner}"


def _failure(exc: BaseException) -> str:
    """One line: the exception and, when it arose in the plugin's code, the file:line it arose at.

    The first frame is :meth:`Registry.discover` itself and the import machinery says nothing
    about the plugin, so both are skipped.
    """
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)[1:]
        if not frame.filename.startswith("<") and not frame.filename.startswith(_IMPORT_MACHINERY)
    ]
    at = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {text}{at}"
