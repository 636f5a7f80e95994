"""Command line of a worker process."""

from __future__ import annotations

import logging
import os
import threading
import time

import anyio

from ipc.contract import console, logs
from ipc.contract.launch import LaunchOptions

from .serve import run_worker

#: How long, after serving ends, model threads get to finish before the worker exits regardless.
THREAD_EXIT_WAIT = 1.0


def main(argv: list[str] | None = None) -> int:
    args = LaunchOptions.parse(argv)
    pid = os.getpid()
    who = f"worker[{args.slot} pid {pid}]"
    logs.configure(args.log_format, args.log_level, who, process="worker", slot=args.slot, pid=pid)
    options = {"use_uvloop": args.loop == "uvloop"}
    # A console's close (Windows) reaches every process on it: the worker waits for its
    # supervisor's Stop and drains within the time Windows gives, rather than end mid-request.
    with console.held():
        outcome = anyio.run(run_worker, args.control, args.slot, args.generation, backend_options=options)
    # anyio's idle worker threads end with the loop; a predict still running past the grace
    # period does not, nor a model load abandoned by a stop. Their work is already reported as
    # dropped or abandoned: waiting for them would only turn a clean exit into a kill.
    deadline = time.monotonic() + (THREAD_EXIT_WAIT if outcome.wait_for_threads else 0.0)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon and t.is_alive()]
    if busy:
        if outcome.wait_for_threads:
            logging.getLogger("worker").warning("exiting with %d model threads still busy", len(busy))
        logging.shutdown()
        os._exit(outcome.code)
    return outcome.code
