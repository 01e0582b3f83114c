"""Hydra composition of a run: a profile of the project, or one self-contained topology file.

The primary config lives in Hydra's ConfigStore (the run options and the profile choice), so
``fxrun topology=live pairs=[EURUSD]`` works as Hydra users expect. A single file is stored as
one more option of the ``topology`` group, so it gets the same run defaults, the same override
grammar and the same interpolation (``${data_dir}``, ``${simulate_feeds}``) as a profile.

Interpolations are resolved one value at a time, so every one that fails is reported with the
file and line (or ``<command line>``) where it is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framework.errors import UserError, UserErrors
from framework.topology.checks import in_document
from framework.topology.source import KeyPath, SourceMap, display_path

PROFILE_GROUP = "topology"
DEFAULT_PROFILE = "demo"
PRIMARY_NAME = "fxrun"
FILE_OPTION = "_file_"
OVERRIDE_FILE = "<command line>"
ENV_DEFAULTS = {"simulate_feeds": "FXFLOW_SIMULATE_FEEDS"}
"""Run options whose default comes from an environment variable (named in errors about them)."""
RUN_DEFAULTS: dict[str, Any] = {
    "pairs": None,
    "only": None,
    "data_dir": ".fxrun",
    "duration": None,
    "log_level": "INFO",
    "serve_after": None,
    "progress": None,
    "simulate_feeds": f"${{oc.decode:${{oc.env:{ENV_DEFAULTS['simulate_feeds']},false}}}}",
}


def compose_profile(project: Path, overrides: Sequence[str], smap: SourceMap) -> dict[str, Any]:
    """``topology=<profile>`` of the project plus overrides, resolved."""
    from hydra import initialize_config_dir

    return _compose(lambda: initialize_config_dir(config_dir=str(project), version_base=None, job_name="fxrun"), overrides, smap)


def compose_file(path: Path, overrides: Sequence[str], smap: SourceMap, *, resolve: bool = True) -> dict[str, Any]:
    """One topology document as the ``topology`` of a run, plus overrides.

    ``resolve=False`` still checks every interpolation but keeps the topology as written
    (generated docs show ``${data_dir}``, not the path of whoever ran ``fxrun docs``).
    """
    return compose_layers([path], overrides, smap, resolve=resolve)


def compose_layers(paths: Sequence[Path], overrides: Sequence[str], smap: SourceMap, *, resolve: bool = True) -> dict[str, Any]:
    """Topology documents merged in order (a profile over another base file) as the ``topology`` of a run.

    Each document's ``defaults`` list is dropped: ``paths`` already is the merge order.
    """
    from hydra import initialize
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    documents = []
    for path in paths:
        try:
            document = OmegaConf.load(path)
        except (OmegaConfBaseException, ValueError) as exc:
            raise UserError(f"cannot read as a config: {_first_line(exc)}", file=display_path(path)) from None
        if len(paths) > 1 and isinstance(document, DictConfig):
            document.pop("defaults", None)
        documents.append(document)
    document = documents[0] if len(documents) == 1 else OmegaConf.merge(*documents)
    ConfigStore.instance().store(group=PROFILE_GROUP, name=FILE_OPTION, node=document)
    return _compose(
        lambda: initialize(config_path=None, version_base=None, job_name="fxrun"),
        [f"{PROFILE_GROUP}={FILE_OPTION}", *overrides],
        smap,
        resolve=resolve,
    )


def _compose(init: Any, overrides: Sequence[str], smap: SourceMap, *, resolve: bool = True) -> dict[str, Any]:
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_primary()
    GlobalHydra.instance().clear()
    try:
        with init():
            cfg = compose(config_name=PRIMARY_NAME, overrides=list(overrides))
        _absolute_data_dir(cfg, smap)
        _check_interpolations(cfg, smap)
        data = OmegaConf.to_container(cfg, resolve=True)
        if not resolve:
            assert isinstance(data, dict)
            data[PROFILE_GROUP] = OmegaConf.to_container(cfg[PROFILE_GROUP], resolve=False)
    except HydraException as exc:
        raise UserError(f"cannot compose the run: {_first_line(exc)}", file=OVERRIDE_FILE) from None
    except OmegaConfBaseException as exc:
        raise UserError(f"cannot compose the run: {_first_line(exc)}") from None
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(data, dict)
    return data


def _register_primary() -> None:
    from hydra.core.config_store import ConfigStore

    node = {"defaults": [{PROFILE_GROUP: DEFAULT_PROFILE}, "_self_"], **RUN_DEFAULTS}
    ConfigStore.instance().store(name=PRIMARY_NAME, node=node)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip())


def _located(smap: SourceMap, path: KeyPath, message: str) -> UserError:
    loc = smap.find(path)
    return UserError(
        message,
        file=loc.file if loc else None,
        line=loc.line if loc and loc.line else None,
        path=".".join(in_document(path)) or None,
    )


def _absolute_data_dir(cfg: Any, smap: SourceMap) -> None:
    """``data_dir`` must name a directory; it is made absolute before ``${data_dir}`` is used anywhere."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = cfg.data_dir
    except OmegaConfBaseException as exc:
        raise _located(smap, ("data_dir",), f"cannot resolve: {_message(exc)}") from None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _located(smap, ("data_dir",), "must name a directory (everything a run writes goes there)")
    if isinstance(value, str):
        cfg.data_dir = os.path.abspath(os.path.expanduser(value))


def _message(exc: Exception) -> str:
    """OmegaConf's own message, without the ``full_key``/``object_type`` lines it appends."""
    text = str(getattr(exc, "msg", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_interpolations(cfg: Any, smap: SourceMap) -> None:
    """Resolve every value once; each failure names where the interpolation is written."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    errors: list[UserError] = []
    raw = OmegaConf.to_container(cfg, resolve=False)

    def written(path: KeyPath) -> Any:
        node: Any = raw
        try:
            for part in path:
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return node

    def walk(node: Any, path: KeyPath, depth: int) -> None:
        keys = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
        for key in keys:
            here = (*path, str(key))
            try:
                value = node[key]
            except OmegaConfBaseException as exc:
                text = _message(exc)
                errors.append(_located(smap, here, f"cannot resolve {written(here)!r}: {text}"))
                continue
            if isinstance(value, (DictConfig, ListConfig)) and depth < 64:
                walk(value, here, depth + 1)

    walk(cfg, (), 0)
    if errors:
        raise UserErrors(errors)
