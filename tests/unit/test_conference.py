"""firmware/runtime/conference.py: the local bridge between calls and the handset.

First with stand-in sessions ticked by hand (exact control of who says what), then with real
MediaSessions doing RTP over 127.0.0.1, where each far end must hear both other parties.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from audio.graph import BufferSink, Sink, Source, ToneSource
from firmware.runtime.conference import LOCAL, ConferenceBridge
from firmware.runtime.media import MediaSession
from firmware.runtime.ports import PortAllocator
from firmware.sip.ids import SeededIds
from tests.unit.test_calls import Net, connect, requests
from tests.unit.test_calls import net as _calls_net
from tests.unit.test_media_session import negotiated, until


def presence(pcm: np.ndarray, rate: int, freqs: list[float]) -> dict[float, float]:
    """Spectral magnitude near each frequency relative to the strongest bin."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    mag = np.abs(np.fft.rfft(x))
    bins = np.fft.rfftfreq(len(pcm), 1.0 / rate)
    top = float(mag.max()) or 1.0
    return {f: round(float(mag[np.abs(bins - f) < 20].max()) / top, 3) for f in freqs}


class FakeSession:
    """A call's media session reduced to what the bridge touches; `tick()` does what
    MediaSession._tick does with audio: read one frame to send, write one received frame."""

    def __init__(self, rate: int, far_tone: float, device_rate: int = 48000) -> None:
        self.codec = SimpleNamespace(sample_rate=rate)
        self.rate = rate
        self.far = ToneSource(far_tone, rate, -12.0)  # what the far end says
        self.device: tuple[Source, Sink] = (
            ToneSource(2500.0, device_rate, -12.0),
            BufferSink(device_rate),
        )
        self.source, self.sink = self.device
        self.sent = BufferSink(rate)  # what the far end hears

    def set_audio(self, source: Source, sink: Sink) -> tuple[Source, Sink]:
        old = (self.source, self.sink)
        self.source, self.sink = source, sink
        return old

    def tick(self) -> None:
        n = self.rate // 50
        pcm = self.source.read(n) if self.source.rate == self.rate else None
        if pcm is None:  # the real session resamples; the stand-in reads at the device rate
            pcm = self.source.read(self.source.rate // 50)
        self.sent.write(pcm)
        self.sink.write(self.far.read(n) if self.sink.rate == self.rate else np.zeros(0))


def run(sessions: list[FakeSession], ticks: int) -> None:
    for _ in range(ticks):
        for s in sessions:
            s.tick()


def test_three_way_each_party_hears_both_others_and_not_itself() -> None:
    c1 = FakeSession(8000, 440.0)  # PCMU leg
    c2 = FakeSession(16000, 1000.0)  # G.722 leg
    bridge = ConferenceBridge()
    bridge.add("c1", c1)
    bridge.add("c2", c2)
    assert bridge.members == ["c1", "c2"] and bridge.clock == "c1"
    assert sorted(bridge.mixer.legs) == ["c1", "c2", LOCAL]
    run([c1, c2], 100)
    far1 = presence(c1.sent.pcm[4000:], 8000, [1000.0, 2500.0, 440.0])
    far2 = presence(c2.sent.pcm[8000:], 16000, [440.0, 2500.0, 1000.0])
    speaker = c1.device[1]
    assert isinstance(speaker, BufferSink)
    handset = presence(speaker.pcm[24000:], 48000, [440.0, 1000.0, 2500.0])
    assert far1[1000.0] > 0.3 and far1[2500.0] > 0.3 and far1[440.0] < 0.01, far1
    assert far2[440.0] > 0.3 and far2[2500.0] > 0.3 and far2[1000.0] < 0.01, far2
    assert handset[440.0] > 0.3 and handset[1000.0] > 0.3 and handset[2500.0] < 0.01, handset
    # the second call's own device stays idle while the first one's serves the handset
    assert isinstance(c2.device[1], BufferSink) and c2.device[1].samples == 0


def test_a_party_drops_and_the_remaining_call_is_plain_again() -> None:
    c1, c2 = FakeSession(8000, 440.0), FakeSession(8000, 1000.0)
    bridge = ConferenceBridge()
    bridge.add("c1", c1)
    bridge.add("c2", c2)
    run([c1, c2], 10)
    bridge.sync({"c1": c1})  # c2 hung up: its session is gone
    assert bridge.members == [] and bridge.clock is None and bridge.mixer.legs == []
    assert (c1.source, c1.sink) == c1.device  # its own mic and speaker again


def test_clock_leg_leaving_hands_the_handset_to_the_next_call() -> None:
    c1, c2, c3 = (FakeSession(8000, hz) for hz in (440.0, 1000.0, 1500.0))
    bridge = ConferenceBridge()
    for name, s in (("c1", c1), ("c2", c2), ("c3", c3)):
        bridge.add(name, s)
    run([c1, c2, c3], 5)
    bridge.remove("c1")
    assert (c1.source, c1.sink) == c1.device
    assert bridge.clock == "c2" and bridge.members == ["c2", "c3"]
    run([c2, c3], 100)
    speaker = c2.device[1]
    assert isinstance(speaker, BufferSink) and speaker.samples > 0
    far3 = presence(c3.sent.pcm[4000:], 8000, [1000.0, 2500.0, 440.0])
    assert far3[1000.0] > 0.3 and far3[2500.0] > 0.3 and far3[440.0] < 0.01, far3


def test_muted_handset_is_left_out_of_the_mix() -> None:
    c1, c2 = FakeSession(8000, 440.0), FakeSession(8000, 1000.0)
    bridge = ConferenceBridge()
    bridge.mute_local(True)
    bridge.add("c1", c1)
    bridge.add("c2", c2)
    run([c1, c2], 100)
    far2 = presence(c2.sent.pcm[4000:], 8000, [440.0, 2500.0])
    assert far2[440.0] > 0.5 and far2[2500.0] < 0.01, far2


def test_local_is_not_a_call_id() -> None:
    with pytest.raises(ValueError, match="handset"):
        ConferenceBridge().add(LOCAL, FakeSession(8000, 440.0))


# ----- real sessions over loopback ---------------------------------------------------------


async def test_real_sessions_each_far_end_hears_both_others(tmp_path: Path) -> None:
    """Phone legs p1 (PCMU) and p2 (G.722) talk RTP to far ends f1 and f2; the phone's own
    device plays 1800 Hz. f1 must hear f2's tone and the phone's, f2 likewise."""
    ports = PortAllocator(41000, 41999, bind_address="127.0.0.1")
    legs: dict[str, Any] = {}
    try:
        plan = {"1": ("PCMU", 0, 440.0), "2": ("G722", 9, 1000.0)}
        for k in plan:
            for side in ("p", "f"):
                ports.allocate(side + k, ("127.0.0.1", 5060))
        sinks: dict[str, BufferSink] = {}
        for k, (codec, pt, far_hz) in plan.items():
            far_port = ports.sockets("f" + k).port
            phone_port = ports.sockets("p" + k).port
            sinks["p" + k] = BufferSink(16000)
            sinks["f" + k] = BufferSink(16000)
            legs["p" + k] = MediaSession(
                "p" + k,
                negotiated(far_port, codec, pt),
                ports.sockets("p" + k),
                source=ToneSource(1800.0, 16000, -12.0),
                sink=sinks["p" + k],
                ids=SeededIds("p" + k),
            )
            legs["f" + k] = MediaSession(
                "f" + k,
                negotiated(phone_port, codec, pt),
                ports.sockets("f" + k),
                source=ToneSource(far_hz, 16000, -12.0),
                sink=sinks["f" + k],
                ids=SeededIds("f" + k),
            )
        for s in legs.values():
            s.start()
        bridge = ConferenceBridge()
        bridge.add("p1", legs["p1"])
        bridge.add("p2", legs["p2"])
        mark = {k: s.samples for k, s in sinks.items()}
        await until(lambda: sinks["f1"].samples - mark["f1"] > 16000 * 1.2, 10)
        got = {k: s.pcm[mark[k] + 3200 :] for k, s in sinks.items()}
        f1 = presence(got["f1"], 16000, [1000.0, 1800.0, 440.0])
        f2 = presence(got["f2"], 16000, [440.0, 1800.0, 1000.0])
        phone = presence(got["p1"], 16000, [440.0, 1000.0, 1800.0])
        assert f1[1000.0] > 0.2 and f1[1800.0] > 0.2 and f1[440.0] < 0.02, f1
        assert f2[440.0] > 0.2 and f2[1800.0] > 0.2 and f2[1000.0] < 0.02, f2
        assert phone[440.0] > 0.2 and phone[1000.0] > 0.2 and phone[1800.0] < 0.02, phone
        # p2 hangs up: the conference dissolves, p1 is a plain call with its own device again
        legs["p2"].stop()
        bridge.sync({"p1": legs["p1"]})
        assert bridge.members == []
        mark_f1 = sinks["f1"].samples
        await until(lambda: sinks["f1"].samples - mark_f1 > 16000, 10)
        after = presence(sinks["f1"].pcm[mark_f1 + 3200 :], 16000, [1000.0, 1800.0])
        assert after[1800.0] > 0.5 and after[1000.0] < 0.02, after
    finally:
        for s in legs.values():
            s.stop()
        await asyncio.gather(*(s.wait_stopped() for s in legs.values()))
        ports.close()


# ----- the call layer: conferencing resumes held legs with a plain re-INVITE ---------------

net = _calls_net  # the two-phone SIP network fixture of test_calls


def test_conference_resumes_a_held_leg_with_sendrecv_reinvite(net: Net) -> None:
    a_id, _ = connect(net)
    assert net.a.calls.hold(a_id, net.now)
    net.pump()
    invites = len(requests(net.b, "INVITE"))
    assert net.a.calls.conference([a_id], net.now) == [a_id]
    net.pump()
    reinvite = requests(net.b, "INVITE")[-1]
    assert len(requests(net.b, "INVITE")) == invites + 1
    assert b"a=sendonly" not in reinvite.body and b"a=inactive" not in reinvite.body
    assert net.a.calls.get(a_id).state == "connected"
    # a connected leg needs nothing on the wire
    assert net.a.calls.conference([a_id], net.now) == []
    net.pump()
    assert len(requests(net.b, "INVITE")) == invites + 1


def test_conference_refuses_a_call_that_is_not_up(net: Net) -> None:
    a_id, _ = connect(net)
    net.a.calls.hangup(a_id, net.now)
    net.pump()
    with pytest.raises(RuntimeError, match=f"call {a_id} is ended"):
        net.a.calls.conference([a_id], net.now)
