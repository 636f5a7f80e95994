"""The ``supervisor`` command: ``start``, ``stop``, ``status``.

Exit codes: 0 success; 1 an error the message explains (port in use, no supervisor running,
a worker that failed to start); 2 bad usage; 3 the pool stopped but not cleanly (a request was
dropped, a worker was lost or killed); 130 interrupted while waiting (stop, status).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, NoReturn

import anyio

from ipc.address import check_name, default_address

from . import client, config
from .run import EXIT_ERROR, EXIT_OK, EXIT_UNCLEAN, EXIT_USAGE, Supervisor, SupervisorConfig
from .sockets import parse_bind

PROG = "supervisor"
#: Ctrl+C while `stop` or `status` waits: the shell's convention, 128 + SIGINT.
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bind(text: str) -> tuple[str, int]:
    try:
        return parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_address(parser: argparse.ArgumentParser, default_name: str | None = "default") -> None:
    parser.add_argument(
        "--name",
        type=_name,
        default=default_name,
        help="the pool's name, for its default control address (default: default)",
    )
    parser.add_argument(
        "--control", metavar="ADDRESS", help="control address: a socket path on POSIX, \\\\.\\pipe\\NAME on Windows"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="A multiprocess supervisor for ML inference workers.", epilog=__doc__.split("\n\n", 1)[1]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    start = commands.add_parser("start", help="start a pool and serve until stopped")
    # No defaults here: a flag given wins over --config, which wins over DEFAULTS.
    start.add_argument("--config", metavar="FILE", help="read settings from a TOML file (flags override it)")
    start.add_argument("--workers", type=_positive_int, help="worker processes (default: 1)")
    start.add_argument(
        "--bind",
        type=_bind,
        metavar="HOST:PORT",
        help="where to serve HTTP (default: 127.0.0.1:8080; port 0 picks one)",
    )
    start.add_argument(
        "--grace", type=_seconds, metavar="SECONDS", help="how long a stop lets in-flight requests finish (default: 30)"
    )
    start.add_argument(
        "--drain-delay",
        type=_seconds,
        metavar="SECONDS",
        help="on stop, keep serving this long with readiness at 503 before refusing new connections (default: 0)",
    )
    start.add_argument(
        "--ready-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long workers may take to load and become ready (default: 120)",
    )
    start.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME=SOURCE",
        help="serve a model: NAME=path.npz or NAME=module:Factory (repeatable; default: the demo 'mlp')",
    )
    start.add_argument(
        "--model-dir",
        dest="model_dirs",
        action="append",
        metavar="DIR",
        help="serve every model in a repository folder (one model per subfolder)",
    )
    start.add_argument(
        "--max-body-size", type=_positive_int, metavar="BYTES", help="largest request body accepted (default: 64 MiB)"
    )
    _add_address(start, default_name=None)

    stop = commands.add_parser("stop", help="drain and stop a running pool")
    stop.add_argument(
        "--grace", type=_seconds, default=None, metavar="SECONDS", help="override the pool's grace period"
    )
    _add_address(stop)

    status = commands.add_parser("status", help="show a running pool, one row a worker")
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_address(status)
    return parser


DEFAULTS: dict[str, Any] = {
    "workers": 1,
    "bind": "127.0.0.1:8080",
    "grace": 30.0,
    "drain_delay": 0.0,
    "ready_timeout": 120.0,
    "max_body_size": 64 * 1024 * 1024,
    "name": "default",
    "control": None,
    "models": [],
    "model_dirs": [],
}


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if args.command == "start":
            return _start(args)
        address = args.control or default_address(args.name)
        if args.command == "stop":
            return _stop(args, address)
        return _status(args, address)
    except client.ControlError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `supervisor status | head -1`: the reader left; say nothing more, as cat would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """DEFAULTS, then the --config file, then the flags given."""
    settings = dict(DEFAULTS)
    if args.config:
        file_settings = config.load(args.config)
        for key, check in (
            ("workers", _positive_int),
            ("bind", _bind),
            ("name", _name),
            ("max_body_size", _positive_int),
        ):
            if key in file_settings:
                try:
                    file_settings[key] = check(str(file_settings[key]))
                except argparse.ArgumentTypeError as exc:
                    raise config.ConfigError(f"config {args.config}: {key}: {exc}") from None
        for key in ("grace", "drain_delay", "ready_timeout"):
            if key in file_settings:
                try:
                    file_settings[key] = _seconds(str(file_settings[key]))
                except argparse.ArgumentTypeError as exc:
                    raise config.ConfigError(f"config {args.config}: {key}: {exc}") from None
        settings.update(file_settings)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if isinstance(settings["bind"], str):
        settings["bind"] = parse_bind(settings["bind"])
    return settings


def _start(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except config.ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    models = list(settings["models"])
    for spec in models:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            return _fail(f"--model {spec!r} is not NAME=PATH.npz or NAME=module:Factory", EXIT_USAGE)
        if source.endswith(".npz") and not os.path.isfile(source):
            return _fail(f"--model {name}: no such file {source}")
    for folder in settings["model_dirs"]:
        if not os.path.isdir(folder):
            return _fail(f"--model-dir: no such folder {folder}")
        models.append("dir:" + os.path.abspath(folder))
    control = settings["control"]
    if control and sys.platform != "win32" and not os.path.isdir(os.path.dirname(os.path.abspath(control))):
        return _fail(f"--control {control}: no such folder {os.path.dirname(os.path.abspath(control))}")
    host, port = settings["bind"]
    supervisor_config = SupervisorConfig(
        control=control or default_address(settings["name"]),
        workers=settings["workers"],
        host=host,
        port=port,
        grace=settings["grace"],
        drain_delay=settings["drain_delay"],
        ready_timeout=settings["ready_timeout"],
        models=[_absolute(spec) for spec in models],
        max_body_size=settings["max_body_size"],
    )
    return anyio.run(Supervisor(supervisor_config).run)


def _absolute(spec: str) -> str:
    """Workers may run elsewhere: make weight-file paths absolute."""
    name, _, source = spec.partition("=")
    if source.endswith(".npz"):
        return f"{name}={os.path.abspath(source)}"
    return spec


def _stop(args: argparse.Namespace, address: str) -> int:
    reply = anyio.run(client.stop, address, args.grace)
    for worker in reply.workers:
        detail = (
            f"{worker.get('completed', 0)} in-flight finished, {worker.get('dropped', 0)} dropped, "
            f"{worker.get('served', 0)} served"
            if "completed" in worker
            else ""
        )
        print(
            f"worker {worker['id']} (pid {worker['pid']}): {worker['state']}, exit {worker['exit_code']}"
            + (f"; {detail}" if detail else "")
        )
    print("stopped cleanly" if reply.clean else "stopped, not cleanly")
    return EXIT_OK if reply.clean else EXIT_UNCLEAN


def _status(args: argparse.Namespace, address: str) -> int:
    reply = anyio.run(client.status, address)
    if args.json:
        body = {
            "supervisor_pid": reply.supervisor_pid,
            "url": reply.url,
            "state": reply.state,
            "workers": reply.workers,
        }
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print(f"pool {reply.state} at {reply.url} (supervisor pid {reply.supervisor_pid})")
    print(f"{'ID':>4}  {'PID':>8}  STATE")
    for worker in reply.workers:
        print(f"{worker['id']:>4}  {worker['pid']:>8}  {worker['state']}")
    return EXIT_OK
