"""The audio jitter buffer that replaces aiortc's 4-packet (80 ms) hold."""

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from liveface.signaling.webrtc import AudioJitterBuffer, tune_audio_jitter


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(sequence_number=seq & 0xFFFF, timestamp=seq * 960)
    p._data = bytes([seq & 0xFF])
    return p


def test_in_order_packets_go_out_at_once_and_gaps_are_skipped():
    jb = AudioJitterBuffer(hold=0)
    out = [jb.add(packet(s))[1] for s in (100, 101, 102)]
    assert [f.timestamp // 960 for f in out] == [100, 101, 102]
    _, f = jb.add(packet(104))  # 103 lost: no waiting with hold 0
    assert f.timestamp // 960 == 104
    assert jb.add(packet(103)) == (False, None)  # late: dropped
    # Wrap-around of the 16-bit sequence number.
    jb = AudioJitterBuffer(hold=0)
    assert [jb.add(packet(s))[1].timestamp // 960 for s in (65534, 65535, 65536)] == [
        65534,
        65535,
        65536,
    ]


def test_hold_waits_for_a_missing_packet():
    jb = AudioJitterBuffer(hold=1)
    assert jb.add(packet(10))[1].timestamp // 960 == 10
    assert jb.add(packet(12))[1] is None  # 11 missing; one packet may wait for it
    assert jb.add(packet(11))[1].timestamp // 960 == 11


async def test_installed_on_the_audio_receivers_of_this_aiortc():
    pc = RTCPeerConnection()
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    assert tune_audio_jitter(pc, 0) == 1
    audio = next(t for t in pc.getTransceivers() if t.kind == "audio")
    assert isinstance(audio.receiver._RTCRtpReceiver__jitter_buffer, AudioJitterBuffer)
    await pc.close()
