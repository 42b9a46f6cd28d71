"""Persistent device state (instance URN, reg-ids) written atomically.

RFC 5626 section 4.1 wants the +sip.instance URN stable across reboots, and a phone may lose power
at any moment, so the file is written to a temporary sibling, fsynced, then renamed over the old one:
after a crash the file is either the old or the new version, never a torn mix.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from firmware.provisioning.files import atomic_write

log = logging.getLogger(__name__)


class DeviceState:
    """The small JSON document under ``state_dir`` that must survive restarts."""

    FILE = "device-state.json"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILE
        self.data: dict[str, Any] = {}
        try:
            self.data = json.loads(self.path.read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            # A damaged file must not brick the phone; a new identity is the lesser evil.
            log.warning("device state %s unreadable (%s); starting fresh", self.path, e)

    def instance_urn(self) -> str:
        """The phone's +sip.instance URN, created once and then kept forever."""
        urn = self.data.get("instance")
        if not isinstance(urn, str) or not urn.startswith("urn:uuid:"):
            urn = f"urn:uuid:{uuid.uuid4()}"
            self.data["instance"] = urn
            self.save()
        return urn

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())
