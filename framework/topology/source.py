"""YAML reading that remembers where every key came from (file and line).

Hydra and OmegaConf compose documents but forget line numbers; the loader keeps a
:class:`SourceMap` beside the composed config so that every error and lint finding can
name the file and the line a user has to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from framework.errors import UserError

KeyPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class SourceMap:
    """Key path → where it was last defined; later files override earlier ones."""

    locations: dict[KeyPath, Location] = field(default_factory=dict)
    duplicates: list[tuple[KeyPath, Location, Location]] = field(default_factory=list)

    def merge(self, other: "SourceMap", prefix: KeyPath = ()) -> None:
        for path, loc in other.locations.items():
            self.locations[prefix + path] = loc
        self.duplicates.extend((prefix + p, a, b) for p, a, b in other.duplicates)

    def find(self, path: KeyPath | list[Any]) -> Location | None:
        """Location of ``path`` or of its nearest ancestor that has one."""
        key = tuple(str(p) for p in path)
        while key:
            loc = self.locations.get(key)
            if loc is not None:
                return loc
            key = key[:-1]
        return self.locations.get(())


def _walk(node: yaml.Node, path: KeyPath, file: str, out: SourceMap) -> None:
    out.locations.setdefault(path, Location(file, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Location] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            loc = Location(file, key_node.start_mark.line + 1)
            if key in seen:
                out.duplicates.append((path + (key,), seen[key], loc))
            seen[key] = loc
            out.locations[path + (key,)] = loc
            _walk(value_node, path + (key,), file, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out.locations[path + (str(index),)] = Location(file, item.start_mark.line + 1)
            _walk(item, path + (str(index),), file, out)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Parse ``path``; returns the data and its source map. Syntax errors become UserError with the line."""
    file = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", file=file) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context else ""
        raise UserError(f"YAML syntax error: {problem}{context}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise UserError(f"YAML error: {exc}", file=file) from None
    smap = SourceMap()
    if node is not None:
        _walk(node, (), file, smap)
    return data, smap
