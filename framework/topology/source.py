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


MAX_NESTING = 40
"""Deeper documents are refused: no topology needs it, and composing them would exhaust the stack."""


def _walk(node: yaml.Node, path: KeyPath, file: str, out: SourceMap) -> None:
    if len(path) > MAX_NESTING:
        raise _too_deep(file, node.start_mark.line + 1)
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


def _too_deep(file: str, line: int | None) -> UserError:
    return UserError(f"YAML nested more than {MAX_NESTING} levels deep", file=file, line=line)


def _deep_line(text: str) -> int | None:
    """Line where nesting first exceeds MAX_NESTING, found from the (non-recursive) event stream."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_NESTING:
                    return event.start_mark.line + 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass
    return None


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise UserError(
            f"not UTF-8 text: byte 0x{byte} at offset {exc.start} ({exc.reason}); save the file as UTF-8",
            file=file,
            line=line,
        ) from None


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Parse ``path``; returns the data and its source map. Any unreadable input becomes a UserError with the line."""
    file = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", file=file) from None
    text = _decode(raw, file)
    try:
        return _parse(text, file)
    except RecursionError:
        raise _too_deep(file, _deep_line(text)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context else ""
        raise UserError(f"YAML syntax error: {problem}{context}", file=file, line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise UserError(
            f"not a YAML text file: character U+{exc.character:04X} at offset {exc.position} is not allowed",
            file=file,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"YAML error: {exc}", file=file) from None


def _parse(text: str, file: str) -> tuple[Any, SourceMap]:
    """One pass: compose the node tree (for lines), then construct the data from it."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        smap = SourceMap()
        if node is None:
            return None, smap
        _walk(node, (), file, smap)
        return loader.construct_document(node), smap
    finally:
        loader.dispose()
