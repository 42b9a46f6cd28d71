"""Transfer/Join authorisation against real peers (FEATURES 1.3-1.5; THREATS T1, T2, T12, T23).

Kamailio users 1141-1160. The phone (1141 or 1144) lists a controller/supervisor identity in
``[transfer] allow_from`` with a Digest password in ``auth_users``; sipp plays that identity,
straight to the phone's SIP port (an out-of-dialog request needs no proxy):

* refer_ood_auth.xml: an out-of-dialog REFER (no call) is challenged by the phone's own 401;
  answered with the password it is accepted (200, Refer-Sub: false) and the phone calls the
  Refer-To target, a real baresip through Kamailio. The captured authorised REFER replayed with
  a fresh Call-ID and branch gets 401 stale=true and nothing is dialled (T2).
* join_auth.xml: the phone talks to a baresip; sipp joins that call with INVITE + Join
  (RFC 3911), is challenged, then answered 200 without any 180, and the phone mixes the three
  (status "conference"; baresip hears the phone's 1000 Hz and the tone sipp streams, 1500 Hz);
  an unlisted identity is refused 403 without a challenge (T12).
* join_replaces_malformed.xml: Replaces with Join, two Joins, Join or Replaces without tags:
  400 with the reason, nothing rings (T13).
* the same Join scenario with Replaces instead: a listed third party (e.g. a park server) takes
  the phone's call with baresip over after the challenge, without ringing; baresip gets BYE (T7).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from audio.codecs.g711 import ulaw_encode
from tests.interop.audio_files import read_wav
from tests.interop.baresip import Baresip
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sipp import DATA_DIR, SippResult
from tests.interop.sniff import Sniffer
from tests.interop.test_calls_baresip import PHONE_TONE, alsa_files, connected
from tests.interop.test_conference import both, windows_hearing

CONTROLLER = "1143"
SUPERVISOR = "1146"
JOINER_TONE = 1500.0  # what sipp streams as the supervisor (rtp_stream, PCMU)


def _join_with_tone(tmp_path: Path) -> Path:
    """join_auth.xml with sipp streaming a JOINER_TONE (raw mu-law) while it is in the call."""
    t = np.arange(8000 * 10) / 8000
    tone = tmp_path / "joiner-1500.ulaw"
    tone.write_bytes(ulaw_encode(np.round(0.3 * 32767 * np.sin(2 * np.pi * JOINER_TONE * t))))
    text = (DATA_DIR / "join_auth.xml").read_text()
    text = text.replace(
        '<pause milliseconds="2500"/>',
        f'<nop><action><exec rtp_stream="{tone},-1,0"/></action></nop>\n'
        '  <pause milliseconds="2500"/>',
    )
    text = text.replace("o=sipp 1 2 IN IP4 [local_ip]\n      s=-\n      c=IN IP4 [local_ip]\n"
                        "      t=0 0\n      m=audio [auto_media_port]",
                        "o=sipp 1 2 IN IP4 [local_ip]\n      s=-\n      c=IN IP4 [local_ip]\n"
                        "      t=0 0\n      m=audio [rtpstream_audio_port]")  # fmt: skip
    assert "rtpstream_audio_port" in text and "rtp_stream" in text
    path = tmp_path / "join_auth_tone.xml"
    path.write_text(text)
    return path


def listed_phone(
    phones: Callable[..., PhoneProcess],
    kam: Kamailio,
    user: str,
    tmp_path: Path,
    *listed: str,
) -> PhoneProcess:
    """A registered phone on which the Kamailio users ``listed`` may act from outside a call,
    proven by the phone's Digest challenge (their Kamailio passwords)."""
    files = alsa_files(tmp_path / f"alsa-{user}")
    account = {
        "id": "line1",
        "user": user,
        "password": kam.users[user],
        "domain": kam.domain,
        "registrar": kam.uri("udp"),
        "expires": 300,
    }
    transfer = {
        "allow_from": [f"sip:{u}@{kam.domain}" for u in listed],
        "auth_users": {u: kam.users[u] for u in listed},
        # sipp 3.6 answers only the first challenge, and only with MD5 ("createAuthHeader:
        # authentication must use MD5"), so this phone offers MD5 alone.
        "auth_algorithms": ["MD5"],
    }
    phone = phones(
        [account], env=files.env, audio={"codecs": ["PCMU"]}, sections={"transfer": transfer}
    )
    phone.wait_state("registered", 15)
    return phone


def _phone(
    phones: Callable[..., PhoneProcess], kam: Kamailio, user: str, tmp_path: Path
) -> PhoneProcess:
    """A registered phone that lets CONTROLLER and SUPERVISOR act from outside its calls."""
    return listed_phone(phones, kam, user, tmp_path, CONTROLLER, SUPERVISOR)


def _send_udp(message: bytes, port: int) -> bytes:
    """Send one datagram to the phone and return its first final answer (bounded wait)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        local = sock.getsockname()[1]
        message = re.sub(
            rb"Via: [^\r\n]+",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKreplay1;rport".encode(),
            message,
            count=1,
        )
        sock.sendto(message, ("127.0.0.1", port))
        while True:
            data = sock.recv(65535)
            if not data.startswith(b"SIP/2.0 1"):
                return data


def test_ood_refer_from_a_listed_controller_is_challenged_then_dials_and_a_replay_is_refused(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    tmp_path: Path,
) -> None:
    target: Baresip = make_baresip("1142", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    phone = _phone(phones, kamailio, "1141", tmp_path)
    result = sipp(
        "refer_ood_auth.xml",
        ("127.0.0.1", phone.sip_port),
        keys={"user": CONTROLLER, "domain": kamailio.domain, "target": kamailio.aor("1142")},
        auth_user=CONTROLLER,
        auth_password=kamailio.users[CONTROLLER],
    )
    assert result.ok, result.explain()
    received = [m for m in result.messages if m.direction == "received"]
    challenge = next(m for m in received if m.first_line.startswith("SIP/2.0 401"))
    # The phone's challenge (RFC 7616 as UAS): the configured algorithm, always qop.
    assert re.search(r"WWW-Authenticate: Digest [^\r\n]*algorithm=MD5", challenge.text)
    assert 'qop="auth"' in challenge.text
    ok = next(m for m in received if m.first_line.startswith("SIP/2.0 200"))
    assert re.search(r"^Refer-Sub: false\r?$", ok.text, re.M), ok.text
    # The phone calls the target the controller named; the real baresip answers.
    target.wait_event("CALL_ESTABLISHED", 15)
    call = phone.wait_call(
        lambda c: c["direction"] == "outgoing" and c["state"] == "connected", 10, "the call"
    )
    assert "1142" in call["remote"]
    assert call["referred_by_controller"] == f"sip:{CONTROLLER}@{kamailio.domain}"
    # T2: the captured authorised REFER, replayed as a new request (fresh Call-ID and branch).
    authorised = next(
        m for m in result.messages if m.direction == "sent" and "Authorization:" in m.text
    )
    replay = re.sub(r"Call-ID: [^\r\n]+", "Call-ID: replayed-refer-1", authorised.text)
    answer = _send_udp(
        replay.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode(), phone.sip_port
    )
    assert answer.startswith(b"SIP/2.0 401"), answer
    assert b"stale=true" in answer
    time.sleep(0.5)  # bounded window in which a wrongly accepted replay would dial out
    assert len(phone.status()["calls"]) == 1
    phone.call_action(call["id"], "hangup")
    target.wait_event("CALL_CLOSED", 10)


def _dialog_of(sent: list[bytes]) -> tuple[str, str, str]:
    """(Call-ID, our tag, the peer's tag) of the phone's call, from the ACK of its 2xx: the
    last ACK it sent (an earlier one acknowledged Kamailio's 407, with the proxy's tag)."""
    ack = [p for p in sent if p.startswith(b"ACK ")][-1]
    text = ack.decode()
    call_id = re.search(r"^Call-ID: *(\S+)", text, re.M | re.I)
    ours = re.search(r"^From:.*;tag=([^;>\s]+)", text, re.M | re.I)
    theirs = re.search(r"^To:.*;tag=([^;>\s]+)", text, re.M | re.I)
    assert call_id and ours and theirs, text
    return call_id.group(1), ours.group(1), theirs.group(1)


def test_join_from_a_listed_supervisor_is_challenged_then_mixed_without_ringing(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    far: Baresip = make_baresip("1145", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    phone = _phone(phones, kamailio, "1144", tmp_path)
    sent = sniffer(phone.sip_port)
    call = phone.dial("1145")
    phone.wait_call(connected(call["id"]), 10, "connected to baresip")
    far.wait_event("CALL_ESTABLISHED", 10)
    deadline = time.monotonic() + 5
    while b"ACK sip:1145-" not in b"".join(sent.payloads) and time.monotonic() < deadline:
        time.sleep(0.05)  # the capture thread lags the wire slightly
    call_id, ours, theirs = _dialog_of(list(sent.payloads))
    join = f"{call_id};to-tag={ours};from-tag={theirs}"

    # An unlisted identity: 403 straight away, no challenge, nothing joined (T12).
    stranger = sipp(
        "join_auth.xml",
        ("127.0.0.1", phone.sip_port),
        keys={"user": "1147", "domain": kamailio.domain, "join": join},
        auth_user="1147",
        auth_password=kamailio.users["1147"],
        timeout=5,
    )
    assert not stranger.ok
    assert [s for s in stranger.received_statuses if s >= 200] == [403]

    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            sipp,
            _join_with_tone(tmp_path),
            ("127.0.0.1", phone.sip_port),
            keys={"user": SUPERVISOR, "domain": kamailio.domain, "join": join},
            auth_user=SUPERVISOR,
            auth_password=kamailio.users[SUPERVISOR],
            timeout=20,
        )
        joined = phone.wait_call(
            lambda c: c.get("joins_call") == call["id"] and c["state"] == "connected",
            10,
            "the supervisor's call",
        )
        status = phone.wait_for(
            lambda s: sorted(s.get("conference") or []) == sorted([call["id"], joined["id"]]),
            5,
            "the three to be mixed",
        )
        assert phone.call(call["id"])["joined_by"] == joined["id"]
        assert status["calls"][0]["state"] == "connected"
        result = run.result(timeout=30)
    assert result.ok, result.explain()  # a 180 would have failed the scenario
    statuses = result.received_statuses
    assert 180 not in statuses and 183 not in statuses, statuses
    assert [s for s in statuses if s >= 200][:2] == [401, 200], statuses
    # The supervisor left: the phone and baresip still talk.
    phone.wait_call(lambda c: c["id"] == joined["id"] and c["state"] == "ended", 10, "BYE")
    assert phone.call(call["id"])["state"] == "connected"
    phone.call_action(call["id"], "hangup")
    far.wait_event("CALL_CLOSED", 10)
    # The mix: while joined, baresip heard the phone's microphone and the supervisor's tone.
    heard = read_wav(far.received_wavs()[0])
    windows = windows_hearing(heard.samples, heard.rate, [PHONE_TONE, JOINER_TONE])
    assert any(both(w, PHONE_TONE, JOINER_TONE) for w in windows), windows


def test_malformed_replaces_and_join_combinations_get_400(
    phones: Callable[..., PhoneProcess], sipp: Callable[..., SippResult]
) -> None:
    """T13 on the wire: each variant is answered 400 with the reason, and nothing rings."""
    lone_phone = phones([])
    result = sipp("join_replaces_malformed.xml", ("127.0.0.1", lone_phone.sip_port))
    assert result.ok, result.explain()
    refusals = [m for m in result.messages if m.direction == "received"]
    reasons = [m.first_line for m in refusals if not m.first_line.startswith("SIP/2.0 100")]
    assert reasons == [
        "SIP/2.0 400 Replaces and Join together",
        "SIP/2.0 400 More than one Join",
        "SIP/2.0 400 Join needs to-tag and from-tag",
        "SIP/2.0 400 Replaces needs to-tag and from-tag",
    ], reasons
    assert lone_phone.status()["calls"] == []


def test_replaces_from_a_listed_identity_is_challenged_then_takes_the_call_over(
    kamailio: Kamailio,
    phones: Callable[..., PhoneProcess],
    make_baresip: Any,
    sipp: Callable[..., SippResult],
    sniffer: Callable[[int], Sniffer],
    tmp_path: Path,
) -> None:
    """T7: a third party (allow-listed 1154, e.g. a park server) replaces the phone's call with
    baresip 1149: 401, then 200 without 180, and the phone BYEs baresip."""
    far: Baresip = make_baresip("1149", kamailio=kamailio, codecs=["PCMU"], auto_answer=True)
    phone = listed_phone(phones, kamailio, "1148", tmp_path, "1154")
    sent = sniffer(phone.sip_port)
    call = phone.dial("1149")
    phone.wait_call(connected(call["id"]), 10, "connected to baresip")
    far.wait_event("CALL_ESTABLISHED", 10)
    deadline = time.monotonic() + 5
    while b"ACK sip:1149-" not in b"".join(sent.payloads) and time.monotonic() < deadline:
        time.sleep(0.05)  # the capture thread lags the wire slightly
    call_id, ours, theirs = _dialog_of(list(sent.payloads))
    scenario = (DATA_DIR / "join_auth.xml").read_text()
    scenario = scenario.replace("Join: [join]", "Replaces: [join]").replace(
        "Require: join", "Require: replaces"
    )
    path = tmp_path / "replaces_auth.xml"
    path.write_text(scenario)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            sipp,
            path,
            ("127.0.0.1", phone.sip_port),
            keys={
                "user": "1154",
                "domain": kamailio.domain,
                "join": f"{call_id};to-tag={ours};from-tag={theirs}",
            },
            auth_user="1154",
            auth_password=kamailio.users["1154"],
            timeout=20,
        )
        new = phone.wait_call(
            lambda c: c.get("replaces_call") == call["id"] and c["state"] == "connected",
            10,
            "the replacing call",
        )
        old = phone.wait_call(
            lambda c: c["id"] == call["id"] and c["state"] == "ended", 10, "the replaced call"
        )
        assert old["replaced_by"] == new["id"] and old["end_cause"] == "local_bye"
        far.wait_event("CALL_CLOSED", 10)  # the phone BYEd baresip's dialog
        result = run.result(timeout=30)
    assert result.ok, result.explain()  # a 180 would have failed the scenario
    statuses = result.received_statuses
    assert 180 not in statuses and [s for s in statuses if s >= 200][:2] == [401, 200], statuses
