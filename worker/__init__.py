"""The worker process: one member of the pool. It imports ``ipc``, never ``supervisor``.

- ``__main__``, ``main``: the command line the supervisor starts a worker with.
- ``serve``: one worker's life: connect, configure, load its models, serve until told to stop.
- ``link``: the worker's end of the control channel: handshake, heartbeats, messages both ways.
- ``lifeline``: the worker dies with its supervisor, whatever happens to either.
- ``memory``: this process's resident memory, for heartbeats.
- ``http``: accepting on the pool's shared socket and serving with hypercorn or uvicorn.
- ``api``: the HTTP API, an ASGI app (KServe V1, the Open Inference Protocol V2).
- ``rpc``: the protocol's gRPC half, served beside HTTP with ``--grpc-bind``, from the same core.
- ``models``: the model interface, the demo MLP, and the loaders of model files and repositories.
"""
