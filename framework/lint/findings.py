"""What a lint rule reports, and the three ways the CLI and CI print it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One problem. ``service`` is the service name, or the topic/table name, or ``"topology"``."""

    level: Level
    code: str
    service: str
    message: str
    file: str | None = None
    line: int | None = None


def sort_key(f: Finding) -> tuple[str, int, str, str, str]:
    return (f.file or "", f.line or 0, f.code, f.service, f.message)


def format_finding(f: Finding) -> str:
    """``ERROR FX201 data-bridge: message (topology/services.yaml:123)``."""
    text = f"{f.level.upper()} {f.code} {f.service}: {f.message}"
    if f.file and f.line:
        return f"{text} ({f.file}:{f.line})"
    if f.file:
        return f"{text} ({f.file})"
    return text


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([asdict(f) for f in findings], indent=2)


def exit_code(findings: Iterable[Finding]) -> int:
    return 1 if any(f.level == "error" for f in findings) else 0
