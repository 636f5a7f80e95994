"""The control commands, one table: for each request a client may send, how the supervisor
answers it and how the command line asks for it and prints the answer.

The control server (``supervisor.control``) dispatches each request by this table, and the
command line (``supervisor.cli``) builds a sub-command from each entry. Adding a command takes
a request and a reply in ``ipc/messages.py``, an entry here, and a test (the README's
developer section walks through ``ping``).

A handler is an async generator: it yields ``Progress`` lines, if it has any, and then its one
reply, or an ``Error`` for a request it refuses. The client that asked only watches: if it
goes away, whatever the handler started (a reload, say) carries on in the pool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import ipc
from ipc.messages import (
    Error,
    Message,
    OperationReply,
    PingReply,
    PingRequest,
    Progress,
    ReloadRequest,
    ScaleRequest,
    StatusReply,
    StatusRequest,
    StopReply,
    StopRequest,
    WorkerStatus,
)

from . import exits, settings
from .operations import Operation, Outcome
from .pool import Pool


@dataclasses.dataclass(frozen=True)
class Context:
    """What a handler may use."""

    pool: Pool
    #: Where the pool serves HTTP.
    url: str
    #: When the supervisor started, on the pool's clock.
    started_at: float
    #: Asks the supervisor to stop (with this grace, or its own) and waits until it has; the
    #: block around the reply holds the supervisor's exit until the reply is sent.
    stop: Callable[[float | None], AbstractAsyncContextManager[StopReply]]


Handler = Callable[[Context, Any], AsyncGenerator[Message, None]]


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    request: type[Message]
    reply: type[Message]
    handle: Handler
    #: The command line: its one-line help, its description and examples, its own arguments,
    #: the request it makes of them, and how it prints the reply (returning the exit code).
    help: str
    description: str
    examples: tuple[str, ...]
    arguments: Callable[[argparse.ArgumentParser], None]
    ask: Callable[[argparse.Namespace], Message]
    show: Callable[[Any, argparse.Namespace], int]
    #: How long the client waits for the reply (progress lines keep coming meanwhile); None: as
    #: long as it takes (a stop's drain, a reload).
    timeout: float | None = 10.0


# --- status ------------------------------------------------------------------------------------


async def _status(context: Context, request: StatusRequest) -> AsyncGenerator[Message, None]:
    pool = context.pool
    operation = pool.operation.summary if pool.operation is not None else None
    yield StatusReply(os.getpid(), context.url, pool.state.value, pool.status(), operation)


def _json_switch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


STATUS_COLUMNS = ("SLOT", "GEN", "PID", "STATE", "UPTIME", "RESTARTS", "IN-FLIGHT", "MEMORY", "HEARTBEAT")


def _show_status(reply: StatusReply, args: argparse.Namespace) -> int:
    if args.json:
        body = {
            "supervisor_pid": reply.supervisor_pid,
            "url": reply.url,
            "state": reply.state,
            "operation": reply.operation,
            "workers": [dataclasses.asdict(worker) for worker in reply.workers],
        }
        print(json.dumps(body, indent=2))
        return exits.OK
    print(f"pool {reply.state} at {reply.url} (supervisor pid {reply.supervisor_pid})")
    if reply.operation:
        print(reply.operation)
    for line in table([STATUS_COLUMNS, *(_status_row(worker) for worker in reply.workers)]):
        print(line)
    return exits.OK


def _status_row(worker: WorkerStatus) -> tuple[str, ...]:
    age = "-" if worker.heartbeat_age is None else f"{worker.heartbeat_age:.1f}s ago"
    return (
        str(worker.slot),
        str(worker.generation),
        "-" if worker.pid is None else str(worker.pid),
        worker.state,
        "-" if worker.pid is None else duration(worker.uptime),
        str(worker.restarts),
        str(worker.in_flight),
        f"{worker.rss / 2**20:.0f}Mi" if worker.rss else "-",
        age,
    )


# --- stop --------------------------------------------------------------------------------------


async def _stop(context: Context, request: StopRequest) -> AsyncGenerator[Message, None]:
    if request.grace is not None:
        try:
            settings.option("grace").check(request.grace)
        except ValueError as exc:
            yield Error(Error.BAD_REQUEST, f"grace {exc}")
            return
    async with context.stop(request.grace) as reply:
        yield reply


def _grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace", type=flag_type(settings.option("grace")), metavar="SECONDS", help="override the pool's grace period"
    )


def _show_stop(reply: StopReply, args: argparse.Namespace) -> int:
    for worker in reply.workers:
        line = f"worker {worker.slot} (pid {worker.pid}): {worker.state}, exit {worker.exit_code}"
        if worker.completed is not None:
            line += f"; {worker.completed} in-flight finished, {worker.dropped} dropped, {worker.served} served"
        elif worker.reason:
            line += f"; {worker.reason}"
        print(line)
    print("stopped cleanly" if reply.clean else "stopped, not cleanly")
    return exits.OK if reply.clean else exits.UNCLEAN


# --- reload and scale --------------------------------------------------------------------------


async def _reload(context: Context, request: ReloadRequest) -> AsyncGenerator[Message, None]:
    async for message in _follow(context.pool, context.pool.operations.reload()):
        yield message


async def _scale(context: Context, request: ScaleRequest) -> AsyncGenerator[Message, None]:
    try:
        workers = settings.option("workers").check(request.workers)
    except ValueError as exc:
        yield Error(Error.BAD_REQUEST, f"workers {exc}")
        return
    async for message in _follow(context.pool, context.pool.operations.scale(workers)):
        yield message


async def _follow(pool: Pool, started: Operation | Outcome) -> AsyncGenerator[Message, None]:
    """An operation's progress lines as it goes, then its outcome (or its refusal)."""
    if isinstance(started, Operation):
        async for line in started.follow():
            yield Progress(line)
        assert started.outcome is not None
        started = started.outcome
    yield OperationReply(started.outcome, started.message, pool.status())


def _workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workers", type=flag_type(settings.option("workers")), metavar="WORKERS")


def _show_operation(reply: OperationReply, args: argparse.Namespace) -> int:
    if reply.outcome == OperationReply.DONE:
        print(f"{args.command} done: {reply.message}")
        return exits.OK
    code = exits.INTERRUPTED_BY_STOP if reply.outcome == OperationReply.INTERRUPTED else exits.ERROR
    return fail(f"{args.command} {reply.outcome}: {reply.message}", code)


# --- ping --------------------------------------------------------------------------------------


async def _ping(context: Context, request: PingRequest) -> AsyncGenerator[Message, None]:
    pool = context.pool
    yield PingReply(os.getpid(), ipc.__version__, context.url, pool.state.value, pool.now() - context.started_at)


def _show_ping(reply: PingReply, args: argparse.Namespace) -> int:
    up = duration(reply.uptime)
    print(
        f"pool {reply.state} at {reply.url} (supervisor pid {reply.supervisor_pid}, up {up}, version {reply.version})"
    )
    return exits.OK


def _nothing(parser: argparse.ArgumentParser) -> None:
    pass


COMMANDS = (
    Command(
        "stop", StopRequest, StopReply, _stop,
        help="drain and stop a running pool",
        description="Every worker finishes its in-flight requests (within the grace period), then the pool exits.",
        examples=("supervisor stop", "supervisor stop --name staging --grace 60"),
        arguments=_grace, ask=lambda args: StopRequest(args.grace), show=_show_stop, timeout=None,
    ),
    Command(
        "status", StatusRequest, StatusReply, _status,
        help="show a running pool, one row a worker",
        description="The pool's state, the reload or scale under way if any, and a row for each worker process.",
        examples=("supervisor status", "supervisor status --json | jq '.workers[].state'"),
        arguments=_json_switch, ask=lambda args: StatusRequest(), show=_show_status,
    ),
    Command(
        "reload", ReloadRequest, OperationReply, _reload,
        help="replace every worker, one at a time, losing no request",
        description="Start a new worker in each slot in turn (reading code and models afresh), wait until it "
        "is ready, then drain the old one. A new worker that cannot start stops the reload; the old ones serve on.",
        examples=("supervisor reload", "supervisor reload --name staging"),
        arguments=_nothing, ask=lambda args: ReloadRequest(), show=_show_operation, timeout=None,
    ),
    Command(
        "scale", ScaleRequest, OperationReply, _scale,
        help="grow or shrink a running pool",
        description="Start new workers, or drain and stop the highest slots, until the pool has WORKERS workers.",
        examples=("supervisor scale 8", "supervisor scale 2 --name staging"),
        arguments=_workers, ask=lambda args: ScaleRequest(args.workers), show=_show_operation, timeout=None,
    ),
    Command(
        "ping", PingRequest, PingReply, _ping,
        help="say whether a pool is running, in one line",
        description="Ask the pool's supervisor whether it is there: exit 0 and one line if it answers, 1 if not.",
        examples=("supervisor ping", "supervisor ping --name staging || supervisor start --name staging"),
        arguments=_nothing, ask=lambda args: PingRequest(), show=_show_ping,
    ),
)  # fmt: skip
BY_NAME = {command.name: command for command in COMMANDS}
BY_REQUEST = {command.request: command for command in COMMANDS}


# --- what the command line shares -------------------------------------------------------------


def fail(message: str, code: int = exits.ERROR) -> int:
    """Print ``message`` as the command's one-line error; return ``code``."""
    print(f"supervisor: error: {message}", file=sys.stderr)
    return code


def flag_type(option: settings.Option) -> Callable[[str], Any]:
    """argparse's ``type`` for a setting: its parse and its checks, one line if wrong."""

    def parse(text: str) -> Any:
        try:
            value = option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value[0] if option.repeatable else value

    parse.__name__ = option.key  # argparse names the type in some messages
    return parse


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h03m``, ``4d02h``: short and sortable by eye."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows aligned in columns: text to the left, numbers to the right (kubectl's way)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(row[i].replace(".", "").isdigit() or row[i] == "-" for row in rows[1:]) for i in range(len(widths))]
    return [
        "  ".join(
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in rows
    ]
