"""``fxrun``: run a topology (Hydra overrides), or ``fxrun lint`` / ``fxrun docs``.

    fxrun topology=demo                        run the demo profile
    fxrun topology=live pairs=[EURUSD,XAUUSD]  run live on two pairs
    fxrun topology=live only=[data-bridge]     run one service in this process
    fxrun lint [FILE] [--json] [overrides…]    lint a topology (exit 1 on any error)
    fxrun docs [--check]                       (re)generate docs/architecture.md and docs/asyncapi.yaml
    fxrun contracts publish [NAME…] | check    record released contract versions / compare with them (FX105)
    fxrun status [DATA_DIR]                    per-service counters of a running or finished run
    fxrun trace ID [overrides…]                a message's causes and effects (tables with trace: true)
    fxrun infra up|status|down [--data-dir D]  local NATS, Kafka, PostgreSQL, Redis (prints export lines)
    fxrun deploy [--out FILE] [--check]        generate deploy/docker-compose.yml from topology=live
    fxrun bi5 decode FILE --symbol S [--hour H] decode a Dukascopy .bi5 file to CSV (plugin verbs:
                                               entry point group fxflow.commands)

A user's mistake is reported as ``file:line: path: message`` without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.errors import UserError, UserErrors

if TYPE_CHECKING:
    from framework.lint.findings import Finding
    from framework.runtime.progress import ProgressDisplay

log = logging.getLogger("fxflow")
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
TOPOLOGY_FILE = Path("topology") / "services.yaml"


def _err(message: str) -> None:
    print(f"fxrun: error: {message}", file=sys.stderr)


def _load_common(project: Path):  # type: ignore[no-untyped-def]
    from framework.contracts import ContractRegistry
    from framework.registry import Registry

    contracts = ContractRegistry.load(project / "contracts")
    registry = Registry.discover()
    for name, problem in registry.load_errors.items():
        log.warning("node plugin %s could not be loaded: %s", name, problem)
    return registry, contracts


def cmd_lint(argv: Sequence[str]) -> int:
    from framework.lint import exit_code, findings_json, format_finding, lint
    from framework.topology.checks import LOAD_ERROR

    parser = argparse.ArgumentParser(prog="fxrun lint", description="Lint a topology; exit 1 on any error.")
    parser.add_argument(
        "file", nargs="?", help="a topology file or a profile (default: the composed profile); with topology=NAME, "
        "that profile composed over the file in place of services.yaml"
    )
    parser.add_argument("--json", action="store_true", help="print findings as a JSON array")
    parser.add_argument("--quiet", action="store_true", help="print errors only")
    args, overrides = _split(parser, argv)
    if args.file and ("=" in args.file or (args.file.startswith("~") and not args.file.startswith("~/"))):
        overrides.insert(0, args.file)
        args.file = None
    try:
        loaded = _load_for_lint(args.file, overrides)
        registry, contracts = _load_common(loaded.project)
        findings = lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs)
    except UserError as exc:
        findings = _load_findings(exc)
        if not args.json and not any(f.code != LOAD_ERROR for f in findings):
            raise
    if args.json:
        print(findings_json(findings))
    else:
        shown = [f for f in findings if f.level == "error"] if args.quiet else findings
        for finding in shown:
            print(format_finding(finding))
        errors = sum(f.level == "error" for f in findings)
        warnings = sum(f.level == "warning" for f in findings)
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return exit_code(findings)


def _load_for_lint(file: str | None, overrides: list[str]):  # type: ignore[no-untyped-def]
    from framework.topology.load import find_project, load_file, load_run

    if file:
        return load_file(Path(file), overrides)
    return load_run(overrides, find_project())


def _load_findings(exc: UserError) -> list[Finding]:
    """A load error as lint findings: its own rule's code when it has one (FX402…), else FX000."""
    from framework.lint.findings import Finding
    from framework.topology.checks import LOAD_ERROR, TOPOLOGY, CodedError

    findings = []
    for err in exc.errors if isinstance(exc, UserErrors) else [exc]:
        if isinstance(err, CodedError):
            code, owner, message = err.code, err.owner, err.detail
        else:
            code, owner = LOAD_ERROR, TOPOLOGY
            message = f"{err.path}: {err.message}" if err.path else err.message
        findings.append(Finding(level="error", code=code, service=owner, message=message, file=err.file, line=err.line))
    return findings


def cmd_docs(argv: Sequence[str]) -> int:
    from framework.docgen import check_docs, write_docs
    from framework.topology.load import find_project, load_topology_file

    parser = argparse.ArgumentParser(prog="fxrun docs", description="Generate architecture docs from the topology.")
    parser.add_argument("--check", action="store_true", help="fail when the committed docs are stale")
    parser.add_argument("--out", default="docs", help="output directory (default: docs)")
    args = parser.parse_args(list(argv))
    project = find_project()
    registry, contracts = _load_common(project)
    topology, _ = load_topology_file(project / TOPOLOGY_FILE, resolve=False)
    out = project / args.out
    if args.check:
        stale = check_docs(out, topology, registry, contracts)
        for name in stale:
            print(f"stale: {name} (run `fxrun docs` and commit the result)", file=sys.stderr)
        return EXIT_FINDINGS if stale else EXIT_OK
    for path in write_docs(out, topology, registry, contracts):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_status(argv: Sequence[str]) -> int:
    """Print the counters a running (or finished) ``fxrun`` keeps in ``<data_dir>/metrics.json``."""
    import json
    import time

    from framework.metrics import format_table

    parser = argparse.ArgumentParser(prog="fxrun status", description="Show the per-service counters of a run.")
    parser.add_argument("data_dir", nargs="?", default=".fxrun", help="the run's data_dir (default: .fxrun)")
    args = parser.parse_args([a.removeprefix("data_dir=") for a in argv])
    path = Path(args.data_dir) / "metrics.json"
    if not path.is_file():
        raise UserError(f"no metrics in {path}: has `fxrun … data_dir={args.data_dir}` run yet?")
    snapshot = json.loads(path.read_text())
    age = time.time() - snapshot["ts"] / 1000
    try:
        print(f"{path} ({age:.0f}s ago)")
        print(format_table(snapshot["services"]))
        sys.stdout.flush()
    except BrokenPipeError:  # `fxrun status | head -1`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _split(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    args, rest = parser.parse_known_args(list(argv))
    unknown_flags = [r for r in rest if r.startswith("-")]
    if unknown_flags:
        parser.error(f"unrecognized arguments: {' '.join(unknown_flags)}")
    return args, rest


@contextlib.contextmanager
def _run_logging(level: str, data_dir: Path) -> Iterator[None]:
    """Log to stderr and data_dir/logs/fxrun.log for one run; the handlers go when the run ends.

    Removing them matters when ``main`` is called in-process (tests, notebooks): a handler
    left on the root logger would keep writing to a stream that is closed by then.
    """
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    root = logging.getLogger()
    previous_level = root.level
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), logging.FileHandler(logs / "fxrun.log")]
    root.setLevel(level)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)


@contextlib.contextmanager
def _run_tmpdir(data_dir: Path) -> Iterator[None]:
    """Temporary files of the run go to ``data_dir/tmp``, not the system's ``/tmp``.

    The embedded ClickHouse (chdb) writes a temporary file for every insert and a scratch
    directory of its own; both follow ``TMPDIR``/``tempfile.tempdir``, so they must be set
    before chdb is first imported (when the runtime opens the store). Restored afterwards
    for an in-process caller (tests), whose data_dir may be gone later.
    """
    import os
    import tempfile

    tmp = data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


def cmd_run(overrides: Sequence[str]) -> int:
    from framework.durations import parse_seconds
    from framework.lint import format_finding, lint
    from framework.metrics import format_table
    from framework.topology.load import load_run

    loaded = load_run(overrides)
    config = loaded.config
    registry, contracts = _load_common(loaded.project)
    findings = lint(loaded.topology, loaded.source, registry, contracts, pairs=config.pairs)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        for finding in errors:
            print(format_finding(finding), file=sys.stderr)
        _err(f"the topology has {len(errors)} lint error(s); nothing was started")
        return EXIT_FINDINGS
    data_dir = Path(config.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = "it is a file" if data_dir.exists() and not data_dir.is_dir() else (exc.strerror or str(exc))
        raise UserError(f"data_dir: cannot keep the run's files in {data_dir}: {problem}", file="<command line>") from None
    display = _display(config.progress)
    terminal = display.owning_terminal() if display is not None else contextlib.nullcontext()
    with _run_tmpdir(data_dir), terminal, _run_logging(config.log_level, data_dir):
        from framework.runtime import Runtime

        runtime = Runtime(
            loaded.topology,
            registry,
            contracts,
            pairs=config.pairs,
            only=config.only,
            data_dir=data_dir,
        )
        if not runtime.services:
            _err("no enabled service to run in this selection")
            return EXIT_USAGE
        duration = parse_seconds(config.duration) if config.duration else None
        log.info("fxrun topology=%s: %d service(s): %s", loaded.profile, len(runtime.services), ", ".join(runtime.services))
        serve_after = sys.stdin.isatty() if config.serve_after is None else config.serve_after
        printed: list[bool] = []

        def summary() -> None:
            """The run's figures, the nodes' final headlines, the per-service table; the servers still serving."""
            from framework.runtime.progress import format_summary

            if display is not None:
                display.close()
            progress = runtime.progress.read(final=True)
            print("\n".join(format_summary(progress)))
            print(format_table(runtime.metrics()))
            print(f"dead letters: {progress.dead_letters}; data under {data_dir}/")
            for name, url in progress.urls.items():
                print(f">>> {name} keeps serving the finished run on {url} until Ctrl-C")
            sys.stdout.flush()
            printed.append(True)

        if display is not None:
            display.source = runtime.progress
        try:
            asyncio.run(_run(runtime, duration, serve_after, summary, display))
        except UserError as exc:
            raise _located(exc, loaded.source) from None
        if not printed:
            summary()
    for failure in runtime.failures:
        _err(f"the run failed: {failure}")
    return EXIT_FINDINGS if runtime.failures else EXIT_OK


def _located(exc: UserError, source: Any) -> UserError:
    """A node's or the runtime's mistake that names a topology path (``services.X.params.host``) but no file:
    where that setting was written (a file and line, or the command line)."""
    if exc.file is None and exc.path and not isinstance(exc, UserErrors):
        found = source.find(("topology", *exc.path.split(".")))
        if found is not None:
            exc.file, exc.line = found.file, found.line or None
    return exc


def _display(progress: str | bool | None) -> ProgressDisplay | None:
    """The progress display the ``progress`` run option asks for (see RunConfig.progress)."""
    from framework.durations import parse_seconds
    from framework.runtime.progress import ProgressDisplay

    if progress is False:
        return None
    every = parse_seconds(progress) if isinstance(progress, str) else None
    return ProgressDisplay(sys.stderr, live=sys.stderr.isatty(), every_s=every)


async def _run(runtime, duration: float | None, serve_after: bool = False, ended=None, display=None) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, runtime.request_stop)
        except (NotImplementedError, RuntimeError):
            pass
    shown = asyncio.create_task(display.run(), name="progress") if display is not None else None
    try:
        await runtime.run(duration, serve_after=serve_after, ended=ended)
    finally:
        if shown is not None:
            shown.cancel()
            await asyncio.gather(shown, return_exceptions=True)
        if display is not None:
            display.close()


def cmd_infra(argv: Sequence[str]) -> int:
    from framework.infra.cli import main as infra_main

    return infra_main(argv)


def cmd_contracts(argv: Sequence[str]) -> int:
    from framework.lint.evolution import main as contracts_main

    return contracts_main(argv)


def cmd_trace(argv: Sequence[str]) -> int:
    from framework.trace import main as trace_main

    return trace_main(argv)


def cmd_deploy(argv: Sequence[str]) -> int:
    from framework.deploy import main as deploy_main

    return deploy_main(argv)


def _is_environment_error(exc: Exception) -> bool:
    """A server or store that is down or refuses us is the user's situation, not a bug: one line."""
    from framework.stores.base import StoreError
    from framework.transport.base import TransportError

    return isinstance(exc, (StoreError, TransportError))


VERBS = {
    "lint": cmd_lint, "docs": cmd_docs, "status": cmd_status, "infra": cmd_infra, "deploy": cmd_deploy,
    "contracts": cmd_contracts, "trace": cmd_trace,
}  # fmt: skip
COMMAND_GROUP = "fxflow.commands"


def plugin_commands() -> dict[str, str]:
    """Verbs node plugins add (entry point group ``fxflow.commands``): name → ``module:function``."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP) if ep.name not in VERBS}


def cmd_plugin(name: str, argv: Sequence[str]) -> int:
    """Run a plugin's verb: ``function(argv) -> exit code``; it is imported only when called."""
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group=COMMAND_GROUP) if ep.name == name]
    return int(ep.load()(list(argv)) or 0)


def _unknown_command(word: str) -> str:
    import difflib

    commands = sorted([*VERBS, *plugin_commands()])
    close = difflib.get_close_matches(word, commands, n=1)
    hint = f"did you mean {close[0]}?" if close else f"commands: {', '.join(commands)}; a run takes key=value overrides"
    return f"unknown command {word!r}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return EXIT_OK
    try:
        if args and args[0] in VERBS:
            return VERBS[args[0]](args[1:])
        if args and "=" not in args[0] and not args[0].startswith("-") and args[0] in plugin_commands():
            return cmd_plugin(args[0], args[1:])
        if args and "=" not in args[0] and not args[0].startswith(("-", "~")):
            _err(_unknown_command(args[0]))
            return EXIT_USAGE
        flags = [a for a in args if a.startswith("-")]
        if flags:
            _err(f"unknown option {flags[0]}; overrides are key=value (see fxrun --help)")
            return EXIT_USAGE
        return cmd_run(args)
    except UserError as exc:
        for line in str(exc).splitlines():
            _err(line)
        return EXIT_FINDINGS
    except Exception as exc:
        if not _is_environment_error(exc):
            raise
        _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return EXIT_FINDINGS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
