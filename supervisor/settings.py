"""The settings of ``supervisor start``: declared once, read from flags, environment and file.

::

    --flag  >  INFERENCE_SUPERVISOR_<KEY>  >  --config FILE (TOML)  >  default

Two frozen dataclasses hold them: :class:`PoolSettings` (here: what only the supervisor reads)
and :class:`ipc.contract.settings.WorkerSettings` (what crosses to every worker). Each field is one
setting, declared with :func:`ipc.contract.settings.setting`; :func:`options` lists them, and the flags,
the TOML keys, the environment variables and their checks all derive from that list.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ipc.address import check_name
from ipc.contract import settings as contract
from ipc.contract.formats import format_of
from ipc.contract.logs import check_format, check_level
from ipc.contract.settings import GRPC, Declaration, WorkerSettings, check_installed, setting

from . import config
from .sockets import parse_bind

ENV_PREFIX = "INFERENCE_SUPERVISOR_"
#: How an environment variable may say a switch is on or off.
SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
#: More workers than any one machine wants: a typo, not a plan.
MAX_WORKERS = 512


def _check_bind(text: str) -> None:
    parse_bind(text)


def _check_optional_bind(text: str) -> None:
    if text:
        parse_bind(text)


def _check_grpc_bind(text: str) -> None:
    if text:
        parse_bind(text)
        check_installed("grpc", GRPC)


@dataclasses.dataclass(frozen=True, slots=True)
class PoolSettings:
    """What the supervisor itself reads: the pool's shape, address and health rules."""

    workers: int = setting(1, "worker processes", metavar="N", minimum=1, maximum=MAX_WORKERS)
    bind: str = setting(
        "127.0.0.1:8080",
        "where to serve HTTP; port 0 picks a free one, [::1]:8080 for IPv6",
        metavar="HOST:PORT",
        check=_check_bind,
    )
    drain_delay: float = setting(
        0.0,
        "on stop, keep serving this long with readiness at 503 before refusing new connections",
        metavar="SECONDS",
        minimum=0,
        maximum=3600,
    )
    ready_timeout: float = setting(
        120.0, "how long a worker may take to load its models and become ready", metavar="SECONDS", minimum=0
    )
    heartbeat_timeout: float = setting(
        30.0, "a worker silent this long is hung: it is killed and replaced", metavar="SECONDS", minimum=0.1
    )
    max_restarts: int = setting(
        5,
        "failed starts one slot may have within --restart-window before it cannot start;"
        " the pool gives up when no slot can start (while it starts: when one cannot)",
        metavar="N",
        minimum=0,
    )
    restart_window: float = setting(60.0, "the window --max-restarts counts in", metavar="SECONDS", minimum=0)
    max_requests: int = setting(
        0, "recycle a worker after it has answered this many requests (0: never)", metavar="N", minimum=0
    )
    max_requests_jitter: int = setting(
        0,
        "add a random 0..J to each worker's --max-requests, so they do not all recycle at once",
        metavar="J",
        minimum=0,
    )
    max_worker_memory: int = setting(
        0, "recycle a worker whose resident memory exceeds this many MiB (0: never)", metavar="MIB", minimum=0
    )
    threads_per_worker: int = setting(
        0,
        "threads each worker's numerical libraries (BLAS, OpenMP) may use; 0: the cores shared out among the workers",
        metavar="N",
        minimum=0,
    )
    grpc_bind: str = setting(
        "",
        "serve gRPC (inference.GRPCInferenceService, as KServe's and Triton's) from every worker"
        " at HOST:PORT (off when empty; the grpc extra: pip install '.[grpc]')",
        metavar="HOST:PORT",
        check=_check_grpc_bind,
    )
    metrics_bind: str = setting(
        "",
        "serve the pool's Prometheus metrics at http://HOST:PORT/metrics (off when empty)",
        metavar="HOST:PORT",
        check=_check_optional_bind,
    )
    log_format: str = setting(
        "text", "text for people, json for one JSON object a line (every line the pool prints)", check=check_format
    )
    log_level: str = setting("info", "debug, info, warning or error", check=check_level)
    log_file: str = setting(
        "",
        "append every line the pool prints (supervisor and workers) to this file instead of the"
        " console (a Windows service has none; empty: the console)",
        metavar="PATH",
    )
    name: str = setting("default", "the pool's name, which picks its default control address", check=check_name)
    control: str | None = setting(
        None, "the control address itself: a socket path on POSIX, \\\\.\\pipe\\NAME on Windows", metavar="ADDRESS"
    )


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting a user can set, and where it lives."""

    key: str
    section: type[Any]
    field: dataclasses.Field[Any]
    hint: Any
    declared: Declaration

    @property
    def flag(self) -> str:
        return self.declared.flag or "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def repeatable(self) -> bool:
        return bool(self.hint == list[str])

    @property
    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    def check(self, value: Any) -> Any:
        """``value`` as this setting holds it, or ``ValueError`` with the reason."""
        return contract.check(self.field, self.hint, value)

    def parse(self, text: str) -> Any:
        """A value from text (a flag, an environment variable): typed, then checked."""
        value: Any = text
        if self.hint is int:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"expected a whole number, not {text!r}") from None
        elif self.hint is float:
            try:
                value = float(text)
            except ValueError:
                kind = "seconds" if self.declared.seconds else "a number"
                raise ValueError(f"expected {kind}, not {text!r}") from None
        elif self.repeatable:
            return self.check([item.strip() for item in text.split(",") if item.strip()])
        elif self.hint is bool:
            if text.lower() not in SWITCH_WORDS:
                raise ValueError(f"expected true or false, not {text!r}")
            value = SWITCH_WORDS[text.lower()]
        return self.check(value)


def options() -> list[Option]:
    """Every setting a user can set, pool settings first."""
    found = []
    for section in (PoolSettings, WorkerSettings):
        hints = typing.get_type_hints(section)
        for field in dataclasses.fields(section):
            declared = contract.declaration(field)
            if declared is not None and not declared.internal:
                found.append(Option(field.name, section, field, hints[field.name], declared))
    return found


def option(key: str) -> Option:
    """The setting called ``key``."""
    return next(option for option in options() if option.key == key)


@dataclasses.dataclass(frozen=True)
class Settings:
    pool: PoolSettings
    worker: WorkerSettings
    #: Where each setting's value came from: ``flag``, ``env``, ``file PATH`` or ``default``.
    sources: dict[str, str]


class SettingsError(Exception):
    """A setting's value is wrong; the message names it and is for the user."""


def resolve(
    flags: Mapping[str, Any],
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Settings:
    """Every setting from the first place that has it: flags, environment, file, default.

    ``flags`` holds the values the command line gave (already checked), keyed by setting.
    Relative paths of models are made absolute: against the file's folder for the file's,
    against ``cwd`` for the others.
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or os.getcwd()
    try:
        from_file = config.load(config_file) if config_file else {}
    except config.ConfigError as exc:
        raise SettingsError(str(exc)) from None
    known = {option.key: option for option in options()}
    unknown = sorted(set(from_file) - set(known))
    if unknown:
        raise SettingsError(f"config {config_file}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    # Every value given is checked, even one that a flag overrides: a typo is found the day it
    # is made, not the day the flag goes away.
    in_env = {key: _from_env(option, environ) for key, option in known.items() if option.env in environ}
    in_file = {key: _from_file(known[key], value, str(config_file)) for key, value in from_file.items()}
    file_folder = os.path.dirname(os.path.abspath(str(config_file)))
    values: dict[str, dict[str, Any]] = {PoolSettings.__name__: {}, WorkerSettings.__name__: {}}
    sources: dict[str, str] = {}
    for key, option in known.items():
        if flags.get(key) is not None:
            value, source, base = flags[key], "flag", cwd
        elif key in in_env:
            value, source, base = in_env[key], "env", cwd
        elif key in in_file:
            value, source, base = in_file[key], f"file {config_file}", file_folder
        else:
            value, source, base = option.default, "default", cwd
        if key == "models":
            value = [_absolute_model(spec, base) for spec in value]
        elif key == "model_dirs":
            value = [os.path.normpath(os.path.join(base, folder)) for folder in value]
        values[option.section.__name__][key] = value
        sources[key] = source
    return Settings(
        PoolSettings(**values[PoolSettings.__name__]), WorkerSettings(**values[WorkerSettings.__name__]), sources
    )


def resolve_only(
    keys: Iterable[str], flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Just ``keys``, from flags, environment or default: what the commands that talk to a
    running pool need. A setting only ``start`` reads is not theirs to refuse."""
    environ = os.environ if environ is None else environ
    values = {}
    for key in keys:
        found = option(key)
        if flags.get(key) is not None:
            values[key] = flags[key]
        elif found.env in environ:
            values[key] = _from_env(found, environ)
        else:
            values[key] = found.default
    return values


def _from_env(option: Option, environ: Mapping[str, str]) -> Any:
    try:
        return option.parse(environ[option.env])
    except ValueError as exc:
        raise SettingsError(f"environment {option.env}: {exc}") from None


def _from_file(option: Option, value: Any, path: str) -> Any:
    try:
        return option.check(value)
    except ValueError as exc:
        raise SettingsError(f"config {path}: {option.key}: {exc}") from None


def _absolute_model(spec: str, base: str) -> str:
    """Workers may run elsewhere: a model file's path is made absolute; factories stay."""
    name, _, source = spec.partition("=")
    if format_of(source):
        return f"{name}={os.path.normpath(os.path.join(base, source))}"
    return spec
