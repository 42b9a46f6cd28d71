"""The bootstrap a flashed phone starts from (`deskphone run --bootstrap bootstrap.toml`).

Written by `deskphone-flash` next to the device's keys: who the phone is, where its config
server is, and which keys it trusts. Paths are relative to the bootstrap file. Mistakes are
`ConfigError`s naming the file and key, like the phone config.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.provisioning.config import ConfigError

DEVICE_ID_RE = re.compile(r"^[a-z0-9-]{1,63}$")
DEFAULT_STATE_DIR = "~/.local/state/deskphone"


@dataclass(frozen=True)
class Bootstrap:
    source: Path
    device_id: str
    name: str
    url: str  # https://host:port (no trailing slash)
    ca: Path  # fleet CA: the only trust anchor for the config server
    signing_key: Path  # Ed25519 public key (PEM) that signs config documents and manifests
    client_cert: Path
    client_key: Path
    secret_key: Path  # X25519 private key (PEM) that opens the encrypted secrets
    resync_interval: float
    state_dir: Path
    trial_timeout: float  # seconds a new config gets to register before it is rolled back
    fetch_timeout: float

    def document_url(self) -> str:
        return f"{self.url}/devices/{self.device_id}.json"

    def status_url(self) -> str:
        return f"{self.url}/status/{self.device_id}"


def load_bootstrap(path: str | Path, *, state_dir: str | Path | None = None) -> Bootstrap:
    """Read and check bootstrap.toml; ``state_dir`` overrides [provisioning] state_dir."""
    path = Path(path)
    file = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(file, "-", f"cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(file, "-", f"not valid TOML: {e}") from None
    base = path.resolve().parent

    def table(name: str) -> dict[str, Any]:
        value = doc.get(name)
        if not isinstance(value, dict):
            raise ConfigError(file, name, "is required and must be a table")
        return value

    def get(section: dict[str, Any], sname: str, key: str, kind: type, default: Any = ...) -> Any:
        if key not in section:
            if default is ...:
                raise ConfigError(file, f"{sname}.{key}", "is required")
            return default
        value = section[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(file, f"{sname}.{key}", f"must be a {kind.__name__}")
        return value

    def file_key(section: dict[str, Any], key: str) -> Path:
        p = Path(get(section, "provisioning", key, str)).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise ConfigError(file, f"provisioning.{key}", f"file {p} does not exist")
        return p

    device = table("device")
    prov = table("provisioning")
    known = {"id", "name"}
    for key in device:
        if key not in known:
            raise ConfigError(file, f"device.{key}", "unknown key")
    known_prov = {
        "url",
        "ca",
        "signing_key",
        "client_cert",
        "client_key",
        "secret_key",
        "resync_interval",
        "state_dir",
        "trial_timeout",
        "fetch_timeout",
    }
    for key in prov:
        if key not in known_prov:
            raise ConfigError(file, f"provisioning.{key}", "unknown key")
    device_id = get(device, "device", "id", str)
    if not DEVICE_ID_RE.match(device_id):
        raise ConfigError(file, "device.id", "must be 1-63 of a-z, 0-9 and '-'")
    url = get(prov, "provisioning", "url", str).rstrip("/")
    if not url.startswith("https://"):
        raise ConfigError(file, "provisioning.url", "must be an https:// URL")
    interval = get(prov, "provisioning", "resync_interval", float, 3600.0)
    if not 1 <= interval <= 7 * 86400:
        raise ConfigError(file, "provisioning.resync_interval", "must be 1..604800 seconds")
    trial = get(prov, "provisioning", "trial_timeout", float, 60.0)
    if not 1 <= trial <= 3600:
        raise ConfigError(file, "provisioning.trial_timeout", "must be 1..3600 seconds")
    fetch_timeout = get(prov, "provisioning", "fetch_timeout", float, 20.0)
    if not 1 <= fetch_timeout <= 600:
        raise ConfigError(file, "provisioning.fetch_timeout", "must be 1..600 seconds")
    if state_dir is not None:
        state = Path(state_dir)
    else:
        raw = Path(get(prov, "provisioning", "state_dir", str, DEFAULT_STATE_DIR)).expanduser()
        state = raw if raw.is_absolute() else base / raw
    return Bootstrap(
        source=path,
        device_id=device_id,
        name=get(device, "device", "name", str, device_id),
        url=url,
        ca=file_key(prov, "ca"),
        signing_key=file_key(prov, "signing_key"),
        client_cert=file_key(prov, "client_cert"),
        client_key=file_key(prov, "client_key"),
        secret_key=file_key(prov, "secret_key"),
        resync_interval=interval,
        state_dir=state,
        trial_timeout=trial,
        fetch_timeout=fetch_timeout,
    )
