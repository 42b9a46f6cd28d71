"""The phone's provisioning client pieces that need no network."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from firmware.provisioning.bootstrap import load_bootstrap
from firmware.provisioning.document import private_pem
from firmware.runtime.provisioning_client import client_ssl_context
from tools.provision import pki


def test_only_the_fleet_ca_is_trusted(tmp_path: Path) -> None:
    ca_key, ca_cert = pki.make_ca("fleet CA")
    key = pki.new_key()
    (tmp_path / "fleet-ca.pem").write_bytes(pki.cert_pem(ca_cert))
    (tmp_path / "device.crt").write_bytes(
        pki.cert_pem(pki.device_cert(ca_key, ca_cert, "desk-1", key.public_key()))
    )
    (tmp_path / "device.key").write_bytes(pki.key_pem(key))
    (tmp_path / "x.key").write_bytes(private_pem(X25519PrivateKey.generate()))
    (tmp_path / "sign.pub").write_text("-")
    (tmp_path / "bootstrap.toml").write_text(
        '[device]\nid = "desk-1"\n[provisioning]\nurl = "https://127.0.0.1:1"\n'
        'ca = "fleet-ca.pem"\nsigning_key = "sign.pub"\nclient_cert = "device.crt"\n'
        'client_key = "device.key"\nsecret_key = "x.key"\n'
    )
    ctx = client_ssl_context(load_bootstrap(tmp_path / "bootstrap.toml", state_dir=tmp_path))
    anchors = ctx.get_ca_certs()
    assert len(anchors) == 1
    assert dict(x[0] for x in anchors[0]["subject"])["commonName"] == "fleet CA"
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_bad_bootstrap_names_the_key(tmp_path: Path) -> None:
    from firmware.provisioning.config import ConfigError

    (tmp_path / "bootstrap.toml").write_text('[device]\nid = "Bad_ID"\n[provisioning]\n')
    with pytest.raises(ConfigError, match="device.id: must be 1-63"):
        load_bootstrap(tmp_path / "bootstrap.toml")
