"""How a worker process is started: the options it needs before it can reach its supervisor.

Declared once, as :class:`LaunchOptions`: the supervisor renders them into the worker's command
line (:meth:`LaunchOptions.argv`) and the worker parses them back (:meth:`LaunchOptions.parse`).
Everything else a worker needs arrives later, in ``Configure``, over the control channel.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from .logs import FORMATS, LEVELS

#: The event loops a worker can run: uvloop only where it is installed (never on Windows).
LOOPS = ("asyncio", "uvloop")


def _option(help: str, choices: Sequence[str] | None = None) -> Any:
    return dataclasses.field(metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    control: str = _option("the supervisor's control address")
    slot: int = _option("this worker's slot in the pool")
    generation: int = _option("which process of its slot this is")
    parent: int = _option("the supervisor's pid: the worker dies with it")
    log_format: str = _option("how it writes its log lines", FORMATS)
    log_level: str = _option("the least level it logs", LEVELS)
    #: Chosen before the handshake: the loop runs it.
    loop: str = _option("its event loop", LOOPS)

    def argv(self) -> list[str]:
        """The options as command-line arguments, in declaration order."""
        return [item for field in dataclasses.fields(self) for item in (_flag(field), str(getattr(self, field.name)))]

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None, prog: str = "python -m worker") -> LaunchOptions:
        """The options from a worker's command line; argparse's usage error (exit 2) if wrong."""
        parser = argparse.ArgumentParser(prog=prog, description="A pool worker; the supervisor starts it.")
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            parser.add_argument(
                _flag(field),
                dest=field.name,
                type=hints[field.name],
                required=True,
                choices=field.metadata["choices"],
                help=field.metadata["help"],
            )
        return cls(**vars(parser.parse_args(argv)))


def parent_of(argv: Sequence[str]) -> int:
    """The supervisor's pid from a worker's command line, read before anything else is (0 if
    it names none): the worker binds its life to it before its slow imports."""
    flag = _flag(next(field for field in dataclasses.fields(LaunchOptions) if field.name == "parent"))
    if flag in argv[:-1]:
        value = argv[list(argv).index(flag) + 1]
        return int(value) if value.isdigit() else 0
    return 0


def _flag(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")
