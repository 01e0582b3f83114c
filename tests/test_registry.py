"""Plugin discovery: broken, foreign, misnamed and duplicate plugins, and what lint and docs import.

Plugins are installed as real distributions (a ``*.dist-info`` directory and a module in a
temporary directory on ``sys.path``), so entry points carry their distribution as they do
when pip installs them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib.metadata import Distribution, PathDistribution, entry_points, version
from pathlib import Path

import pytest

import framework.registry as registry_module
from framework.cli import main
from framework.registry import ENTRY_POINT_GROUP, Registry

ROOT = Path(__file__).resolve().parents[1]

HEAVY = frozenset(
    "numpy xgboost torch lightgbm catboost stable_baselines3 pandas pyarrow chdb clickhouse_connect "
    "aiohttp nats aiokafka asyncpg redis MetaTrader5".split()
)
"""Top-level packages lint and docs must not import (node implementations and transports need them)."""


class Plugins:
    """Writes plugin modules and distributions into one directory on ``sys.path``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.prefix = "fxflow_test_" + re.sub(r"\W", "_", root.name) + "_"
        self.monkeypatch = monkeypatch
        monkeypatch.syspath_prepend(str(root))

    def module(self, name: str, source: str) -> str:
        """Write a module; returns its import name."""
        qualified = self.prefix + name
        (self.root / f"{qualified}.py").write_text(textwrap.dedent(source))
        return qualified

    def path(self, module: str) -> Path:
        return self.root / f"{module}.py"

    def dist(self, name: str, eps: dict[str, str]) -> Distribution:
        info = self.root / "dists" / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "".join(f"{ep} = {value}\n" for ep, value in eps.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        return PathDistribution(info)

    def only(self, *dists: Distribution) -> None:
        """Discovery sees the entry points of ``dists``, in this order, and nothing else."""
        self.monkeypatch.setattr(
            registry_module, "entry_points", lambda group: [ep for d in dists for ep in d.entry_points.select(group=group)]
        )

    def after_installed(self, *dists: Distribution) -> None:
        """Discovery sees the installed plugins (fxflow's own) first, then those of ``dists``."""
        self.monkeypatch.setattr(
            registry_module,
            "entry_points",
            lambda group: [*entry_points(group=group), *(ep for d in dists for ep in d.entry_points.select(group=group))],
        )

    def forget(self) -> None:
        for name in [m for m in sys.modules if m.startswith(self.prefix)]:
            del sys.modules[name]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plugins]:
    made = Plugins(tmp_path, monkeypatch)
    yield made
    made.forget()


def spec_module(plugins: Plugins, name: str, node: str) -> str:
    return plugins.module(
        name,
        f"""\
        from framework.registry import NodeSpec

        SPEC = NodeSpec(name={node!r}, factory="{name}.node:Impl")
        """,
    )


def test_in_tree_plugins_load_under_the_names_pyproject_gives_them() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    found = Registry.discover()
    assert found.load_errors == {}
    assert found.names() == sorted(declared)


def test_a_plugin_that_fails_to_import_is_one_line_naming_it_and_the_others_still_load(plugins: Plugins) -> None:
    good = spec_module(plugins, "good", "good")
    missing = plugins.module("missing", "from framework.registry import NodeSpec\nimport fxflow_no_such_dependency\n")
    raising = plugins.module("raising", "raise ValueError('first line\\nsecond line')\n")
    plugins.only(
        plugins.dist(
            "acme-nodes",
            {
                "good": f"{good}:SPEC",
                "missing": f"{missing}:SPEC",
                "raising": f"{raising}:SPEC",
                "absent": "fxflow_no_such_module:SPEC",
            },
        )
    )
    found = Registry.discover()
    assert found.names() == ["good"]
    assert set(found.load_errors) == {"missing", "raising", "absent"}
    assert found.load_errors["missing"] == (
        f"entry point missing = {missing}:SPEC (acme-nodes 1.0): ModuleNotFoundError: "
        f"No module named 'fxflow_no_such_dependency' (at {plugins.path(missing)}:2)"
    )
    assert found.load_errors["raising"] == (
        f"entry point raising = {raising}:SPEC (acme-nodes 1.0): ValueError: first line; second line "
        f"(at {plugins.path(raising)}:1)"
    )
    assert found.load_errors["absent"] == (
        "entry point absent = fxflow_no_such_module:SPEC (acme-nodes 1.0): "
        "ModuleNotFoundError: No module named 'fxflow_no_such_module'"
    )


def test_an_entry_point_that_is_not_a_node_spec_is_refused(plugins: Plugins) -> None:
    module = plugins.module("dict_spec", "SPEC = {'name': 'dict_spec', 'factory': 'x:Y'}\n")
    plugins.only(plugins.dist("acme-nodes", {"dict_spec": f"{module}:SPEC"}))
    found = Registry.discover()
    assert "dict_spec" not in found
    assert found.load_errors == {"dict_spec": f"entry point dict_spec = {module}:SPEC (acme-nodes 1.0) is a dict, not a NodeSpec"}


@pytest.mark.parametrize("order", [("acme-nodes", "other-nodes"), ("other-nodes", "acme-nodes")])
def test_two_plugins_declaring_one_node_name_keep_the_first_and_name_both(
    plugins: Plugins, order: tuple[str, str]
) -> None:
    modules = {dist: spec_module(plugins, dist.replace("-", "_"), "spread") for dist in order}
    dists = {dist: plugins.dist(dist, {"spread": f"{modules[dist]}:SPEC"}) for dist in order}
    plugins.only(*(dists[d] for d in order))
    found = Registry.discover()
    first, second = order
    assert found.get("spread").factory == f"{first.replace('-', '_')}.node:Impl"
    assert found.load_errors == {
        "spread": (
            f"two plugins declare node 'spread': entry point spread = {modules[first]}:SPEC ({first} 1.0) is used, "
            f"entry point spread = {modules[second]}:SPEC ({second} 1.0) is ignored; uninstall one or rename its node"
        )
    }


def test_an_entry_point_named_unlike_its_node_is_refused(plugins: Plugins) -> None:
    module = spec_module(plugins, "misnamed", "real_name")
    plugins.only(plugins.dist("acme-nodes", {"alias": f"{module}:SPEC"}))
    found = Registry.discover()
    assert "alias" not in found and "real_name" not in found
    assert found.load_errors == {
        "alias": (
            f"entry point alias = {module}:SPEC (acme-nodes 1.0) declares node 'real_name'; the entry-point name "
            "and NodeSpec.name must be the same, rename one"
        )
    }


def test_fxrun_lint_reports_a_duplicate_node_in_one_line_and_refuses_the_ambiguity(
    plugins: Plugins,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FXFLOW_PROJECT", raising=False)
    assert main(["lint"]) == 0
    clean = capsys.readouterr()
    assert not caplog.records

    module = spec_module(plugins, "impostor", "template")
    plugins.after_installed(plugins.dist("impostor-nodes", {"template": f"{module}:SPEC"}))
    assert main(["lint"]) == 1  # which plugin runs would depend on the install order
    shown = capsys.readouterr()
    assert "Traceback" not in shown.err + shown.out
    added = [line for line in shown.out.splitlines() if line not in clean.out.splitlines()]
    problem = (
        "two plugins declare node 'template': "
        f"entry point template = nodes.template.spec:SPEC (fxflow {version('fxflow')}) is used, "
        f"entry point template = {module}:SPEC (impostor-nodes 1.0) is ignored; uninstall one or rename its node"
    )
    assert added == [f"ERROR FX101 spread-watch: node plugin 'template' is ambiguous: {problem} (topology/services.yaml:{_line_of_spread_watch_node()})"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"node plugin template could not be loaded: {problem}"]


def _line_of_spread_watch_node() -> int:
    lines = (ROOT / "topology" / "services.yaml").read_text().splitlines()
    start = lines.index("  spread-watch:")
    return next(i for i, line in enumerate(lines[start:], start + 1) if line.strip().startswith("node:"))


def test_lint_and_docs_import_no_heavy_library_and_no_node_implementation() -> None:
    script = textwrap.dedent(
        """\
        import contextlib, io, json, sys
        from framework.cli import main
        from framework.registry import Registry

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            codes = [main(["lint"]), main(["docs", "--check"])]
        print(json.dumps({"codes": codes, "load_errors": Registry.discover().load_errors, "modules": sorted(sys.modules)}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "FXFLOW_PROJECT"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    modules = set(report["modules"])
    assert all(isinstance(code, int) for code in report["codes"])
    assert report["load_errors"] == {}
    assert {"nodes.template.spec", "nodes.tick_aggregator.spec"} <= modules
    assert sorted(HEAVY & {m.partition(".")[0] for m in modules}) == []
    assert sorted(m for m in modules if re.fullmatch(r"nodes\.[\w.]+\.node", m)) == []
