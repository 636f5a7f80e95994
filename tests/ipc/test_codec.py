"""The frame codec, a byte at a time: no I/O anywhere."""

from __future__ import annotations

import dataclasses
import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc import FrameDecoder, encode
from ipc.contract.settings import WorkerSettings
from ipc.errors import FrameTooLargeError, MalformedFrameError, ProtocolError, UnknownMessageError, VersionMismatchError
from ipc.handshake import PROTOCOL_VERSION, check_hello
from ipc.messages import (
    KINDS,
    Configure,
    Heartbeat,
    Hello,
    Ready,
    StatsReport,
    StatusReply,
    Stop,
    StopRequest,
    WorkerStatus,
)


def frame_of(obj: object) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


SAMPLES = [
    Hello(PROTOCOL_VERSION, "worker", 1234, 3, 7),
    Configure(WorkerSettings(grace=2.5, models=["a=b.npz"]), listen_fd=7),
    Configure(WorkerSettings(), listen_share=b"\x00\x01binary"),
    Ready(99, ["mlp"]),
    Heartbeat(in_flight=3, loop_lag=0.001, rss=123456789),
    Stop(0.0),
    StopRequest(None),
    StatsReport(1, {"mlp": {"inference_count": 5}}, seq=9),
    StatusReply(1, "http://127.0.0.1:1", "ready", [WorkerStatus(0, 1, 5, "ready", heartbeat_age=0.5)]),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.kind)
def test_round_trip_split_at_every_byte(message):
    frame = encode(message)
    for cut in range(len(frame) + 1):
        decoder = FrameDecoder()
        decoder.feed(frame[:cut])
        if cut < len(frame):
            assert decoder.next_message() is None
            decoder.feed(frame[cut:])
        assert decoder.next_message() == message
        assert decoder.next_message() is None
        assert decoder.buffered == 0


def test_one_byte_at_a_time():
    stream = b"".join(encode(m) for m in SAMPLES)
    decoder = FrameDecoder()
    received = []
    for byte in stream:
        decoder.feed(bytes([byte]))
        while (message := decoder.next_message()) is not None:
            received.append(message)
    assert received == SAMPLES


def test_several_frames_in_one_read():
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode(m) for m in SAMPLES) + encode(SAMPLES[0])[:3])
    assert [decoder.next_message() for _ in SAMPLES] == SAMPLES
    assert decoder.next_message() is None
    assert decoder.buffered == 3


def test_oversized_prefix_is_refused_before_the_body_arrives():
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(struct.pack(">I", 1025))
    with pytest.raises(FrameTooLargeError, match="1025"):
        decoder.next_message()
    assert decoder.buffered == 0


def test_huge_prefix_costs_nothing():
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLargeError):
        decoder.next_message()


def test_decoder_is_dead_after_an_error():
    decoder = FrameDecoder()
    decoder.feed(frame_of({"kind": "no_such_kind"}))
    with pytest.raises(UnknownMessageError):
        decoder.next_message()
    with pytest.raises(UnknownMessageError):
        decoder.feed(encode(Stop(1.0)))
    with pytest.raises(UnknownMessageError):
        decoder.next_message()


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # array of 2 with one element
        b"\x81\xa4kind",  # map missing its value
        b"\xa3abc\x01",  # extra data after one object
    ],
)
def test_garbage_is_a_malformed_frame(payload):
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(MalformedFrameError):
        decoder.next_message()


@pytest.mark.parametrize(
    "obj, error",
    [
        ([1, 2, 3], "must be a map"),
        ({"no": "kind"}, "needs a string 'kind'"),
        ({"kind": 7}, "needs a string 'kind'"),
        ({"kind": "stop"}, "missing field 'grace'"),
        ({"kind": "stop", "grace": "soon"}, "field 'grace'"),
        ({"kind": "stop", "grace": True}, "field 'grace'"),
        ({"kind": "hello", "protocol_version": 1, "role": "worker", "pid": "x"}, "field 'pid'"),
        ({"kind": "ready", "pid": 1, "models": ["a", 2]}, "field 'models'"),
        ({"kind": "configure", "settings": {1: 2}}, "not valid msgpack|field 'settings'"),
        ({"kind": "configure", "settings": [1]}, "field 'settings' must be a map"),
        ({"kind": "configure", "settings": {"grace": "soon"}}, "field 'grace' has a value of type str"),
        ({"kind": "configure", "settings": {"grace": -1}}, "field 'grace' must be a finite number of seconds >= 0"),
        ({"kind": "configure", "settings": {"max_body_size": 0}}, "field 'max_body_size' must be at least 1"),
        ({"kind": "configure", "settings": {"models": ["no-equals"]}}, "is not NAME=PATH"),
        ({"kind": "status_reply", "supervisor_pid": 1, "url": "u", "state": "s", "workers": [{"slot": 0}]}, "missing"),
        ({"kind": "status_reply", "supervisor_pid": 1, "url": "u", "state": "s", "workers": {}}, "must be a list"),
    ],
)
def test_bad_fields_are_malformed(obj, error):
    decoder = FrameDecoder()
    decoder.feed(frame_of(obj))
    with pytest.raises(MalformedFrameError, match=error):
        decoder.next_message()


def test_nesting_too_deep_for_msgpack_is_named():
    """msgpack's StackError has no message: the error said "frame is not valid msgpack: " and
    stopped there (found in review)."""
    payload = b"\x91" * 5000 + b"\xc0"
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(MalformedFrameError, match=r"^frame is not valid msgpack: StackError$"):
        decoder.next_message()


def test_ext_types_are_refused():
    payload = msgpack.packb({"kind": "stop", "grace": msgpack.ExtType(5, b"x")})
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(MalformedFrameError, match="extension"):
        decoder.next_message()


def test_infinite_settings_are_refused():
    decoder = FrameDecoder()
    decoder.feed(frame_of({"kind": "configure", "settings": {"keep_alive": float("inf")}}))
    with pytest.raises(MalformedFrameError, match="keep_alive"):
        decoder.next_message()


def test_timestamps_are_refused_even_in_free_form_fields():
    payload = msgpack.packb(
        {"kind": "stats_report", "request_id": 1, "models": {"at": msgpack.Timestamp(1, 0)}}, datetime=False
    )
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(MalformedFrameError):
        decoder.next_message()


def test_unknown_message_kind():
    decoder = FrameDecoder()
    decoder.feed(frame_of({"kind": "launch_missiles"}))
    with pytest.raises(UnknownMessageError, match="launch_missiles"):
        decoder.next_message()


def test_unknown_extra_fields_are_ignored():
    decoder = FrameDecoder()
    decoder.feed(frame_of({"kind": "stop", "grace": 1.5, "added_in_v2": [1, 2]}))
    assert decoder.next_message() == Stop(1.5)


def test_wrong_protocol_version():
    decoder = FrameDecoder()
    decoder.feed(frame_of({"kind": "hello", "protocol_version": 99, "role": "client", "pid": 1}))
    hello = decoder.next_message()
    assert isinstance(hello, Hello)
    with pytest.raises(VersionMismatchError, match="99"):
        check_hello(hello)


@pytest.mark.parametrize(
    "hello",
    [
        Hello(PROTOCOL_VERSION, "admin", 1),
        Hello(PROTOCOL_VERSION, "worker", 1, None),
        Hello(PROTOCOL_VERSION, "worker", 1, 0),
    ],
)
def test_bad_hello(hello):
    with pytest.raises(ProtocolError):
        check_hello(hello)


def test_an_unknown_role_is_quoted_short():
    """It is a stranger's text, logged by the supervisor: a 4 KB role made a 4 KB log line."""
    with pytest.raises(ProtocolError) as raised:
        check_hello(Hello(PROTOCOL_VERSION, "x" * 4000, 1))
    assert str(raised.value).startswith("unknown role 'xxx") and len(str(raised.value)) < 60


def test_every_kind_is_unique_and_registered():
    assert len(KINDS) == len({cls.kind for cls in KINDS.values()})
    assert all(cls.kind == tag for tag, cls in KINDS.items())


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_a_protocol_error(data):
    decoder = FrameDecoder(max_frame_size=64)
    decoder.feed(data)
    try:
        while decoder.next_message() is not None:
            pass
    except ProtocolError:
        pass


@given(
    st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.none(), max_size=5)
)
def test_any_map_decodes_or_raises_a_protocol_error(fields):
    for kind in KINDS:
        decoder = FrameDecoder()
        try:
            decoder.feed(frame_of({**fields, "kind": kind}))
            decoder.next_message()
        except ProtocolError:
            pass


# Values msgpack can carry: what a hostile or buggy peer could put in any field.
wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@given(st.sampled_from(sorted(KINDS)), st.dictionaries(st.text(max_size=12), wire_values, max_size=6), st.data())
def test_any_fields_of_any_kind_decode_or_raise_a_protocol_error(kind, fields, data):
    """Well-framed msgpack of every kind, with real field names given random values: every
    example reaches msgpack decoding and the field checks, and either decodes or is refused."""
    cls = KINDS[kind]
    names = [field.name for field in dataclasses.fields(cls)]
    for name in data.draw(st.lists(st.sampled_from(names), max_size=len(names))) if names else []:
        fields[name] = data.draw(wire_values)
    decoder = FrameDecoder()
    decoder.feed(frame_of({**fields, "kind": kind}))
    try:
        message = decoder.next_message()
    except ProtocolError:
        return
    assert isinstance(message, cls)
    # What decodes encodes again to the same message: nothing half-checked slipped through.
    again = FrameDecoder()
    again.feed(encode(message))
    assert again.next_message() == message


@given(st.binary(max_size=256))
def test_any_payload_behind_a_correct_prefix_decodes_or_raises_a_protocol_error(payload):
    """Generate the payload, then its length prefix: msgpack itself sees every example."""
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    try:
        decoder.next_message()
    except ProtocolError:
        pass
    assert decoder.buffered == 0
