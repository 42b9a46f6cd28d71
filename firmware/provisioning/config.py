"""Phone configuration: the TOML file model and its validation (pure, no I/O besides reading).

Every mistake becomes one `ConfigError` naming the file, the key path and what is wrong, so an
administrator with a fleet of phones can fix the file without reading a traceback.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.sip.errors import SipParseError
from firmware.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:  # credentials_config imports _Section from here
    from firmware.provisioning.credentials_config import PeerCredential

_LISTEN_RE = re.compile(r"^(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$")
_ACCOUNT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}$")


class ConfigError(Exception):
    """A configuration mistake, with the file and key it is about."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}")


@dataclass(frozen=True)
class ListenSpec:
    transport: str  # "udp" | "tcp" | "tls"
    host: str  # without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class AccountConfig:
    id: str
    user: str
    password: str = field(repr=False)
    domain: str
    auth_user: str
    display_name: str | None
    registrar: SipURI
    expires: int
    enabled: bool
    outbound_proxy: SipURI | None
    # The realm the password answers (None = the registrar's first challenge) and separate
    # secrets for other realms: firmware/provisioning/credentials_config.py.
    realm: str | None = None
    peer_credentials: tuple[PeerCredential, ...] = field(default=(), repr=False)

    @property
    def aor(self) -> SipURI:
        scheme = "sips" if self.registrar.scheme == "sips" else "sip"
        return SipURI(
            scheme=scheme,
            user=self.user,
            password=None,
            host=f"[{self.domain}]"
            if ":" in self.domain and "[" not in self.domain
            else self.domain,
            port=None,
            params={},
            headers={},
        )


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[ListenSpec, ...]
    tls_ca: Path | None
    tls_verify: bool
    tls_cert: Path | None
    tls_key: Path | None
    allow_md5: bool
    user_agent: str
    t1: float
    retry_base: float
    keepalive_interval: float
    session_timers: bool = True
    session_expires: int = 1800


@dataclass(frozen=True)
class ApiConfig:
    host: str
    port: int
    token: str | None
    enabled: bool


KNOWN_CODECS = ("G722", "PCMU", "PCMA", "opus")
SRTP_MODES = ("off", "optional", "mandatory")
TONE_COUNTRIES = ("US", "UK", "DE")


@dataclass(frozen=True)
class AudioConfig:
    codecs: tuple[str, ...]
    telephone_event: bool
    ptime: int
    capture_device: str
    playback_device: str
    capture_file: Path | None  # a WAV played into calls instead of the microphone
    playback_file: Path | None  # received audio written to this WAV instead of a speaker
    srtp: str  # with TLS signalling: off | optional | mandatory
    srtp_without_tls: bool  # allow SDES keys over plain SIP (RFC 4568 says NOT RECOMMENDED)
    tone_country: str
    rtp_port_min: int
    rtp_port_max: int


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    state_dir: Path


@dataclass(frozen=True)
class TransferConfig:
    """[transfer]: who may make the phone call someone else (REFER policy, THREATS T1/T26)."""

    allow_refer: bool = True  # in-dialog REFER from the current peer of a call
    allow_out_of_dialog: bool = True  # only with Target-Dialog of a live call, over TLS
    allow: tuple[str, ...] = ()  # glob patterns on the target user part that are always allowed
    deny: tuple[str, ...] | None = None  # None = the call layer's toll-fraud defaults
    # Identities (sip URIs) that may REFER/replace/join from outside a call, proven by the
    # phone's Digest challenge against auth_users (user part -> password); firmware/call/authorise
    allow_from: tuple[str, ...] = ()
    auth_users: dict[str, str] = field(default_factory=dict, repr=False)
    norefersub: bool = True  # REFER with Refer-Sub: false to a GRUU peer that supports it
    notify_timeout: float = 32.0  # transferor gives up waiting for the final NOTIFY (seconds)
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # our Digest challenges, preferred first
    trust_asserted_identity: bool = False  # P-Asserted-Identity from the registrar flow suffices
    replaces_referred_by: bool = True  # Replaces from whoever the replaced peer referred (T7)


@dataclass(frozen=True)
class CallsConfig:
    """[calls]: line appearances and the network conference focus (RFC 4579)."""

    max_calls: int = 4  # line appearances; one more incoming call gets 486 Busy Here
    conference_focus: str | None = None  # sip: URI of a conference factory/focus, if any


_PATTERN_RE = re.compile(r"^[A-Za-z0-9*?+#\[\]!._-]{1,64}$")


@dataclass(frozen=True)
class PhoneConfig:
    source: str
    device: DeviceConfig
    accounts: tuple[AccountConfig, ...]
    sip: SipConfig
    api: ApiConfig
    audio: AudioConfig = field(default_factory=lambda: default_audio())
    log_level: str = "INFO"
    transfer: TransferConfig = field(default_factory=TransferConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    extra: dict[str, Any] = field(default_factory=dict)
    board_ui: Any = None  # [board] + [ui]: firmware.provisioning.ui_config.BoardUiConfig
    features: Any = None  # [[keys]], [blf], [mwi], [dnd]...: features_config.FeaturesConfig


class _Section:
    """Reads one table of the TOML document, remembering which keys were used."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"must be a table, not {type(data).__name__}")
        self.file, self.path, self.data = file, path, data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        # TOML booleans are ints in Python; keep them apart.
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"must be {_kind_name(kinds)}, not a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {_kind_name(kinds)}, not {type(value).__name__}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(
                unknown[0],
                "unknown key (check the spelling; see the README's configuration reference)",
            )


def default_audio() -> AudioConfig:
    return AudioConfig(
        codecs=("G722", "PCMU", "PCMA"),
        telephone_event=True,
        ptime=20,
        capture_device="default",
        playback_device="default",
        capture_file=None,
        playback_file=None,
        srtp="optional",
        srtp_without_tls=False,
        tone_country="US",
        rtp_port_min=16384,
        rtp_port_max=32767,
    )


def _parse_audio(top: _Section, file: str, base: Path) -> AudioConfig:
    au = _Section(file, "audio", top.get("audio", dict, {}))
    codecs = au.get("codecs", list, ["G722", "PCMU", "PCMA"])
    names: list[str] = []
    for i, name in enumerate(codecs):
        match = next(
            (k for k in KNOWN_CODECS if isinstance(name, str) and k.lower() == name.lower()), None
        )
        if match is None:
            raise au.error(
                f"codecs[{i}]", f"{name!r} is not a codec; use {', '.join(KNOWN_CODECS)}"
            )
        names.append(match)
    if not names:
        raise au.error("codecs", "needs at least one codec")
    ptime = au.get("ptime", int, 20)
    if ptime not in (10, 20, 30, 40, 60):
        raise au.error("ptime", "must be 10, 20, 30, 40 or 60 ms")
    srtp = au.get("srtp", str, "optional")
    if srtp not in SRTP_MODES:
        raise au.error("srtp", f"must be one of {', '.join(SRTP_MODES)}")
    country = au.get("tone_country", str, "US").upper()
    if country not in TONE_COUNTRIES:
        raise au.error("tone_country", f"must be one of {', '.join(TONE_COUNTRIES)}")
    low = au.get("rtp_port_min", int, 16384)
    high = au.get("rtp_port_max", int, 32767)
    if not 1024 <= low < high <= 65535:
        raise au.error("rtp_port_min", "needs 1024 <= rtp_port_min < rtp_port_max <= 65535")
    capture_file = au.get("capture_file", str, None)
    playback_file = au.get("playback_file", str, None)
    cfg = AudioConfig(
        codecs=tuple(names),
        telephone_event=au.get("telephone_event", bool, True),
        ptime=ptime,
        capture_device=au.get("capture_device", str, "default"),
        playback_device=au.get("playback_device", str, "default"),
        capture_file=_path(base, capture_file) if capture_file else None,
        playback_file=_path(base, playback_file) if playback_file else None,
        srtp=srtp,
        srtp_without_tls=au.get("srtp_without_tls", bool, False),
        tone_country=country,
        rtp_port_min=low,
        rtp_port_max=high,
    )
    au.finish()
    return cfg


def _parse_transfer(top: _Section, file: str) -> TransferConfig:
    tr = _Section(file, "transfer", top.get("transfer", dict, {}))

    def patterns(name: str) -> tuple[str, ...] | None:
        raw = tr.get(name, list, None)
        if raw is None:
            return None
        for i, item in enumerate(raw):
            if not isinstance(item, str) or not _PATTERN_RE.match(item):
                raise tr.error(
                    f"{name}[{i}]", 'must be a glob pattern on a user part, like "00*" or "+44*"'
                )
        return tuple(raw)

    allow_from = tr.get("allow_from", list, [])
    for i, item in enumerate(allow_from):
        if not isinstance(item, str):
            raise tr.error(f"allow_from[{i}]", 'must be a sip: URI string, like "sip:1001@pbx"')
        _sip_uri(tr, f"allow_from[{i}]", item)
    users = tr.get("auth_users", dict, {})
    for user, password in users.items():
        if not isinstance(password, str) or not password:
            raise tr.error(f"auth_users.{user}", "must be a non-empty password string")
    algorithms = tr.get("auth_algorithms", list, ["SHA-256", "MD5"])
    if not algorithms or any(a not in ("SHA-256", "SHA-512-256", "MD5") for a in algorithms):
        raise tr.error(
            "auth_algorithms", 'must list "SHA-256", "SHA-512-256" and/or "MD5" (preferred first)'
        )
    timeout = tr.get("notify_timeout", float, 32.0)
    if not 1.0 <= timeout <= 600.0:
        raise tr.error("notify_timeout", "must be between 1 and 600 seconds")
    cfg = TransferConfig(
        allow_refer=tr.get("allow_refer", bool, True),
        allow_out_of_dialog=tr.get("allow_out_of_dialog", bool, True),
        allow=patterns("allow") or (),
        deny=patterns("deny"),
        allow_from=tuple(allow_from),
        auth_users=dict(users),
        norefersub=tr.get("norefersub", bool, True),
        notify_timeout=timeout,
        auth_algorithms=tuple(algorithms),
        trust_asserted_identity=tr.get("trust_asserted_identity", bool, False),
        replaces_referred_by=tr.get("replaces_referred_by", bool, True),
    )
    tr.finish()
    return cfg


def _parse_calls(top: _Section, file: str) -> CallsConfig:
    section = _Section(file, "calls", top.get("calls", dict, {}))
    max_calls = section.get("max_calls", int, 4)
    if not 1 <= max_calls <= 16:
        raise section.error("max_calls", "must be between 1 and 16 line appearances")
    focus = section.get("conference_focus", str, None)
    if focus is not None:
        focus = str(_sip_uri(section, "conference_focus", focus))
    section.finish()
    return CallsConfig(max_calls=max_calls, conference_focus=focus)


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _session_expires(sip: _Section) -> int:
    value = sip.get("session_expires", int, 1800)
    if not 90 <= value <= 86400:
        raise sip.error("session_expires", "must be between 90 (RFC 4028 minimum) and 86400")
    return int(value)


def parse_listen(section: _Section, name: str, text: str) -> ListenSpec:
    m = _LISTEN_RE.match(text)
    if not m:
        raise section.error(name, f"{text!r} is not transport:host:port (e.g. udp:0.0.0.0:5060)")
    transport, host, port_text = m.groups()
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise section.error(name, f"{host!r} must be a numeric IP address") from None
    port = int(port_text)
    if port > 65535:
        raise section.error(name, f"port {port} is out of range")
    return ListenSpec(transport, host, port)


def _sip_uri(section: _Section, name: str, text: str) -> SipURI:
    try:
        uri = parse_uri(text)
    except SipParseError as e:
        raise section.error(name, f"{text!r} is not a valid SIP URI: {e.reason}") from None
    if not isinstance(uri, SipURI):
        raise section.error(name, f"{text!r} must be a sip: or sips: URI")
    return uri


def _path(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p)


def load_config(path: str | Path) -> PhoneConfig:
    """Read and validate a phone config file; raise ConfigError on the first problem."""
    path = Path(path)
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(file, "-", f"cannot read: {e.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(file, "-", f"not valid TOML: {e}") from None
    return parse_config(doc, file=file, base_dir=path.parent)


def parse_config(
    doc: dict[str, Any], *, file: str = "<config>", base_dir: Path | None = None
) -> PhoneConfig:
    base = base_dir or Path.cwd()
    top = _Section(file, "", doc)

    dev = _Section(file, "device", top.get("device", dict, {}))
    device = DeviceConfig(
        name=dev.get("name", str, "deskphone"),
        state_dir=_path(base, dev.get("state_dir", str, "~/.local/state/deskphone")),
    )
    dev.finish()

    sip = _Section(file, "sip", top.get("sip", dict, {}))
    listen_raw = sip.get("listen", list, ["udp:0.0.0.0:5060"])
    listen: list[ListenSpec] = []
    for i, item in enumerate(listen_raw):
        if not isinstance(item, str):
            raise sip.error(f"listen[{i}]", "must be a string like udp:0.0.0.0:5060")
        listen.append(parse_listen(sip, f"listen[{i}]", item))
    if not listen:
        raise sip.error("listen", "needs at least one transport")
    tls_ca = sip.get("tls_ca", str, None)
    tls_cert = sip.get("tls_cert", str, None)
    tls_key = sip.get("tls_key", str, None)
    if (tls_cert is None) != (tls_key is None):
        raise sip.error(
            "tls_cert" if tls_cert is None else "tls_key",
            "tls_cert and tls_key must be given together",
        )
    t1 = sip.get("t1", float, 0.5)
    if not 0.05 <= t1 <= 10:
        raise sip.error("t1", "must be between 0.05 and 10 seconds")
    retry_base = sip.get("retry_base", float, 30.0)
    if not 0.1 <= retry_base <= 1800:
        raise sip.error("retry_base", "must be between 0.1 and 1800 seconds")
    keepalive = sip.get("keepalive_interval", float, 100.0)
    if not 1 <= keepalive <= 3600:
        raise sip.error("keepalive_interval", "must be between 1 and 3600 seconds")
    sip_cfg = SipConfig(
        listen=tuple(listen),
        tls_ca=_path(base, tls_ca) if tls_ca else None,
        tls_verify=sip.get("tls_verify", bool, True),
        tls_cert=_path(base, tls_cert) if tls_cert else None,
        tls_key=_path(base, tls_key) if tls_key else None,
        allow_md5=sip.get("allow_md5", bool, True),
        user_agent=sip.get("user_agent", str, "deskphone/0.1"),
        t1=t1,
        retry_base=retry_base,
        keepalive_interval=keepalive,
        session_timers=sip.get("session_timers", bool, True),
        session_expires=_session_expires(sip),
    )
    sip.finish()
    transports = {spec.transport for spec in listen}

    accounts: list[AccountConfig] = []
    seen: set[str] = set()
    for i, raw_acc in enumerate(top.get("accounts", list, [])):
        acc = _Section(file, f"accounts[{i}]", raw_acc)
        acc_id = acc.get("id", str, f"line{i + 1}")
        if not _ACCOUNT_ID_RE.match(acc_id):
            raise acc.error("id", "must be 1-32 letters, digits, '_', '.' or '-'")
        if acc_id in seen:
            raise acc.error("id", f"duplicate account id {acc_id!r}")
        seen.add(acc_id)
        user = acc.get("user", str)
        if not _USER_RE.match(user):
            raise acc.error("user", f"{user!r} is not a valid SIP user part")
        domain = acc.get("domain", str)
        if not domain or any(c in domain for c in " <>@;?"):
            raise acc.error("domain", f"{domain!r} is not a host name or address")
        registrar_text = acc.get("registrar", str, None)
        host = f"[{domain}]" if ":" in domain and not domain.startswith("[") else domain
        registrar = _sip_uri(acc, "registrar", registrar_text or f"sip:{host}")
        rtransport = registrar.transport or ("tls" if registrar.scheme == "sips" else "udp")
        # TCP/TLS work without a listener (requests come back over our connection); UDP
        # needs a socket to send from and to be reached on.
        if rtransport == "udp" and "udp" not in transports:
            raise acc.error("registrar", "uses transport udp but sip.listen has no udp entry")
        expires = acc.get("expires", int, 3600)
        if not 10 <= expires <= 86400:
            raise acc.error("expires", "must be between 10 and 86400 seconds")
        proxy_text = acc.get("outbound_proxy", str, None)
        from firmware.provisioning.credentials_config import parse_credential_scope

        realm, peer_credentials = parse_credential_scope(acc)
        accounts.append(
            AccountConfig(
                id=acc_id,
                user=user,
                password=acc.get("password", str),
                domain=domain,
                auth_user=acc.get("auth_user", str, user),
                display_name=acc.get("display_name", str, None),
                registrar=registrar,
                expires=expires,
                enabled=acc.get("enabled", bool, True),
                outbound_proxy=_sip_uri(acc, "outbound_proxy", proxy_text) if proxy_text else None,
                realm=realm,
                peer_credentials=peer_credentials,
            )
        )
        acc.finish()

    api = _Section(file, "api", top.get("api", dict, {}))
    api_listen = api.get("listen", str, "127.0.0.1:8080")
    m = re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$", api_listen)
    if not m or int(m.group(2)) > 65535:
        raise api.error("listen", f"{api_listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    token = api.get("token", str, None)
    if token is not None and len(token) < 16:
        raise api.error("token", "must be at least 16 characters")
    api_cfg = ApiConfig(
        host=m.group(1).strip("[]"),
        port=int(m.group(2)),
        token=token,
        enabled=api.get("enabled", bool, True),
    )
    if api_cfg.enabled and token is None:
        raise api.error("token", "is required while the action API is enabled")
    api.finish()

    audio_cfg = _parse_audio(top, file, base)
    transfer_cfg = _parse_transfer(top, file)
    calls_cfg = _parse_calls(top, file)
    from firmware.provisioning.ui_config import parse_board_ui  # it builds on _Section

    board_ui_cfg = parse_board_ui(top, file, base)
    from firmware.provisioning.features_config import parse_features  # builds on _Section

    features_cfg = parse_features(top, file)

    log = _Section(file, "logging", top.get("logging", dict, {}))
    level = log.get("level", str, "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise log.error("level", "must be one of debug, info, warning, error")
    log.finish()
    # [firmware] version: the release the A/B slot updater installs (issue 7, firmware_slots.py)
    fw = _Section(file, "firmware", top.get("firmware", dict, {}))
    fw_version = fw.get("version", str, None)
    if fw_version is not None and not re.match(r"^\d{1,6}(\.\d{1,6}){0,3}$", fw_version):
        raise fw.error("version", f"{fw_version!r} is not a release number like 1.4.2")
    fw.finish()
    top.finish()
    return PhoneConfig(
        source=file,
        device=device,
        accounts=tuple(accounts),
        sip=sip_cfg,
        api=api_cfg,
        audio=audio_cfg,
        log_level=level,
        transfer=transfer_cfg,
        calls=calls_cfg,
        board_ui=board_ui_cfg,
        features=features_cfg,
        extra={"firmware_version": fw_version} if fw_version else {},
    )
