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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framework.errors import UserError, UserErrors
from framework.topology.model import RunConfig, Topology
from framework.topology.source import Location, SourceMap, display_path, read_yaml

PROFILE_GROUP = "topology"
DEFAULT_PROFILE = "demo"
PRIMARY_NAME = "fxrun"
RUN_DEFAULTS: dict[str, Any] = {
    "pairs": None,
    "only": None,
    "data_dir": ".fxrun",
    "duration": None,
    "log_level": "INFO",
    "simulate_feeds": "${oc.decode:${oc.env:FXFLOW_SIMULATE_FEEDS,false}}",
}
OVERRIDE_FILE = "<command line>"


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
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") == PROFILE_GROUP:
            return value
    return DEFAULT_PROFILE


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


def _source_map(files: Iterable[Path], overrides: Sequence[str]) -> SourceMap:
    smap = SourceMap()
    for file in files:
        _, part = read_yaml(file)
        part.locations.pop(("defaults",), None)
        smap.merge(part, (PROFILE_GROUP,))
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.lstrip("+~") != PROFILE_GROUP:
            smap.locations[tuple(key.lstrip("+~").split("."))] = Location(OVERRIDE_FILE, 0)
    return smap


def _register_primary() -> None:
    from hydra.core.config_store import ConfigStore

    node = {"defaults": [{PROFILE_GROUP: DEFAULT_PROFILE}, "_self_"], **RUN_DEFAULTS}
    ConfigStore.instance().store(name=PRIMARY_NAME, node=node)


def _compose(project: Path, overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_primary()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(project), version_base=None, job_name="fxrun"):
            cfg = compose(config_name=PRIMARY_NAME, overrides=list(overrides))
        data = OmegaConf.to_container(cfg, resolve=True)
    except HydraException as exc:
        raise UserError(f"cannot compose the run: {_first_line(exc)}", file=OVERRIDE_FILE) from None
    except OmegaConfBaseException as exc:
        raise UserError(f"cannot compose the run: {_first_line(exc)}") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(data, dict)
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip())


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
    """One UserError per distinct pydantic error, with file, line and dotted path."""
    errors: list[UserError] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        path = _data_path(data, err["loc"])
        dotted = ".".join(path)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = f"unknown key {path[-1]!r}" if path else "unknown key"
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


def _check_duplicates(smap: SourceMap) -> None:
    if smap.duplicates:
        raise UserErrors(
            [
                UserError(f"FX402 duplicate key {path[-1]!r} (first defined at line {first.line})", file=dup.file, line=dup.line, path=".".join(path))
                for path, first, dup in smap.duplicates
            ]
        )


def load_run(overrides: Sequence[str] = (), project: Path | None = None) -> LoadedRun:
    """Compose ``topology=<profile>`` plus overrides, then validate it strictly."""
    project = project or find_project()
    profile = _profile_choice(overrides)
    files = _profile_files(project / PROFILE_GROUP, profile)
    smap = _source_map(files, overrides)
    _check_duplicates(smap)
    data = _compose(project, overrides)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_errors(exc, data, smap) from None
    _check_selection(config, smap)
    return LoadedRun(config=config, source=smap, project=project, profile=profile, files=tuple(files))


def load_topology_file(path: Path) -> tuple[Topology, SourceMap]:
    """Validate one self-contained topology document (what ``fxrun lint FILE`` reads)."""
    data, smap = read_yaml(path)
    _check_duplicates(smap)
    if not isinstance(data, dict):
        raise UserError("a topology must be a mapping at the top level", file=display_path(path), line=1)
    if "defaults" in data:
        raise UserError(
            "this is a profile (it has a defaults list); lint it as `fxrun lint topology=<name>`",
            file=display_path(path),
            line=smap.find(["defaults"]).line if smap.find(["defaults"]) else 1,
        )
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        raise validation_errors(exc, data, smap) from None
    return topology, smap


def _check_selection(config: RunConfig, smap: SourceMap) -> None:
    """``pairs`` and ``only`` must name declared instruments and services."""
    import difflib

    errors: list[UserError] = []
    checks = (("pairs", config.pairs, config.topology.instruments), ("only", config.only, config.topology.services))
    for key, chosen, declared in checks:
        for name in chosen or []:
            if name not in declared:
                close = difflib.get_close_matches(name, list(declared), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; declared: {', '.join(declared)}"
                loc = smap.find([key])
                errors.append(UserError(f"{name!r} is not declared{hint}", file=loc.file if loc else OVERRIDE_FILE, path=key))
    if errors:
        raise UserErrors(errors)
