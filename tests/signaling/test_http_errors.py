"""Every bad request is a 4xx JSON answer that costs nothing else; tokens; the ICE deadline."""

from __future__ import annotations

import base64
import json
import logging

import aiohttp
import cv2
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveface.runtime.config import IceServer, ServerConfig
from liveface.runtime.runtime import Runtime
from tests.doubles import PatternEngine
from tests.serving import serve
from tests.signaling.peer import Client
from tests.signaling.test_loopback import tone_then_silence
from tests.waiting import wait_until

TOKEN = "s3cret-token-of-some-length"


async def real_offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def png_data_url(img: np.ndarray) -> str:
    _ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


@pytest.fixture
async def server(request):
    options = getattr(request, "param", {})
    engine = PatternEngine(size=128, chunk_frames=1, first_chunk_frames=1)
    runtime = Runtime(ServerConfig(max_sessions=2, **options), engine)
    async with serve(runtime) as url, aiohttp.ClientSession() as http:
        yield url, runtime, http


async def answer(http, method, url, **kw):
    async with http.request(method, url, **kw) as r:
        return r.status, r.headers, await r.read()


async def test_aiohttp_errors_are_json_too(server):
    url, _, http = server
    status, _, body = await answer(http, "GET", f"{url}/nowhere")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "http_404"
    status, headers, body = await answer(http, "GET", f"{url}/offer")
    assert status == 405
    assert "POST" in headers["Allow"]
    assert json.loads(body)["error"]["code"] == "http_405"


async def test_malformed_offers_are_400_before_any_work(server, caplog):
    url, runtime, http = server
    sdp = await real_offer_sdp()
    deep = "[" * 100_000 + "]" * 100_000
    tiny = png_data_url(np.zeros((1, 1, 3), np.uint8))
    no_fingerprint = "\r\n".join(x for x in sdp.split("\r\n") if not x.startswith("a=fingerprint"))
    cases = [
        ({"data": deep, "headers": {"Content-Type": "application/json"}}, "deeper"),
        ({"json": {"sdp": sdp, "type": "offer", "portrait": 5}}, "portrait"),
        ({"json": {"sdp": sdp, "type": "offer", "portrait": [1, 2]}}, "portrait"),
        ({"json": {"sdp": sdp, "type": "offer", "portrait": {"a": 1}}}, "portrait"),
        ({"json": {"sdp": sdp, "type": "offer", "portrait": tiny}}, "1x1 pixels"),
        ({"json": {"sdp": no_fingerprint, "type": "offer", "portrait": tiny}}, "fingerprint"),
        ({"json": {"sdp": sdp, "type": "answer"}}, "offer"),
        ({"json": {"sdp": sdp, "type": "offer", "options": "[[["}}, "options"),
        ({"data": b"--x\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0",
          "headers": {"Content-Type": "multipart/form-data"}}, "multipart"),
        ({"data": b"--x\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\nv=0",
          "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, ""),
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        for kw, words in cases:
            status, _, body = await answer(http, "POST", f"{url}/offer", **kw)
            assert 400 <= status < 500, (kw, body[:200])
            error = json.loads(body)["error"]
            assert words in error["message"], (words, error)
            assert error["retryable"] is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(runtime.registry) == 0
    assert runtime.engine.opened == [] or all(s.closed for s in runtime.engine.opened)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"sdp": st.text(max_size=40), "type": st.sampled_from(["offer", "answer", ""])},
            optional={"portrait": st.text(max_size=40), "options": st.text(max_size=20)},
        ).map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        ["application/json", "multipart/form-data", "multipart/form-data; boundary=b", "text/plain"]
    ),
)
async def test_fuzzed_offers_always_get_a_4xx_and_harm_nothing(server, body, content_type):
    url, runtime, http = server
    status, _, raw = await answer(
        http, "POST", f"{url}/offer", data=body, headers={"Content-Type": content_type}
    )
    assert 400 <= status < 500
    assert "error" in json.loads(raw)
    assert len(runtime.registry) == 0
    assert runtime.healthy


async def test_the_server_still_serves_after_abuse(server):
    url, _, http = server
    for _ in range(3):
        await answer(http, "POST", f"{url}/offer", data=b"\xff" * 1000)
    client = Client(url, tone_then_silence(1.0, 1.0))
    assert (await client.connect())["status"] == 200
    await wait_until(lambda: len(client.video) > 5)
    await client.close()


@pytest.mark.parametrize(
    "server", [{"auth_token": TOKEN, "ice_servers": ["stun:stun.example.org:3478"]}], indirect=True
)
async def test_a_token_guards_offers_and_ice(server):
    url, _, http = server
    sdp = await real_offer_sdp()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        status, h, body = await answer(
            http, "POST", f"{url}/offer", json={"sdp": sdp, "type": "offer"}, headers=headers
        )
        assert status == 401
        assert h["WWW-Authenticate"] == "Bearer"
        assert json.loads(body)["error"]["code"] == "unauthorized"
    status, _, _ = await answer(http, "GET", f"{url}/ice")
    assert status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = await answer(http, "GET", f"{url}/ice", headers=auth)
    assert json.loads(body) == {"iceServers": [{"urls": ["stun:stun.example.org:3478"]}]}
    status, _, _ = await answer(
        http, "POST", f"{url}/offer", json={"sdp": sdp, "type": "offer"}, headers=auth
    )
    assert status == 200  # the offer got past the token (and nobody will connect to it)


@pytest.mark.parametrize("server", [{"ice_timeout_s": 1.0}], indirect=True)
async def test_an_answered_offer_whose_peer_never_connects_frees_its_slot(server):
    url, runtime, http = server
    sdp = await real_offer_sdp()
    status, _, _ = await answer(http, "POST", f"{url}/offer", json={"sdp": sdp, "type": "offer"})
    assert status == 200
    assert len(runtime.registry) == 1
    (session,) = runtime.registry.sessions()
    await wait_until(lambda: len(runtime.registry) == 0, within=5.0)
    assert session.close_reason.value == "ice_timeout"


def test_ice_server_config_is_checked():
    assert IceServer.parse("stun:a:1").to_json() == {"urls": ["stun:a:1"]}
    turn = IceServer.parse({"urls": ["turns:t:443"], "username": "u", "credential": "p"})
    assert turn.to_json() == {"urls": ["turns:t:443"], "username": "u", "credential": "p"}
    from liveface.errors import ConfigError

    for bad in ("http://x", {"urls": "turn:t"}, {"urls": "stun:x", "password": "p"}, 5):
        with pytest.raises(ConfigError):
            IceServer.parse(bad)
    with pytest.raises(ConfigError, match="16"):
        ServerConfig(auth_token="short")
