#!/usr/bin/env python3
"""The README's two commands, each doing its own set-up on a fresh machine (Python 3.11 + pip).

    python3 tasks.py demo [overrides…]   install, then run `fxrun topology=demo`
    python3 tasks.py test                install, then lint every profile, check docs, run pytest
    python3 tasks.py screenshot          the README's dashboard screenshot, from a demo run
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".fxflow-installed"
PROFILES = ("demo", "live", "backtest")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_installed(extras: str) -> None:
    """Create .venv and install fxflow (editable) with ``extras``; skipped when nothing changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"fxflow needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    run(BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", f".[{extras}]")
    STAMP.write_text(digest)


def demo(args: list[str]) -> None:
    ensure_installed("test,data,ml,web")
    overrides = args if any(a.startswith("topology=") for a in args) else ["topology=demo", *args]
    # Ctrl-C is fxrun's to handle (it stops cleanly, prints its summary, closes the dashboard): here it must not
    # interrupt the wait, or subprocess.run would kill fxrun mid-stop. A handler, unlike SIG_IGN, is not inherited.
    signal.signal(signal.SIGINT, lambda *_: None)
    run(BIN / "fxrun", *overrides)


def ensure_browser() -> None:
    """Debian's chromium for the browser tests (a test tool's own browser download fails on this network)."""
    if Path("/usr/bin/chromium").exists() or os.name == "nt":
        return
    if os.geteuid() == 0 and Path("/usr/bin/apt-get").exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)


def test(args: list[str]) -> None:
    ensure_installed("test,live,infra,data,ml,web")
    ensure_browser()
    for profile in PROFILES:
        run(BIN / "fxrun", "lint", "--quiet", f"topology={profile}")
    run(BIN / "fxrun", "docs", "--check")
    run(BIN / "fxrun", "deploy", "--check")
    run(BIN / "fxrun", "check", "lookahead", "topology=live")  # the declared feature set: nothing from the future
    run(BIN / "fxrun", "check", "recursive", "topology=live")  # and W long enough for every recursive indicator
    os.environ.setdefault("FXFLOW_REQUIRE_SERVERS", "1")  # a server that cannot start fails, never skips
    if not any(a == "-n" or a.startswith(("-n", "--numprocesses")) or a == "no:xdist" for a in args):
        # a worker per core (at most 4): most tests wait on servers, subprocesses and sockets, so CI time halves on 2 cores
        args = ["-n", str(min(4, os.cpu_count() or 1)), *args]
    run(BIN / "python", "-m", "pytest", *args)


def screenshot(args: list[str]) -> None:
    ensure_installed("test,data,ml,web")
    ensure_browser()
    run(BIN / "python", ROOT / "scripts" / "readme_screenshot.py", *args)


def main() -> None:
    commands = {"demo": demo, "test": test, "screenshot": screenshot}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
