"""One loopback call between two MediaSessions: CPU per call-minute and RTP send timing.

Run: python bench/media_call.py [seconds]
Two sessions in one process talk PCMU (then PCMU with SRTP AES_CM_128_HMAC_SHA1_80) over
127.0.0.1, each sending a 1 kHz tone and playing what it receives into a discarding sink, so
the whole per-packet path runs: resample, encode, RTP, SRTP, sendto, recvfrom, unprotect,
jitter buffer, decode, resample. Prints

* CPU seconds per call-minute for ONE phone (process CPU time / 2 sessions, scaled to 60 s);
* RTP send interval deviation from 20 ms (p50/p99/max, ms) as seen by a UDP socket on the
  path, and the ticker's wake-up lateness against its absolute deadlines.

Not a test: nothing is asserted. The baresip side of the ratios in issue 3 needs baresip
running with the same codec; that comparison belongs with the interop fixtures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from audio import sdes  # noqa: E402
from audio.graph import NullSink, ToneSource  # noqa: E402
from firmware.runtime.media import MediaSession  # noqa: E402
from firmware.runtime.ports import PortAllocator  # noqa: E402
from firmware.sip.ids import SecureIds  # noqa: E402
from firmware.sip.offer_answer import CodecSpec, NegotiatedCrypto, NegotiatedMedia  # noqa: E402

SUITE = "AES_CM_128_HMAC_SHA1_80"


def negotiated(port: int, crypto: NegotiatedCrypto | None) -> NegotiatedMedia:
    pcmu = CodecSpec("PCMU", 8000, 0)
    return NegotiatedMedia(
        0, "127.0.0.1", port, "127.0.0.1", port + 1, 0, pcmu, {0: pcmu}, 101,
        frozenset(range(16)), 20, "sendrecv", crypto,
    )  # fmt: skip


class Stamp(asyncio.DatagramProtocol):
    """Timestamps A's packets on their way to B and forwards them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.times: list[float] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.times.append(time.monotonic())
        assert self.transport is not None
        self.transport.sendto(data, self.target)


async def one_call(seconds: float, srtp: bool) -> None:
    loop = asyncio.get_running_loop()
    ports = PortAllocator(40000, 49999, bind_address="127.0.0.1")
    _, pa = ports.allocate("a", None)
    _, pb = ports.allocate("b", None)
    ca = cb = None
    if srtp:
        keys = sdes.SdesKeys()
        ka = sdes.CryptoAttribute(1, SUITE, (keys.fresh(SUITE),)).format()
        kb = sdes.CryptoAttribute(1, SUITE, (keys.fresh(SUITE),)).format()
        ca, cb = NegotiatedCrypto(1, SUITE, kb, ka), NegotiatedCrypto(1, SUITE, ka, kb)
    transport, stamp = await loop.create_datagram_endpoint(
        lambda: Stamp(("127.0.0.1", pb)), local_addr=("127.0.0.1", 0)
    )
    via = transport.get_extra_info("sockname")[1]
    ids = SecureIds()
    a = MediaSession(
        "a", negotiated(via, ca), ports.sockets("a"), source=ToneSource(1000, 8000),
        sink=NullSink(8000), ids=ids,
    )  # fmt: skip
    b = MediaSession(
        "b", negotiated(pa, cb), ports.sockets("b"), source=ToneSource(440, 8000),
        sink=NullSink(8000), ids=ids,
    )  # fmt: skip
    cpu0 = time.process_time()
    a.start()
    b.start()
    await asyncio.sleep(seconds)  # the measurement window itself
    cpu = time.process_time() - cpu0
    a.stop()
    b.stop()
    transport.close()
    ports.close()
    t = np.array(stamp.times)
    dev = np.abs(np.diff(t) * 1000.0 - 20.0)
    late = a.stats()["tick_late_ms"]
    name = "PCMU + SRTP" if srtp else "PCMU"
    print(
        f"{name:12s} CPU {cpu / 2 / seconds * 60:6.3f} s per call-minute per phone | "
        f"send interval deviation p50 {np.percentile(dev, 50):.3f} "
        f"p99 {np.percentile(dev, 99):.3f} max {dev.max():.3f} ms | "
        f"tick lateness p50 {late['p50']} p99 {late['p99']} max {late['max']} ms | "
        f"received {b.stats()['packets_received']}"
    )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    for srtp in (False, True):
        asyncio.run(one_call(seconds, srtp))


if __name__ == "__main__":
    main()
