"""Command line of a worker process."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

import anyio

from .serve import run_worker

#: How long, after serving ends, threads get to finish before the worker exits regardless.
THREAD_EXIT_WAIT = 1.0


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
    code = anyio.run(run_worker, args.control, args.id)
    # anyio's idle worker threads end with the loop; a predict still running past the grace
    # period does not. Its request was already dropped and reported: waiting for it would only
    # turn a clean exit into a kill.
    deadline = time.monotonic() + THREAD_EXIT_WAIT
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if busy:
        logging.getLogger("worker").warning("exiting with %d model threads still busy", len(busy))
        logging.shutdown()
        os._exit(code)
    return code
