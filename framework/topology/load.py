"""Compose a run from ``topology/`` with Hydra and validate it, keeping file:line for every error.

Layout of a project::

    topology/services.yaml   the whole system (instruments, stores, topics, tables, services)
    topology/demo.yaml       a profile: ``defaults: [services, _self_]`` plus its overrides
    topology/live.yaml       …
    topology/backtest.yaml   …

The primary config is registered in Hydra's ConfigStore (it is generic: the profile choice
and the run options), so ``fxrun topology=live pairs=[EURUSD,XAUUSD]`` works as Hydra users
expect while the project keeps only its own YAML.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framework.errors import UserError, UserErrors
from framework.topology.checks import (
    check_columns,
    check_section_types,
    check_declared_services,
    check_duplicates,
    check_selection,
    in_document,
)
from framework.topology.compose import (
    DEFAULT_PROFILE,
    ENV_DEFAULTS,
    OVERRIDE_FILE,
    PROFILE_GROUP,
    RUN_DEFAULTS,
    compose_file,
    compose_layers,
    compose_profile,
)
from framework.topology.model import RunConfig, Topology
from framework.topology.source import KeyPath, Location, SourceMap, display_path, read_yaml

__all__ = [
    "DEFAULT_PROFILE",
    "OVERRIDE_FILE",
    "PROFILE_GROUP",
    "RUN_DEFAULTS",
    "LoadedRun",
    "find_project",
    "load_file",
    "load_run",
    "load_topology_file",
    "validation_errors",
]


@dataclass(frozen=True, slots=True)
class LoadedRun:
    """A validated run plus where everything in it came from."""

    config: RunConfig
    source: SourceMap
    project: Path
    profile: str
    files: tuple[Path, ...]

    @property
    def topology(self) -> Topology:
        return self.config.topology


def find_project(start: Path | None = None) -> Path:
    """The directory holding ``topology/services.yaml``: ``$FXFLOW_PROJECT``, else cwd or a parent."""
    env = os.environ.get("FXFLOW_PROJECT")
    if env:
        path = Path(env)
        if not (path / PROFILE_GROUP).is_dir():
            raise UserError(f"FXFLOW_PROJECT={env} has no {PROFILE_GROUP}/ directory")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PROFILE_GROUP / "services.yaml").is_file():
            return candidate
    raise UserError(
        f"no {PROFILE_GROUP}/services.yaml in {here} or its parents; run fxrun from an fxflow project "
        "or set FXFLOW_PROJECT"
    )


def _profile_choice(overrides: Sequence[str]) -> str:
    return _chosen_profile(overrides) or DEFAULT_PROFILE


def _chosen_profile(overrides: Sequence[str]) -> str | None:
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") == PROFILE_GROUP:
            return value
    return None


def _profile_files(topology_dir: Path, profile: str) -> list[Path]:
    """Files the profile composes, in merge order (its defaults first, then itself)."""
    path = topology_dir / f"{profile}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in topology_dir.glob("*.yaml") if p.stem != "services")
        raise UserError(f"unknown profile topology={profile}; available: {', '.join(options)}")
    data, _ = read_yaml(path)
    files: list[Path] = []
    defaults = data.get("defaults", []) if isinstance(data, dict) else []
    self_seen = False
    for entry in defaults or []:
        if entry == "_self_":
            files.append(path)
            self_seen = True
        elif isinstance(entry, str):
            files.append(topology_dir / f"{entry.lstrip('/')}.yaml")
    if not self_seen:
        files.append(path)
    return files


def _source_map(parts: Iterable[SourceMap], overrides: Sequence[str]) -> SourceMap:
    """The files' maps under ``topology``, then every override path (and each new prefix of it)
    as ``<command line>``, then the run options whose value comes from the environment."""
    smap = SourceMap()
    for part in parts:
        part.locations.pop(("defaults",), None)
        smap.merge(part, (PROFILE_GROUP,))
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.lstrip("+~")
        if not sep or key == PROFILE_GROUP:
            continue
        path = tuple(key.split("."))
        for end in range(1, len(path)):
            smap.locations.setdefault(path[:end], Location(OVERRIDE_FILE, 0))
        smap.locations[path] = Location(OVERRIDE_FILE, 0)
        value = _override_value(item)
        if isinstance(value, list):  # a list is replaced whole: nothing under it comes from a file any more
            for old in [p for p in smap.locations if p[: len(path)] == path and len(p) > len(path)]:
                del smap.locations[old]
        for inside in _paths_inside(value, path):  # a mapping is merged: the keys it names come from the command line
            smap.locations[inside] = Location(OVERRIDE_FILE, 0)
    for key, env in ENV_DEFAULTS.items():
        if (key,) not in smap.locations and env in os.environ:
            smap.locations[(key,)] = Location(f"environment variable {env}", 0)
    return smap


def _override_value(item: str) -> Any:
    """The value of a Hydra override (a dict or list for ``key={...}`` / ``key=[...]``); None when it cannot be parsed
    here (composition reports that override itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(item).value()
    except Exception:  # noqa: BLE001 - any parse failure: the composition's own error names the override
        return None


def _paths_inside(value: Any, path: KeyPath) -> Iterator[KeyPath]:
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        here = (*path, str(key))
        yield here
        yield from _paths_inside(inner, here)


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _data_path(data: Any, loc: Sequence[Any]) -> list[str]:
    """The part of a pydantic error location that exists in the data (drops union tags)."""
    path: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(str(part))
        elif isinstance(node, dict) and isinstance(part, str) and not path[-1:] == [part]:
            if part in _UNION_TAGS or "[" in part:
                continue
            path.append(part)
            break
    return path


def validation_errors(exc: ValidationError, data: Any, smap: SourceMap) -> UserErrors:
    """One UserError per distinct pydantic error, with file, line and the dotted path inside the document."""
    errors: list[UserError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        path = _data_path(data, err["loc"])
        dotted = ".".join(in_document(path))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key {path[-1]!r}" if path else "unknown key"
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif err["type"] == "missing":
            message = f"missing required key {str(err['loc'][-1])!r}"
        elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
            message = f"{message} (got {err['input']!r})"
        if (dotted, message) in seen:
            continue
        seen.add((dotted, message))
        loc = smap.find(path)
        errors.append(
            UserError(
                message,
                file=loc.file if loc else None,
                line=loc.line if loc and loc.line else None,
                path=dotted or None,
            )
        )
    return UserErrors(errors)


def _validate(data: dict[str, Any], smap: SourceMap) -> RunConfig:
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_errors(exc, data, smap) from None
    check_selection(config, smap)
    check_columns(config, smap)
    return config


def _declared_services(parts: Iterable[SourceMap]) -> set[str]:
    return {path[1] for part in parts for path in part.locations if len(path) == 2 and path[0] == "services"}


def _services(data: dict[str, Any]) -> Any:
    topology = data.get(PROFILE_GROUP)
    return topology.get("services") if isinstance(topology, dict) else None


def load_run(overrides: Sequence[str] = (), project: Path | None = None) -> LoadedRun:
    """Compose ``topology=<profile>`` plus overrides, then validate it strictly."""
    project = project or find_project()
    profile = _profile_choice(overrides)
    files = _profile_files(project / PROFILE_GROUP, profile)
    return _load_profile(project, profile, files, overrides, lambda smap: compose_profile(project, overrides, smap))


def _load_profile(
    project: Path, profile: str, files: Sequence[Path], overrides: Sequence[str], compose: Callable[[SourceMap], dict[str, Any]]
) -> LoadedRun:
    """A profile's files (in merge order) composed by ``compose`` and validated, keeping file:line for every key."""
    documents = [read_yaml(file) for file in files]
    check_section_types(documents)
    parts = [part for _, part in documents]
    smap = _source_map(parts, overrides)
    check_duplicates(smap)
    data = compose(smap)
    profile_file = project / PROFILE_GROUP / f"{profile}.yaml"
    bases = [(file, part) for file, part in zip(files, parts) if file != profile_file] or list(zip(files, parts))
    names = ", ".join(display_path(file) for file, _ in bases)
    check_declared_services(_services(data), _declared_services(part for _, part in bases), names, smap)
    config = _validate(data, smap)
    return LoadedRun(config=config, source=smap, project=project, profile=profile, files=tuple(files))


def load_file(path: Path, overrides: Sequence[str] = ()) -> LoadedRun:
    """What ``fxrun lint FILE [overrides]`` checks: a self-contained topology document, or a profile.

    A profile is composed from its own ``topology/`` directory (which must hold the
    ``services.yaml`` it builds on), never from another project's profile of the same name.
    A document is checked against the current project (its contracts and plugins); with
    ``topology=<profile>`` among the overrides, that profile of the project is composed over
    it, the document taking the place of ``services.yaml``.
    """
    data, part = read_yaml(path)
    if _is_profile(data):
        topology_dir = path.resolve().parent
        if topology_dir.name != PROFILE_GROUP or not (topology_dir / "services.yaml").is_file():
            raise UserError(
                f"this is a profile (it has a defaults list), so it composes with the {PROFILE_GROUP}/services.yaml "
                f"beside it; put it in a {PROFILE_GROUP}/ directory next to services.yaml",
                file=display_path(path),
            )
        _refuse_profile_choice(path, overrides)
        return load_run([f"{PROFILE_GROUP}={path.stem}", *overrides], topology_dir.parent)
    profile = _chosen_profile(overrides)
    if profile is not None:
        return _load_under_profile(path, profile, overrides, find_project())
    return _load_document(path, data, part, overrides, resolve=True, project=find_project())


def _load_under_profile(path: Path, profile: str, overrides: Sequence[str], project: Path) -> LoadedRun:
    """The project's profile composed over the document at ``path``, in place of its ``services.yaml``."""
    topology_dir = project / PROFILE_GROUP
    base = topology_dir / "services.yaml"
    files = _profile_files(topology_dir, profile)
    if base not in files:
        raise UserError(
            f"profile topology={profile} does not build on {PROFILE_GROUP}/services.yaml, so {display_path(path)} "
            "cannot take its place; lint the file or the profile alone",
            file=OVERRIDE_FILE,
        )
    files = [path if file == base else file for file in files]
    rest = [item for item in overrides if item.partition("=")[0].lstrip("+~") != PROFILE_GROUP]
    return _load_profile(project, profile, files, overrides, lambda smap: compose_layers(files, rest, smap))


def load_topology_file(path: Path, *, resolve: bool = True) -> tuple[Topology, SourceMap]:
    """Validate one self-contained topology document, its interpolations resolved against the run defaults.

    ``resolve=False`` checks the interpolations but keeps them as written where the model allows.
    """
    data, part = read_yaml(path)
    if _is_profile(data):
        line = part.locations.get(("defaults",))
        raise UserError(
            "this is a profile (it has a defaults list); lint it as `fxrun lint topology=<name>`",
            file=display_path(path),
            line=line.line if line else 1,
        )
    loaded = _load_document(path, data, part, (), resolve=resolve, project=path.resolve().parent)
    return loaded.topology, part


def _is_profile(data: Any) -> bool:
    return isinstance(data, dict) and "defaults" in data


def _refuse_profile_choice(path: Path, overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.lstrip("+~") == PROFILE_GROUP:
            raise UserError(f"{item} cannot be combined with a file ({display_path(path)}); give one or the other", file=OVERRIDE_FILE)


def _load_document(
    path: Path, data: Any, part: SourceMap, overrides: Sequence[str], *, resolve: bool, project: Path
) -> LoadedRun:
    file = display_path(path)
    if not isinstance(data, dict):
        raise UserError("a topology must be a mapping at the top level", file=file, line=1)
    _refuse_profile_choice(path, overrides)
    smap = _source_map([part], overrides)
    check_duplicates(smap)
    composed = compose_file(path, overrides, smap, resolve=resolve)
    check_declared_services(_services(composed), _declared_services([part]), file, smap)
    if resolve:
        config = _validate(composed, smap)
    else:
        config = _as_written(composed, smap) or _validate(compose_file(path, overrides, smap), smap)
    return LoadedRun(config=config, source=smap, project=project, profile=file, files=(path,))


def _as_written(composed: dict[str, Any], smap: SourceMap) -> RunConfig | None:
    """The topology with its interpolations unresolved, unless a typed field is interpolated."""
    try:
        return _validate(composed, smap)
    except UserError:
        return None
