"""Property tests for the SIP parser: round trip, robustness on any bytes, linear work.

The linear-work checks never look at a clock: they count the Python lines the parser
executes (sys.settrace) or the bytes the stream parser scans, and compare how that count
grows with the input size.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.sip.describe import describe
from firmware.sip.errors import SipParseError
from firmware.sip.message import SipRequest, SipResponse
from firmware.sip.parser import KeepAlive, StreamParser, parse_message
from firmware.sip.validate import validate_request, validate_response

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(TOKEN_CHARS, min_size=1, max_size=12)
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).map(
    lambda t: "h" + t.strip("-") + "x"
)
host = st.lists(label, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["192.0.2.1", "[2001:db8::1]", "example.com:5061"]
)
# header values as a peer might write them: no CR/LF, no surrounding whitespace
# header values as a peer might write them: printable ASCII and some UTF-8, no CR/LF
value_chars = st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F)] + list("\té€大停電\ufeffработающий")
)
header_value = st.text(value_chars, min_size=1, max_size=40).map(str.strip).filter(bool)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A well-formed, canonically written message and the facts it was built from."""
    facts: dict[str, Any] = {}
    if draw(st.booleans()):
        method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "X-NEW"]) | token)
        user = draw(token.filter(lambda t: "%" not in t))
        start = f"{method} sip:{user}@{draw(host)} SIP/2.0"
        facts["method"] = method
    else:
        status = draw(st.integers(100, 699))
        reason = draw(st.text(value_chars, max_size=20).map(str.strip))
        start = f"SIP/2.0 {status} {reason}"
        facts["status"], facts["reason"] = status, reason
    branch = "z9hG4bK" + draw(token)
    seq = draw(st.integers(0, 2**32 - 1))
    headers = [
        (
            "Via",
            f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(host)};branch={branch}",
        ),
        ("From", f"<sip:a@{draw(host)}>;tag={draw(token)}"),
        ("To", f"<sip:b@{draw(host)}>"),
        ("Call-ID", draw(token)),
        ("CSeq", f"{seq} {facts.get('method', 'INVITE')}"),
    ]
    extra_names = st.sampled_from(
        ["Subject", "X-Thing", "Date", "User-Agent", "P-Foo"]
    ) | token.map(lambda t: "X-" + t)
    headers += draw(st.lists(st.tuples(extra_names, header_value), max_size=8))
    headers = draw(st.permutations(headers))
    body = draw(st.binary(max_size=300))
    lines = [start] + [f"{n}: {v}" for n, v in headers] + [f"Content-Length: {len(body)}"]
    facts.update(branch=branch, seq=seq, body=body, headers=headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, facts


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_serialize_parse_round_trip(case: tuple[bytes, dict[str, Any]]) -> None:
    raw, facts = case
    msg = parse_message(raw)
    assert msg.serialize() == raw
    assert msg.top_via.branch == facts["branch"]
    assert msg.cseq.number == facts["seq"]
    assert msg.body == facts["body"]
    assert [(n, v) for n, v in msg.headers][: len(facts["headers"])] == list(facts["headers"])
    if "method" in facts:
        assert isinstance(msg, SipRequest) and msg.method == facts["method"]
    else:
        assert isinstance(msg, SipResponse)
        assert (msg.status, msg.reason) == (facts["status"], facts["reason"])
    # and the same bytes framed on a stream, split anywhere
    cut = len(raw) // 3
    sp = StreamParser()
    out = sp.feed(raw[:cut]) + sp.feed(raw[cut:])
    assert len(out) == 1 and out[0].serialize() == raw  # type: ignore[union-attr]


def _exercise(msg: SipRequest | SipResponse) -> None:
    """Touch every structured accessor; only SipParseError may come out."""
    for attr in ("call_id", "cseq", "vias", "from_", "to", "contacts", "content_type"):
        try:
            getattr(msg, attr)
        except SipParseError:
            pass
    if isinstance(msg, SipRequest):
        try:
            msg.uri  # noqa: B018
        except SipParseError:
            pass
        validate_request(msg, {"path"}, methods={"INVITE"}, accept={"application/sdp"})
    else:
        validate_response(msg)
    msg.serialize()


def _only_parse_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        pass
    else:
        _exercise(msg)
    describe("fuzz", data)
    sp = StreamParser(max_message=4096)
    for i in range(0, len(data), 7):
        for item in sp.feed(data[i : i + 7]):
            assert isinstance(item, SipRequest | SipResponse | SipParseError | KeepAlive)
            if not isinstance(item, SipParseError | KeepAlive):
                _exercise(item)
        assert len(sp._buf) <= 4096 + 7  # never buffers past its limit, whatever arrives


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_sip_parse_error(data: bytes) -> None:
    _only_parse_errors(data)


SPECIALS = [
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"@",
    b"=",
    b"%",
    b"\x00",
    b"\xff",
    b"[",
    b"?",
]


@settings(max_examples=500)
@given(
    messages(), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(SPECIALS)), max_size=6)
)
def test_mutated_messages_only_raise_sip_parse_error(
    case: tuple[bytes, dict[str, Any]], edits: list[tuple[int, bytes]]
) -> None:
    data = bytearray(case[0])
    for pos, junk in edits:
        pos %= len(data) + 1
        data[pos:pos] = junk
    _only_parse_errors(bytes(data))


def test_rfc4475_messages_survive_every_accessor() -> None:
    for path in sorted((Path(__file__).resolve().parents[1] / "data" / "rfc4475").glob("*.dat")):
        _only_parse_errors(path.read_bytes())


# --- linear work -----------------------------------------------------------------------------

SIP_DIR = str(Path(__file__).resolve().parents[2] / "firmware" / "sip")


def lines_executed(fn: Callable[[], object]) -> int:
    """Python lines executed inside firmware/sip while running fn (a measure of work)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if not frame.f_code.co_filename.startswith(SIP_DIR):
            return None
        if event == "line":
            count += 1
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        try:
            fn()
        except SipParseError:
            pass
    finally:
        sys.settrace(old)
    return count


def _request_with(header: str) -> bytes:
    return (
        "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        f"{header}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _full(data: bytes) -> Callable[[], object]:
    def run() -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        _exercise(msg)

    return run


ADVERSARIAL: dict[str, Callable[[int], bytes]] = {
    "many list entries": lambda n: _request_with("Contact: " + ", ".join(["<sip:a@b>"] * n)),
    "many empty list entries": lambda n: _request_with("Contact: " + "," * n),
    "many params": lambda n: _request_with("Contact: <sip:a@b>" + ";p" * n),
    "many uri params": lambda n: _request_with("Contact: <sip:a@b" + ";p" * n + ">"),
    "long quoted display": lambda n: _request_with('Contact: "' + '\\"' * n + '" <sip:a@b>'),
    "unterminated quote": lambda n: _request_with('Contact: "' + "a, " * n),
    "many angle brackets": lambda n: _request_with("Contact: " + "<" * n),
    "many vias": lambda n: _request_with("Via: " + ", ".join(["SIP/2.0/UDP h"] * n)),
    "many folds": lambda n: _request_with("Subject: a" + "\r\n b" * n),
    "many headers": lambda n: _request_with("\r\n".join(f"X{i}: v" for i in range(min(n, 240)))),
    "space runs": lambda n: _request_with("Subject: " + "a" + " " * n + "b"),
    "semicolons in uri user": lambda n: _request_with("Contact: <sip:" + ";" * n + "@b>"),
}


@pytest.mark.parametrize("family", sorted(ADVERSARIAL))
def test_parser_work_grows_linearly(family: str) -> None:
    """Work w(n) at n = 50, 100, 400: linear gives (w400-w100)/(w100-w50) = 6, quadratic 20."""
    make = ADVERSARIAL[family]
    parse_message(make(400))  # framing accepts it: the work measured is value parsing
    w50, w100, w400 = (lines_executed(_full(make(n))) for n in (50, 100, 400))
    growth = w400 - w100
    step = w100 - w50
    assert growth <= 9 * step + 50, (family, w50, w100, w400)


def test_stream_parser_scans_each_byte_a_bounded_number_of_times() -> None:
    raw = _request_with("Subject: " + "x" * 3000)
    sp = StreamParser()
    out: list[object] = []
    for i in range(len(raw)):  # the worst case: one byte per read
        out += sp.feed(raw[i : i + 1])
    assert len(out) == 1 and isinstance(out[0], SipRequest)
    assert sp.bytes_scanned <= 4 * len(raw)  # a rescan per feed would be ~len(raw)**2 / 2
