"""The worker process: one member of the pool.

It joins the supervisor's control channel (``link``), loads its models (``models``) and serves
them over HTTP with hypercorn on the pool's shared listening socket (``serve``, ``api``). It
imports ``ipc``, never ``supervisor``.
"""
