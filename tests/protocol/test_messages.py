"""The wire codec and the header validator, without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveface.protocol.messages import (
    PROTOCOL_VERSION,
    SPECS,
    Limits,
    MsgType,
    ProtocolError,
    decode,
    encode,
)
from liveface.protocol.schema import Field, validate

LIMITS = Limits(max_header_bytes=1024, max_payload_bytes=4096)


def prefix(t: int, version: int = PROTOCOL_VERSION) -> bytes:
    return bytes([version, t])


def test_round_trip_of_every_request_example():
    examples = {
        MsgType.OPEN: ({"req": 1, "format": "jpeg", "jpeg_quality": 70, "prompt": None}, [b"img"]),
        MsgType.AUDIO: (
            {"session": "s1", "rate": 48000, "format": "s16le", "channels": 2},
            [b"\x00" * 8],
        ),
        MsgType.SEGMENT_END: ({"session": "s1"}, []),
        MsgType.CLEAR: ({"session": "s1", "req": 7}, []),
        MsgType.CLOSE: ({"session": "s1"}, []),
        MsgType.PING: ({}, []),
    }
    for t, (header, payloads) in examples.items():
        msg = decode(encode(t, header, *payloads), LIMITS, requests=True)
        assert msg.type is t
        assert msg.header == {k: v for k, v in header.items() if v is not None}
        assert [bytes(p) for p in msg.payloads] == payloads
    assert decode(encode(MsgType.CLEAR, {"session": "s1", "req": 7}), LIMITS, True).req == 7


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([prefix(6)], "bad_message"),  # truncated: no header
        ([b"\x01", b"{}"], "bad_message"),  # frame 0 too short
        ([prefix(6, version=9), b"{}"], "unsupported_version"),
        ([prefix(99), b"{}"], "unknown_type"),
        ([prefix(MsgType.FRAME), b"{}"], "unknown_type"),  # a server message sent to the server
        ([prefix(6), b"{not json"], "bad_message"),
        ([prefix(6), b"\xff\xfe"], "bad_message"),
        ([prefix(6), b"[1, 2]"], "bad_message"),
        ([prefix(6), b'{"req": -1}'], "bad_message"),
        ([prefix(6), b'{"req": true}'], "bad_message"),
        ([prefix(6), b'{"sesion": "s1"}'], "bad_message"),  # unknown field
        ([prefix(2), b'{"session": "s1", "rate": 16000}', b"xx"], "bad_message"),  # no format
        ([prefix(2), b'{"session": "s1", "rate": 16000, "format": "u8"}', b"x"], "bad_message"),
        ([prefix(2), b'{"session": "s1", "rate": 16000, "format": "f32le"}'], "bad_message"),
        ([prefix(2), b'{"session": "s1", "rate": 1.5, "format": "f32le"}', b"x"], "bad_message"),
        (
            [prefix(2), b'{"session": "s1", "rate": 16000, "format": "f32le"}', b"x" * 5000],
            "too_large",
        ),
        ([prefix(6), b" " * 2000], "too_large"),
        ([prefix(6), b"{}", b"extra"], "bad_message"),
        ([prefix(1), b'{"jpeg_quality": 101}'], "bad_message"),
        ([prefix(1), b'{"format": "png"}'], "bad_message"),
    ],
)
def test_malformed_messages_are_refused_with_a_code(frames, code):
    with pytest.raises(ProtocolError) as e:
        decode(frames, LIMITS, requests=True)
    assert e.value.code == code


def test_error_keeps_the_request_id_when_it_can():
    with pytest.raises(ProtocolError) as e:
        decode([prefix(4), json.dumps({"req": 12}).encode()], LIMITS, requests=True)
    assert e.value.req == 12  # missing session, but the reply can still be matched


def test_validator_rules():
    schema = {
        "n": Field("int", required=True, lo=0, hi=10),
        "x": Field("float"),
        "b": Field("bool"),
        "s": Field("str", hi=3, choices=("a", "bb")),
    }
    assert validate({"n": 3, "x": 2, "b": False, "s": "bb"}, schema, "t")["x"] == 2
    for bad in (
        {"n": True},
        {"n": 11},
        {"n": 1, "x": float("nan")},
        {"n": 1, "b": 0},
        {"n": 1, "s": "c"},
        {},
        {"n": 1, "zz": 1},
        {"n": None},
    ):
        with pytest.raises(ProtocolError):
            validate(bad, schema, "t")


def test_every_server_message_schema_accepts_what_the_server_sends():
    frame = {
        "session": "s1",
        "index": 3,
        "pts": 1920,
        "rate": 16000,
        "samples": 640,
        "width": 64,
        "height": 64,
        "format": "rgb",
        "fresh": True,
        "dropped": 0,
    }
    msg = decode(encode(MsgType.FRAME, frame, b"i" * 10, b"a" * 8), LIMITS, requests=False)
    assert msg.header == frame
    assert all(t in SPECS for t in MsgType)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    t=st.integers(0, 255),
    header=st.dictionaries(
        st.sampled_from(
            [
                "req",
                "session",
                "rate",
                "format",
                "channels",
                "prompt",
                "options",
                "jpeg_quality",
                "x",
            ]
        ),
        json_values,
        max_size=5,
    ),
    payloads=st.lists(st.binary(max_size=64), max_size=3),
)
def test_decode_never_raises_anything_but_protocol_errors(t, header, payloads):
    frames = [prefix(t), json.dumps(header).encode(), *payloads]
    code = None
    try:
        msg = decode(frames, LIMITS, requests=True)
    except ProtocolError as e:
        code = e.code
    else:
        assert msg.type.is_request
    assert code in {None, "bad_message", "unknown_type", "too_large"}
