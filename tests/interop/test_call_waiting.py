"""Call waiting on a real phone process, through Kamailio (users 1121-1140).

The phone (1121, two line appearances) talks to baresip A (1122, plays 1000 Hz); baresip B
(1123) calls in. What is checked, on the wire and in what the user sees/hears:

* B's call rings as call waiting: status shows it "ringing" with ``waiting`` and A's call as
  the active one, and the US call-waiting tone (440 Hz, 0.3 s) is mixed into the earpiece next
  to A's voice (FFT of the phone's ALSA `file` playback);
* a third caller (sipp as 1124) gets 486 Busy Here without any 180;
* answer-and-hold: the phone's hold re-INVITE (a=sendonly) to A leaves before its 200 OK to B
  (captured on the phone's SIP port), RTP of A's call stops both ways (packet counts), B's flows;
* swap: B is held first, then A resumed (sendrecv), and the RTP counts follow.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sipp import SippResult
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import alsa_files, connected, deskphone
from tests.interop.test_progress_tones import played, wait_log

A_TONE = 1000.0
B_TONE = 1500.0
WAITING_HZ = 440.0  # E.180 call-waiting tone for the US plan (audio/tones.py)
WINDOW = 0.1


def share_near(pcm: np.ndarray, rate: int, freq: float) -> float:
    """Spectral magnitude within 15 Hz of ``freq`` relative to the window's strongest bin."""
    mag = np.abs(np.fft.rfft((pcm - pcm.mean()) * np.hanning(len(pcm))))
    bins = np.fft.rfftfreq(len(pcm), 1.0 / rate)
    return float(mag[np.abs(bins - freq) < 15].max() / (mag.max() or 1.0))


def rtp_rate(phone: PhoneProcess, call_id: str, seconds: float = 1.0) -> tuple[int, int]:
    """RTP packets (sent, received) by the phone on one call per ``seconds``."""

    def counts() -> tuple[int, int]:
        media = phone.call(call_id)["media"] or {}
        return media.get("packets_sent", 0), media.get("packets_received", 0)

    before = counts()
    time.sleep(seconds)  # bounded observation window
    after = counts()
    return after[0] - before[0], after[1] - before[1]


def sip_sent(packets: list[bytes]) -> list[tuple[str, str]]:
    """(first line, whole text) of every SIP message the phone sent, in order (a
    retransmission is the same message: counted once)."""
    out = []
    seen: set[bytes] = set()
    for p in packets:
        if p in seen:
            continue
        seen.add(p)
        text = p.decode(errors="replace")
        if re.match(r"(SIP/2\.0 \d{3}|[A-Z]+ \S+ SIP/2\.0)", text):
            out.append((text.split("\r\n", 1)[0], text))
    return out


def header(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.*)$", text, re.MULTILINE | re.IGNORECASE)
    return m.group(1).strip() if m else ""


def test_call_waiting_tone_busy_beyond_the_limit_answer_and_hold_and_swap(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    far_a: Baresip = make_baresip(
        "1122", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=A_TONE
    )
    far_b: Baresip = make_baresip("1123", kamailio=kamailio, codecs=["PCMU"], tone_hz=B_TONE)
    files = alsa_files(tmp_path / "alsa-1121")
    account = {
        "id": "line1",
        "user": "1121",
        "password": kamailio.users["1121"],
        "domain": kamailio.domain,
        "registrar": kamailio.uri("udp"),
        "expires": 300,
    }
    phone = phones(
        [account],
        env=files.env,
        audio={"codecs": ["PCMU"], "tone_country": "US"},
        sections={"calls": {"max_calls": 2}},
    )
    phone.wait_state("registered", 15)

    c1 = phone.dial("1122")["id"]
    phone.wait_call(connected(c1), 10, "the call to A to connect")
    far_a.wait_event("CALL_ESTABLISHED", 10)
    sniff = sniffer(phone.sip_port)
    time.sleep(0.5)  # A alone for a while: the earpiece without any tone first

    # --- call waiting: B rings as the waiting call, the tone goes into A's earpiece --------
    far_b.dial(kamailio.aor("1121"))
    waiting = phone.wait_call(lambda c: c["state"] == "ringing", 10, "B's call to ring")
    c2 = waiting["id"]
    assert waiting["waiting"] is True and waiting["active"] is False
    assert phone.call(c1)["active"] is True
    assert phone.status()["lines"] == {"max_calls": 2, "active_call": c1, "waiting": [c2]}
    wait_log(phone, f"call-waiting tone started (call {c2} waits, played into call {c1})", 5)

    # --- beyond the two line appearances: 486, nothing rings ------------------------------
    busy = sipp(
        "invite_expect_busy.xml",
        kamailio.addr("udp"),
        keys={"from": "1124", "to": "1121"},
        auth_user="1124",
        auth_password=kamailio.users["1124"],
    )
    assert busy.ok, busy.explain()
    assert 486 in busy.received_statuses and 180 not in busy.received_statuses
    assert len([c for c in phone.status()["calls"] if c["state"] != "ended"]) == 2

    # --- the tone in the earpiece, next to A's voice --------------------------------------
    # the card's file trails the phone's writes by the device buffer: poll it (bounded)
    deadline = time.monotonic() + 5.0
    while True:
        pcm, rate = played(phone, files)
        n = int(rate * WINDOW)
        windows = [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]
        with_tone = [
            i
            for i, w in enumerate(windows)
            if share_near(w, rate, WAITING_HZ) > 0.15 and share_near(w, rate, A_TONE) > 0.5
        ]
        if (with_tone and with_tone[-1] + 2 < len(windows)) or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling interval of an external observer
    assert with_tone, "no window of the earpiece has both the call-waiting tone and A's voice"
    assert share_near(windows[0], rate, WAITING_HZ) < 0.05  # before B called: A only
    assert share_near(windows[-1], rate, WAITING_HZ) < 0.05  # the cadence's pause
    assert share_near(windows[-1], rate, A_TONE) > 0.5  # A still heard
    # US cadence: one 0.3 s burst (3-4 windows of 0.1 s), then 9.7 s off
    assert 2 <= len(with_tone) <= 4 and with_tone[-1] - with_tone[0] <= 3, with_tone

    # --- answer-and-hold ---------------------------------------------------------------------
    phone.call_action(c2, "answer")
    far_b.wait_event("CALL_ESTABLISHED", 10)
    phone.wait_call(connected(c2), 10, "B's call to connect")
    phone.wait_call(lambda c: c["id"] == c1 and c["state"] == "held", 10, "A's call held")
    wait_log(phone, f"call-waiting tone stopped (call {c2})", 5)
    status = phone.status()
    assert status["lines"] == {"max_calls": 2, "active_call": c2, "waiting": []}
    time.sleep(0.3)  # in-flight packets drain
    sent, received = rtp_rate(phone, c1)
    assert sent == 0 and received <= 2, f"held call A still carries RTP: {sent}/{received}"
    sent, received = rtp_rate(phone, c2)
    assert sent >= 40 and received >= 40, (sent, received)

    # --- swap back: B held first, then A resumed ---------------------------------------------
    phone.call_action(c2, "swap")
    phone.wait_call(connected(c1), 10, "A's call resumed")
    phone.wait_call(lambda c: c["id"] == c2 and c["state"] == "held", 10, "B's call held")
    assert phone.status()["lines"]["active_call"] == c1
    time.sleep(0.3)
    sent, received = rtp_rate(phone, c2)
    assert sent == 0 and received <= 2, f"held call B still carries RTP: {sent}/{received}"
    sent, received = rtp_rate(phone, c1)
    assert sent >= 40 and received >= 40, (sent, received)

    wire = sip_sent(sniff.close())
    invites = [(i, text) for i, (first, text) in enumerate(wire) if first.startswith("INVITE ")]
    ok_to_b = [
        i
        for i, (first, text) in enumerate(wire)
        if first.startswith("SIP/2.0 200")
        and header(text, "CSeq").endswith("INVITE")
        and "1123" in header(text, "From")
    ]
    holds_a = [i for i, text in invites if "a=sendonly" in text and "1122" in header(text, "To")]
    assert holds_a and ok_to_b, [first for first, _ in wire]
    assert holds_a[0] < ok_to_b[0], "the 200 OK to B left before A was put on hold"
    # swap: hold B (sendonly), then resume A (sendrecv), in that order
    later = [(i, text) for i, text in invites if i > ok_to_b[0]]
    kinds = [
        ("B" if "1123" in header(t, "From") + header(t, "To") else "A", "sendonly" in t)
        for _, t in later
    ]
    assert kinds[:2] == [("B", True), ("A", False)], kinds

    phone.call_action(c1, "hangup")
    phone.call_action(c2, "hangup")
    far_a.wait_event("CALL_CLOSED", 10)
    far_b.wait_event("CALL_CLOSED", 10)


def test_rejecting_the_waiting_call_leaves_the_talking_call_untouched(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    """Users 1125-1127: 603 Decline to the waiting caller, no re-INVITE to the talking peer,
    whose RTP keeps flowing; the call-waiting tone stops."""
    far_a: Baresip = make_baresip(
        "1126", kamailio=kamailio, codecs=["PCMU"], auto_answer=True, tone_hz=A_TONE
    )
    far_b: Baresip = make_baresip("1127", kamailio=kamailio, codecs=["PCMU"], tone_hz=B_TONE)
    phone, _ = deskphone(phones, kamailio, "1125", tmp_path)
    c1 = phone.dial("1126")["id"]
    phone.wait_call(connected(c1), 10, "the call to A to connect")
    far_a.wait_event("CALL_ESTABLISHED", 10)
    sniff = sniffer(phone.sip_port)
    far_b.dial(kamailio.aor("1125"))
    c2 = phone.wait_call(lambda c: c["state"] == "ringing", 10, "B's call to ring")["id"]
    wait_log(phone, f"call-waiting tone started (call {c2} waits", 5)

    phone.call_action(c2, "reject", status=603, reason="Decline")
    far_b.wait_event("CALL_CLOSED", 10)
    done = phone.wait_call(lambda c: c["id"] == c2 and c["state"] == "ended", 10, "B's end")
    assert (done["end_cause"], done["end_status"]) == ("rejected", 603)
    wait_log(phone, f"call-waiting tone stopped (call {c2})", 5)
    assert phone.status()["lines"] == {"max_calls": 4, "active_call": c1, "waiting": []}
    sent, received = rtp_rate(phone, c1)
    assert sent >= 40 and received >= 40, (sent, received)

    wire = sip_sent(sniff.close())
    finals = [first for first, t in wire if header(t, "CSeq").endswith("INVITE")]
    assert "SIP/2.0 603 Decline" in finals, finals
    assert not [first for first, _ in wire if first.startswith("INVITE ")]  # A not re-INVITEd
    phone.call_action(c1, "hangup")
    far_a.wait_event("CALL_CLOSED", 10)
