"""Per-call RTP media: `MediaSession` (one call's stream) and `MediaEngine` (all calls).

The protocol work is sans-IO in audio/ (RTP numbering, RTCP, SRTP, jitter buffer, DTMF,
codecs); this module only moves bytes and keeps time. Each session ticks on absolute
monotonic deadlines (`start + n * ptime`, never an accumulated `sleep(0.02)`, so the send
rate cannot drift), run by the process's media thread (`MediaClock`, off the event loop),
and on every tick it

  1. sends one frame: capture source -> resample to the codec rate -> encode -> RtpSender
     -> SRTP protect -> sendto (or an RFC 4733 DTMF packet in the same SSRC/sequence space);
  2. reads the RTP that arrived since the last tick (sockets bound by
     firmware/runtime/ports.py), each datagram with its kernel arrival time: SRTP unprotect
     (failures and replays are dropped and counted by reason), parse, telephone-event to the
     DtmfReceiver, audio to the JitterBuffer;
  3. plays one frame: JitterBuffer.get(now) -> resample to the device rate -> playback sink;
  4. sends RTCP when the RtcpSession's randomised ~5 s timer is due.

One thread wake-up per tick and no event-loop iteration is what keeps a call's CPU cost
and its send jitter down (bench/media_cpu.py, bench/rtp_timing.py). Control (start, update,
DTMF, stats, stop) comes from the event loop under `MediaClock.lock`; RTCP is read there as it
arrives (`loop.add_reader`). Hold is the negotiated direction: nothing is sent when not
sending, received media is ignored when not receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from audio import sdes, speedups
from audio.codecs import Codec, get_codec
from audio.dtmf import DtmfError, DtmfPacket, DtmfReceiver, DtmfSender
from audio.graph import (
    NullSink,
    ResamplingSink,
    ResamplingSource,
    SilenceSource,
    Sink,
    Source,
    WavFileSink,
    WavFileSource,
)
from audio.jitter import JitterBuffer, quantile
from audio.pcm import silence
from audio.rtcp import RtcpSession
from audio.rtp import RtpError, RtpPacket, RtpReceiverStats, RtpSender, SymmetricRtpLatch
from audio.srtp import SrtpError, SrtpTransform
from audio.tones import ToneGenerator, dtmf_tone
from firmware.runtime import udp
from firmware.runtime.ports import PortAllocator, RtpSockets
from firmware.runtime.udp import SO_TIMESTAMPNS, recv_datagrams
from firmware.sip.ids import IdSource
from firmware.sip.offer_answer import NegotiatedMedia

log = logging.getLogger(__name__)

RT_PRIORITY = 10  # SCHED_FIFO priority of the media thread where permitted (low: 1..99)
# How long the media thread may wait for the GIL while the event loop runs Python (CPython's
# default is 5 ms: a status request or UI refresh on the loop would delay a send that long).
GIL_SWITCH_INTERVAL = 0.0005
MAX_SLEEP = 1.0  # s: the media thread re-checks its sessions at least this often
MAX_CATCH_UP = 5  # frames: after a longer stall we skip media time instead of bursting
DTMF_MS = 100  # duration of one digit (RFC 4733 2.5.1.2 suggests >= 40 ms; phones use ~100)
DTMF_GAP_MS = 60  # audio between digits
RECV_BUFFER = 4096
RECV_PER_TICK = 64  # datagrams read per tick at most, so one flood cannot stall the ticker

DtmfCallback = Callable[[str, str], None]  # (call_id, digit)


class MediaClock:
    """The media thread: runs every started session's tick at its absolute deadline.

    Why a thread and not the event loop: a tick on the loop costs a full loop iteration
    (selector, timer heap, handle) on top of its own work, and anything else the loop runs -
    SIP, the HTTP API, the garbage collector in their wake - delays the send. Here one
    thread sleeps until the earliest due tick (`time.sleep`: clock_nanosleep on
    CLOCK_MONOTONIC, i.e. microsecond-precise and no loop iteration) and runs every tick
    that is due, so a call costs one thread wake-up per ptime (bench/media_cpu.py). Nothing
    wakes it early: a call added while it sleeps past that call's first tick (a longer ptime
    than the new call's) starts its clock at the wake-up instead (`MediaSession.defer_start`).

    Thread safety is one re-entrant lock, `lock`: the thread holds it while ticks run, and
    everything the event loop does to a session or to what its ticks touch (the conference
    mixer, swapped sources and sinks) takes it too - ticks never interleave with each other
    or with a control step, exactly as when both ran on the loop. What a tick reports
    (DTMF, the RTCP BYE) goes back to the event loop with `call_soon_threadsafe`.

    The thread asks for real-time scheduling (SCHED_FIFO at `rt_priority`), falling back to a
    raised nice level, and runs without either where that is not permitted: it is what keeps
    the send interval steady on a loaded machine, never a requirement. For the same reason it
    shortens the interpreter's GIL switch interval (GIL_SWITCH_INTERVAL, process-wide): a
    thread waiting for the GIL gets it after at most that long. The thread exits when no
    session is left and is started again by the next one.
    """

    def __init__(self, rt_priority: int = RT_PRIORITY) -> None:
        self.lock = threading.RLock()
        self.rt_priority = rt_priority
        self._sessions: list[MediaSession] = []
        self._thread: threading.Thread | None = None
        self._sleep_until = 0.0  # the deadline the thread sleeps until (monotonic s)
        self.scheduling = "not started"  # what the thread got: "SCHED_FIFO 10", "nice -10", ...

    def add(self, session: MediaSession) -> None:
        with self.lock:
            if session not in self._sessions:
                self._sessions.append(session)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="media", daemon=True)
                self._thread.start()
            elif session.due < self._sleep_until:
                # The thread sleeps past this session's first tick (a longer ptime than the
                # new call's): start its clock when the thread wakes instead of waking it.
                session.defer_start(self._sleep_until)

    def remove(self, session: MediaSession) -> None:
        with self.lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def _run(self) -> None:
        self.scheduling = _raise_priority(self.rt_priority)
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        monotonic = time.monotonic
        sleep = time.sleep
        while True:
            with self.lock:
                if not self._sessions:
                    self._thread = None
                    return
                now = monotonic()
                sessions = self._sessions
                if len(sessions) == 1:  # the usual case, without the copy and the generator
                    session = sessions[0]
                    if session.due <= now:
                        session.on_due()
                    next_due = session.due
                else:
                    for session in list(sessions):
                        if session.due <= now:
                            session.on_due()
                    next_due = min(s.due for s in sessions) if sessions else now
                self._sleep_until = next_due
            delay = next_due - monotonic()
            if delay > 0:
                # clock_nanosleep (CPython >= 3.11): a third cheaper per wake-up than a timed
                # Lock.acquire here (bench/wake_floor.py), and nothing needs to cut it short
                sleep(min(delay, MAX_SLEEP))


def _raise_priority(priority: int) -> str:
    """Real-time scheduling for the calling thread where permitted (see MediaClock)."""
    if priority > 0 and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread
            return f"SCHED_FIFO {priority}"
        except (OSError, AttributeError) as e:
            log.info("media thread: no real-time scheduling (%s)", e)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)  # Linux: per thread
        return "nice -10"
    except (OSError, AttributeError) as e:
        log.info("media thread: normal priority (%s)", e)
    return "normal"


CLOCK = MediaClock()  # one media thread per process: ticks of all calls, in deadline order


def _adapt_source(source: Source, rate: int) -> Source:
    """`source` as read at `rate`: itself when it already is (no wrapper call per frame)."""
    return source if source.rate == rate else ResamplingSource(source, rate)


def _adapt_sink(sink: Sink, rate: int) -> Sink:
    """What takes audio at `rate` into `sink`: the sink itself when the rates match."""
    return sink if sink.rate == rate else ResamplingSink(sink, rate)


class MediaSession:
    """One call's audio stream (see the module docstring). Create, `start()`, `update()` on
    re-INVITEs, `stop()` at the end; `stats()` at any time."""

    def __init__(
        self,
        call_id: str,
        negotiated: NegotiatedMedia,
        sockets: RtpSockets,
        *,
        source: Source,
        sink: Sink,
        ids: IdSource,
        on_dtmf: DtmfCallback | None = None,
        cname: str = "deskphone",
        srtp_prefer: str = "auto",
        jitter_min: float = 0.02,
        jitter_max: float = 0.3,
        latch: bool = False,
    ) -> None:
        self.call_id = call_id
        self.sockets = sockets
        self.ids = ids
        self.on_dtmf = on_dtmf
        self.srtp_prefer = srtp_prefer
        self.jitter_min = jitter_min
        self.jitter_max = jitter_max
        self._raw_source = source
        self._raw_sink = sink
        self.negotiated = negotiated
        codec = get_codec(negotiated.send_codec.name)
        self._sender = RtpSender(ids, negotiated.send_pt, codec.clock_rate)
        self._rx = RtpReceiverStats(clock_rate=codec.clock_rate)
        self._rtcp: RtcpSession | None = None
        self._cname = cname
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_queue: deque[DtmfPacket | None] = deque()
        self._inband: deque[tuple[ToneGenerator | None, int]] = deque()
        self.dtmf_received: list[str] = []
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "rtp_invalid",
                "unknown_pt",
                "ignored_not_receiving",
                "send_errors",
                "skipped_frames",
                "rtcp_received",
                "dtmf_sent",
            ),
            0,
        )
        self.srtp_dropped: dict[str, int] = {}
        self._tx_srtp: SrtpTransform | None = None
        self._rx_srtp: SrtpTransform | None = None
        self._jb: JitterBuffer | None = None
        self._jb_pt: int | None = None
        self._jb_sink: Sink | None = None
        self._jb_rate = 0  # PCM rate of the jitter buffer's decoder (what _jb_sink takes)
        self.clock = CLOCK
        self.due = float("inf")  # when the media thread runs the next tick (monotonic s)
        self._last_drain = 0.0
        self._stopped: asyncio.Future[None] | None = None
        self._start_time = 0.0  # time base of the ticker: tick n is due at start + n * period
        self._period = 0.0
        self._n = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()  # the event loop's (set again by start())
        self._readers = False
        self.running = False
        self.remote_bye: str | None = None
        self._dtmf_start = 0
        sdp_remote = (negotiated.remote_address, negotiated.remote_port)
        self._latch = SymmetricRtpLatch(sdp_remote, enabled=latch)
        self._lateness: deque[float] = deque(maxlen=1000)  # tick wake-up minus deadline, s
        self._apply(negotiated, first=True)

    # ----- configuration --------------------------------------------------------------------

    def _apply(self, n: NegotiatedMedia, *, first: bool = False) -> None:
        old = None if first else self.negotiated
        self.negotiated = n
        if (n.remote_address, n.remote_port) != self._latch.sdp_address:
            self._latch.set_sdp_address((n.remote_address, n.remote_port))
        self._remote = self._latch.remote
        # the per-tick tests, evaluated once per negotiation instead of 50 times a second
        self._send_now = n.sending and not n.remote_hold_address  # c=0.0.0.0: send nowhere
        self._recv_now = n.receiving
        self._rtcp_on = n.send_rtcp
        self._te_recv_pt = n.telephone_event_recv_pt or n.telephone_event_pt
        self.remote_rtcp = (n.remote_rtcp_address, n.remote_rtcp_port)
        if old is None or (old.send_codec, old.send_pt) != (n.send_codec, n.send_pt):
            self.codec: Codec = get_codec(n.send_codec.name)
            self._encoder = self.codec.encoder()
            self._sender.payload_type = n.send_pt
            self._sender.clock_rate = self.codec.clock_rate
            self._source = _adapt_source(self._raw_source, self.codec.sample_rate)
        if old is None or old.ptime != n.ptime or old.send_codec != n.send_codec:
            self.ptime = n.ptime or 20
            self._frame_ts = self.codec.clock_rate * self.ptime // 1000
            self._frame_pcm = self.codec.sample_rate * self.ptime // 1000
            self._sink_frame = self._raw_sink.rate * self.ptime // 1000
            self._dtmf_tx = DtmfSender(
                n.telephone_events or frozenset(range(16)),
                clock_rate=self.codec.clock_rate,
                packet_interval=self._frame_ts,
            )
        elif old.telephone_events != n.telephone_events:
            self._dtmf_tx.allowed = n.telephone_events
        if self._jb is not None and (
            self._jb_pt not in n.recv_codecs or round(self._jb.frame_s * 1000) != self.ptime
        ):
            # the buffer's output frame is one tick: a new ptime (or codec) needs a new one
            self._jb = self._jb_pt = self._jb_sink = None
            self._jb_rate = 0
        if old is None or old.crypto != n.crypto:
            self._set_crypto(n)

    def _set_crypto(self, n: NegotiatedMedia) -> None:
        if n.crypto is None:
            self._tx_srtp = self._rx_srtp = None
            return
        local = sdes.parse_crypto(n.crypto.local)
        remote = sdes.parse_crypto(n.crypto.remote)
        self._tx_srtp, self._rx_srtp = sdes.srtp_sessions(local, remote, prefer=self.srtp_prefer)
        log.info("call %s: SRTP %s", self.call_id, n.crypto.suite)

    def update(self, negotiated: NegotiatedMedia) -> None:
        """A re-INVITE/UPDATE changed the stream: new address, codec, keys or direction."""
        if negotiated == self.negotiated:
            return
        log.info(
            "call %s: media update -> %s:%d %s %s",
            self.call_id,
            negotiated.remote_address,
            negotiated.remote_port,
            negotiated.send_codec.name,
            negotiated.direction,
        )
        with self.clock.lock:
            self._apply(negotiated)

    # ----- conference hook (firmware/runtime/conference.py) ---------------------------------

    def set_audio(self, source: Source, sink: Sink) -> tuple[Source, Sink]:
        """Swap where this call's audio comes from and goes to, mid-call (a conference bridge
        puts its leg adapters here, and the device back when the call leaves); returns the
        previous (source, sink). Closing either stays the caller's business."""
        with self.clock.lock:
            old = (self._raw_source, self._raw_sink)
            self._raw_source, self._raw_sink = source, sink
            self._source = _adapt_source(source, self.codec.sample_rate)
            self._sink_frame = sink.rate * self.ptime // 1000
            if self._jb_sink is not None:
                self._jb_sink = _adapt_sink(sink, self._jb_rate)
            return old

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin sending and receiving (call from the running event loop): the media thread
        runs the first tick one ptime from now."""
        if self.running:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.sockets.claim()
        now = time.monotonic()
        self._rtcp = RtcpSession(
            sender=self._sender,
            receiver=self._rx,
            cname=self._cname,
            ids=self.ids,
            now=now,
        )
        # RTP is drained by the ticker (_drain_rtp), RTCP (rare) is read as it comes. Kernel
        # receive timestamps (SO_TIMESTAMPNS, CLOCK_REALTIME): RTP is read once per tick, not
        # as it arrives, and the jitter buffer and RFC 3550 jitter still get true arrival times.
        try:
            self.sockets.rtp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError as e:  # not Linux: arrival times are then the tick's
            log.debug("call %s: no receive timestamps: %s", self.call_id, e)
        loop.add_reader(self.sockets.rtcp.fileno(), self._on_readable, self.sockets.rtcp, True)
        self._readers = True
        self._stopped = loop.create_future()
        with self.clock.lock:
            self._period = self.ptime / 1000.0
            self._start_time = self._last_drain = now
            self._n = 1
            self.due = now + self._period
            self.running = True
        self.clock.add(self)

    def defer_start(self, until: float) -> None:
        """Move a just-started session's first tick (and its time base) to `until`."""
        with self.clock.lock:
            if self.running and self._n == 1 and until > self.due:
                shift = until - self.due
                self._start_time += shift  # RTP that arrives meanwhile keeps its true time
                self.due = until

    def stop(self, reason: str | None = None) -> None:
        """Send the RTCP BYE, stop the ticker and let go of the sockets (idempotent). Once this
        returns no tick of this session runs any more."""
        with self.clock.lock:
            if not self.running:
                return
            self.running = False
            self.clock.remove(self)
            self.due = float("inf")
            if self._rtcp is not None and self.negotiated.send_rtcp:
                self._send_rtcp(self._rtcp.bye(time.monotonic(), reason))
            flushed = self._dtmf_rx.flush()
        for ev in flushed:
            self._report_dtmf(ev.digit)
        if self._readers and self._loop is not None:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                self._loop.remove_reader(self.sockets.rtcp.fileno())
            self._readers = False
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        self.sockets.unclaim()

    async def wait_stopped(self) -> None:
        if self._stopped is not None:
            await self._stopped

    # ----- DTMF -----------------------------------------------------------------------------

    def send_dtmf(self, digits: str, duration_ms: int = DTMF_MS, gap_ms: int = DTMF_GAP_MS) -> None:
        """Queue key presses: RFC 4733 events when the peer offered telephone-event, else
        in-band Q.23 tones in the audio. DtmfError for keys the peer did not offer."""
        with self.clock.lock:
            self._queue_dtmf(digits, duration_ms, gap_ms)

    def _queue_dtmf(self, digits: str, duration_ms: int, gap_ms: int) -> None:
        gap = max(1, -(-gap_ms // self.ptime))
        if self.negotiated.telephone_event_pt is None:
            rate = self.codec.sample_rate
            for key in digits:
                tone = ToneGenerator(dtmf_tone(key), rate)
                self._inband.append((tone, rate * duration_ms // 1000))
                self._inband.append((None, rate * gap * self.ptime // 1000))
            return
        duration = self._dtmf_tx.duration_units(duration_ms)
        planned: list[DtmfPacket | None] = []
        for key in digits:
            # timestamps are filled in when the first packet of the event goes out
            planned += self._dtmf_tx.packets(key, 0, duration)
            planned += [None] * gap
        self._dtmf_queue.extend(planned)

    @property
    def dtmf_pending(self) -> int:
        """Packets (RFC 4733) or samples (in-band) of queued DTMF not yet sent."""
        return len(self._dtmf_queue) + sum(n for _, n in self._inband)

    def _report_dtmf(self, digit: str | None) -> None:
        if digit is None:
            return
        self.dtmf_received.append(digit)
        log.info("call %s: DTMF %s received", self.call_id, digit)
        if self.on_dtmf is None:
            return
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            # a tick on the media thread: the listener runs on the event loop
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._dtmf_listener, digit)
            return
        self._dtmf_listener(digit)

    def _dtmf_listener(self, digit: str) -> None:
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(self.call_id, digit)
            except Exception:  # a listener's bug must not kill the receive path
                log.exception("DTMF callback failed")

    # ----- the ticker -----------------------------------------------------------------------

    def on_due(self) -> None:
        """Run the tick due at `self.due` (the media thread, holding MediaClock.lock) and set
        the next deadline: start + n * period, absolute, so the rate cannot drift."""
        if not self.running:
            self.due = float("inf")  # never due again: the media thread must not spin on it
            return
        deadline = self.due
        now = time.monotonic()
        self._lateness.append(now - deadline)
        period = self._period
        behind = int((now - deadline) / period)
        if behind > MAX_CATCH_UP:
            # A stall (CPU, GC): skip the lost media time rather than bursting it out.
            self._sender.skip(self._frame_ts * behind)
            self.counters["skipped_frames"] += behind
            self._n += behind
        try:
            self._tick(now)
        except Exception:
            log.exception("call %s: media tick failed", self.call_id)
        self._n += 1
        if self.ptime / 1000.0 != period:  # re-INVITE changed ptime: new time base
            self._period = self.ptime / 1000.0
            self._start_time, self._n = deadline, 1
        self.due = self._start_time + self._n * self._period

    def _tick(self, now: float) -> None:
        if self._send_now:  # not on hold, not c=0.0.0.0 (RFC 3264 8.4)
            self._send_frame()
        else:
            self._sender.skip(self._frame_ts)
        self._drain_rtp()
        self._play_frame(now, self._recv_now)
        if self._rtcp_on and self._rtcp is not None:
            data = self._rtcp.handle_timer(now)
            if data is not None:
                self._send_rtcp(data)

    def _send_frame(self) -> None:
        if self._dtmf_queue:
            pkt = self._dtmf_queue.popleft()
            if pkt is not None:
                self._source.read(self._frame_pcm)  # keep the capture moving
                self._send_dtmf_packet(pkt)
                return
        pcm = self._source.read(self._frame_pcm)
        if self._inband:
            pcm = self._mix_inband(len(pcm))
        self._send_rtp(self._sender.send(self._encoder.encode(pcm), self._frame_ts))

    def _send_dtmf_packet(self, pkt: DtmfPacket) -> None:
        te_pt = self.negotiated.telephone_event_pt
        if te_pt is None:
            return
        if pkt.marker:  # first packet of an event: it starts at the current media time
            self._dtmf_start = self._sender.timestamp
            self.counters["dtmf_sent"] += 1
        data = self._sender.send(
            pkt.payload,
            self._frame_ts,
            pkt.marker,
            payload_type=te_pt,
            timestamp=self._dtmf_start,
        )
        self._send_rtp(data)

    def _mix_inband(self, n: int) -> np.ndarray:
        out = []
        need = n
        while need and self._inband:
            tone, left = self._inband[0]
            take = min(need, left)
            out.append(tone.read(take) if tone is not None else silence(take))
            need -= take
            if take == left:
                self._inband.popleft()
            else:
                self._inband[0] = (tone, left - take)
        if need:
            out.append(silence(need))
        return np.concatenate(out)

    def _play_frame(self, now: float, receiving: bool) -> None:
        if not receiving or self._jb is None or self._jb_sink is None:
            self._raw_sink.write(silence(self._sink_frame))
            return
        pcm, _kind = self._jb.get(now)
        if pcm is None:
            pcm = silence(self._jb.pcm_frame)
        self._jb_sink.write(pcm)

    # ----- sending --------------------------------------------------------------------------

    def _send_rtp(self, data: bytes) -> None:
        if self._tx_srtp is not None:
            try:
                data = self._tx_srtp.protect(data)
            except SrtpError as e:
                log.error("call %s: SRTP protect failed: %s", self.call_id, e)
                self.counters["send_errors"] += 1
                return
        try:  # _sendto inlined: this runs for every packet
            self.sockets.rtp.sendto(data, self._remote)
        except OSError as e:  # full buffer, ICMP error, unreachable: count, keep going
            self.counters["send_errors"] += 1
            log.debug("call %s: sendto %s failed: %s", self.call_id, self._remote, e)

    def _send_rtcp(self, data: bytes) -> None:
        if self._tx_srtp is not None:
            try:
                data = self._tx_srtp.protect_rtcp(data)
            except SrtpError as e:
                log.error("call %s: SRTCP protect failed: %s", self.call_id, e)
                return
        self._sendto(self.sockets.rtcp, data, self.remote_rtcp)

    def _sendto(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        try:
            sock.sendto(data, addr)
        except OSError as e:  # full buffer, ICMP error, unreachable: count, keep going
            self.counters["send_errors"] += 1
            log.debug("call %s: sendto %s failed: %s", self.call_id, addr, e)

    # ----- receiving ------------------------------------------------------------------------

    @property
    def remote(self) -> tuple[str, int]:
        """Where RTP goes: the SDP address, or the latched source (RFC 4961) if enabled."""
        return self._remote

    def _on_readable(self, sock: socket.socket, is_rtcp: bool) -> None:
        with self.clock.lock:
            if self.running:
                self._read_socket(sock, is_rtcp)

    def _read_socket(self, sock: socket.socket, is_rtcp: bool) -> None:
        for _ in range(64):  # bounded, so one flood cannot starve the ticker
            try:
                data, addr = sock.recvfrom(RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("call %s: recvfrom failed: %s", self.call_id, e)
                return
            now = time.monotonic()
            if is_rtcp:
                self.receive_rtcp(data, now)
            else:
                self.receive_rtp(data, now, addr)

    def _drain_rtp(self) -> None:
        """Read the RTP that arrived since the last tick, before this tick's playout.

        Reading once per tick instead of waking for every packet halves the wake-ups;
        playout is unchanged because the jitter buffer is only read here anyway,
        and each packet keeps its kernel arrival time (clamped into the interval since the
        previous drain, so a step of the wall clock cannot throw it far). Without kernel
        timestamps (not Linux) a packet's arrival is the drain's time."""
        monotonic = time.monotonic
        sock = self.sockets.rtp
        earliest = self._last_drain
        # An arrival moved earlier than it was would lower the jitter buffer's minimum
        # transit, i.e. add that much delay for the next 500 packets: so the upper clamp is
        # re-read when a packet came in during this drain (the first packet of a stream
        # builds its decoder and resampler, which takes a while).
        latest = monotonic()
        offset = time.time() - latest  # wall clock (the timestamps) -> monotonic
        for data, stamp, addr in recv_datagrams(sock, RECV_PER_TICK, RECV_BUFFER):
            arrival = latest
            if stamp is not None:
                arrival = stamp - offset
                if arrival > latest:
                    latest = monotonic()
                arrival = min(latest, max(earliest, arrival))
            self.receive_rtp(data, arrival, addr)
        self._last_drain = monotonic()  # what is still queued arrived after this

    def receive_rtp(self, data: bytes, now: float, source: Any = None) -> None:
        """One RTP/SRTP datagram from the network (`source`: its address, for the latch)."""
        if self._rx_srtp is not None:
            try:
                data = self._rx_srtp.unprotect(data)
            except SrtpError as e:
                self.srtp_dropped[e.reason] = self.srtp_dropped.get(e.reason, 0) + 1
                return
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:
            self.counters["rtp_invalid"] += 1
            return
        latch = self._latch
        if source is not None and latch.enabled and latch.accept((source[0], source[1])):
            log.info("call %s: RTP latched to %s:%d", self.call_id, source[0], source[1])
            self._remote = latch.remote
        if not self._recv_now:
            self.counters["ignored_not_receiving"] += 1
            return
        te_pt = self._te_recv_pt
        if te_pt is not None and pkt.payload_type == te_pt:
            self._rx.update(pkt, now, for_jitter=False)
            for ev in self._dtmf_rx.feed(pkt.payload, pkt.timestamp):
                self._report_dtmf(ev.digit)
            return
        spec = self.negotiated.recv_codecs.get(pkt.payload_type)
        if spec is None:
            self.counters["unknown_pt"] += 1
            return
        self._rx.update(pkt, now)
        if self._jb is None or pkt.payload_type != self._jb_pt:
            try:
                codec = get_codec(spec.name)
            except KeyError:
                self.counters["unknown_pt"] += 1
                return
            self._jb = JitterBuffer.for_codec(codec, self.ptime, self.jitter_min, self.jitter_max)
            self._jb_pt = pkt.payload_type
            self._jb_rate = codec.sample_rate
            self._jb_sink = _adapt_sink(self._raw_sink, codec.sample_rate)
        if self._jb.put(pkt, now) == "late":
            self._rx.note_late()

    def receive_rtcp(self, data: bytes, now: float) -> None:
        """One RTCP/SRTCP datagram from the network."""
        if self._rx_srtp is not None:
            try:
                data = self._rx_srtp.unprotect_rtcp(data)
            except SrtpError as e:
                key = "rtcp_" + e.reason
                self.srtp_dropped[key] = self.srtp_dropped.get(key, 0) + 1
                return
        if self._rtcp is None:
            return
        self.counters["rtcp_received"] += 1
        self._rtcp.receive(data, now)
        if self._rtcp.remote_bye is not None:
            self.remote_bye = self._rtcp.remote_bye

    # ----- reporting ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per-call media statistics (the `media` object of a call in /api/status)."""
        with self.clock.lock:
            out = self._stats()
            late = deque(self._lateness)
        if late:  # outside the lock: ticks need not wait (the UI asks for this every second)
            out["tick_late_ms"] = {
                "p50": round(quantile(late, 0.5) * 1000.0, 3),
                "p99": round(quantile(late, 0.99) * 1000.0, 3),
                "max": round(max(late) * 1000.0, 3),
            }
        return out

    def _stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "codec": self.negotiated.send_codec.name,
            "ptime": self.ptime,
            "direction": self.negotiated.direction,
            "remote": f"{self.remote[0]}:{self.remote[1]}",
            "local": f"{self.sockets.address}:{self.sockets.port}",
            "srtp": self.negotiated.crypto is not None,
            "srtp_suite": self.negotiated.crypto.suite if self.negotiated.crypto else None,
        }
        if self._rtcp is not None:
            out.update(self._rtcp.stats())
        else:
            out.update(packets_sent=0, bytes_sent=0, packets_received=0, bytes_received=0)
            out.update(packets_lost=0, jitter_ms=0.0, rtt_ms=None)
        out["lost"] = out.get("packets_lost", 0)
        out["srtp_dropped"] = dict(self.srtp_dropped)
        out["dtmf_received"] = "".join(self.dtmf_received)
        out["remote_bye"] = self.remote_bye
        out.update(self.counters)
        if self._jb is not None:
            out["jitter_buffer"] = self._jb.stats()
        return out


class AudioEndpoints:
    """Where calls get their audio: WAV files (tests, the demo) or sound cards by name.

    Devices are opened per call (the microphone is free between calls); the WAV sink is one
    file for the phone's lifetime, like one loudspeaker, so consecutive calls append to it.
    """

    def __init__(
        self,
        *,
        capture_device: str = "default",
        playback_device: str = "default",
        capture_file: Path | None = None,
        playback_file: Path | None = None,
        file_rate: int = 16000,
        loop_capture_file: bool = True,
    ) -> None:
        self.capture_device = capture_device
        self.playback_device = playback_device
        self.capture_file = capture_file
        self.playback_file = playback_file
        self.file_rate = file_rate
        self.loop_capture_file = loop_capture_file
        self._system: Any = None
        self._file_sink: WavFileSink | None = None
        self.errors: list[str] = []

    def _audio_system(self) -> Any:
        if self._system is None:
            from audio.devices import AudioSystem

            self._system = AudioSystem()
        return self._system

    def open_source(self) -> tuple[Source, bool]:
        """(source, owned): owned sources are closed with their session."""
        from audio.devices import DeviceError

        try:
            if self.capture_file is not None:
                return WavFileSource(self.capture_file, loop=self.loop_capture_file), True
            return self._audio_system().open_capture(self.capture_device), True
        except (DeviceError, ValueError, OSError) as e:
            self._failed(f"capture: {e}")
            return SilenceSource(8000), True

    def open_sink(self) -> tuple[Sink, bool]:
        from audio.devices import DeviceError

        try:
            if self.playback_file is not None:
                if self._file_sink is None:
                    self._file_sink = WavFileSink(self.playback_file, self.file_rate)
                return self._file_sink, False
            return self._audio_system().open_playback(self.playback_device), True
        except (DeviceError, ValueError, OSError) as e:
            self._failed(f"playback: {e}")
            return NullSink(8000), True

    def _failed(self, message: str) -> None:
        log.error("audio device unusable, the call continues without it: %s", message)
        self.errors.append(message)

    def close(self) -> None:
        if self._file_sink is not None:
            self._file_sink.close()
            self._file_sink = None
        if self._system is not None:
            self._system.close()
            self._system = None


WIDEBAND_CODECS = frozenset({"G722", "opus"})  # deliver 16 kHz (or more) PCM


def playback_file_rate(codecs: Iterable[str]) -> int:
    """The rate of the playback WAV file: 16 kHz when a configured codec is wideband, else
    8 kHz - a narrowband phone gains nothing from a 16 kHz file but would pay an upsampler on
    every received frame (about a fifth of a call's CPU, bench/media_cpu.py)."""
    return 16000 if WIDEBAND_CODECS.intersection(codecs) else 8000


class MediaEngine:
    """All media sessions of a phone, keyed by call id; follows the call layer's MediaChanges.

    The runtime wires it as: `ports` -> CallManager(ports=...), `fresh_crypto` ->
    CallManager(fresh_crypto=...), and every `MediaChange` from `CallManager.media_changes()`
    -> `apply()`. Final stats of ended calls stay readable through `stats()`.
    """

    def __init__(
        self,
        ports: PortAllocator,
        ids: IdSource,
        audio: AudioEndpoints | None = None,
        *,
        on_dtmf: DtmfCallback | None = None,
        cname: str = "deskphone",
        srtp_prefer: str = "auto",
        random_bytes: Callable[[int], bytes] | None = None,
        latch: bool = False,
    ) -> None:
        self.ports = ports
        self.latch = latch
        self.ids = ids
        self.audio = audio or AudioEndpoints()
        self.on_dtmf = on_dtmf
        self.cname = cname
        self.srtp_prefer = srtp_prefer
        self.sessions: dict[str, MediaSession] = {}
        self._owned: dict[str, list[Source | Sink]] = {}
        self._final: dict[str, dict[str, Any]] = {}
        self._stopping: list[MediaSession] = []
        self._keys = sdes.SdesKeys(random_bytes) if random_bytes else sdes.SdesKeys()
        if not (speedups.ACCELERATED and udp.ACCELERATED):
            log.warning(
                "media: calls run on the Python twins of audio._speedups and "
                "firmware.runtime._udp (not built, or %s set): more CPU per call",
                speedups.PURE_PYTHON,
            )

    @classmethod
    def from_config(cls, config: Any, ids: IdSource) -> MediaEngine:
        """Engine for a PhoneConfig: its [audio] devices or WAV files and RTP port range."""
        a = config.audio
        audio = AudioEndpoints(
            capture_device=a.capture_device,
            playback_device=a.playback_device,
            capture_file=a.capture_file,
            playback_file=a.playback_file,
            file_rate=playback_file_rate(a.codecs),
        )
        cname = f"{config.device.name}@deskphone".replace(" ", "_")
        return cls(PortAllocator(a.rtp_port_min, a.rtp_port_max), ids, audio, cname=cname)

    def fresh_crypto(self) -> list[str]:
        """Our a=crypto values for a new offer/answer: fresh keys, one per supported suite."""
        return [attr.format() for attr in sdes.make_offer(self._keys)]

    def apply(self, change: Any) -> None:
        """Follow one MediaChange(call_id, action, negotiated, local) from the call layer."""
        call_id, action, negotiated = change.call_id, change.action, change.negotiated
        session = self.sessions.get(call_id)
        if action == "stop" or negotiated is None:
            self._stop(call_id)
            return
        if session is not None:
            session.update(negotiated)
            return
        if action not in ("start", "update"):
            raise ValueError(f"unknown media action {action!r}")
        try:
            sockets = self.ports.sockets(call_id)
        except KeyError:
            log.error("call %s: media %s without allocated ports", call_id, action)
            return
        source, own_source = self.audio.open_source()
        sink, own_sink = self.audio.open_sink()
        session = MediaSession(
            call_id,
            negotiated,
            sockets,
            source=source,
            sink=sink,
            ids=self.ids,
            on_dtmf=self._dtmf,
            cname=self.cname,
            srtp_prefer=self.srtp_prefer,
            latch=self.latch,
        )
        self.sessions[call_id] = session
        self._owned[call_id] = [n for n, own in ((source, own_source), (sink, own_sink)) if own]
        self._final.pop(call_id, None)
        session.start()

    def reopen_devices(self, skip: Iterable[str] = ()) -> None:
        """Give every running call (but those in `skip`) a microphone and a speaker freshly
        opened from `audio` - after its device names changed (handset -> speaker) - and close
        the ones they replace if this engine opened them."""
        skipped = set(skip)
        for call_id, session in list(self.sessions.items()):
            if call_id in skipped:
                continue
            source, own_source = self.audio.open_source()
            sink, own_sink = self.audio.open_sink()
            owned = self._owned.setdefault(call_id, [])
            for node in session.set_audio(source, sink):
                if node in owned:
                    owned.remove(node)
                    node.close()
            owned.extend(n for n, own in ((source, own_source), (sink, own_sink)) if own)

    def _dtmf(self, call_id: str, digit: str) -> None:
        if self.on_dtmf is not None:
            self.on_dtmf(call_id, digit)

    def _stop(self, call_id: str) -> None:
        session = self.sessions.pop(call_id, None)
        if session is None:
            return
        session.stop()
        self._final[call_id] = session.stats()
        for node in self._owned.pop(call_id, []):
            node.close()
        self._stopping.append(session)

    def send_dtmf(self, call_id: str, digits: str) -> None:
        """Queue DTMF on a call's stream; KeyError for an unknown call, DtmfError for keys the
        peer did not offer."""
        session = self.sessions.get(call_id)
        if session is None:
            raise KeyError(f"no media session for call {call_id!r}")
        session.send_dtmf(digits)

    def stats(self, call_id: str) -> dict[str, Any] | None:
        session = self.sessions.get(call_id)
        if session is not None:
            return session.stats()
        return self._final.get(call_id)

    async def close(self) -> None:
        """Stop every session (RTCP BYE), close devices, files and sockets."""
        for call_id in list(self.sessions):
            self._stop(call_id)
        for session in self._stopping:
            await session.wait_stopped()
        self._stopping.clear()
        self.ports.close()
        self.audio.close()


__all__ = ["AudioEndpoints", "DtmfError", "MediaEngine", "MediaSession"]
