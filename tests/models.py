"""Models for tests, loaded by workers with ``--model NAME=tests.models:Factory`` (and in-process)."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid

import numpy as np

from worker.models import Model, TensorSpec

GATE_ENV = "TEST_GATE_DIR"


class GatedModel(Model):
    """Holds every predict until the test opens the gate.

    On entry it drops ``started-*`` in the gate folder (named by $TEST_GATE_DIR), then waits
    for a file ``open`` there, at most a minute. Doubles its input.
    """

    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)
    max_batch_size = 8

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = os.environ[GATE_ENV]

    def wait_at_gate(self) -> None:
        """Until the test opens the gate (a minute at most): the model's own slowness."""
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(self.gate, "open")) and time.monotonic() < deadline:
            time.sleep(0.005)

    def predict(self, inputs):
        with open(os.path.join(self.gate, f"started-{uuid.uuid4().hex}"), "w"):
            pass
        self.wait_at_gate()
        return {"OUTPUT0": np.asarray(inputs["INPUT0"]) * 2}


class BrokenModel(Model):
    """Fails to load, as a model with a missing file would."""

    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> None:
        raise RuntimeError("weights are missing")


class SlowLoadingModel(GatedModel):
    """Its load() waits at the gate: a worker that takes its time to become ready."""

    def load(self) -> None:
        self.wait_at_gate()


class NaNModel(Model):
    """Returns NaN, which JSON cannot carry."""

    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)

    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, inputs):
        return {"OUTPUT0": np.full(np.shape(inputs["INPUT0"]), np.nan, np.float32)}


class FlakyModel(GatedModel):
    """Loads unless the gate folder holds a file ``break``: then every new worker fails to
    start, as one would whose weights were deleted under a running pool."""

    def load(self) -> None:
        if os.path.exists(os.path.join(self.gate, "break")):
            raise RuntimeError("weights vanished")

    def predict(self, inputs):
        return {"OUTPUT0": np.asarray(inputs["INPUT0"]) * 2}


class ProtocolBreakerModel(FlakyModel):
    """A hostile worker: on its first predict, writes a frame that is not msgpack onto its own
    control connection, as a buggy or compromised worker might."""

    def predict(self, inputs):
        import gc

        from worker.link import SupervisorLink

        (link,) = [o for o in gc.get_objects() if isinstance(o, SupervisorLink)]
        writer = link.connection._writer
        writer._loop.call_soon_threadsafe(writer.write, b"\x00\x00\x00\x03\xc1\xc1\xc1")
        return super().predict(inputs)


class LeakyModel(FlakyModel):
    """Keeps 2 MiB of every input it sees, as a model with a cache that never shrinks would."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.kept: list[bytes] = []

    def predict(self, inputs):
        self.kept.append(os.urandom(2 * 1024 * 1024))
        return super().predict(inputs)


class SlowReloadModel(FlakyModel):
    """Loads at once the first time (the gate folder has no ``hold``), and waits at the gate
    while ``hold`` exists: a reload whose new workers take as long as the test wants."""

    def load(self) -> None:
        if os.path.exists(os.path.join(self.gate, "hold")):
            self.wait_at_gate()


class RowSumModel(Model):
    """Sums each row of any number of 64-wide rows (no batch limit): big bodies are served whole."""

    inputs = (TensorSpec("INPUT0", "FP32", (-1, 64)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 1)),)

    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, inputs):
        return {"OUTPUT0": np.asarray(inputs["INPUT0"]).sum(axis=1, keepdims=True)}


class SleepyModel(RowSumModel):
    """A RowSumModel taking 5 s a call: a request surely in flight for a while (heartbeats say so
    every second) where no gate can be opened (a Windows service's environment is the service
    manager's, not the test's, and Wine's ignores the registry's Environment value)."""

    def predict(self, inputs):
        time.sleep(5)
        return super().predict(inputs)


class HeldModel(RowSumModel):
    """A RowSumModel whose predict waits until ``release`` is set (a minute at most), for
    in-process tests: ``entered`` is set once a predict is waiting, ``calls`` counts them."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0
        self._called = threading.Condition()

    def predict(self, inputs):
        with self._called:
            self.calls += 1
            self._called.notify_all()
        self.entered.set()
        self.release.wait(60)
        return super().predict(inputs)

    def wait_for_calls(self, count: int, timeout: float = 30.0) -> bool:
        """Whether ``count`` predicts have begun within ``timeout``."""
        with self._called:
            return self._called.wait_for(lambda: self.calls >= count, timeout)


class OrphanMakerModel(RowSumModel):
    """Its load() leaves an orphan behind, as a model starting helper processes might: the
    shell exits at once, its `sleep` is re-parented to PID 1, and exits 0.2 s later."""

    def load(self) -> None:
        import subprocess

        subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)


class EscapingModel(RowSumModel):
    """Its load() starts a helper that escapes its worker, as a model starting a server might,
    and sleeps ten minutes. POSIX: a fork in its own session, so it holds whatever the worker
    holds, the pool's listening socket too; Windows: a detached process in its own group, with
    ``time.sleep(600)`` and the worker's arguments (the pool's control address) on its command
    line, for the tests to find it."""

    def load(self) -> None:
        if sys.platform == "win32":
            import subprocess

            code = "import time; time.sleep(600)"
            flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
            subprocess.Popen([sys.executable, "-c", code, *sys.argv[1:]], creationflags=flags)
        elif os.fork() == 0:
            try:
                os.setsid()
                time.sleep(600)
            finally:
                os._exit(0)


class PoisonModel(Model):
    """Doubles its input, unless it holds 666: then it kills its own process on the spot, as a
    model whose native code crashes on one particular input would (a query of death)."""

    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)
    max_batch_size = 8

    def __init__(self, name: str) -> None:
        self.name = name

    def predict(self, inputs):
        data = np.asarray(inputs["INPUT0"])
        if (data == 666).any():
            os._exit(70)
        return {"OUTPUT0": data * 2}
