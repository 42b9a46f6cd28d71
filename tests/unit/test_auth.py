"""Digest authentication as UAC: RFC vectors, challenge grammar, choice policy and give-up rules.

Client tests assert on the serialised request bytes and recompute every response digest
with hashlib directly, independent of the code under test.
"""

from __future__ import annotations

import hashlib
import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.sip import auth
from firmware.sip.auth import (
    DigestClient,
    DigestCredentials,
    compute_response,
    parse_challenges,
    sha512_256_fallback,
)
from firmware.sip.ids import SeededIds
from firmware.sip.message import SipRequest, SipResponse, make_request
from firmware.sip.parser import parse_message
from firmware.sip.uri import parse_uri
from tests.conftest import skip_or_fail

PASSWORD = "s3cret-pw"
REGISTRAR = "sip:pbx.example"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _trunc512(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()[:64]


# --------------------------------------------------------------------------------------------
# RFC test vectors
# --------------------------------------------------------------------------------------------

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("hash_name", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(hash_name: str, expected: str) -> None:
    got = compute_response(
        auth.HASHES[hash_name],
        username="Mufasa",
        password="Circle of Life",
        realm="http-auth@example.org",
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        nc="00000001",
        cnonce=RFC7616_CNONCE,
        qop="auth",
    )
    assert got == expected


def test_rfc2617_section_3_5_example() -> None:
    got = compute_response(
        auth.HASHES["MD5"],
        username="Mufasa",
        password="Circle Of Life",
        realm="testrealm@host.com",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        nc="00000001",
        cnonce="0a4f113b",
        qop="auth",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_section_3_9_2_example_uses_truncated_sha512() -> None:
    """The RFC's SHA-512-256 example (erratum 4897) reproduces only with truncated SHA-512.

    This checks our construction (userhash, UTF-8 username, KD layout) against the printed
    values with the hash the authors actually used, and shows real SHA-512/256 differs.
    """

    def trunc(data: bytes) -> str:
        return hashlib.sha512(data).hexdigest()[:64]

    username = "J\u00e4s\u00f8n Doe"
    assert trunc(f"{username}:api@example.org".encode()) == (
        "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"
    )
    kwargs = dict(
        username=username,
        password="Secret, or not?",
        realm="api@example.org",
        method="GET",
        uri="/doe.json",
        nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
        nc="00000001",
        cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        qop="auth",
    )
    printed = "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd"
    assert compute_response(trunc, **kwargs) == printed  # type: ignore[arg-type]
    assert compute_response(auth.HASHES["SHA-512-256"], **kwargs) != printed  # type: ignore[arg-type]


# FIPS 180-4 / NIST CSRC example values for SHA-512/256.
SHA512_256_VECTORS = [
    (b"abc", "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"),
    (
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "3928e184fb8690f840da3988121d31be65cb9d3ef83ee6146feac861e19b563a",
    ),
]


@pytest.mark.parametrize(("data", "digest"), SHA512_256_VECTORS)
def test_sha512_256_fips_vectors(data: bytes, digest: str) -> None:
    assert sha512_256_fallback(data) == digest
    assert auth.HASHES["SHA-512-256"](data) == digest


@pytest.mark.parametrize("size", [0, 1, 111, 112, 127, 128, 129, 300])
def test_sha512_256_fallback_matches_openssl_at_padding_edges(size: int) -> None:
    try:
        reference = hashlib.new("sha512_256", b"q" * size).hexdigest()
    except ValueError:
        skip_or_fail("this OpenSSL has no sha512_256 to compare with")
    assert sha512_256_fallback(b"q" * size) == reference


def test_algorithm_tokens() -> None:
    assert auth.split_algorithm(None) == ("MD5", False)
    assert auth.split_algorithm("sha-256") == ("SHA-256", False)
    assert auth.split_algorithm("SHA-512-256-sess") == ("SHA-512-256", True)
    assert auth.split_algorithm("SHA3-256") is None
    assert auth.split_algorithm("AKAv1-MD5") is None


# --------------------------------------------------------------------------------------------
# Challenge grammar
# --------------------------------------------------------------------------------------------


def test_parse_several_challenges_in_one_value() -> None:
    value = (
        'Digest realm="a, b", nonce="x\\"y", qop="auth,auth-int",algorithm=SHA-256, '
        'Basic realm="z", Negotiate abc==, Digest realm=r2 ,nonce=n2,stale=TRUE'
    )
    chs = parse_challenges(value)
    assert [c.scheme for c in chs] == ["Digest", "Basic", "Negotiate", "Digest"]
    assert chs[0].realm == "a, b"
    assert chs[0].nonce == 'x"y'
    assert chs[0].qop_options == ["auth", "auth-int"]
    assert chs[0].algorithm == "SHA-256"
    assert chs[3].params == {"realm": "r2", "nonce": "n2", "stale": "TRUE"}
    assert chs[3].stale is True
    assert chs[3].algorithm == "MD5"  # absent algorithm means MD5


@pytest.mark.parametrize("bad", ['Digest realm="open', "realm=x", 'Digest realm="x", ="y"'])
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(auth.AuthParseError):
        parse_challenges(bad)


# --------------------------------------------------------------------------------------------
# The client, on real messages
# --------------------------------------------------------------------------------------------


def challenge(status: int, *values: str, cseq: int = 1, call_id: str = "reg-call-1") -> SipResponse:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    lines = "".join(f"{name}: {v}\r\n" for v in values)
    raw = (
        f"SIP/2.0 {status} Unauthorized\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc;rport=5060\r\n"
        "From: <sip:1001@pbx.example>;tag=ft\r\n"
        "To: <sip:1001@pbx.example>;tag=tt\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{lines}"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw.encode())
    assert isinstance(msg, SipResponse)
    return msg


def register(cseq: int, call_id: str = "reg-call-1", body: bytes = b"") -> SipRequest:
    return make_request(
        "REGISTER",
        parse_uri(REGISTRAR),
        headers=[
            ("Max-Forwards", "70"),
            ("To", "<sip:1001@pbx.example>"),
            ("From", "<sip:1001@pbx.example>;tag=ft"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
        ],
        body=body,
    )


def auth_lines(request: SipRequest, name: str = "Authorization") -> list[dict[str, str]]:
    """The credentials as they appear on the wire, parsed back into their params."""
    wire = request.serialize().decode()
    out = []
    for line in wire.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            value = line.split(":", 1)[1].strip()
            assert value.startswith("Digest ")
            (parsed,) = parse_challenges(value)
            out.append(parsed.params)
    return out


def raw_auth_value(request: SipRequest) -> str:
    wire = request.serialize().decode()
    match = re.search(r"^Authorization: (.*)$", wire, re.M)
    assert match, wire
    return match.group(1)


def client(**kw: object) -> DigestClient:
    creds = DigestCredentials("1001", PASSWORD, realm=kw.pop("realm", "pbx.example"))  # type: ignore[arg-type]
    return DigestClient(creds, SeededIds("auth-test"), **kw)  # type: ignore[arg-type]


SHA256_CH = 'Digest realm="pbx.example", nonce="n-sha", qop="auth", algorithm=SHA-256, opaque="op1"'
MD5_CH = 'Digest realm="pbx.example", nonce="n-md5", qop="auth", algorithm=MD5'


def test_sha256_listed_first_is_answered_with_sha256() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, SHA256_CH, MD5_CH)) is True
    (params,) = auth_lines(req)
    assert params["algorithm"] == "SHA-256"
    assert params["username"] == "1001"
    assert params["realm"] == "pbx.example"
    assert params["nonce"] == "n-sha"
    assert params["uri"] == REGISTRAR
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["opaque"] == "op1"
    assert re.fullmatch(r"[0-9a-f]{32}", params["cnonce"])
    assert re.fullmatch(r"[0-9a-f]{64}", params["response"])
    ha1 = _sha256(f"1001:pbx.example:{PASSWORD}")
    ha2 = _sha256(f"REGISTER:{REGISTRAR}")
    expected = _sha256(f"{ha1}:n-sha:00000001:{params['cnonce']}:auth:{ha2}")
    assert params["response"] == expected
    # Quoted where RFC 7616 says quoted, bare tokens for algorithm/qop/nc.
    raw = raw_auth_value(req)
    assert f'uri="{REGISTRAR}"' in raw
    assert "qop=auth" in raw and 'qop="auth"' not in raw
    assert "nc=00000001" in raw
    assert "algorithm=SHA-256" in raw


def test_md5_listed_first_is_the_rfc_default() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, MD5_CH, SHA256_CH))
    (params,) = auth_lines(req)
    assert params["algorithm"] == "MD5"
    ha1 = _md5(f"1001:pbx.example:{PASSWORD}")
    ha2 = _md5(f"REGISTER:{REGISTRAR}")
    assert params["response"] == _md5(f"{ha1}:n-md5:00000001:{params['cnonce']}:auth:{ha2}")


@pytest.mark.parametrize("order", ["md5-first", "sha-first"])
def test_no_md5_policy_answers_sha256_in_either_order(order: str) -> None:
    dc = client(allow_md5=False)
    values = (MD5_CH, SHA256_CH) if order == "md5-first" else (SHA256_CH, MD5_CH)
    req = register(2)
    assert dc.authorize(req, challenge(401, *values))
    (params,) = auth_lines(req)
    assert params["algorithm"] == "SHA-256"
    assert params["nonce"] == "n-sha"


def test_no_md5_policy_abandons_md5_only_challenge() -> None:
    dc = client(allow_md5=False)
    req = register(2)
    legacy = 'Digest realm="pbx.example", nonce="n0", qop="auth"'  # no algorithm = MD5
    assert dc.authorize(req, challenge(401, MD5_CH, legacy)) is False
    assert auth_lines(req) == []
    assert dc.last_error and "no acceptable challenge" in dc.last_error


def test_basic_is_never_answered() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, 'Basic realm="pbx.example"')) is False
    assert b"Authorization" not in req.serialize()
    # ...and is skipped in favour of a Digest challenge after it.
    req = register(3)
    assert dc.authorize(req, challenge(401, 'Basic realm="pbx.example"', SHA256_CH, cseq=2))
    assert b"Authorization: Digest " in req.serialize()
    assert b"Basic" not in req.serialize()


def test_unknown_algorithm_is_skipped() -> None:
    dc = client()
    req = register(2)
    weird = 'Digest realm="pbx.example", nonce="n-x", qop="auth", algorithm=SHA3-512'
    assert dc.authorize(req, challenge(401, weird, SHA256_CH))
    (params,) = auth_lines(req)
    assert params["algorithm"] == "SHA-256"


def test_sha512_256_answer() -> None:
    dc = client()
    req = register(2)
    ch = 'Digest realm="pbx.example", nonce="n5", qop="auth", algorithm=SHA-512-256'
    assert dc.authorize(req, challenge(401, ch))
    (params,) = auth_lines(req)
    assert params["algorithm"] == "SHA-512-256"

    def h(text: str) -> str:
        return sha512_256_fallback(text.encode())

    ha1 = h(f"1001:pbx.example:{PASSWORD}")
    ha2 = h(f"REGISTER:{REGISTRAR}")
    assert params["response"] == h(f"{ha1}:n5:00000001:{params['cnonce']}:auth:{ha2}")
    assert params["response"] != _trunc512(f"{ha1}:n5:00000001:{params['cnonce']}:auth:{ha2}")


def test_unknown_realm_is_not_answered() -> None:
    dc = client(realm="pbx.example")
    req = register(2)
    evil = 'Digest realm="evil.example", nonce="n1", qop="auth", algorithm=SHA-256'
    assert dc.authorize(req, challenge(401, evil)) is False
    assert auth_lines(req) == []


def test_credentials_without_realm_answer_any_realm() -> None:
    dc = client(realm=None)
    req = register(2)
    other = 'Digest realm="other", nonce="n1", qop="auth", algorithm=SHA-256'
    assert dc.authorize(req, challenge(401, other))
    assert auth_lines(req)[0]["realm"] == "other"


def test_nonce_reuse_increments_nc_and_pre_authorizes() -> None:
    dc = client()
    first = register(2)
    assert dc.authorize(first, challenge(401, SHA256_CH))
    p1 = auth_lines(first)[0]
    later = register(3)
    assert dc.pre_authorize(later) is True
    p2 = auth_lines(later)[0]
    assert p2["nonce"] == "n-sha"
    assert p2["nc"] == "00000002"
    ha1 = _sha256(f"1001:pbx.example:{PASSWORD}")
    ha2 = _sha256(f"REGISTER:{REGISTRAR}")
    assert p2["response"] == _sha256(f"{ha1}:n-sha:00000002:{p2['cnonce']}:auth:{ha2}")
    assert p2["response"] != p1["response"]
    # A client with nothing cached adds nothing.
    fresh = register(1)
    assert client().pre_authorize(fresh) is False
    assert auth_lines(fresh) == []


def test_same_nonce_rejected_twice_gives_up() -> None:
    dc = client()
    req2 = register(2)
    assert dc.authorize(req2, challenge(401, SHA256_CH, cseq=1))
    req3 = register(3)
    assert dc.authorize(req3, challenge(401, SHA256_CH, cseq=2)) is False
    assert auth_lines(req3) == []
    assert dc.last_error and "rejected" in dc.last_error
    # The cache no longer holds the refused nonce.
    assert dc.pre_authorize(register(4)) is False


def test_stale_nonce_retries_without_counting_a_failure() -> None:
    dc = client()
    assert dc.authorize(register(2), challenge(401, SHA256_CH, cseq=1))
    stale = 'Digest realm="pbx.example", nonce="n-new", qop="auth", algorithm=SHA-256, stale=true'
    req3 = register(3)
    assert dc.authorize(req3, challenge(401, stale, cseq=2))
    p = auth_lines(req3)[0]
    assert (p["nonce"], p["nc"]) == ("n-new", "00000001")
    # After a stale retry, the new nonce may still be refused once more with a fresh nonce...
    fresh = 'Digest realm="pbx.example", nonce="n-3", qop="auth", algorithm=SHA-256'
    req4 = register(4)
    assert dc.authorize(req4, challenge(401, fresh, cseq=3))
    # ...but a second non-stale refusal means the password is wrong.
    again = 'Digest realm="pbx.example", nonce="n-4", qop="auth", algorithm=SHA-256'
    assert dc.authorize(register(5), challenge(401, again, cseq=4)) is False


def test_endless_stale_is_bounded() -> None:
    dc = client()
    assert dc.authorize(register(2), challenge(401, SHA256_CH, cseq=1))
    results = []
    for i in range(2, 8):
        ch = f'Digest realm="pbx.example", nonce="s{i}", qop="auth", algorithm=SHA-256, stale=true'
        results.append(dc.authorize(register(i + 1), challenge(401, ch, cseq=i)))
    assert results[:3] == [True, True, True]
    assert results[3] is False


def test_a_challenge_to_an_unauthorised_request_is_fresh() -> None:
    """Another Call-ID's 401 with the same nonce is not a rejection of our credentials."""
    dc = client()
    assert dc.authorize(register(2), challenge(401, SHA256_CH, cseq=1))
    req = register(6, call_id="other-call")
    assert dc.authorize(req, challenge(401, SHA256_CH, cseq=5, call_id="other-call"))


def test_407_yields_proxy_authorization() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(407, SHA256_CH))
    assert auth_lines(req, "Proxy-Authorization")[0]["nonce"] == "n-sha"
    assert auth_lines(req) == []


def test_reauthorizing_replaces_only_that_realms_header() -> None:
    dc = DigestClient(
        [DigestCredentials("1001", PASSWORD, "pbx.example"), DigestCredentials("u2", "p2", "b")],
        SeededIds("x"),
    )
    req = register(2)
    two = challenge(401, SHA256_CH, 'Digest realm="b", nonce="nb", qop="auth", algorithm=SHA-256')
    assert dc.authorize(req, two)
    assert sorted(p["realm"] for p in auth_lines(req)) == ["b", "pbx.example"]
    stale = 'Digest realm="pbx.example", nonce="n2", qop="auth", algorithm=SHA-256, stale=true'
    assert dc.authorize(req, challenge(401, stale, cseq=2))
    got = {p["realm"]: p for p in auth_lines(req)}
    assert got["pbx.example"]["nonce"] == "n2"
    assert got["b"]["nonce"] == "nb"
    assert got["b"]["username"] == "u2"


def test_challenge_without_qop_uses_rfc2069_form() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, 'Digest realm="pbx.example", nonce="old"'))
    p = auth_lines(req)[0]
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    ha1 = _md5(f"1001:pbx.example:{PASSWORD}")
    assert p["response"] == _md5(f"{ha1}:old:{_md5(f'REGISTER:{REGISTRAR}')}")


def test_auth_int_covers_the_body() -> None:
    dc = client()
    body = b"v=0\r\n"
    req = register(2, body=body)
    ch = 'Digest realm="pbx.example", nonce="ni", qop="auth-int", algorithm=SHA-256'
    assert dc.authorize(req, challenge(401, ch))
    p = auth_lines(req)[0]
    assert p["qop"] == "auth-int"
    ha1 = _sha256(f"1001:pbx.example:{PASSWORD}")
    ha2 = _sha256(f"REGISTER:{REGISTRAR}:{hashlib.sha256(body).hexdigest()}")
    assert p["response"] == _sha256(f"{ha1}:ni:00000001:{p['cnonce']}:auth-int:{ha2}")


def test_md5_sess() -> None:
    dc = client()
    req = register(2)
    ch = 'Digest realm="pbx.example", nonce="ns", qop="auth", algorithm=MD5-sess'
    assert dc.authorize(req, challenge(401, ch))
    p = auth_lines(req)[0]
    assert p["algorithm"] == "MD5-sess"
    ha1 = _md5(f"{_md5(f'1001:pbx.example:{PASSWORD}')}:ns:{p['cnonce']}")
    ha2 = _md5(f"REGISTER:{REGISTRAR}")
    assert p["response"] == _md5(f"{ha1}:ns:00000001:{p['cnonce']}:auth:{ha2}")


def test_malformed_challenge_header_is_skipped() -> None:
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, 'Digest realm="unterminated', SHA256_CH))
    assert auth_lines(req)[0]["nonce"] == "n-sha"


def test_userhash_sends_hashed_username() -> None:
    dc = client()
    req = register(2)
    ch = 'Digest realm="pbx.example", nonce="nu", qop="auth", algorithm=SHA-256, userhash=true'
    assert dc.authorize(req, challenge(401, ch))
    p = auth_lines(req)[0]
    assert p["username"] == _sha256("1001:pbx.example")
    assert p["userhash"] == "true"


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dc = client()
    req = register(2)
    assert dc.authorize(req, challenge(401, SHA256_CH))
    dc.authorize(register(3), challenge(401, SHA256_CH, cseq=2))  # give-up path logs too
    response = auth_lines(req)[0]["response"]
    assert caplog.records, "expected some logging to inspect"
    assert PASSWORD not in caplog.text
    assert response not in caplog.text
    assert PASSWORD not in repr(DigestCredentials("1001", PASSWORD))


def test_authorize_rejects_non_challenge() -> None:
    with pytest.raises(ValueError, match="401 or 407"):
        client().authorize(register(2), challenge(200))


def test_nc_is_eight_hex_digits() -> None:
    dc = client()
    assert dc.authorize(register(2), challenge(401, SHA256_CH))
    seen = []
    for cseq in range(3, 20):
        req = register(cseq)
        dc.pre_authorize(req)
        seen.append(auth_lines(req)[0]["nc"])
    assert seen[8] == "0000000a"  # the 10th use of the nonce
    assert seen[-1] == "00000012"
    assert all(re.fullmatch(r"[0-9a-f]{8}", nc) for nc in seen)


_names = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True).filter(lambda n: n != "digest")
_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(
    st.dictionaries(_names, _values, min_size=1, max_size=6), st.sampled_from([",", ", ", " ,\t"])
)
def test_parse_round_trips_quoted_params(params: dict[str, str], sep: str) -> None:
    value = "Digest " + sep.join(f"{k}={auth._quote(v)}" for k, v in params.items())
    (parsed,) = parse_challenges(value)
    assert parsed.scheme == "Digest"
    assert parsed.params == params


@given(st.text(max_size=80))
def test_parse_fails_only_with_auth_parse_error(text: str) -> None:
    try:
        parse_challenges(text)
    except auth.AuthParseError:
        pass
