"""Adaptive jitter buffer: RTP packets in, one PCM frame out per `get(now)`.

How the delay is chosen and held (sans-IO: arrivals and `now` are the caller's monotonic
seconds; `get` is called once per output frame by whatever paces playback):

* Each packet's transit `d = arrival - timestamp/clock_rate` is compared with the minimum
  transit over the last `window` packets (the fastest path seen lately). The excess
  `r = d - min` is the packet's jitter delay. The target playout delay is
  `clamp(quantile(r, q) + frame, min_delay, max_delay)`: enough to catch a fraction `q` of the
  packets, plus one frame because playout happens at frame boundaries. A windowed minimum
  (not an all-time one) lets the estimate follow route changes and clock skew.
  Delay spikes (a path stalls, then flushes) are too rare to move a quantile; one spike is
  concealed, but once two have been seen within `peak_window` packets the target covers the
  largest of them until they age out (recurring Wi-Fi stalls, NetEq's "peak detector" idea).
* The actual playout delay is `now - play_position/clock_rate - min_transit`. Whenever it is
  off target by more than ~half a frame the buffer drops or inserts *one whole frame*: at
  once while it is concealing a loss or playing comfort noise (one more concealed frame next
  to a lost one is hardly audible), when the frame concerned is quiet (RMS below
  `quiet_rms`), when the error has persisted for `PERSIST` frames (1 s), or at once when
  it exceeds 1.5 frames (too much delay) or 1 frame (too little: packets are about to be
  late). We chose whole-frame adaptation over time-stretching: it needs no DSP, it is
  exact, and with the dead band it fires about once per 67 s at 300 ppm of skew. Clock skew therefore only ever costs
  bounded delay, never drift: the play position stays tied to the sender's clock.
* Playback starts at the first tick where the head packet is due (delay >= target - half a
  frame). If a faster packet lowered the min transit since the last tick, the head can
  already be past the dead band then; it is skipped before the first sample plays rather
  than dropped mid-speech a second later. Later falls of the min transit (the first packets
  were the slowest) still leave up to the jitter of excess delay, given back as above.
* Missing frames are concealed with `decoder.conceal()` for `conceal_frames` frames, then
  replaced by comfort noise. Packets arriving after their play time are dropped and counted
  as late; duplicates are dropped; reordering within the buffer is undone by timestamp.
* Sequence numbers and timestamps are unwrapped to unbounded integers against the newest
  packet, so 16/32-bit wrap inside the buffer is invisible. A new SSRC, or a timestamp jump
  beyond `resync_after` seconds either way, restarts the buffer.

The decoder's PCM rate may differ from the RTP clock rate (G.722: clock 8000, PCM 16000);
packets whose duration differs from the output frame are carried over sample-exactly.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from typing import Any, Protocol

import numpy as np

from .pcm import rms
from .plc import ComfortNoise
from .rtp import RtpPacket

log = logging.getLogger(__name__)

AUDIO = "audio"
CONCEALED = "concealed"
COMFORT_NOISE = "comfort_noise"
SILENCE = "silence"


def quantile(values: deque[float], q: float) -> float:
    """`float(np.quantile(values, q))` (its default "linear" method, bit for bit) with a
    partial sort of two positions instead of np.quantile's general machinery, which costs
    several times more on the few hundred values the buffer keeps."""
    n = len(values)
    arr = np.fromiter(values, dtype=np.float64, count=n)
    virtual = (n - 1) * q
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    arr.partition((lo, hi) if hi != lo else lo)
    a, b = float(arr[lo]), float(arr[hi])
    t = virtual - lo
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t  # numpy's _lerp, same rounding


class Decoder(Protocol):
    def decode(self, payload: bytes) -> np.ndarray: ...

    def conceal(self, samples: int) -> np.ndarray: ...


class CodecLike(Protocol):
    clock_rate: int
    sample_rate: int

    def decoder(self) -> Decoder: ...


class JitterBuffer:
    """Reorders, times and decodes one RTP stream (see the module docstring for the policy)."""

    SOFT_BAND = 0.6  # frames of delay error tolerated before adapting at a convenient moment
    FORCE_DROP = 1.5  # frames of excess delay that force a drop
    FORCE_INSERT = 1.0  # frames of missing delay that force an insert
    PERSIST = 50  # frames (1 s at 20 ms) off target after which we adapt even mid-speech
    SPIKE_GAP = 10  # packets: delay excursions closer together than this are one spike

    def __init__(
        self,
        clock_rate: int,
        frame_samples: int,
        min_delay: float = 0.02,
        max_delay: float = 0.3,
        *,
        decoder: Decoder,
        sample_rate: int | None = None,
        initial_delay: float = 0.06,
        quantile: float = 0.97,
        window: int = 500,
        peak_window: int = 1500,
        conceal_frames: int = 3,
        quiet_rms: float = 200.0,
        resync_after: float = 2.0,
        noise_seed: int = 0,
    ) -> None:
        if not 0 < min_delay <= max_delay:
            raise ValueError(f"need 0 < min_delay <= max_delay, got {min_delay}, {max_delay}")
        self.clock_rate = clock_rate
        self.frame = frame_samples  # clock-rate units
        self.frame_s = frame_samples / clock_rate
        self.sample_rate = sample_rate or clock_rate
        self.pcm_frame = frame_samples * self.sample_rate // clock_rate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.initial_delay = min(max(initial_delay, min_delay), max_delay)
        self.quantile = quantile
        self.window = window
        self.peak_window = peak_window
        self.conceal_frames = conceal_frames
        self.quiet_rms = quiet_rms
        self.resync_ts = int(resync_after * clock_rate)
        self.decoder = decoder
        self.noise = ComfortNoise(noise_seed)
        self.counters = dict.fromkeys(
            (
                "received",
                "audio",
                "concealed",
                "comfort_noise",
                "silence",
                "late",
                "duplicates",
                "reordered",
                "dropped",
                "inserted",
                "overflow",
                "resyncs",
            ),
            0,
        )
        self.target = self.initial_delay
        self.delay = 0.0  # playout delay measured at the last get()
        self.jitter = 0.0  # the quantile of r (delay spread), seconds
        self._reset()

    @classmethod
    def for_codec(
        cls,
        codec: CodecLike,
        ptime_ms: int = 20,
        min_delay: float = 0.02,
        max_delay: float = 0.3,
        **options: Any,
    ) -> JitterBuffer:
        """A buffer for one negotiated codec: frame size from ptime at the RTP clock rate,
        PCM at the codec's sample rate, a fresh decoder (PLC state is per stream)."""
        return cls(
            codec.clock_rate,
            codec.clock_rate * ptime_ms // 1000,
            min_delay,
            max_delay,
            decoder=codec.decoder(),
            sample_rate=codec.sample_rate,
            **options,
        )

    # -- state ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._ssrc: int | None = None
        self._ts_ref = 0  # newest extended timestamp
        self._seq_ref = 0  # newest extended sequence number
        self._slots: dict[int, tuple[bytes, int]] = {}  # ext ts -> (payload, ext seq)
        self._order: list[int] = []  # sorted ext timestamps in _slots
        self._seen: set[int] = set()
        self._seen_fifo: deque[int] = deque()
        self._playing = False
        self._play_ts = 0  # ext timestamp of the next media not yet taken from the buffer
        self._carry = np.zeros(0, dtype=np.int16)  # decoded samples not yet output
        self._carry_kind = AUDIO
        self._last_dur = self.frame
        self._missing = 0  # consecutive frames concealed or noise-filled
        self._last_rms = 0.0
        self._piece_rms: float | None = None  # RMS of the frame just assembled, if one packet
        self._off_target = 0  # consecutive frames with the delay outside the soft band
        self._count = 0  # packets in this stream, indexes the windows below
        self._min_q: deque[tuple[int, float]] = deque()  # monotonic queue: windowed min transit
        self._rel: deque[float] = deque(maxlen=self.window)
        self._spikes: deque[tuple[int, float]] = deque()  # (last packet index, peak r)

    # -- input ---------------------------------------------------------------------------------

    def put(self, packet: RtpPacket, arrival: float) -> str:
        """Queue a packet; returns "queued", "duplicate", "late" or "resync" (queued, restarted).

        Feed only the negotiated audio payload type: RFC 4733 events and RFC 3389 comfort
        noise packets have their own timestamp semantics and go elsewhere. On "late" the
        caller may tell its `RtpReceiverStats.note_late()` so RTCP/status count it.
        """
        c = self.counters
        c["received"] += 1
        result = "queued"
        if self._ssrc is None or packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                result = self._resync(f"SSRC changed to {packet.ssrc:#010x}")
            self._ssrc = packet.ssrc
            self._ts_ref = packet.timestamp
            self._seq_ref = packet.sequence
        # ts_delta / seq_delta inlined (every packet): signed shortest distance mod 2^32 / 2^16
        d = (packet.timestamp - self._ts_ref) & 0xFFFFFFFF
        ext_ts = self._ts_ref + (d - 0x100000000 if d >= 0x80000000 else d)
        d = (packet.sequence - self._seq_ref) & 0xFFFF
        ext_seq = self._seq_ref + (d - 0x10000 if d >= 0x8000 else d)
        anchor = self._play_ts if self._playing else self._ts_ref
        if abs(ext_ts - anchor) > self.resync_ts + int(self.max_delay * self.clock_rate):
            result = self._resync(f"timestamp jumped by {ext_ts - anchor}")
            self._ssrc = packet.ssrc
            self._ts_ref, self._seq_ref = packet.timestamp, packet.sequence
            ext_ts, ext_seq = packet.timestamp, packet.sequence
        if ext_seq in self._seen or ext_ts in self._slots:
            c["duplicates"] += 1
            return "duplicate"
        self._seen.add(ext_seq)  # _remember inlined
        fifo = self._seen_fifo
        fifo.append(ext_seq)
        if len(fifo) > 512:
            self._seen.discard(fifo.popleft())
        if ext_seq < self._seq_ref:
            c["reordered"] += 1
        self._seq_ref = max(self._seq_ref, ext_seq)
        self._ts_ref = max(self._ts_ref, ext_ts)
        self._measure(arrival - ext_ts / self.clock_rate)
        if self._playing and ext_ts < self._play_ts:
            c["late"] += 1
            return "late"
        self._slots[ext_ts] = (packet.payload, ext_seq)
        bisect.insort(self._order, ext_ts)
        limit = 2 * int(self.max_delay / self.frame_s) + 16
        while len(self._order) > limit:  # only without get() calls: bound the memory
            del self._slots[self._order.pop(0)]
            c["overflow"] += 1
        return result

    def _resync(self, why: str) -> str:
        log.info("jitter buffer restarts: %s", why)
        self.counters["resyncs"] += 1
        self._reset()
        return "resync"

    def _measure(self, transit: float) -> None:
        i = self._count
        self._count += 1
        q = self._min_q
        while q and q[-1][1] >= transit:
            q.pop()
        q.append((i, transit))
        while q[0][0] <= i - self.window:
            q.popleft()
        r = transit - q[0][1]
        self._rel.append(r)
        spikes = self._spikes
        if self._count >= 16 and r > self.jitter + 2 * self.frame_s:
            if spikes and i - spikes[-1][0] <= self.SPIKE_GAP:
                spikes[-1] = (i, max(r, spikes[-1][1]))
            else:
                spikes.append((i, r))
        while spikes and spikes[0][0] <= i - self.peak_window:
            spikes.popleft()
        if self._count >= 16 and self._count % 8 == 0:
            self.jitter = quantile(self._rel, self.quantile)
        peak = max(p for _, p in spikes) if len(spikes) >= 2 else 0.0
        if self._count >= 16:
            need = max(self.jitter, peak) + self.frame_s
            self.target = min(max(need, self.min_delay), self.max_delay)

    @property
    def _min_transit(self) -> float:
        return self._min_q[0][1]

    # -- output --------------------------------------------------------------------------------

    def get(self, now: float) -> tuple[np.ndarray | None, str]:
        """The next output frame: (pcm, kind) with kind "audio", "concealed", "comfort_noise",
        or (None, "silence") before the first packet is due (play silence then).

        Call once per frame and pass the frame's scheduled deadline (or the device clock's
        frame time) as `now`, not the moment a late callback happened to run: the delay
        estimate compares `now` with arrivals, so bursty callbacks would look like jitter.
        """
        c = self.counters
        if not self._playing:
            if not self._order:
                c["silence"] += 1
                return None, SILENCE
            if self._delay_at(now, self._order[0]) < self.target - self.frame_s / 2:
                c["silence"] += 1
                return None, SILENCE
            self._skip_overshoot(now)
            self._playing = True
            self._play_ts = self._order[0]
        position = self._play_ts - len(self._carry) * self.clock_rate // self.sample_rate
        self.delay = now - position / self.clock_rate - self._min_transit
        err = (self.delay - self.target) / self.frame_s
        if abs(err) > self.SOFT_BAND:
            self._off_target += 1
        else:
            self._off_target = 0
        stale = self._off_target >= self.PERSIST
        if err < -self.SOFT_BAND and (
            stale or self._missing or self._last_rms < self.quiet_rms or err < -self.FORCE_INSERT
        ):
            c["inserted"] += 1
            self._off_target = 0
            return self._filler()
        if err > self.SOFT_BAND:
            pcm, kind = self._assemble()
            level = self._frame_rms(pcm) if kind == AUDIO else 0.0
            if stale or kind != AUDIO or level < self.quiet_rms or err > self.FORCE_DROP:
                c["dropped"] += 1
                c[kind] -= 1  # the frame never reached the loudspeaker
                self._off_target = 0
            else:
                self._last_rms = level
                return pcm, kind
        pcm, kind = self._assemble()
        if kind == AUDIO:
            self._last_rms = self._frame_rms(pcm)
        return pcm, kind

    def _frame_rms(self, pcm: np.ndarray) -> float:
        """RMS of the frame `_assemble` just returned: reuses the decoded packet's level when
        the frame is exactly that packet (the usual case), so it is computed once a frame."""
        if self._piece_rms is not None:
            return self._piece_rms
        return rms(pcm)

    def _delay_at(self, now: float, ts: int) -> float:
        """Playout delay if media timestamp `ts` were played at `now`."""
        return now - ts / self.clock_rate - self._min_transit

    def _skip_overshoot(self, now: float) -> None:
        """Start playback inside the dead band: drop head packets that are already too old.

        The start test assumes the delay grows by one frame per silent tick, but a packet
        faster than all before it lowers the min transit between two ticks, so the head can
        be due by more than the dead band already. Holding that excess would cost a frame
        later anyway (1 s on, in mid-speech); before the first sample plays, skipping leaves
        no gap. Only skip to a contiguous next packet that still starts within the target.
        """
        band = self.target + self.SOFT_BAND * self.frame_s
        floor = self.target - self.frame_s / 2
        order = self._order
        while (
            len(order) > 1
            and order[1] - order[0] <= self.frame + self.frame // 2
            and self._delay_at(now, order[0]) > band
            and self._delay_at(now, order[1]) >= floor
        ):
            del self._slots[order.pop(0)]
            self.counters["dropped"] += 1

    def _filler(self) -> tuple[np.ndarray, str]:
        """An inserted frame that takes no media from the buffer (counted as "inserted")."""
        if self._missing >= self.conceal_frames:
            return self.noise.generate(self.pcm_frame), COMFORT_NOISE
        return self._fit(self.decoder.conceal(self.pcm_frame), self.pcm_frame), CONCEALED

    def _assemble(self) -> tuple[np.ndarray, str]:
        """Take one frame's worth of media from the buffer, decoding or concealing as needed."""
        n = self.pcm_frame
        if not self._carry.size:
            piece, piece_kind = self._next_piece()
            if len(piece) == n:  # the usual case: one packet is one frame, nothing carried
                if piece_kind != AUDIO:
                    self._piece_rms = None
                self.counters[piece_kind] += 1
                return piece, piece_kind
            self._carry, self._carry_kind = piece, piece_kind
        kind = self._carry_kind  # of the carried samples, which come first
        self._piece_rms = None  # the frame is not exactly one decoded packet
        while len(self._carry) < n:
            piece, piece_kind = self._next_piece()
            self._piece_rms = None
            self._carry = np.concatenate((self._carry, piece)) if self._carry.size else piece
            self._carry_kind = piece_kind  # what is left over belongs to the last piece
            if piece_kind != AUDIO and kind == AUDIO:
                kind = piece_kind
        pcm, self._carry = self._carry[:n], self._carry[n:]
        self.counters[kind] += 1
        return pcm, kind

    def _next_piece(self) -> tuple[np.ndarray, str]:
        half = self.frame // 2
        if self._order and self._order[0] <= self._play_ts + half:
            ts = self._order.pop(0)
            payload, _seq = self._slots.pop(ts)
            pcm = self.decoder.decode(payload)
            if pcm.dtype != np.int16:  # the codecs return int16; anything else is converted
                pcm = np.asarray(pcm, dtype=np.int16)
            if pcm.size == 0:
                pcm = np.zeros(self.pcm_frame, dtype=np.int16)
            dur = pcm.size * self.clock_rate // self.sample_rate
            self._play_ts = ts + dur
            self._last_dur = dur
            self._missing = 0
            self._piece_rms = rms(pcm)
            self.noise.observe_level(self._piece_rms)  # RMS measured once a frame
            return pcm, AUDIO
        # Lost (or not sent: silence suppression): one packet's worth of concealment.
        self._missing += 1
        samples = self._last_dur * self.sample_rate // self.clock_rate
        self._play_ts += self._last_dur
        if self._missing > self.conceal_frames:
            return self.noise.generate(samples), COMFORT_NOISE
        return self._fit(self.decoder.conceal(samples), samples), CONCEALED

    @staticmethod
    def _fit(pcm: np.ndarray, n: int) -> np.ndarray:
        pcm = np.asarray(pcm, dtype=np.int16)
        if pcm.size == n:
            return pcm
        if pcm.size > n:
            return pcm[:n]
        return np.concatenate((pcm, np.zeros(n - pcm.size, dtype=np.int16)))

    # -- reporting -----------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._order)

    def stats(self) -> dict[str, float | int]:
        """Counters and delays (ms) for the status API and tests."""
        out: dict[str, float | int] = dict(self.counters)
        out.update(
            buffered=len(self._order),
            target_delay_ms=round(self.target * 1000.0, 2),
            delay_ms=round(self.delay * 1000.0, 2),
            delay_spread_ms=round(self.jitter * 1000.0, 2),
        )
        return out
