"""The ``supervisor`` command: ``start``, ``stop``, ``status``, ``reload``, ``scale``.

Exit codes: 0 success; 1 an error the message explains (port in use, no supervisor running,
a worker that failed to start, a reload whose new worker could not start); 2 bad usage; 3 the
pool stopped but not cleanly (a request was dropped, a worker had to be killed); 4 the pool
went down (a worker kept failing: a crash loop); 5 a reload or scale was interrupted by a stop;
130 interrupted while waiting (Ctrl+C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import anyio

import ipc
from ipc.address import default_address
from ipc.contract import logs
from ipc.contract.formats import format_of
from ipc.messages import OperationReply, ReloadRequest, ScaleRequest, WorkerStatus

from . import client, settings
from .run import EXIT_ERROR, EXIT_OK, EXIT_UNCLEAN, EXIT_USAGE, Supervisor

PROG = "supervisor"
#: `reload` or `scale` cut short: the pool began to stop first.
EXIT_INTERRUPTED_BY_STOP = 5
#: Ctrl+C while a command waits: the shell's convention, 128 + SIGINT.
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag_type(option: settings.Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value[0] if option.repeatable else value

    parse.__name__ = option.key  # argparse names the type in some messages
    return parse


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, from its declaration. No argparse defaults: a flag that is not
    given leaves the setting to the environment, the file, or its default."""
    for option in settings.options():
        default = option.default
        shown = "none" if default in (None, [], "") else f"{default:g}" if isinstance(default, float) else default
        help = f"{option.declared.help} (default: {shown}; env {option.env})"
        if option.hint is bool:  # a switch: present or not
            parser.add_argument(option.flag, dest=option.key, action="store_const", const=True, help=help)
            continue
        parser.add_argument(
            option.flag,
            dest=option.key,
            type=_flag_type(option),
            action="append" if option.repeatable else "store",
            metavar=option.declared.metavar,
            help=help,
        )


def _add_address(parser: argparse.ArgumentParser) -> None:
    """``--name`` and ``--control``, declared as ``start`` declares them."""
    for option in (settings.option("name"), settings.option("control")):
        parser.add_argument(
            option.flag,
            dest=option.key,
            type=_flag_type(option),
            metavar=option.declared.metavar,
            help=f"{option.declared.help} (default: {option.default or 'from --name'}; env {option.env})",
        )


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="A multiprocess supervisor for ML inference workers.", epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--version", action="version", version=f"{PROG} (inference-supervisor) {ipc.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    start = commands.add_parser(
        "start",
        help="start a pool and serve until stopped",
        description="Start a pool of workers and serve until stopped (Ctrl+C, SIGTERM or `supervisor stop`).",
        epilog=_examples(
            "supervisor start --workers 4",
            "supervisor start --model mine=weights/mine.npz --bind 0.0.0.0:8080",
            "supervisor start --workers 2 --http uvicorn --batch-delay 2   # the fast path",
            "INFERENCE_SUPERVISOR_WORKERS=2 supervisor start --config pool.toml",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument("--config", metavar="FILE", help="read settings from a TOML file (flags and env override it)")
    _add_settings(start)

    config = commands.add_parser(
        "config",
        help="print the effective settings of `start` and where each comes from",
        description="Resolve the settings as `supervisor start` would (flag > environment > --config file > "
        "default) and print each with its source, without starting anything.",
        epilog=_examples(
            "supervisor config --config pool.toml", "INFERENCE_SUPERVISOR_WORKERS=8 supervisor config --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_argument("--config", metavar="FILE", help="read settings from a TOML file (flags and env override it)")
    config.add_argument("--json", action="store_true", help="print JSON")
    _add_settings(config)

    stop = commands.add_parser(
        "stop",
        help="drain and stop a running pool",
        description="Every worker finishes its in-flight requests (within the grace period), then the pool exits.",
        epilog=_examples("supervisor stop", "supervisor stop --name staging --grace 60"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stop.add_argument(
        "--grace", type=_flag_type(settings.option("grace")), metavar="SECONDS", help="override the pool's grace period"
    )
    _add_address(stop)

    status = commands.add_parser(
        "status",
        help="show a running pool, one row a worker",
        epilog=_examples("supervisor status", "supervisor status --json | jq '.workers[].state'"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_address(status)

    reload = commands.add_parser(
        "reload",
        help="replace every worker, one at a time, losing no request",
        description="Start a new worker in each slot in turn (reading code and models afresh), wait until it "
        "is ready, then drain the old one. A new worker that cannot start stops the reload; the old ones serve on.",
        epilog=_examples("supervisor reload", "supervisor reload --name staging"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_address(reload)

    scale = commands.add_parser(
        "scale",
        help="grow or shrink a running pool",
        description="Start new workers, or drain and stop the highest slots, until the pool has WORKERS workers.",
        epilog=_examples("supervisor scale 8", "supervisor scale 2 --name staging"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scale.add_argument("workers", type=_flag_type(settings.option("workers")), metavar="WORKERS")
    _add_address(scale)
    return parser


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("text", "info", "supervisor")
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "config":
            return _config(args)
        found = settings.resolve_only(("name", "control"), {"name": args.name, "control": args.control})
        address = found["control"] or default_address(found["name"])
        if args.command == "stop":
            return _stop(args, address)
        if args.command in ("reload", "scale"):
            return _operate(args, address)
        return _status(args, address)
    except client.ControlError as exc:
        return _fail(str(exc))
    except settings.SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `supervisor status | head -1`: the reader left; say nothing more, as cat would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _resolve(args: argparse.Namespace) -> settings.Settings:
    flags = {option.key: getattr(args, option.key) for option in settings.options()}
    return settings.resolve(flags, args.config)


def _config(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    rows = []
    for option in settings.options():
        section = resolved.pool if option.section is settings.PoolSettings else resolved.worker
        rows.append(
            {"setting": option.key, "value": getattr(section, option.key), "source": resolved.sources[option.key]}
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    shown = [
        (
            r["setting"],
            json.dumps(r["value"]) if isinstance(r["value"], list | str | None) else str(r["value"]),
            r["source"],
        )
        for r in rows
    ]
    for line in _table([("SETTING", "VALUE", "SOURCE"), *shown]):
        print(line)
    return EXIT_OK


def _start(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    problem = _preflight(resolved)
    if problem:
        return _fail(problem)
    logs.configure(
        resolved.pool.log_format, resolved.pool.log_level, "supervisor", process="supervisor", pid=os.getpid()
    )
    return anyio.run(Supervisor(resolved, _address(resolved)).run)


def _address(resolved: settings.Settings) -> str:
    return resolved.pool.control or default_address(resolved.pool.name)


def _preflight(resolved: settings.Settings) -> str | None:
    """What can be seen to be wrong before any process starts, as one line."""
    for spec in resolved.worker.models:
        name, _, source = spec.partition("=")
        if format_of(source) and not os.path.isfile(source):
            return f"--model {name}: no such file {source}"
    for folder in resolved.worker.model_dirs:
        if not os.path.isdir(folder):
            return f"--model-dir: no such folder {folder}"
    control = resolved.pool.control
    if control and sys.platform != "win32" and not os.path.isdir(os.path.dirname(os.path.abspath(control))):
        return f"--control {control}: no such folder {os.path.dirname(os.path.abspath(control))}"
    return None


def _stop(args: argparse.Namespace, address: str) -> int:
    reply = anyio.run(client.stop, address, args.grace)
    for worker in reply.workers:
        line = f"worker {worker.slot} (pid {worker.pid}): {worker.state}, exit {worker.exit_code}"
        if worker.completed is not None:
            line += f"; {worker.completed} in-flight finished, {worker.dropped} dropped, {worker.served} served"
        elif worker.reason:
            line += f"; {worker.reason}"
        print(line)
    print("stopped cleanly" if reply.clean else "stopped, not cleanly")
    return EXIT_OK if reply.clean else EXIT_UNCLEAN


def _operate(args: argparse.Namespace, address: str) -> int:
    request = ReloadRequest() if args.command == "reload" else ScaleRequest(args.workers)
    reply = anyio.run(client.operate, address, request, lambda text: print(text, flush=True))
    if reply.outcome == OperationReply.DONE:
        print(f"{args.command} done: {reply.message}")
        return EXIT_OK
    code = EXIT_INTERRUPTED_BY_STOP if reply.outcome == OperationReply.INTERRUPTED else EXIT_ERROR
    return _fail(f"{args.command} {reply.outcome}: {reply.message}", code)


STATUS_COLUMNS = ("SLOT", "GEN", "PID", "STATE", "UPTIME", "RESTARTS", "IN-FLIGHT", "MEMORY", "HEARTBEAT")


def _status_row(worker: WorkerStatus) -> tuple[str, ...]:
    age = "-" if worker.heartbeat_age is None else f"{worker.heartbeat_age:.1f}s ago"
    return (
        str(worker.slot),
        str(worker.generation),
        "-" if worker.pid is None else str(worker.pid),
        worker.state,
        "-" if worker.pid is None else _duration(worker.uptime),
        str(worker.restarts),
        str(worker.in_flight),
        f"{worker.rss / 2**20:.0f}Mi" if worker.rss else "-",
        age,
    )


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h03m``, ``4d02h``: short and sortable by eye."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows aligned in columns: text to the left, numbers to the right (kubectl's way)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(row[i].replace(".", "").isdigit() or row[i] == "-" for row in rows[1:]) for i in range(len(widths))]
    return [
        "  ".join(
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in rows
    ]


def _status(args: argparse.Namespace, address: str) -> int:
    reply = anyio.run(client.status, address)
    if args.json:
        body = {
            "supervisor_pid": reply.supervisor_pid,
            "url": reply.url,
            "state": reply.state,
            "workers": [dataclasses.asdict(worker) for worker in reply.workers],
        }
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print(f"pool {reply.state} at {reply.url} (supervisor pid {reply.supervisor_pid})")
    for line in _table([STATUS_COLUMNS, *(_status_row(worker) for worker in reply.workers)]):
        print(line)
    return EXIT_OK
