"""``fxrun risk halt|reduce|resume|status [--reason TEXT] [--service NAME] [--json] [overrides]``.

Sets the trading state of the running risk gate, or shows it:

- ``halt``: nothing passes; ``reduce``: only orders that reduce a position; ``resume``: active
  (and the drawdown and daily loss count again from the equity of now).
- On a topology whose bus is NATS (``topology=live``) the verb is a request on the gate's
  ``control`` subject (``control.<service>``, see framework/control.py): the running gate applies it and replies with its
  status, which is printed. Nobody answering is an error (exit 1): nothing was changed.
- On an in-process topology (``demo``, ``backtest``) no other process shares the bus: the verb
  is written to the gate's mailbox, ``<data_dir>/services/<service>/control.json``, which the
  gate takes and applies at its next start, or before its next decision if it is running; ``status``
  prints the trading state of record (``trading_state.json``, written by the gate on every
  change) and a command still waiting in the mailbox.

Exit codes: 0 done, 1 nobody answered or nothing to read, 2 usage.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from framework.command_parser import CommandParser
from framework.control import Unreachable, request
from framework.errors import UserError
from nodes.risk_gate.files import MAILBOX, STATE_FILE, read_json, service_dir, write_json

EXIT_OK, EXIT_FAILED = 0, 1
NODE = "risk_gate"
VERBS = ("halt", "reduce", "resume", "status")



def _parser() -> CommandParser:
    parser = CommandParser(prog="fxrun risk", description="Set or show the risk gate's trading state. Extra key=value "
                     "arguments are the usual overrides (topology=live, data_dir=...).")  # fmt: skip
    parser.add_argument("verb", choices=VERBS, help="halt | reduce | resume | status")
    parser.add_argument("--reason", help="why (kept with the state and in the alert)")
    parser.add_argument("--service", help="the risk gate service (default: the topology's only one)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the running gate's reply (NATS)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = _parser().parse(list(sys.argv[1:] if argv is None else argv))
    if isinstance(parsed, int):
        return parsed
    args, overrides = parsed
    from framework.topology.load import load_run

    loaded = load_run(overrides)
    topology = loaded.topology
    service = _service(topology, args.service)
    command = {"command": args.verb, "ts": int(time.time() * 1000), "command_id": uuid.uuid4().hex, "source": _who()}
    if args.reason:
        command["reason"] = args.reason
    subject = _control_subject(topology.services[service])
    if topology.runtime.pubsub == "nats":
        if subject is None:
            return _fail(f"service {service} has no `control` input bound to a NATS subject: nothing can reach it")
        try:
            status = asyncio.run(request(topology, subject, command, timeout=args.timeout))
        except Unreachable as exc:
            return _fail(f"no risk gate answered on {subject} ({exc}); is {service} running? nothing was changed")
        _print(status, args.json)
        return EXIT_OK if "error" not in status else EXIT_FAILED
    directory = service_dir(loaded.config.data_dir, service)
    if args.verb != "status":
        write_json(directory / MAILBOX, command)
        print(f"{service}: {args.verb} queued in {directory / MAILBOX}; applied at its next start, "
              "or before its next decision while it runs (the bus of this topology is in-process)")  # fmt: skip
        return EXIT_OK
    return _status_from_files(service, directory, args.json)


def _status_from_files(service: str, directory: Path, as_json: bool) -> int:
    try:
        record = read_json(directory / STATE_FILE)
        queued = read_json(directory / MAILBOX)
    except ValueError as exc:
        return _fail(str(exc))
    if record is None:
        return _fail(f"{service} has recorded no trading state in {directory} yet (it starts active)")
    status = {"service": service, **{k: v for k, v in record.items() if k != "applied_commands"}}
    if queued is not None:
        status["queued"] = queued.get("command")
    _print(status, as_json)
    return EXIT_OK


def _service(topology: Any, wanted: str | None) -> str:
    gates = [name for name, s in topology.services.items() if s.node == NODE]
    if wanted is not None:
        if wanted not in gates:
            raise UserError(f"--service {wanted!r} is not a risk gate of this topology (risk gates: {', '.join(gates) or 'none'})")
        return wanted
    enabled = [name for name in gates if topology.services[name].enabled] or gates
    if len(enabled) != 1:
        raise UserError(f"this topology has {len(enabled)} risk gates ({', '.join(enabled) or 'none'}): name one with --service")
    return enabled[0]


def _control_subject(service: Any) -> str | None:
    binding = service.inputs.get("control")
    subjects = binding.subjects if binding is not None else []
    return subjects[0] if subjects else None


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"[:128]
    except Exception:  # no user name in a bare container
        return "fxrun"


def _print(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        return
    since = status.get("since")
    when = datetime.fromtimestamp(since / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "start"
    line = f"{status.get('service', 'risk gate')}: {status.get('state')} since {when} (by {status.get('set_by')}: {status.get('reason')})"
    print(line)
    if "equity" in status:
        print(f"  reconciled: {status.get('reconciled')}  balance: {status.get('balance')}  equity: {status.get('equity')}  "
              f"pending approvals: {status.get('pending')}")  # fmt: skip
        for symbol, lots in sorted((status.get("positions") or {}).items()):
            print(f"  {symbol}: {lots:+g} lots")
    if status.get("queued"):
        print(f"  queued, not applied yet: {status['queued']}")
    if status.get("error"):
        print(f"  error: {status['error']}")


def _fail(message: str) -> int:
    print(f"fxrun risk: {message}", file=sys.stderr)
    return EXIT_FAILED
