"""The supervisor: the process that owns the worker pool.

It binds the pool's listening socket once, spawns the workers, hands each one the socket and
its settings over the control channel, and serves control requests (``stop``, ``status``) from
the command line. Workers are controlled by messages only, never by signals; the supervisor's
own OS interrupts (Ctrl+C, SIGTERM, Ctrl+Break) become the same stop request.

Modules: ``cli`` (the command line) -> ``run`` (one supervisor's life) -> ``pool`` (workers and
their ``lifecycle``), ``control`` (control connections), ``interrupts``, ``sockets``, ``stats``;
``client`` is the other end, for ``stop`` and ``status``. Imports ``ipc``, never ``worker``.
"""
