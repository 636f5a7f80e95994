"""What a supervisor and its workers agree on beyond the wire: the contract both sides read.

- ``settings``: how a setting is declared and checked, and :class:`~.settings.WorkerSettings`,
  what every worker is told in ``Configure``.
- ``formats``: the model file formats, one table: suffix, repository file name, whether
  loading runs code, what must be installed.
- ``repository``: the layout of a model repository folder (which models and versions it holds).
- ``launch``: the options a worker process is started with, rendered into its command line by
  the supervisor and parsed back by the worker.
- ``logs``: how every process of a pool writes its log lines.
- ``inflight``: the record of what a worker has in flight, which its supervisor reads after
  the worker died.
- ``console``: a Windows console's close, log-off and shutdown, held off while the pool drains.

These modules import nothing from the rest of ``ipc``, nor from ``supervisor`` or ``worker``;
the protocol's messages carry some of their records (``Configure`` holds ``WorkerSettings``).
"""
