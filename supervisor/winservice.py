"""The pool as a Windows service: the service control manager starts it, stops it with the same
drain as ``supervisor stop``, and shows its state while it starts and drains.

``sc create NAME binPath= "C:\\...\\python.exe -m supervisor start --windows-service NAME ..."``
makes ``python.exe`` itself the service program (README: "Windows service"). The service API is
three calls, made here with ctypes: ``StartServiceCtrlDispatcherW`` hands the main thread to the
manager, which runs :meth:`Service.main` on a thread of its own, where the supervisor's event loop
runs; the manager's controls arrive on the main thread (:meth:`Service.control`) and are handed to
the loop; ``SetServiceStatus`` reports. pywin32 was judged and left out: its service host
(``pythonservice.exe``) loads pywin32's DLLs from a search path that a virtual environment or an
embeddable Python does not give it, and the service then fails with error 1053 "did not respond in
a timely fashion" (pywin32 #1451, #1771, #1987); ``python.exe`` as the program has no such step.

What the manager is told follows the pool (:func:`status`, a clock-free table): START_PENDING while
workers come up (the checkpoint counts the ready ones; the wait hint is ``--ready-timeout``),
RUNNING once all serve, STOP_PENDING while it drains (hinted with the drain delay, the grace period
and the exit margin), then STOPPED with the exit code: a pool that went down (a crash loop, exit 4)
or never served (1) stops with ``ERROR_SERVICE_SPECIFIC_ERROR`` and that code, which ``sc query``
shows as SERVICE_EXIT_CODE.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from . import exits
from .lifecycle import PoolState
from .notify import View

if TYPE_CHECKING:
    from .run import Supervisor

logger = logging.getLogger("supervisor")

SERVICE_WIN32_OWN_PROCESS = 0x10
STOPPED, START_PENDING, STOP_PENDING, RUNNING = 1, 2, 3, 4
CONTROL_STOP, CONTROL_INTERROGATE, CONTROL_SHUTDOWN = 1, 4, 5
ACCEPT_STOP, ACCEPT_SHUTDOWN = 0x1, 0x4
NO_ERROR, ERROR_CALL_NOT_IMPLEMENTED, ERROR_SERVICE_SPECIFIC_ERROR = 0, 120, 1066
#: StartServiceCtrlDispatcherW's error when the process was not started by the manager.
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063


@dataclasses.dataclass(frozen=True)
class Status:
    """One SERVICE_STATUS, less its type (always a process of its own)."""

    state: int
    accepted: int = 0
    exit_code: int = NO_ERROR
    specific: int = 0
    checkpoint: int = 0
    wait_hint_ms: int = 0


def status(view: View, starting_ms: int, stopping_ms: int) -> Status:
    """What the manager is told of a pool in ``view``; ``starting_ms`` and ``stopping_ms`` how long
    a start and a drain may take."""
    if view.state is PoolState.STARTING:
        return Status(START_PENDING, checkpoint=view.ready + 1, wait_hint_ms=starting_ms)
    if view.state is PoolState.STOPPING:
        return Status(STOP_PENDING, checkpoint=view.workers - view.ready + 1, wait_hint_ms=stopping_ms)
    if view.state.final:
        return Status(STOP_PENDING, checkpoint=view.workers + 1, wait_hint_ms=stopping_ms)  # the exit is next
    return Status(RUNNING, ACCEPT_STOP | ACCEPT_SHUTDOWN)


def stopped(exit_code: int) -> Status:
    """The last status: a clean exit, or the supervisor's exit code as the service's own."""
    if exit_code == exits.OK:
        return Status(STOPPED)
    return Status(STOPPED, exit_code=ERROR_SERVICE_SPECIFIC_ERROR, specific=exit_code)


class _SERVICE_STATUS(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulong) for name in ("type", "state", "accepted", "exit", "specific", "check", "hint")]


class Service:
    """One service process: the dispatcher on the main thread, the supervisor on the manager's."""

    def __init__(self, name: str, make: Callable[[], Supervisor]) -> None:
        from ctypes import wintypes

        self.name = name
        self._make = make
        self.exit_code = exits.ERROR
        self._advapi = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        self._advapi.RegisterServiceCtrlHandlerExW.restype = wintypes.HANDLE
        self._handler_type = ctypes.WINFUNCTYPE(  # type: ignore[attr-defined,unused-ignore]
            wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID, wintypes.LPVOID
        )
        self._main_type = ctypes.WINFUNCTYPE(None, wintypes.DWORD, wintypes.LPVOID)  # type: ignore[attr-defined,unused-ignore]
        self._advapi.RegisterServiceCtrlHandlerExW.argtypes = [wintypes.LPCWSTR, self._handler_type, wintypes.LPVOID]
        self._advapi.SetServiceStatus.argtypes = [wintypes.HANDLE, ctypes.POINTER(_SERVICE_STATUS)]
        # Kept referenced: the manager calls them for as long as the service runs.
        self._main = self._main_type(self.main)
        self._control = self._handler_type(self.control)
        self._handle: Any = None
        self._supervisor: Supervisor | None = None
        self._loop: Any = None
        self._lock = threading.Lock()

    def run(self) -> int:
        """Hand the main thread to the manager until the service has stopped; the exit code."""

        class Entry(ctypes.Structure):
            _fields_ = [("name", ctypes.c_wchar_p), ("main", self._main_type)]

        table = (Entry * 2)(Entry(self.name, self._main), Entry(None, self._main_type()))
        if not self._advapi.StartServiceCtrlDispatcherW(table):
            error = ctypes.get_last_error()  # type: ignore[attr-defined,unused-ignore]
            if error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
                logger.error("--windows-service: not started by the service control manager (sc start %s)", self.name)
                return exits.USAGE
            logger.error("--windows-service: the service control manager refused it (error %d)", error)
            return exits.ERROR
        return self.exit_code

    def main(self, argc: int, argv: Any) -> None:
        """The service's life, on the thread the manager made for it."""
        self._handle = self._advapi.RegisterServiceCtrlHandlerExW(self.name, self._control, None)
        if not self._handle:
            logger.error("--windows-service: cannot register with the service control manager")
            return
        self.report(Status(START_PENDING, checkpoint=1, wait_hint_ms=30_000))
        try:
            self._supervisor = self._make()
            self.exit_code = anyio.run(self._serve)
        except BaseException:
            logger.exception("the service failed")
            self.exit_code = exits.ERROR
        self.report(stopped(self.exit_code))

    async def _serve(self) -> int:
        import asyncio

        assert self._supervisor is not None
        with self._lock:
            self._loop = asyncio.get_running_loop()
        return await self._supervisor.run()

    def control(self, code: int, event: int, data: Any, context: Any) -> int:
        """A control from the manager, on the main thread: a stop or a shutdown drains."""
        if code in (CONTROL_STOP, CONTROL_SHUTDOWN):
            logger.info("service control manager: %s", "stop" if code == CONTROL_STOP else "shutdown")
            with self._lock:
                if self._loop is not None and self._supervisor is not None:
                    self._loop.call_soon_threadsafe(self._supervisor.request_stop)
            return NO_ERROR
        return NO_ERROR if code == CONTROL_INTERROGATE else ERROR_CALL_NOT_IMPLEMENTED

    def report(self, what: Status) -> None:
        raw = _SERVICE_STATUS(
            SERVICE_WIN32_OWN_PROCESS,
            what.state,
            what.accepted,
            what.exit_code,
            what.specific,
            what.checkpoint,
            what.wait_hint_ms,
        )
        if not self._advapi.SetServiceStatus(self._handle, ctypes.byref(raw)):
            logger.warning("SetServiceStatus(%s): error %d", what, ctypes.get_last_error())  # type: ignore[attr-defined,unused-ignore]

    def tell(self, starting_ms: int, stopping_ms: int) -> Callable[[View | None, View], None]:
        """What the supervisor calls on each change of its pool's view."""

        def tell(before: View | None, after: View) -> None:
            self.report(status(after, starting_ms, stopping_ms))

        return tell


# --- registering the service: `supervisor service install|remove|start|stop` ----------------------

SC_MANAGER_CONNECT, SC_MANAGER_CREATE_SERVICE = 0x1, 0x2
SERVICE_QUERY_STATUS, SERVICE_START, SERVICE_STOP, DELETE = 0x4, 0x10, 0x20, 0x10000
SERVICE_ALL_ACCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL = 0xF01FF, 0x2, 0x1


class ServiceError(Exception):
    """A service manager's refusal, in its own words."""


def control_address(name: str) -> str:
    """The control pipe of the service ``name``'s pool: its own, not derived from the account it
    runs as (LocalSystem's default name would not be the operator's)."""
    return rf"\\.\pipe\inference-supervisor-service-{name}"


def command_line(name: str, config: str | None) -> str:
    """What the service manager runs: this interpreter, serving as the service ``name``."""
    import os
    import subprocess
    import sys

    arguments = [sys.executable, "-m", "supervisor", "start", "--windows-service", name]
    arguments += ["--control", control_address(name)]
    if config:
        arguments += ["--config", os.path.abspath(config)]
    return subprocess.list2cmdline(arguments)


class Manager:
    """The service control manager, through advapi32: the four things the command line asks."""

    def __init__(self) -> None:
        from ctypes import wintypes

        self._advapi = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        handle = wintypes.HANDLE
        for function, arguments in {
            "OpenSCManagerW": [wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD],
            "OpenServiceW": [handle, wintypes.LPCWSTR, wintypes.DWORD],
            "CreateServiceW": [handle, wintypes.LPCWSTR, wintypes.LPCWSTR, *[wintypes.DWORD] * 4,
                               wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.LPVOID, wintypes.LPCWSTR,
                               wintypes.LPCWSTR, wintypes.LPCWSTR],
        }.items():  # fmt: skip
            getattr(self._advapi, function).argtypes = arguments
            getattr(self._advapi, function).restype = handle
        self._advapi.QueryServiceStatus.argtypes = [handle, ctypes.POINTER(_SERVICE_STATUS)]
        # Handles are pointers: without argtypes ctypes would pass them as 32-bit ints.
        for function in ("DeleteService", "CloseServiceHandle"):
            getattr(self._advapi, function).argtypes = [handle]
        self._advapi.StartServiceW.argtypes = [handle, wintypes.DWORD, wintypes.LPVOID]
        self._advapi.ControlService.argtypes = [handle, wintypes.DWORD, ctypes.POINTER(_SERVICE_STATUS)]

    def _check(self, result: Any, doing: str) -> Any:
        if not result:
            error = ctypes.get_last_error()  # type: ignore[attr-defined,unused-ignore]
            words = ctypes.FormatError(error).strip().rstrip(".")  # type: ignore[attr-defined,unused-ignore]
            raise ServiceError(f"{doing}: {words} (error {error})")
        return result

    def _open(self, name: str, access: int, doing: str) -> Any:
        manager = self._check(self._advapi.OpenSCManagerW(None, None, SC_MANAGER_CONNECT), doing)
        try:
            return self._check(self._advapi.OpenServiceW(manager, name, access), doing)
        finally:
            self._advapi.CloseServiceHandle(manager)

    def install(self, name: str, config: str | None) -> None:
        doing = f"cannot install service {name!r}"
        manager = self._check(self._advapi.OpenSCManagerW(None, None, SC_MANAGER_CREATE_SERVICE), doing)
        try:
            service = self._check(
                self._advapi.CreateServiceW(
                    manager, name, f"Inference supervisor ({name})", SERVICE_ALL_ACCESS, SERVICE_WIN32_OWN_PROCESS,
                    SERVICE_AUTO_START, SERVICE_ERROR_NORMAL, command_line(name, config), None, None, None, None, None,
                ),
                doing,
            )  # fmt: skip
            self._advapi.CloseServiceHandle(service)
        finally:
            self._advapi.CloseServiceHandle(manager)

    def _on(self, name: str, access: int, verb: str, call: Callable[[Any], Any]) -> None:
        """``call`` on the service ``name`` opened for ``access``; a refusal says it could not ``verb``."""
        doing = f"cannot {verb} service {name!r}"
        service = self._open(name, access, doing)
        try:
            self._check(call(service), doing)
        finally:
            self._advapi.CloseServiceHandle(service)

    def remove(self, name: str) -> None:
        self._on(name, DELETE, "remove", self._advapi.DeleteService)

    def start(self, name: str) -> None:
        self._on(name, SERVICE_START, "start", lambda service: self._advapi.StartServiceW(service, 0, None))

    def stop(self, name: str) -> None:
        """Ask for the stop (the pool drains as ``supervisor stop`` drains); the state follows."""
        raw = _SERVICE_STATUS()
        self._on(name, SERVICE_STOP, "stop", lambda service: self._advapi.ControlService(service, CONTROL_STOP, raw))

    def state(self, name: str) -> int:
        """The service's state now (STOPPED, START_PENDING, STOP_PENDING, RUNNING...)."""
        raw = _SERVICE_STATUS()
        self._on(name, SERVICE_QUERY_STATUS, "query", lambda service: self._advapi.QueryServiceStatus(service, raw))
        return int(raw.state)
