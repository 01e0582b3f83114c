"""Run the demo pipeline once and write everything it produced, in order, to one file (tests/test_determinism.py).

    python tests/determinism_runner.py OUT_FILE DATA_DIR [overrides…]

Every message on every subject (subject, payload, headers) in delivery order, then every
table's rows in a canonical order (a ReplacingMergeTree as ``FINAL`` reads it: when its
background merges collapse repeats is up to ClickHouse): two runs of the same input must
write the same bytes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.testing import load, make_runtime, query  # noqa: E402
from framework.transport.inprocess import InProcessPubSub  # noqa: E402


async def main(out: Path, data_dir: Path, overrides: list[str]) -> None:
    bus = InProcessPubSub(wire=True)
    await bus.connect()
    lines: list[bytes] = []

    async def record(subject: str, payload: dict, headers: object) -> None:
        lines.append(orjson.dumps([subject, payload, headers], option=orjson.OPT_SORT_KEYS))

    await bus.subscribe(">", record)
    rt = make_runtime(load(data_dir, *overrides), data_dir, pubsub=bus)
    await rt.run()
    tables = sorted({t for (_, t) in rt.writers})
    for table in tables:
        spec = rt.topology.tables[table]
        final = " FINAL" if spec.engine == "ReplacingMergeTree" or spec.key else ""  # merges run when they run
        rows = await query(data_dir, f"SELECT * FROM {table}{final}")
        keyed = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)
        lines.append(orjson.dumps([table, len(keyed)]))
        lines.extend(keyed)
    out.write_bytes(b"\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
