"""Command line of a worker process."""

from __future__ import annotations

import argparse
import logging

import anyio

from .serve import run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description="A pool worker; the supervisor starts it.")
    parser.add_argument("--control", required=True, help="the supervisor's control address")
    parser.add_argument("--id", type=int, required=True, help="this worker's id in the pool")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker[{args.id}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    return anyio.run(run_worker, args.control, args.id)
