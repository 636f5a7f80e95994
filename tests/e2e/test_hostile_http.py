"""Hostile HTTP against a real pool: malformed, oversized, amplifying and stalling requests.

Every refusal is a 4xx (or 503) with a JSON body ``{"error": ...}``; the worker stays up,
answers health quickly, and keeps its memory bounded."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse

import pytest

from .harness import http

pytestmark = pytest.mark.each_server


def raw(url: str, data: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; parse the one response that comes back (the server then closes)."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                raise AssertionError(f"closed without a response: {received!r}")
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def assert_json_refusal(response: tuple[int, dict[str, str], bytes], status: int) -> None:
    got, headers, body = response
    assert got == status, (got, body)
    assert headers.get("content-type") == "application/json", headers
    assert set(json.loads(body)) == {"error"} and json.loads(body)["error"], body


@pytest.fixture
def url(launch):
    pool = launch(workers=1)
    yield pool.wait_ready()
    assert http("GET", f"{pool.url}/v2/health/live")[0] == 200  # it survived whatever the test sent


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v2/health/live\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n", 400),
        (b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n", 431),
    ],
    ids=[
        "garbage request line",
        "non-UTF-8 path",
        "bad Content-Length",
        "negative Content-Length",
        "100 KB URL",
        "100 KB header",
    ],
)
def test_parser_level_refusals_have_json_bodies(url, request_bytes, status):
    assert_json_refusal(raw(url, request_bytes), status)


CHUNKED = b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",
        b"-5\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}XX0\r\n\r\n",
        b"f" * 20 + b"\r\n{}",
        b"1" + b"0" * 16 + b"\r\n{}",
    ],
    ids=["chunk size not hex", "negative chunk size", "no CRLF after a chunk", "20 hex digits", "2 to the 64"],
)
def test_a_malformed_chunked_body_is_refused_at_once(url, chunks):
    """uvicorn held the request until its body timed out (30 s), then answered 408: the body
    could never arrive whole once the parser had stopped (found in review). hypercorn did the
    same with a chunk size past 64 bits (h11 takes 20 hex digits and waited for the bytes)."""
    assert_json_refusal(raw(url, CHUNKED + chunks, timeout=10), 400)


@pytest.mark.parametrize("version", [b"9.9", b"2.0", b"1.2", b"0.9"])
def test_an_http_version_other_than_1_0_and_1_1_is_refused_with_505(url, version):
    """hypercorn answered ``GET / HTTP/9.9`` with 200; uvicorn refused some with 400."""
    assert_json_refusal(raw(url, b"GET /v2/health/live HTTP/" + version + b"\r\nHost: x\r\n\r\n", timeout=10), 505)


def test_a_connection_its_client_closed_is_closed_at_once(launch):
    """hypercorn kept such a connection until its keep-alive timer fired; a drain waited as long."""
    pool = launch("--keep-alive", "30", workers=1)
    url = urllib.parse.urlsplit(pool.wait_ready())
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while not response.endswith(b'{"live":true}'):
            response += conn.recv(65536)
        assert response.startswith(b"HTTP/1.1 200")
        conn.shutdown(socket.SHUT_WR)  # the client is done
        assert conn.recv(65536) == b"", "the server should close its side too"  # within 10 s, not 30


def read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """One response's head and body (by its Content-Length) from ``conn``."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, f"closed without a response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, f"closed in the middle of a response: {head!r}"
        body += chunk
    return head, body


def test_keep_alive_0_closes_every_connection_after_its_response(launch):
    pool = launch("--keep-alive", "0", workers=1)
    url = urllib.parse.urlsplit(pool.wait_ready())
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=10) as idle:
        # A connection that does not send its request at once is still waiting for it, not
        # closed for having been idle: keep-alive 0 is about the time between requests.
        for _ in range(2):
            with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
                conn.sendall(request)
                head, body = read_response(conn)
                assert head.startswith(b"HTTP/1.1 200") and body == b'{"live":true}'
                assert re.search(rb"(?im)^connection: *close\r?$", head), head
                # The server closes the connection, within the socket's timeout: a second
                # request on it gets no answer.
                assert conn.recv(65536) == b""
                try:
                    conn.sendall(request)
                    assert conn.recv(65536) == b""
                except ConnectionError:
                    pass  # the server's side is gone: it answered the second request with a reset
        idle.sendall(request)
        head, _ = read_response(idle)
        assert head.startswith(b"HTTP/1.1 200") and re.search(rb"(?im)^connection: *close\r?$", head), head
        assert idle.recv(65536) == b""


def test_a_refusal_before_the_body_is_read_keeps_the_connection(launch):
    """A 404 for a model or version that is not served (a version a reload removed, say) comes
    before its body is read: the body is drained, and the kept-alive connection carries the
    client's next request. One too large to drain is answered with Connection: close."""
    pool = launch(workers=1)
    url = urllib.parse.urlsplit(pool.wait_ready())
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
    ).encode()

    def post(path: str, payload: bytes = body) -> bytes:
        return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload

    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        for path, status in [("/v2/models/nope/infer", 404), ("/v2/models/mlp/versions/9/infer", 404)] * 3 + [
            ("/v2/models/mlp/infer", 200),
            ("/v2/health/live", 405),
            ("/v2/models/mlp/infer", 200),
        ]:
            conn.sendall(post(path))
            head, _ = read_response(conn)
            assert head.startswith(f"HTTP/1.1 {status}".encode()), (path, head)
            assert not re.search(rb"(?im)^connection: *close\r?$", head), head
        # Over 1 MiB: not read, and said so. (Only the head is sent: a client still sending a
        # body the server will not read may see the connection reset before the answer.)
        conn.sendall(b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
        head, _ = read_response(conn)
        assert head.startswith(b"HTTP/1.1 404") and re.search(rb"(?im)^connection: *close\r?$", head), head


def connect(pool) -> socket.socket:
    url = urllib.parse.urlsplit(pool.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def closes_within(conn: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``conn`` within ``seconds`` (what it sends meanwhile is read)."""
    conn.settimeout(seconds)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass  # closed with a reset: closed
    return True


def test_what_follows_an_upgrade_request_is_never_read_as_a_request(launch):
    """httptools stops parsing at `Connection: Upgrade`: a body sent after the head was read as
    a new request (smuggled past whatever checked the first)."""
    pool = launch(workers=1)
    pool.wait_ready()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(pool) as conn:
        conn.sendall(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            b"Content-Length: %d\r\n\r\n" % len(smuggled)
        )
        time.sleep(0.3)  # the client's own pace: the body comes in a packet of its own
        try:
            conn.sendall(smuggled)
        except ConnectionError:
            pass  # refused and closed already
        received = b""
        conn.settimeout(10)
        try:
            while chunk := conn.recv(65536):  # until the server closes (its keep-alive ends)
                received += chunk
        except (TimeoutError, ConnectionError):
            pass
    # One answer, a refusal: no second one, to a request nobody sent.
    assert received.startswith(b"HTTP/1.1 400") and received.count(b"HTTP/1.1 ") == 1, received


def test_a_head_sent_a_byte_at_a_time_is_not_waited_for(launch):
    pool = launch(workers=1)  # keep-alive 5 s: a head must come within it
    pool.wait_ready()
    with connect(pool) as conn:
        conn.sendall(b"G")  # ...and nothing more, as a slowloris client does
        assert closes_within(conn, 15)


def test_a_header_without_end_is_refused_not_buffered(launch):
    pool = launch(workers=1)
    url = pool.wait_ready()
    with connect(pool) as conn:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # the server stops this long before 64 MiB
                conn.sendall(b"b" * 65536)
                sent += 65536
        except ConnectionError:
            pass
        assert sent < 64 * 1024 * 1024
    assert http("GET", f"{url}/v2/health/live")[0] == 200


def test_a_bad_request_after_a_good_one_does_not_cost_the_good_one_its_answer(launch):
    pool = launch(workers=1)
    pool.wait_ready()
    with connect(pool) as conn:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):  # the server closes after its refusal
            received += chunk
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b'{"live":true}HTTP/1.1 400 '), received
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"], received


def test_a_request_refused_before_its_body_closes_its_connection(launch):
    pool = launch("--keep-alive", "30", workers=1)  # closed at once, not when it would idle out
    pool.wait_ready()
    with connect(pool) as conn:
        conn.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{")
        head, _ = read_response(conn)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert closes_within(conn, 10)  # the 100 MiB it announced are not waited for


@pytest.mark.parametrize("hosts", [b"", b"Host: a\r\nHost: b\r\n"], ids=["no Host", "two Hosts"])
def test_an_http_1_1_request_needs_one_host(launch, hosts):
    pool = launch(workers=1)
    pool.wait_ready()
    with connect(pool) as conn:
        conn.sendall(b"GET /v2/health/live HTTP/1.1\r\n" + hosts + b"\r\n")
        head, body = read_response(conn)
        assert head.startswith(b"HTTP/1.1 400") and "error" in json.loads(body), head


def test_responses_carry_a_date(launch):
    pool = launch(workers=1)
    status, headers, _ = http("GET", f"{pool.wait_ready()}/v2/health/live")
    assert status == 200 and headers.get("date", "").endswith(" GMT"), headers
