"""Connection floods: a worker accepts every connection as it comes, holds at most
``--max-connections``, closes idle ones (oldest first) to make room, and refuses the rest at once."""

from __future__ import annotations

import json
import socket
import statistics
import time
import urllib.parse

import pytest

from .harness import http, wait_until

pytestmark = pytest.mark.each_server


def address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


def health_on_a_new_connection(url: str) -> float:
    started = time.monotonic()
    with socket.create_connection(address(url), timeout=30) as conn:
        conn.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return time.monotonic() - started


def kept_alive(url: str) -> socket.socket:
    """A connection that has had one answer and stays open, idle."""
    conn = socket.create_connection(address(url), timeout=30)
    conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while not received.endswith(b'{"live":true}'):
        chunk = conn.recv(65536)
        assert chunk, received
        received += chunk
    return conn


def is_closed(conn: socket.socket, wait: float) -> bool:
    """The server has closed ``conn`` (within ``wait`` seconds)."""
    conn.settimeout(wait)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_new_client_is_answered_at_once_while_hundreds_of_connections_arrive(launch, platform):
    """Each worker looked away for up to 5 ms after each accept once it held 25 connections:
    with 500 idle connections just opened, a new client waited about 2.5 s for its answer
    (1,000: 5.8 s). Now it waits for what setting up 500 connections costs, under 1 ms each."""
    pool = launch(workers=2)
    url = pool.wait_ready()
    baseline = statistics.median(health_on_a_new_connection(url) for _ in range(10))
    flood = []
    try:
        for _ in range(500):
            flood.append(socket.create_connection(address(url), timeout=30))
        took = health_on_a_new_connection(url)
    finally:
        for conn in flood:
            conn.close()
    # Old code, Linux: 1.9-2.6 s (measured under load), new: 0.4 s under the same load. Under
    # Wine each connection costs a worker some 4 ms to set up, whoever accepts it (2.2 s for
    # 500 on a loaded machine): there the bound only says it is not stuck.
    bound = (5.0 if platform.windows else 1.0) + 5 * baseline
    assert took < bound, f"{took:.2f}s with 500 connections open (baseline {baseline * 1e3:.0f} ms)"


def test_past_max_connections_a_new_connection_is_refused_at_once_and_idle_ones_make_room(launch, platform):
    """--max-connections 10 on one worker: from 9 open, each new connection closes the one idle
    longest; with all 10 in use (a request's head half sent on each), the next is answered
    503 at once, and none of those in use was closed."""
    pool = launch("--max-connections", "10", "--keep-alive", "60", workers=1)
    url = pool.wait_ready()
    settle = 1.0 if platform.windows else 0.3
    idle = [kept_alive(url) for _ in range(3)]  # oldest first
    busy: list[socket.socket] = []
    try:
        check_the_limit(url, settle, idle, busy)
    finally:
        for conn in idle + busy:
            conn.close()
    # The worker counts a connection closed when it reads the end of it: soon, not at once.
    wait_until(lambda: http("GET", f"{url}/v2/health/live")[0] == 200, what="room again once they are closed")


def check_the_limit(url: str, settle: float, idle: list[socket.socket], busy: list[socket.socket]) -> None:
    for _ in range(6):
        conn = socket.create_connection(address(url), timeout=30)
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # the rest comes later
        busy.append(conn)
    time.sleep(settle)
    # 9 open: a new one (kept alive) closes the oldest idle one.
    idle.append(kept_alive(url))
    assert is_closed(idle[0], 5), "the connection idle longest was not closed"
    assert not any(is_closed(conn, 0.2) for conn in idle[1:]), "a younger idle connection was closed"
    # Make every connection busy, then open busy ones until one is refused: the 10th is.
    for conn in idle[1:]:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        busy.append(conn)
    time.sleep(settle)
    received, took = b"", 0.0
    for _ in range(3):
        conn = socket.create_connection(address(url), timeout=30)
        started = time.monotonic()
        conn.settimeout(settle)
        try:
            received = conn.recv(65536)  # nothing sent: only a refusal comes unasked
        except TimeoutError:
            conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            busy.append(conn)
            time.sleep(settle)
            continue
        conn.settimeout(10)
        while chunk := conn.recv(65536):
            received += chunk
        took = time.monotonic() - started
        conn.close()
        break
    assert len(busy) == 10, f"{len(busy)} connections in use when one was refused (the limit is 10)"
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), received
    assert b"connection: close" in head.lower() and b"retry-after" in head.lower(), head
    assert "connection limit" in json.loads(body)["error"], body
    assert took < 2.0, f"refused after {took:.2f}s"
    # None in use was closed: each finishes its request and is answered.
    for conn in busy:
        conn.sendall(b"\r\n")
        conn.settimeout(10)
        answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
