"""worker.rpc.goodbye, sans-IO and a byte at a time: streams followed both ways, the goodbye put in
only between frames and after the server's first, its PING's answer taken out."""

from __future__ import annotations

import pytest

from worker.rpc.goodbye import ACK, END_STREAM, GOODBYE, HEADERS, OPAQUE, PING, PREFACE, RST_STREAM, Goodbye, frame

SETTINGS = frame(0x4, 0, 0, b"\x00\x03\x00\x00\x00\x64")


def fed(feed, data: bytes, step: int) -> bytes:
    return b"".join(feed(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_streams_are_followed_and_the_goodbye_waits_for_its_answer_and_the_last_stream(step):
    goodbye = Goodbye()
    up = PREFACE + SETTINGS + frame(HEADERS, 0x4, 1, b"h" * 20) + frame(0x0, END_STREAM, 1, b"d" * 30)
    up += frame(HEADERS, 0x4, 3, b"h")
    assert fed(goodbye.from_client, up, step) == up
    assert goodbye.open == {1, 3}
    assert goodbye.ask() == b""  # the server has not spoken yet: the goodbye waits for its first frame
    down = SETTINGS + frame(HEADERS, 0x4, 1, b"r")
    out = fed(goodbye.from_server, down, step)
    assert out.replace(GOODBYE, b"") == down and out.count(GOODBYE) == 1
    assert out.index(GOODBYE) in (len(SETTINGS), len(down))  # between frames, after the server's first
    assert goodbye.sent and not goodbye.done
    answer = frame(PING, ACK, 0, OPAQUE)
    theirs = frame(PING, ACK, 0, b"12345678")
    assert fed(goodbye.from_client, answer + theirs, step) == theirs  # ours taken out, theirs passed on
    assert goodbye.answered and not goodbye.done  # streams 1 and 3 are still being served
    fed(goodbye.from_server, frame(HEADERS, 0x4 | END_STREAM, 1, b"trailers"), step)
    assert goodbye.open == {3} and not goodbye.done
    fed(goodbye.from_client, frame(RST_STREAM, 0, 3, b"\x00\x00\x00\x08"), step)
    assert goodbye.done


def test_the_goodbye_goes_out_between_frames_only():
    goodbye = Goodbye()
    assert goodbye.from_server(SETTINGS) == SETTINGS
    data = frame(0x0, 0, 1, b"x" * 100)
    assert goodbye.from_server(data[:50]) == data[:50]
    assert goodbye.ask() == b""  # mid-frame
    assert goodbye.from_server(data[50:]) == data[50:] + GOODBYE  # at the end of that frame
    assert goodbye.from_server(data) == data  # once only
    assert GOODBYE.endswith(frame(PING, 0, 0, OPAQUE))


def test_without_a_goodbye_every_byte_passes_unchanged():
    goodbye = Goodbye()
    up = PREFACE + SETTINGS + frame(PING, ACK, 0, OPAQUE) + frame(HEADERS, 0x4, 1, b"h")
    assert fed(goodbye.from_client, up, 3) == up.replace(frame(PING, ACK, 0, OPAQUE), b"")
    assert goodbye.from_server(SETTINGS) == SETTINGS and not goodbye.sent
