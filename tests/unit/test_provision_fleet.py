"""The fleet tool: init (keys, certificates, permissions), inventory, config layers and their
merge rules, local changes kept unless forced, and render (serials, expiry, validation)."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning import document as d
from tests.unit.provision_helpers import make_fleet
from tools.provision import layers
from tools.provision.cli import main as provision_main
from tools.provision.fleet import Fleet, FleetError


def test_init_writes_private_keys_0600_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "f"
    assert provision_main(["init", str(fleet), "--host", "cfg.example", "--host", "::1"]) == 0
    for name in ("ca.key", "server.key", "config-signing.key"):
        assert (fleet / name).stat().st_mode & 0o777 == 0o600, name
    assert not list(fleet.glob(".*"))  # no temporary files left by the atomic writes
    server = x509.load_pem_x509_certificate((fleet / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((fleet / "ca.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cfg.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    capsys.readouterr()
    assert provision_main(["init", str(fleet)]) == 2
    assert "already holds a fleet" in capsys.readouterr().err


def test_add_device_validates_and_normalises(tmp_path: Path, capsys) -> None:
    fleet = tmp_path / "f"
    provision_main(["init", str(fleet)])
    assert provision_main(["add-device", str(fleet), "--mac", "B8-27-EB-AA-BB-CC"]) == 0
    assert capsys.readouterr().out.strip().endswith("b827ebaabbcc")
    assert provision_main(["add-device", str(fleet), "--mac", "B8:27"]) == 2
    assert "must be six hex octets" in capsys.readouterr().err
    assert provision_main(["add-device", str(fleet), "--id", "Desk_1"]) == 2
    assert "must be 1-63 of a-z" in capsys.readouterr().err
    assert provision_main(["add-device", str(fleet), "--mac", "b8:27:eb:aa:bb:cc"]) == 2
    assert "already in the inventory" in capsys.readouterr().err
    assert provision_main(["add-device", str(fleet), "--id", "x", "--account", "usr=1"]) == 2
    assert "'usr' is not one of" in capsys.readouterr().err
    key = X25519PrivateKey.generate()
    pub = tmp_path / "x.pub"
    pub.write_bytes(d.public_pem(key.public_key()))
    args = ["add-device", str(fleet), "--id", "desk-1", "--x25519-public", str(pub)]
    assert provision_main(args) == 0
    assert Fleet(fleet).device("desk-1")["x25519_public"] == pub.read_text()


def test_merge_rules() -> None:
    common = {"sip": {"t1": 0.5, "listen": ["udp:0.0.0.0:5060"]}, "logging": {"level": "info"}}
    model = {"sip": {"listen": ["tcp:0.0.0.0:5060"]}, "audio": {"codecs": ["PCMU"]}}
    device = {
        "accounts": [{"user": "1001", "domain": "pbx"}, {"id": "sales", "user": "2000"}],
        "logging": {"level": "debug"},
    }
    local = {"accounts": [{"id": "line1", "display_name": "Ann"}], "audio": {"ptime": 30}}
    merged = layers.merge_all([common, model, device, local])
    assert merged == {
        "sip": {"t1": 0.5, "listen": ["tcp:0.0.0.0:5060"]},  # arrays replace
        "logging": {"level": "debug"},
        "audio": {"codecs": ["PCMU"], "ptime": 30},  # tables merge
        "accounts": [  # accounts merge by id (line<N> by position)
            {"id": "line1", "user": "1001", "domain": "pbx", "display_name": "Ann"},
            {"id": "sales", "user": "2000"},
        ],
    }
    assert common == {
        "sip": {"t1": 0.5, "listen": ["udp:0.0.0.0:5060"]},
        "logging": {"level": "info"},
    }


def _doc(fleet: Path, did: str) -> dict:
    return json.loads((fleet / "www" / "devices" / f"{did}.json").read_text())["payload"]


def test_render_serials_only_grow_and_change_with_content(tmp_path: Path, capsys) -> None:
    ff = make_fleet(tmp_path, devices=("desk-1",))
    fleet = Fleet(ff.fleet)
    assert _doc(ff.fleet, "desk-1")["serial"] == 1
    before = (ff.fleet / "www" / "devices" / "desk-1.json").read_bytes()
    result = fleet.render()
    assert result.unchanged == ["desk-1"] and not result.written
    assert (ff.fleet / "www" / "devices" / "desk-1.json").read_bytes() == before  # same ETag
    layer = fleet.layer_path("devices", "desk-1")
    layer.write_text(layer.read_text() + '\n[audio]\ntone_country = "UK"\n')
    assert fleet.render().written == ["desk-1"]
    payload = _doc(ff.fleet, "desk-1")
    assert payload["serial"] == 2 and payload["config"]["audio"]["tone_country"] == "UK"
    # Close to expiry (less than half the validity left), an unchanged config is re-signed
    # with a new serial, so phones never run into an expired document.
    later = int(time.time()) + 29 * 86400
    assert fleet.render(now=later).written == ["desk-1"]
    payload = _doc(ff.fleet, "desk-1")
    assert payload["serial"] == 3 and payload["expires_at"] == later + 30 * 86400
    assert fleet.render(now=later + 60).unchanged == ["desk-1"]


def test_render_refuses_an_invalid_config_naming_the_key(tmp_path: Path, capsys) -> None:
    ff = make_fleet(tmp_path, devices=("desk-1", "desk-2"))
    layer = Fleet(ff.fleet).layer_path("devices", "desk-2")
    layer.write_text(layer.read_text() + "\n[sip]\nt1 = -3\nbogus = 1\n")
    capsys.readouterr()
    assert provision_main(["render", str(ff.fleet)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("desk-2: NOT rendered: device desk-2: sip.")
    assert _doc(ff.fleet, "desk-2")["serial"] == 1  # the last good document stays


def test_local_changes_survive_render_unless_forced(tmp_path: Path, capsys) -> None:
    ff = make_fleet(tmp_path, devices=("desk-1",))
    fleet = Fleet(ff.fleet)
    fleet.set_local("desk-1", {"logging": {"level": "warning"}, "audio": {"ptime": 30}})
    capsys.readouterr()
    assert provision_main(["render", str(ff.fleet)]) == 0
    out = capsys.readouterr().out
    assert "desk-1: local change logging.level = 'warning' kept over central 'debug'" in out
    config = _doc(ff.fleet, "desk-1")["config"]
    assert config["logging"]["level"] == "warning" and config["audio"]["ptime"] == 30
    assert provision_main(["render", str(ff.fleet), "--force"]) == 0
    config = _doc(ff.fleet, "desk-1")["config"]
    assert config["logging"]["level"] == "debug"  # central wins, forced
    assert config["audio"]["ptime"] == 30  # a local change without conflict is kept
    assert "level" not in fleet.layer_path("local", "desk-1").read_text()
    # The phone is told to drop its local value too, in every document until it has.
    assert _doc(ff.fleet, "desk-1")["local_reset"] == ["logging.level"]
    stale_report = {"logging": {"level": "warning"}, "audio": {"ptime": 30}}
    fleet.set_local("desk-1", stale_report)  # the phone has not applied it yet
    fleet.render()
    payload = _doc(ff.fleet, "desk-1")
    assert payload["config"]["logging"]["level"] == "debug"
    assert payload["local_reset"] == ["logging.level"]
    fleet.set_local("desk-1", {"audio": {"ptime": 30}})  # applied: the reset is done
    assert fleet.device("desk-1")["local_reset"] == []
    fleet.render()
    assert "local_reset" not in _doc(ff.fleet, "desk-1")
    # A later local change of the same key is a local change again (kept, reported).
    fleet.set_local("desk-1", {"logging": {"level": "error"}})
    assert fleet.render().conflicts["desk-1"] == {"logging.level": ("debug", "error")}
    with pytest.raises(FleetError, match="may not carry secrets"):
        fleet.set_local("desk-1", {"api": {"token": "x" * 20}})


def test_removed_device_loses_its_document(tmp_path: Path) -> None:
    ff = make_fleet(tmp_path, devices=("desk-1", "desk-2"))
    fleet = Fleet(ff.fleet)
    fleet.remove_device("desk-2")
    with pytest.raises(FleetError, match="'desk-2' is not in the inventory"):
        fleet.remove_device("desk-2")
    fleet.render()
    assert sorted(p.name for p in (ff.fleet / "www" / "devices").iterdir()) == ["desk-1.json"]


def test_device_without_x25519_key_is_not_rendered(tmp_path: Path) -> None:
    ff = make_fleet(tmp_path, devices=())
    fleet = Fleet(ff.fleet)
    fleet.add_device(device_id="desk-5", accounts=[{"user": "1", "password": "p", "domain": "d"}])
    result = fleet.render()
    assert "has no X25519 public key yet" in result.errors["desk-5"]


def test_published_firmware_gets_a_signed_manifest(tmp_path: Path) -> None:
    ff = make_fleet(tmp_path, devices=())
    signed = json.loads((ff.fleet / "www" / "firmware" / "0.1.0.json").read_text())
    pub = d.load_ed25519_public((ff.fleet / "config-signing.pub").read_bytes())
    manifest = d.verify_manifest(signed, pub)
    d.check_firmware(manifest, (ff.fleet / "www" / "firmware" / "0.1.0.tar.gz").read_bytes())


def test_firmware_bundle_is_reproducible(tmp_path: Path) -> None:
    from tools.provision.bundle import build_bundle

    a, b = build_bundle("9.9.9"), build_bundle("9.9.9")
    assert a == b
    import io
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(a)).getnames()
    assert "deskphone-9.9.9/pyproject.toml" in names
    assert "deskphone-9.9.9/firmware/provisioning/document.py" in names


def test_firmware_bundle_installs_into_the_phones_slots(tmp_path: Path) -> None:
    """What the flashed first-boot installer runs: `deskphone-boot --slots DIR --init BUNDLE V`
    makes slot a from our bundle, and the slot holds a runnable package tree."""
    from firmware.provisioning.firmware_slots import Slots
    from firmware.runtime.firmware_update import main as boot_main
    from tools.provision.bundle import build_bundle

    bundle = tmp_path / "0.3.0.tar.gz"
    bundle.write_bytes(build_bundle("0.3.0"))
    slots = tmp_path / "slots"
    assert boot_main(["--slots", str(slots), "--init", str(bundle), "0.3.0"]) == 0
    assert Slots(slots).current_version() == "0.3.0"
    current = slots / "current"
    assert (current / "firmware" / "__main__.py").is_file()
    assert (current / "firmware" / "provisioning" / "document.py").read_bytes() == (
        Path(d.__file__).read_bytes()
    )


def test_render_refuses_an_unpublished_firmware_version(tmp_path: Path) -> None:
    ff = make_fleet(tmp_path, devices=("desk-1",))
    fleet = Fleet(ff.fleet)
    layer = fleet.layer_path("devices", "desk-1")
    layer.write_text(layer.read_text() + '\n[firmware]\nversion = "0.2.0"\n')
    result = fleet.render()
    assert result.errors == {
        "desk-1": "device desk-1: firmware.version: 0.2.0 is not published "
        "(deskphone-provision publish-firmware)"
    }
    layer.write_text(layer.read_text().replace("0.2.0", "0.1.0"))
    assert fleet.render().written == ["desk-1"]
    assert _doc(ff.fleet, "desk-1")["config"]["firmware"] == {"version": "0.1.0"}
