"""ConfigStore: the phone's verify/apply/trial/rollback decisions on real signed documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning.bootstrap import load_bootstrap
from firmware.provisioning.config import ConfigError
from firmware.provisioning.document import sign_document, split_secrets
from firmware.provisioning.store import ConfigStore, Keys, ProvisioningError, desired_firmware

DEVICE = "b827eb000001"
NOW = 1_800_000_000


class Fleet:
    def __init__(self) -> None:
        self.signing = Ed25519PrivateKey.generate()
        self.device_key = X25519PrivateKey.generate()
        self.keys = Keys(self.signing.public_key(), self.device_key)

    def doc(
        self,
        serial: int,
        *,
        device: str = DEVICE,
        expires: int = NOW + 3600,
        name: str = "Reception",
        signer: Ed25519PrivateKey | None = None,
        local_reset: list[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "device": {"name": name},
            "accounts": [
                {"id": "line1", "user": "1101", "password": "pw1101", "domain": "127.0.0.1"}
            ],
            "sip": {"listen": ["udp:127.0.0.1:5062"]},
            "api": {"listen": "127.0.0.1:8080", "token": "t" * 20},
            **extra,
        }
        clean, secrets = split_secrets(config, device, self.device_key.public_key())
        payload = {
            "format": "deskphone-config/1",
            "device": device,
            "serial": serial,
            "issued_at": NOW - 10,
            "expires_at": expires,
            "config": clean,
            "secrets": secrets,
        }
        if local_reset is not None:
            payload["local_reset"] = local_reset
        return sign_document(payload, signer or self.signing)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def store(fleet: Fleet, tmp_path: Path) -> ConfigStore:
    return ConfigStore(tmp_path / "state", DEVICE, fleet.keys)


def apply(s: ConfigStore, doc: dict[str, Any]) -> int:
    payload, _config = s.check(doc, NOW)
    s.stage(doc, payload["serial"])
    s.begin_trial(payload["serial"])
    return int(payload["serial"])


def test_secrets_are_decrypted_and_never_stored_in_plain(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    payload, config = s.check(fleet.doc(1), NOW)
    assert config.accounts[0].password == "pw1101"
    assert config.api.token == "t" * 20
    assert config.device.state_dir == tmp_path / "state"
    s.stage(fleet.doc(1), 1)
    assert b"pw1101" not in (s.dir / "candidate.json").read_bytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda f: f.doc(5, device="other-phone"), "issued for device other-phone"),
        (lambda f: f.doc(5, expires=NOW - 1), "expired at"),
        (lambda f: f.doc(5, signer=Ed25519PrivateKey.generate()), "signature does not verify"),
        (lambda f: f.doc(2), "serial 2 is older than the applied serial 3"),
    ],
)
def test_refusals_name_the_reason(fleet: Fleet, tmp_path: Path, make: Any, reason: str) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(3))
    with pytest.raises(ProvisioningError, match=reason):
        s.check(make(fleet), NOW)


def test_tampered_document_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    doc = fleet.doc(1)
    doc["payload"]["config"]["device"]["name"] = "Evil"
    with pytest.raises(ProvisioningError, match="signature does not verify"):
        store(fleet, tmp_path).check(doc, NOW)


def test_moved_secret_does_not_decrypt(fleet: Fleet, tmp_path: Path) -> None:
    doc = fleet.doc(1)
    payload = doc["payload"]
    payload["secrets"]["api.token"] = payload["secrets"].pop("accounts.line1.password")
    payload["config"]["accounts"][0]["password"] = "x"
    resigned = sign_document(payload, fleet.signing)
    with pytest.raises(ProvisioningError, match="does not decrypt"):
        store(fleet, tmp_path).check(resigned, NOW)


def test_invalid_config_is_refused_with_the_key(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match=r"invalid config: .*sip\.t1"):
        store(fleet, tmp_path).check(fleet.doc(1, sip={"listen": ["udp:1.2.3.4:1"], "t1": 99}), NOW)


def test_trial_promote_and_restart_uses_good(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    assert s.startup() is None
    apply(s, fleet.doc(1))
    s.promote()
    loaded = s.startup()
    assert loaded is not None and (loaded.serial, loaded.trial) == (1, False)
    assert not (s.dir / "candidate.json").exists() and not (s.dir / "trial.json").exists()


def test_interrupted_trial_rolls_back_to_last_known_good(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(1))
    s.promote()
    apply(s, fleet.doc(2, name="Second"))  # trial begun, then the process "dies"
    loaded = ConfigStore(tmp_path / "state", DEVICE, fleet.keys).startup()
    assert loaded is not None and (loaded.serial, loaded.trial) == (1, False)
    assert loaded.config.device.name == "Reception"
    rejected = s.rejected()
    assert rejected is not None and rejected["serial"] == 2
    assert "restarted during its trial" in rejected["reason"]
    assert s.floor == 2  # anti-rollback floor stays: serial 1 can never come back from the server
    with pytest.raises(ProvisioningError, match="older than the applied serial 2"):
        s.check(fleet.doc(1), NOW)


def test_staged_but_not_started_candidate_is_tried(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(1))
    s.promote()
    s.stage(fleet.doc(2), 2)
    loaded = s.startup()
    assert loaded is not None and (loaded.serial, loaded.trial) == (2, True)


def test_first_config_stays_even_if_its_trial_was_interrupted(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(1))
    loaded = s.startup()
    assert loaded is not None and (loaded.serial, loaded.trial) == (1, True)


def test_expired_last_known_good_still_runs_offline(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(1, expires=NOW + 1))
    s.promote()
    loaded = s.startup()  # the store does not look at the clock for stored documents
    assert loaded is not None and loaded.serial == 1


def test_local_layer_is_kept_over_reprovisioning(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    (s.dir / "local.toml").write_text('[device]\nname = "Front desk"\n')
    _payload, config = s.check(fleet.doc(1, name="Central"), NOW)
    assert config.device.name == "Front desk"
    assert config.accounts[0].password == "pw1101"


def test_firmware_section_is_for_the_updater(fleet: Fleet, tmp_path: Path) -> None:
    doc = fleet.doc(1, firmware={"version": "1.2"})
    payload, config = store(fleet, tmp_path).check(doc, NOW)
    assert desired_firmware(payload) == "1.2"
    assert config.extra["firmware_version"] == "1.2"
    with pytest.raises(ProvisioningError, match=r"firmware\.version: 'latest' is not a release"):
        store(fleet, tmp_path).check(fleet.doc(2, firmware={"version": "latest"}), NOW)


def test_bootstrap_paths_are_relative_and_checked(tmp_path: Path) -> None:
    for name in ("fleet-ca.pem", "config-signing.pub", "device.crt", "device.key", "x.key"):
        (tmp_path / name).write_text("-")
    boot = tmp_path / "bootstrap.toml"
    boot.write_text(
        '[device]\nid = "b827eb000001"\nname = "Desk"\n[provisioning]\n'
        'url = "https://127.0.0.1:8443/"\nca = "fleet-ca.pem"\n'
        'signing_key = "config-signing.pub"\nclient_cert = "device.crt"\n'
        'client_key = "device.key"\nsecret_key = "x.key"\nresync_interval = 60\n'
    )
    b = load_bootstrap(boot, state_dir=tmp_path / "st")
    assert b.ca == tmp_path / "fleet-ca.pem" and b.url == "https://127.0.0.1:8443"
    assert b.document_url() == "https://127.0.0.1:8443/devices/b827eb000001.json"
    boot.write_text(boot.read_text().replace('"x.key"', '"missing.key"'))
    with pytest.raises(ConfigError, match="provisioning.secret_key: file .* does not exist"):
        load_bootstrap(boot)
    boot.write_text(boot.read_text().replace("https://", "http://"))
    with pytest.raises(ConfigError, match="provisioning.url"):
        load_bootstrap(boot)


def test_factory_reset_wipes_config_keeps_floor_and_says_why(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    apply(s, fleet.doc(4))
    s.promote()
    (s.dir / "local.toml").write_text('[device]\nname = "Mine"\n')
    removed = s.factory_reset("handed to a new desk", NOW)
    assert set(removed) == {"good.json", "local.toml"}
    assert s.startup() is None and s.floor == 4
    assert s.last_reset() == {"at": NOW, "reason": "handed to a new desk", "removed": removed}
    with pytest.raises(ProvisioningError, match="older than the applied serial 4"):
        s.check(fleet.doc(3), NOW)


def test_local_change_survives_until_the_admin_forces_it_away(fleet: Fleet, tmp_path: Path) -> None:
    s = store(fleet, tmp_path)
    (s.dir / "local.toml").write_text('[device]\nname = "Mine"\n\n[audio]\nptime = 30\n')
    # re-provisioning alone never wipes local changes
    assert s.check(fleet.doc(1, name="Central"), NOW)[1].device.name == "Mine"
    # render --force: the document lists the path in local_reset -> dropped, central wins
    _payload, config = s.check(fleet.doc(2, name="Forced", local_reset=["device.name"]), NOW)
    assert config.device.name == "Forced" and config.audio.ptime == 30
    assert s.local_layer() == {"audio": {"ptime": 30}}
