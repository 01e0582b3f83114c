"""``fxrun trace ID``: what caused a message, and what it caused, from what the stores hold.

Every message carries its id and the id of the message whose handling published it
(headers ``fxflow-id`` and ``fxflow-cause``, stamped by ``ctx.publish``). Tables that declare
``trace: true`` keep both with each row (``msg_id``, ``cause_id``), so the chain bar →
features → signal → decision → order → fill can be walked back to its first traced
message and forward to everything it led to, across services, processes and restarts.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.stores.base import Store, open_store
from framework.topology.model import Topology

MAX_DEPTH = 50
MAX_CHILDREN = 20


class Tracer:
    """Looks messages up by id (or by cause) in every traced table of a topology."""

    def __init__(self, topology: Topology, data_dir: Path) -> None:
        self.tables = {name: t for name, t in topology.tables.items() if t.trace}
        if not self.tables:
            raise UserError("no table declares `trace: true`: nothing keeps message ids to follow", path="tables")
        self.topology = topology
        self.data_dir = data_dir
        self.stores: dict[str, Store] = {}

    async def __aenter__(self) -> Tracer:
        for table in self.tables.values():
            if table.store not in self.stores:
                store = open_store(table.store, self.topology.stores[table.store], str(self.data_dir))
                await store.connect()
                self.stores[table.store] = store
        return self

    async def __aexit__(self, *exc: object) -> None:
        for store in self.stores.values():
            await store.close()

    async def rows(self, column: str, value: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name, table in self.tables.items():
            try:
                found = await self.stores[table.store].query(f"SELECT * FROM {name} WHERE {column} = {{v:String}}", {"v": value})
            except Exception:  # a traced table this run never created: nothing of it to show
                continue
            out.extend((name, row) for row in found)
        return out

    async def chain(self, msg_id: str) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[int, str, dict[str, Any]]]]:
        """The message and its causes (first cause first), then what it caused (depth, table, row)."""
        up: list[tuple[str, dict[str, Any]]] = []
        current: str | None = msg_id
        while current is not None and len(up) < MAX_DEPTH:
            found = await self.rows("msg_id", current)
            if not found:
                break
            table, row = found[0]
            up.append((table, row))
            current = row.get("cause_id")
        up.reverse()
        down: list[tuple[int, str, dict[str, Any]]] = []
        frontier = [(1, msg_id)]
        while frontier and len(down) < MAX_DEPTH * MAX_CHILDREN:
            depth, parent = frontier.pop(0)
            for table, row in (await self.rows("cause_id", parent))[:MAX_CHILDREN]:
                down.append((depth, table, row))
                if depth < MAX_DEPTH and row.get("msg_id"):
                    frontier.append((depth + 1, row["msg_id"]))
        return up, down


def describe(table: str, row: dict[str, Any]) -> str:
    fields = {k: v for k, v in row.items() if k not in ("msg_id", "cause_id") and v is not None}
    shown = ", ".join(f"{k}={v}" for k, v in list(fields.items())[:8])
    return f"{row.get('msg_id')}  [{table}] {shown}"


async def trace(topology: Topology, data_dir: Path, msg_id: str) -> list[str]:
    async with Tracer(topology, data_dir) as tracer:
        up, down = await tracer.chain(msg_id)
    if not up and not down:
        raise UserError(f"no traced table holds a message {msg_id!r} (tables: {', '.join(tracer.tables)})")
    lines = [("   " * i) + ("└─ " if i else "") + describe(table, row) for i, (table, row) in enumerate(up)]
    base = len(up) - 1 if up else 0
    lines += [("   " * (base + depth)) + "└─ " + describe(table, row) for depth, table, row in down]
    return lines


def main(argv: Sequence[str]) -> int:
    from framework.topology.load import load_run

    parser = argparse.ArgumentParser(prog="fxrun trace", description="Follow a message's causes and effects through traced tables.")
    parser.add_argument("id", help="a message id (fxflow-id header; msg_id column of a traced table)")
    ids = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    args = parser.parse_args(ids)
    loaded = load_run(overrides)
    for line in asyncio.run(trace(loaded.topology, Path(loaded.config.data_dir), args.id)):
        print(line)
    return 0
