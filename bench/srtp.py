"""SRTP protect+unprotect throughput: audio.srtp.SrtpSession (cryptography) vs pylibsrtp.

Run: python bench/srtp.py [rounds]
Each case protects one RTP packet with a 160-byte payload (G.711, 20 ms) and unprotects it on
a second session, with the sequence number advancing as in a call (so the replay window and
ROC logic do their real work). Prints microseconds per packet (protect + unprotect) for both
implementations, the ratio ours/pylibsrtp, and what one call (50 packets/s each way) costs in
CPU. Both get the same bytes in the same process. Times are process CPU time, best of
several rounds, so other load on the machine inflates them less. Not a test: nothing is asserted.
The numbers feed the decision written in audio/srtp.py's module docstring.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from audio.srtp import (  # noqa: E402
    SUITE_32,
    SUITE_80,
    LibSrtpSession,
    SrtpSession,
    SrtpTransform,
    libsrtp_available,
)

log = logging.getLogger("bench.srtp")

KEY = bytes(range(16))
SALT = bytes(range(16, 30))
PAYLOAD = bytes(range(160))
PACKETS_PER_CALL_SECOND = 100  # 50 sent + 50 received
RTCP = bytes.fromhex("80c80006") + (0x1234).to_bytes(4, "big") + bytes(20)

Factory = Callable[[str, bytes, bytes], SrtpTransform]
PACKETS = 20000  # per round
ROUNDS = 7


def _rtp_case(factory: Factory, suite: str, packets: int) -> float:
    """CPU microseconds per protect+unprotect of one RTP packet."""
    tx, rx = factory(suite, KEY, SALT), factory(suite, KEY, SALT)
    header = struct.Struct("!BBHII")
    packets_in = [
        header.pack(0x80, 0, seq & 0xFFFF, seq * 160, 0x1234) + PAYLOAD
        for seq in range(60000, 60000 + packets)  # crosses the 16-bit wrap
    ]
    start = time.process_time()
    for packet in packets_in:
        rx.unprotect(tx.protect(packet))
    return (time.process_time() - start) / packets * 1e6


def _rtcp_case(factory: Factory, suite: str, packets: int) -> float:
    tx, rx = factory(suite, KEY, SALT), factory(suite, KEY, SALT)
    start = time.process_time()
    for _ in range(packets):
        rx.unprotect_rtcp(tx.protect_rtcp(RTCP))
    return (time.process_time() - start) / packets * 1e6


def _best(case: Callable[[Factory, str, int], float], factory: Factory, suite: str) -> float:
    """Best of ROUNDS: the least disturbed run on a shared machine."""
    return min(case(factory, suite, PACKETS) for _ in range(ROUNDS))


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    global ROUNDS
    ROUNDS = int(argv[1]) if len(argv) > 1 else ROUNDS
    have_lib = libsrtp_available()
    if not have_lib:
        log.info("pylibsrtp is not installed: measuring ours only (pip install pylibsrtp)")
    log.info("%-22s %14s %18s %16s", "case", "ours us/pkt", "pylibsrtp us/pkt", "ours/pylibsrtp")
    cases: list[tuple[str, Callable[[Factory, str, int], float], str]] = [
        ("SHA1_80 RTP 160B", _rtp_case, SUITE_80),
        ("SHA1_32 RTP 160B", _rtp_case, SUITE_32),
        ("SHA1_80 RTCP", _rtcp_case, SUITE_80),
    ]
    for name, case, suite in cases:
        ours = _best(case, SrtpSession, suite)
        if have_lib:
            theirs = _best(case, LibSrtpSession, suite)
            log.info("%-22s %14.2f %18.2f %15.1fx", name, ours, theirs, ours / theirs)
        else:
            log.info("%-22s %14.2f %18s %16s", name, ours, "-", "-")
        if case is _rtp_case and suite == SUITE_80:
            # protect+unprotect per packet pair / 2 = cost per packet in one direction
            per_call = ours / 2 * PACKETS_PER_CALL_SECOND / 1e6
            log.info(
                "  ours: %.3f ms CPU per call-second (%.3f %% of one core)",
                per_call * 1e3,
                per_call * 100,
            )
            if have_lib:
                lib_call = theirs / 2 * PACKETS_PER_CALL_SECOND / 1e6
                log.info(
                    "  pylibsrtp: %.3f ms CPU per call-second (%.3f %% of one core)",
                    lib_call * 1e3,
                    lib_call * 100,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
