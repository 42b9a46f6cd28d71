"""`deskphone-provision resync`: ask phones to fetch their config now (SIP NOTIFY check-sync).

The NOTIFY (``Event: check-sync``, the de-facto event that Asterisk, FreeSWITCH and the
commercial phones use for this; ``Subscription-State: terminated`` since there is no
subscription) is sent to the device's AOR *through its registrar/proxy*: the proxy routes it to
the registered contact, and the phone accepts check-sync only when it arrives over the flow to
its registrar (phone side), so nobody else on the network can make it re-provision.

The From is ``sip:provisioning@deskphone.invalid`` unless ``--from`` says otherwise: the PBX
must accept it as coming from a trusted peer (an IP allow-list for the provisioning host), as
answering a Digest challenge is not implemented here (a 407/401 is reported as such).
Only UDP towards the proxy is implemented (the registrar URI's host and port, or ``--proxy``);
retransmitted with RFC 3261 Timer A doubling from T1 = 0.5 s until a final response or the
timeout.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from firmware.sip.errors import SipParseError
from firmware.sip.message import SipResponse
from firmware.sip.parser import parse_message
from firmware.sip.uri import SipURI, parse_uri

T1 = 0.5


@dataclass(frozen=True)
class Target:
    aor: str  # sip:user@domain
    proxy: tuple[str, int]  # where the NOTIFY is sent (UDP)


class ResyncError(Exception):
    """The device cannot be reached this way; the message says why."""


def target_for(config: dict[str, Any], proxy: str | None = None) -> Target:
    """The first enabled account's AOR and its registrar (or outbound proxy, or ``proxy``)."""
    for i, account in enumerate(config.get("accounts", [])):
        if not isinstance(account, dict) or account.get("enabled", True) is False:
            continue
        user, domain = account.get("user"), account.get("domain")
        if not user or not domain:
            continue
        if proxy:
            host, _, port = proxy.rpartition(":")
            return Target(f"sip:{user}@{domain}", (host.strip("[]"), int(port)))
        via = account.get("outbound_proxy") or account.get("registrar") or f"sip:{domain}"
        uri = parse_uri(via)
        if not isinstance(uri, SipURI):
            raise ResyncError(f"accounts[{i}] registrar {via!r} is not a sip: URI")
        if uri.scheme == "sips" or (uri.transport or "udp").lower() != "udp":
            raise ResyncError(f"registrar {via} is not UDP: give --proxy host:port")
        return Target(f"sip:{user}@{domain}", (uri.host.strip("[]"), uri.port or 5060))
    raise ResyncError("the device has no enabled account (user and domain)")


DEFAULT_FROM = "sip:provisioning@deskphone.invalid"


def _notify(
    target: Target, local: tuple[str, int], branch: str, tag: str, call_id: str, from_uri: str
) -> bytes:
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    return (
        f"NOTIFY {target.aor} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local[1]};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <{from_uri}>;tag={tag}\r\n"
        f"To: <{target.aor}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 NOTIFY\r\n"
        f"Contact: <sip:provisioning@{host}:{local[1]}>\r\n"
        "Event: check-sync\r\n"
        "Subscription-State: terminated;reason=noresource\r\n"
        "User-Agent: deskphone-provision\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_check_sync(
    target: Target, timeout: float = 8.0, from_uri: str = DEFAULT_FROM
) -> tuple[int, str]:
    """Send the NOTIFY and wait for its final response: (status, reason)."""
    if not isinstance(parse_uri(from_uri), SipURI):
        raise ResyncError(f"--from {from_uri!r} must be a sip: URI")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(target.proxy[0]).version == 6 else 0
    except ValueError:
        family = 0
    infos = socket.getaddrinfo(*target.proxy, family, socket.SOCK_DGRAM)
    if not infos:
        raise ResyncError(f"cannot resolve {target.proxy[0]}")
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)  # the local address the proxy will route back to
        local = sock.getsockname()[:2]
        branch = "z9hG4bK" + secrets.token_hex(8)
        tag, call_id = secrets.token_hex(4), secrets.token_hex(12)
        msg = _notify(target, local, branch, tag, call_id, from_uri)
        deadline = time.monotonic() + timeout
        interval = T1
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ResyncError(f"no final response from {target.proxy} within {timeout} s")
            if now >= next_send:
                sock.send(msg)
                next_send = now + interval
                interval = min(interval * 2, 4.0)
            sock.settimeout(max(0.01, min(next_send, deadline) - now))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError as e:  # e.g. ICMP port unreachable
                raise ResyncError(f"{target.proxy}: {e.strerror or e}") from None
            try:
                resp = parse_message(data)
            except SipParseError:
                continue
            if not isinstance(resp, SipResponse) or branch not in str(resp.headers.get("Via")):
                continue
            if resp.status >= 200:
                return resp.status, resp.reason
            next_send = deadline  # a provisional response: stop retransmitting (Timer A)
