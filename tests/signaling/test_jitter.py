"""The adaptive audio jitter buffer that replaces aiortc's 4-packet (80 ms) hold."""

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RtpPacket

from liveface.signaling.jitter import AudioJitterBuffer, tune_audio_jitter


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(sequence_number=seq & 0xFFFF, timestamp=seq * 960)
    p._data = bytes([seq & 0xFF])
    return p


def out(jb: AudioJitterBuffer, seq: int) -> int | None:
    frame = jb.add(packet(seq))[1]
    return None if frame is None else frame.timestamp // 960


def test_in_order_packets_go_out_at_once_and_gaps_are_skipped():
    drops = []
    jb = AudioJitterBuffer(hold=0, on_drop=drops.append)
    assert [out(jb, s) for s in (100, 101, 102)] == [100, 101, 102]
    assert out(jb, 104) == 104  # 103 lost: no waiting with hold 0
    assert jb.skipped == 1
    assert out(jb, 103) is None  # late: dropped
    assert drops == [1]
    # Wrap-around of the 16-bit sequence number.
    jb = AudioJitterBuffer(hold=0)
    assert [out(jb, s) for s in (65534, 65535, 65536)] == [65534, 65535, 65536]


def test_hold_waits_for_a_missing_packet():
    jb = AudioJitterBuffer(hold=1)
    assert out(jb, 10) == 10
    assert out(jb, 12) is None  # 11 missing; one packet may wait for it
    assert out(jb, 11) == 11
    assert out(jb, 13) == 12  # the hold's one packet of latency stays


def test_a_reordering_path_raises_the_hold_and_a_calm_one_lowers_it_again():
    drops = []
    jb = AudioJitterBuffer(hold=0, max_hold=2, relax_packets=50, on_drop=drops.append)
    assert [out(jb, s) for s in (0, 2)] == [0, 2]  # 1 skipped at once
    assert out(jb, 1) is None  # it was reordered, not lost: wait one packet from now on
    assert jb.hold == 1
    assert out(jb, 4) is None  # 3 is missing: wait for it
    assert out(jb, 3) == 3  # rescued
    assert out(jb, 5) == 4
    seq = 6
    while jb.hold > 0:  # a calm path: the hold steps back down ...
        got = out(jb, seq)
        seq += 1
    assert got == seq - 2  # ... and the packet after it is dropped to drain the extra latency
    assert jb.drained == 1
    assert sum(drops) == jb.late + jb.drained == 2
    assert out(jb, seq) == seq


async def test_installed_on_the_audio_receivers_of_this_aiortc():
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    (buffer,) = tune_audio_jitter(pc, 0)
    audio = next(t for t in pc.getTransceivers() if t.kind == "audio")
    assert audio.receiver._RTCRtpReceiver__jitter_buffer is buffer
    await pc.close()
