"""The ``supervisor`` command: ``start``, ``config`` and ``service`` (Windows: ``supervisor.winservice``)
here, and a sub-command for each control command (``stop``, ``status``, ``reload``, ``scale``,
``ping``: ``supervisor.commands``).

Exit codes: 0 success; 1 an error the message explains (port in use, no supervisor running,
a worker that failed to start, a reload whose new worker could not start); 2 bad usage or a bad
setting (a wrong value, a model file or folder that does not exist); 3 the
pool stopped but not cleanly (a request was dropped, a worker had to be killed); 4 the pool
went down (no worker could start: a crash loop); 5 a reload or scale was interrupted by a stop;
130 interrupted while waiting (Ctrl+C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NoReturn

import anyio

import ipc
from ipc.address import default_address
from ipc.contract import logs
from ipc.contract.formats import format_of

from . import client, exits, settings
from .commands import BY_NAME, COMMANDS, Command, fail, flag_type, table
from .policy import Timeouts
from .run import Supervisor

PROG = "supervisor"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump, and no abbreviated flag: with
    abbreviations ``--worker 4`` was ``--workers 4``, and a flag added later (``--workers-max``)
    would have turned a working command line into an ambiguous one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        self.exit(exits.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
            type=flag_type(option),
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
            type=flag_type(option),
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
    start.add_argument(
        "--windows-service",
        metavar="NAME",
        help="run as the Windows service NAME, as the service control manager starts it (README: Windows service)",
    )
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

    service = commands.add_parser(
        "service",
        help="register the pool as a Windows service, remove it, start or stop it",
        description="Windows: register a pool (its settings in a TOML file) with the service control manager, "
        "which starts it at boot and stops it with the drain of `supervisor stop`; remove it; start or stop it "
        "and wait until it has (README: Windows service).",
        epilog=_examples(
            "supervisor service install --name inference-pool --config C:\\pool\\pool.toml",
            "supervisor service start --name inference-pool",
            "supervisor status --control \\\\.\\pipe\\inference-supervisor-service-inference-pool",
            "supervisor service stop --name inference-pool",
            "supervisor service remove --name inference-pool",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    service.add_argument("action", choices=["install", "remove", "start", "stop"])
    service.add_argument("--name", required=True, help="the service's name")
    service.add_argument("--config", metavar="FILE", help="install: the pool's settings, a TOML file")

    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=_examples(*command.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.arguments(sub)
        _add_address(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure("text", "info", "supervisor")
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "config":
            return _config(args)
        if args.command == "service":
            return _service_command(args)
        found = settings.resolve_only(("name", "control"), {"name": args.name, "control": args.control})
        address = found["control"] or default_address(found["name"])
        return _control(BY_NAME[args.command], args, address)
    except client.ControlError as exc:
        return fail(str(exc))
    except settings.SettingsError as exc:
        return fail(str(exc), exits.USAGE)
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        # `supervisor status | head -1`: the reader left; say nothing more, as cat would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exits.OK


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
        return exits.OK
    shown = [
        (
            r["setting"],
            json.dumps(r["value"]) if isinstance(r["value"], list | str | None) else str(r["value"]),
            r["source"],
        )
        for r in rows
    ]
    for line in table([("SETTING", "VALUE", "SOURCE"), *shown]):
        print(line)
    if not resolved.worker.models and not resolved.worker.model_dirs:  # `models []` alone said nothing
        print(
            "models: none given, so the built-in demo model 'mlp' is served; give --model NAME=FILE or "
            "NAME=module:Factory, or --model-dir DIR (or INFERENCE_SUPERVISOR_MODELS, ..._MODEL_DIRS, or the keys "
            "models, model_dirs of --config)"
        )
    return exits.OK


def _start(args: argparse.Namespace) -> int:
    resolved = _resolve(args)
    problem = _preflight(resolved)
    if problem:  # a setting naming what is not there is a bad setting, as a bad value is
        return fail(problem, exits.USAGE)
    if args.windows_service and sys.platform != "win32":
        return fail("--windows-service: a Windows service runs on Windows only", exits.USAGE)
    if resolved.pool.log_file:
        try:
            logs.to_file(resolved.pool.log_file)
        except OSError as exc:
            return fail(f"--log-file {resolved.pool.log_file}: {exc.strerror or exc}", exits.USAGE)
    logs.configure(
        resolved.pool.log_format, resolved.pool.log_level, "supervisor", process="supervisor", pid=os.getpid()
    )
    if args.windows_service:
        return _service(args.windows_service, resolved)
    return anyio.run(Supervisor(resolved, _address(resolved)).run)


def _service(name: str, resolved: settings.Settings) -> int:
    """Serve as the Windows service ``name`` (:mod:`.winservice`)."""
    from .winservice import Service

    starting = round(resolved.pool.ready_timeout * 1000)
    stopping = round((resolved.pool.drain_delay + resolved.worker.grace + Timeouts().exit_margin) * 1000)

    def supervisor() -> Supervisor:
        made = Supervisor(resolved, _address(resolved))
        made.interrupts = False
        made.tellers.append(service.tell(starting, stopping))
        return made

    service = Service(name, supervisor)
    return service.run()


def _service_command(args: argparse.Namespace) -> int:
    """``supervisor service ACTION --name NAME``: the service control manager asked, one line each."""
    if sys.platform != "win32":
        return fail("supervisor service: Windows services run on Windows only (systemd: deploy/systemd)", exits.USAGE)
    from . import winservice

    logged = bool(args.config and settings.resolve({}, args.config, {}).pool.log_file)  # a bad file: said now
    manager = winservice.Manager()
    try:
        if args.action == "install":
            manager.install(args.name, args.config)
            print(f"service {args.name} installed; its pool's control: {winservice.control_address(args.name)}")
            if not logged:
                print("note: a service has no console: set log_file in --config FILE, or its lines are lost")
            return exits.OK
        if args.action == "remove":
            manager.remove(args.name)
            print(f"service {args.name} removed")
            return exits.OK
        getattr(manager, args.action)(args.name)
        goal = winservice.RUNNING if args.action == "start" else winservice.STOPPED
        state = winservice.START_PENDING if args.action == "start" else winservice.STOP_PENDING
        while state not in (goal, winservice.STOPPED):
            time.sleep(0.25)  # the manager has no wait for a state: sc and the Services panel poll too
            state = manager.state(args.name)
    except winservice.ServiceError as exc:
        return fail(str(exc))
    if state != goal:
        return fail(f"service {args.name} stopped while starting: `sc query {args.name}` says with what code")
    print(f"service {args.name} {'running' if goal == winservice.RUNNING else 'stopped'}")
    return exits.OK


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


def _control(command: Command, args: argparse.Namespace, address: str) -> int:
    """Ask the pool at ``address`` as ``command`` says, print the reply; the exit code."""

    def progress(line: str) -> None:
        print(line, flush=True)

    reply = anyio.run(client.call, address, command.ask(args), command.reply, command.timeout, progress)
    return command.show(reply, args)
