"""The avatar's VP8 encoder: decodable, one thread, installed where aiortc keeps its encoder."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from liveface.signaling.video_encoder import AvatarVp8Encoder, install_vp8_encoder, video_codec


def test_frames_round_trip_through_a_vp8_decoder():
    enc, dec = AvatarVp8Encoder(), Vp8Decoder()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (128, 160, 3), np.uint8)
    for i in range(5):
        img = base.copy()
        img[40:80, 40:80] = 40 * i
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        payloads, timestamp = enc.encode(frame, force_keyframe=(i == 0))
        assert timestamp == i * 3600
        (out,) = dec.decode(
            JitterFrame(data=b"".join(map(vp8_depayload, payloads)), timestamp=timestamp)
        )
        got = out.to_ndarray(format="rgb24")
        assert got.shape == img.shape
        assert np.abs(got[50:70, 50:70].astype(int) - 40 * i).mean() < 12
    assert enc.codec.thread_count == 1


async def test_vp8_is_negotiated_and_the_encoder_installed():
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("audio")
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await server.setRemoteDescription(client.localDescription)
    for t in server.getTransceivers():
        t.direction = "sendonly" if t.kind == "video" else "recvonly"
    await server.setLocalDescription(await server.createAnswer())
    assert video_codec(server.localDescription.sdp) == "VP8"
    assert install_vp8_encoder(server)
    (sender,) = [t.sender for t in server.getTransceivers() if t.kind == "video"]
    assert isinstance(sender._RTCRtpSender__encoder, AvatarVp8Encoder)
    await server.close()
    await client.close()


def test_the_codec_of_the_video_section_is_read_from_the_sdp():
    sdp = "\r\n".join([
        "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 102 96", "a=rtpmap:96 VP8/90000", "a=rtpmap:102 H264/90000",
    ])  # fmt: skip
    assert video_codec(sdp) == "H264"  # an answer that sends H.264 keeps aiortc's encoder
    assert video_codec("v=0\r\nm=audio 9 X 111") is None
