"""Parse and parse+serialise throughput of firmware.sip vs the `sipmessage` package.

Run: python bench/sip_parse.py [seconds-per-case]
Prints messages/s for a realistic INVITE with SDP and a 200 OK, ours and sipmessage's, side by
side, with the ratio ours/sipmessage. Both parsers get the same bytes in the same process.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sipmessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


from firmware.sip.parser import parse_message  # noqa: E402

log = logging.getLogger("bench.sip_parse")

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 9 0 8 101\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:1002@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Reception" <sip:1001@pbx.example.com>;tag=1928301774\r\n'
    b"To: <sip:1002@pbx.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.101\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: <sip:1001@192.0.2.101:5060;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"\r\n'
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, SUBSCRIBE, INFO, MESSAGE\r\n"
    b"Supported: replaces, timer, outbound, path, gruu\r\n"
    b"User-Agent: deskphone/0.1.0\r\n"
    b"Session-Expires: 1800\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101\r\n"
    b'From: "Reception" <sip:1001@pbx.example.com>;tag=1928301774\r\n'
    b"To: <sip:1002@pbx.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.101\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:1002@192.0.2.102:5060>\r\n"
    b"Record-Route: <sip:pbx.example.com;lr>\r\n"
    b"Server: pbx/1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, measured over about `seconds` of wall time."""
    n = 0
    batch = 200
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def compare(
    ours: Callable[[], object], theirs: Callable[[], object], seconds: float, rounds: int = 5
) -> tuple[float, float]:
    """Best-of-`rounds` rates, the two contenders interleaved so load on the box hits both."""
    best_a = best_b = 0.0
    for _ in range(rounds):
        best_a = max(best_a, rate(ours, seconds / rounds))
        best_b = max(best_b, rate(theirs, seconds / rounds))
    return best_a, best_b


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    for label, data in (("INVITE+SDP", INVITE), ("200 OK", OK)):
        cases += _cases(label, data)
    log.info("%-48s %12s %12s %8s", "case", "ours msg/s", "sipmsg msg/s", "ratio")
    for name, ours, theirs in cases:
        a, b = compare(ours, theirs, seconds)
        log.info("%-48s %12.0f %12.0f %8.2f", name, a, b, a / b)


def _cases(label: str, data: bytes) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    def ours_parse() -> object:
        return parse_message(data)

    def theirs_parse() -> object:
        return sipmessage.Message.parse(data)

    def ours_round() -> object:
        return parse_message(data).serialize()

    def theirs_round() -> object:
        return bytes(sipmessage.Message.parse(data))

    def ours_read() -> object:
        return _touch_ours(parse_message(data))

    def theirs_read() -> object:
        return _touch_theirs(sipmessage.Message.parse(data))

    return [
        (f"parse {label}", ours_parse, theirs_parse),
        (f"parse+serialise {label}", ours_round, theirs_round),
        (f"parse+read Via/CSeq/From/To/Call-ID {label}", ours_read, theirs_read),
    ]


def _touch_ours(m: Any) -> tuple[object, ...]:
    return m.top_via.branch, m.cseq.number, m.from_.tag, m.to.tag, m.call_id


def _touch_theirs(m: Any) -> tuple[object, ...]:
    return (
        m.via[0].parameters.get("branch"),
        m.cseq.sequence,
        m.from_address.parameters.get("tag"),
        m.to_address.parameters.get("tag"),
        m.call_id,
    )


if __name__ == "__main__":
    main()
