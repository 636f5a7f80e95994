"""What a worker is told by its supervisor: one typed contract, each setting declared once.

A setting is a dataclass field made by :func:`setting`: its annotation is its type, and its
metadata carries the help line, the bounds and any extra check. Everything else derives from
that one declaration (hypercorn's ``Config`` shape): the command line's flags, the TOML keys,
the environment variables and the check a decoded ``Configure`` message gets on the wire.

:class:`WorkerSettings` holds what crosses to workers; ``supervisor.settings`` declares the
settings only the supervisor reads, in the same way. Settings marked ``internal`` are filled in
by the supervisor, never by the user.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from collections.abc import Callable
from typing import Any

from . import formats

#: The key of a setting's :class:`Declaration` in its field's metadata.
METADATA_KEY = "setting"
#: The longest any SECONDS setting may be unless it says otherwise: a day. Longer is a typo
#: (or 1e300, which no timer takes), not a plan.
MAX_SECONDS = 86400.0


@dataclasses.dataclass(frozen=True)
class Declaration:
    """How a setting is described and checked, beyond its type and default."""

    help: str
    metavar: str | None = None
    #: The least value a number may take.
    minimum: float | None = None
    maximum: float | None = None
    #: Raises ``ValueError`` with a one-line reason for a value of the right type that is wrong.
    check: Callable[[Any], object] | None = None
    #: The command line's flag, when it is not ``--`` + the key with ``-`` for ``_``.
    flag: str | None = None
    #: Set by the supervisor itself: no flag, no key, no variable.
    internal: bool = False

    @property
    def seconds(self) -> bool:
        return self.metavar == "SECONDS"

    @property
    def most(self) -> float | None:
        """The largest value allowed: ``maximum``, else a day for seconds."""
        if self.maximum is None and self.seconds:
            return MAX_SECONDS
        return self.maximum


def setting(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], object] | None = None,
    flag: str | None = None,
    internal: bool = False,
) -> Any:
    """Declare one setting: a dataclass field with its :class:`Declaration`."""
    metadata = {METADATA_KEY: Declaration(help, metavar, minimum, maximum, check, flag, internal)}
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declaration(field: dataclasses.Field[Any]) -> Declaration | None:
    found = field.metadata.get(METADATA_KEY)
    return found if isinstance(found, Declaration) else None


def describe_type(hint: Any, declared: Declaration) -> str:
    """``hint`` in words, for error messages: 'a whole number', 'a list of strings'..."""
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number of seconds" if declared.seconds else "a number"
    if hint is bool:
        return "true or false"
    if hint == list[str]:
        return "a list of strings"
    return "a string"


def check(field: dataclasses.Field[Any], hint: Any, value: Any) -> Any:
    """``value`` as the setting ``field`` holds it, or ``ValueError`` with a one-line reason.

    ``hint`` is the field's resolved annotation. Whole numbers are accepted for floats.
    """
    declared = declaration(field)
    if declared is None:
        return value
    kind = describe_type(hint, declared)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be {kind}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and isinstance(value, float)):
            raise ValueError(f"must be {kind}")
        if hint is float:
            value = float(value)
        if not math.isfinite(value) or (declared.minimum is not None and value < declared.minimum):
            bound = f" >= {declared.minimum:g}" if declared.minimum is not None else ""
            if hint is int:
                raise ValueError(f"must be at least {declared.minimum:g}, not {value}")
            raise ValueError(f"must be a finite {kind.removeprefix('a ')}{bound}, not {value}")
        if declared.most is not None and value > declared.most:
            raise ValueError(f"must be at most {declared.most:g}, not {value:g}")
    elif hint == list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"must be {kind}")
        value = list(value)
    elif hint == (str | None):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be {kind}")
    elif not isinstance(value, str):
        raise ValueError(f"must be {kind}")
    if declared.check is not None and value is not None:
        declared.check(value)
    return value


def unservable_name(name: str) -> str | None:
    """Why no URL can reach a model named ``name``, if none can."""
    if name == "stats":
        return "GET /v2/models/stats is every model's statistics"
    if ":" in name:
        return "':' starts a V1 verb (/v1/models/NAME:predict)"
    if "/" in name or name in (".", ".."):
        return "it is not one segment of a URL path"
    return None


def check_model_specs(specs: list[str]) -> None:
    """Each spec is ``NAME=SOURCE`` with a name a URL can reach; what the source holds is for
    the worker to find out."""
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"{spec!r} is not NAME=PATH ({formats.SAFE}) or NAME=module:Factory")
        why = unservable_name(name)
        if why:
            raise ValueError(f"model name {name!r} cannot be served: {why}")


#: The longest dynamic batching may wait for more requests, in milliseconds.
MAX_BATCH_DELAY_MS = 1000.0


def check_batch_delays(specs: list[str]) -> None:
    """Each is ``NAME=MS``, MS a number of milliseconds within the batch delay's bounds."""
    for spec in specs:
        name, sep, ms = spec.partition("=")
        try:
            delay = float(ms)
        except ValueError:
            delay = math.nan
        if not sep or not name or not math.isfinite(delay) or not 0 <= delay <= MAX_BATCH_DELAY_MS:
            raise ValueError(f"{spec!r} is not NAME=MS with MS from 0 to {MAX_BATCH_DELAY_MS:g}")


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A distribution an HTTP server (or gRPC) needs, within the versions it is tested with:
    ``lowest`` up to, not including, ``below``. pyproject's extra of its name says the same."""

    name: str
    lowest: str
    below: str
    #: Used where installed, not needed: uvloop (POSIX only), where asyncio's loop does otherwise.
    optional: bool = False
    #: What it is imported as, when that is not its name.
    module: str | None = None

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module or self.name) is not None

    def __str__(self) -> str:
        return f"{self.name}>={self.lowest},<{self.below}"

    def admits(self, version: str) -> bool:
        return _release(self.lowest) <= _release(version) < _release(self.below)


def _release(version: str) -> tuple[int, ...]:
    """A version's release numbers: 0.56.0rc1 is (0, 56, 0), so it is past 0.55's series."""
    release = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in release[0].split(".")) if release else ()


#: The HTTP servers a worker can serve with, and what each needs installed beyond the core.
#: worker.http.uvicorn_server builds on uvicorn's internals (its protocol class, ServerState,
#: the cycle's flow control), which any minor release may change: one minor series each, the
#: ones tested, as hypercorn is bounded in pyproject and checked by worker.http.hypercorn_server.
HTTP_SERVERS: dict[str, tuple[Requirement, ...]] = {
    "hypercorn": (),
    "uvicorn": (
        Requirement("uvicorn", "0.55", "0.56"),
        Requirement("httptools", "0.9", "0.10"),
        Requirement("uvloop", "0.23", "0.24", optional=True),
    ),
}


#: What serving gRPC (``--grpc-bind``) needs, the grpc extra: tested with grpcio 1.85.4 and
#: protobuf 6.33.6, through their public API only (``grpc.aio``, a descriptor pool).
GRPC: tuple[Requirement, ...] = (
    Requirement("grpcio", "1.85", "2", module="grpc"),
    Requirement("protobuf", "6.31", "7", module="google.protobuf"),
)
#: --otel-endpoint's: OpenTelemetry's API and SDK, and its OTLP/HTTP exporter (worker.api.tracing).
OTEL: tuple[Requirement, ...] = (
    Requirement("opentelemetry-api", "1.30", "2", module="opentelemetry.trace"),
    Requirement("opentelemetry-sdk", "1.30", "2", module="opentelemetry.sdk"),
    Requirement("opentelemetry-exporter-otlp-proto-http", "1.30", "2", module="opentelemetry.exporter.otlp.proto.http"),
)


def check_otel_endpoint(text: str) -> None:
    if text:
        if not text.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL (an OTLP/HTTP collector's), not {text!r}")
        check_installed("otel", OTEL)


def check_http_server(name: str) -> None:
    """The server is known and what it needs is installed, at a version it is tested with; one
    line saying what to install otherwise. importlib.metadata is imported only for uvicorn: it
    takes 20-25 ms (measured here), the lookups 2-6 ms more."""
    if name not in HTTP_SERVERS:
        raise ValueError(f"must be one of {', '.join(HTTP_SERVERS)}, not {name!r}")
    check_installed(name, HTTP_SERVERS[name])


def check_installed(extra: str, needs: tuple[Requirement, ...]) -> None:
    """What ``extra`` needs is installed, at versions it is tested with; one line otherwise."""
    install = f"(in a checkout: pip install '.[{extra}]')"
    missing = [f"'{need}'" for need in needs if not need.optional and not need.installed]
    if missing:
        raise ValueError(f"{extra} is not installed: pip install {' '.join(missing)} {install}")
    if not needs:
        return
    from importlib import metadata

    for need in needs:
        if need.optional and not need.installed:
            continue
        try:
            version = metadata.version(need.name)
        except metadata.PackageNotFoundError:
            continue  # importable without a distribution (a source tree on sys.path): nothing to read
        if not need.admits(version):
            raise ValueError(f"{extra} needs {need}, not {need.name} {version}: pip install '{need}' {install}")


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a worker needs to know to load and serve, sent in ``Configure``."""

    grace: float = setting(30.0, "how long a stop lets in-flight requests finish", metavar="SECONDS", minimum=0)
    models: list[str] = setting(
        [],
        f"serve a model: NAME=path ({formats.SAFE}) or NAME=module:Factory; repeatable (with none, the demo 'mlp')",
        metavar="NAME=SOURCE",
        check=check_model_specs,
        flag="--model",
    )
    model_dirs: list[str] = setting(
        [], "serve every model in a repository folder (one model per subfolder)", metavar="DIR", flag="--model-dir"
    )
    allow_pickle: bool = setting(
        False, "serve scikit-learn models from .joblib/.pkl files, whose loading runs the code they hold"
    )
    trust_types: list[str] = setting(
        [],
        "trust this type in .skops files beyond those skops trusts (a load error names them); repeatable",
        metavar="TYPE",
        flag="--trust-type",
    )
    max_body_size: int = setting(64 * 1024 * 1024, "largest request body accepted", metavar="BYTES", minimum=1)
    body_timeout: float = setting(
        30.0, "a request body not received whole within this is refused with 408", metavar="SECONDS", minimum=0.1
    )
    access_log: bool = setting(False, "log a line for every request (off by default)")
    keep_alive: float = setting(
        5.0,
        "how long an idle kept-alive HTTP connection stays open (0: none, each connection closes)",
        metavar="SECONDS",
        minimum=0,
    )
    max_connections: int = setting(
        4000,
        "the most HTTP connections one worker holds open: near it the idle longest are closed,"
        " past it new ones are refused with 503",
        metavar="N",
        minimum=1,
        maximum=1_000_000,
    )
    batch_delay: float = setting(
        0.0,
        "dynamic batching: join requests that arrive within this many milliseconds into one model call,"
        " for every model that batches (max_batch_size > 0); 0: off",
        metavar="MS",
        minimum=0,
        maximum=MAX_BATCH_DELAY_MS,
    )
    model_batch_delays: list[str] = setting(
        [],
        "dynamic batching for one model, over --batch-delay: NAME=MS; repeatable",
        metavar="NAME=MS",
        check=check_batch_delays,
        flag="--model-batch-delay",
    )
    http: str = setting(
        "hypercorn",
        "the HTTP server: hypercorn, or uvicorn (faster; the uvicorn extra: pip install '.[uvicorn]')",
        metavar="SERVER",
        check=check_http_server,
    )
    otel_endpoint: str = setting(
        "",
        "trace inference requests with OpenTelemetry, sent over OTLP/HTTP to this collector URL (as"
        " OTEL_EXPORTER_OTLP_ENDPOINT; off when empty; the otel extra: pip install '.[otel]')",
        metavar="URL",
        check=check_otel_endpoint,
    )
    #: How often the worker's event loop reports in; the supervisor derives it from its timeout.
    heartbeat_interval: float = setting(1.0, "seconds between heartbeats", minimum=0.01, internal=True)
    #: The folder the pool was started from: model factories are imported from it, after the
    #: pool's own packages so that it can never shadow them.
    import_path: str = setting("", "where model factories are imported from", internal=True)
    #: The repositories' model versions (NAME/VERSION) as the pool read them when it started or
    #: last reloaded: a worker started since serves those (``ipc.contract.repository``). Empty: all.
    model_versions: list[str] = setting([], "the repositories' model versions the pool serves", internal=True)
