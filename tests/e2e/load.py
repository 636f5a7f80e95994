"""A steady load of kept-alive connections, counting every failure: the zero-loss tests' witness.

Each connection is a thread with one persistent ``http.client.HTTPConnection`` sending V2 JSON
infer requests back to back. A response that says ``Connection: close`` makes the client
reconnect for its next request, as any HTTP/1.1 client does; anything else that goes wrong (a
reset, a refused or dropped connection, a response cut short, a status that is not 2xx) counts
as a failure, with its reason kept.
"""

from __future__ import annotations

import collections
import threading
import urllib.parse
from http.client import HTTPConnection, HTTPException

from .harness import infer_body


class Load:
    def __init__(self, url: str, connections: int = 16, path: str = "/v2/models/mlp/infer") -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.path = path
        self.body = infer_body()
        self.ok = 0
        self.reconnects = 0
        self.failures: collections.Counter[str] = collections.Counter()
        #: Requests answered, by the pid of the worker that answered (its X-Worker-PID); and for
        #: each client, the worker that answered its last request ("" after a failure).
        self.by_worker: collections.Counter[str] = collections.Counter()
        self.placed = [""] * connections
        #: Failures by client: a worker lost under a client costs it its one request in flight.
        self.failed_by_client = [0] * connections
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(connections)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(self.failures.values())

    def total(self) -> int:
        with self._lock:
            return self.ok + sum(self.failures.values())

    def served(self) -> dict[str, int]:
        """Requests answered so far, by the pid of the worker that answered."""
        with self._lock:
            return dict(self.by_worker)

    def clients(self) -> dict[str, int]:
        """How many clients each worker (by pid) answered last: where the connections are."""
        with self._lock:
            return dict(collections.Counter(worker for worker in self.placed if worker))

    def _count(self, client: int, reason: str | None, reconnect: bool = False, worker: str = "") -> None:
        with self._lock:
            self.placed[client] = worker
            if worker:
                self.by_worker[worker] += 1
            if reason is None:
                self.ok += 1
            else:
                self.failures[reason] += 1
                self.failed_by_client[client] += 1
            self.reconnects += reconnect

    def _run(self, client: int) -> None:
        conn = HTTPConnection(self.host, self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while not self._stop.is_set():
            try:
                conn.request("POST", self.path, body=self.body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, HTTPException) as exc:
                self._count(client, type(exc).__name__)
                conn.close()
                continue
            closing = response.will_close
            worker = response.getheader("x-worker-pid", "")
            self._count(client, None if 200 <= response.status < 300 else f"HTTP {response.status}", closing, worker)
            if closing:
                conn.close()
        conn.close()
