"""The supervisor: the process that owns the worker pool.

It binds the pool's listening socket once, spawns the workers, hands each one the socket and
its settings over the control channel, and answers control requests from the command line.
Workers are controlled by messages only, never by signals; the supervisor's own OS interrupts
(Ctrl+C, SIGTERM, Ctrl+Break) become the same stop request. Imports ``ipc``, never ``worker``.

Modules, from the command line down:

- ``cli`` (and ``__main__``, for ``python -m supervisor``): the ``supervisor`` command;
  ``commands``: the control commands as one table (the supervisor's answer, the command line's
  question and printout); ``client``: the command line's end of the control channel;
  ``exits``: the exit codes.
- ``settings`` (and ``config``, the TOML file): every setting of ``supervisor start``.
- ``run``: one supervisor's life; ``control``: control connections, admitted and routed;
  ``interrupts``: OS interrupts as calls; ``sockets``: binding the HTTP socket; ``metrics``:
  ``/metrics``; ``reaper``: what the workers left behind, ended and reaped (and orphans as PID 1);
  ``notify``: systemd's notify protocol (ready, reloading, stopping, the watchdog);
  ``winservice``: the pool as a Windows service (the service control manager's start and stop).
- ``pool``: the pool, which glues its parts: ``slots`` and ``workers`` (what it knows of each
  place and each process), ``lifecycle`` (their transition tables and the pool's),
  ``health`` (the clock-free policy) and ``policy`` (restart rules, timeouts), ``watchdog``
  (which acts on the policy), ``launcher`` (spawning, draining, killing, reaping; ``spawn``
  and ``_winjob`` underneath), ``channel`` (each worker's control connection), ``stats``
  (the pool's counters), ``quarantine`` (models whose requests kill their workers),
  ``balance`` (kept-alive connections spread over the workers), ``replace`` and
  ``operations`` (reload, scale, recycling).
"""
