"""THREATS T9: dialog identifiers are bearer credentials for Replaces, Join and Target-Dialog.

Whoever knows a dialog's Call-ID and tags can name it in a Replaces, Join or Target-Dialog, so
the production generator must be unpredictable: the OS CSPRNG (`secrets`), at least 32 random
bits per tag (RFC 3261 19.3; we use 64), no repeats, no sequence.
"""

from __future__ import annotations

import inspect

from firmware.sip import ids
from firmware.sip.ids import SecureIds, new_branch, new_call_id, new_tag

SAMPLES = 100_000


def test_secure_ids_come_from_the_csprng() -> None:
    source = inspect.getsource(SecureIds)
    assert "secrets." in source and "random." not in source
    assert ids.secrets.__name__ == "secrets"


def test_tags_call_ids_and_branches_never_repeat_and_carry_enough_bits() -> None:
    source = SecureIds()
    tags = [new_tag(source) for _ in range(SAMPLES)]
    assert len(set(tags)) == SAMPLES
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in tags)  # 64 bits of hex
    call_ids = {new_call_id(source) for _ in range(10_000)}
    assert len(call_ids) == 10_000 and all(len(c) == 32 for c in call_ids)  # 128 bits
    branches = {new_branch(source) for _ in range(10_000)}
    assert len(branches) == 10_000 and all(b.startswith("z9hG4bK") for b in branches)


def test_tags_show_no_sequence_and_use_every_bit() -> None:
    source = SecureIds()
    values = [int(new_tag(source), 16) for _ in range(20_000)]
    steps = {b - a for a, b in zip(values, values[1:], strict=False)}
    assert len(steps) > 19_000  # a counter or an LCG-like step would repeat its increments
    # Every one of the 64 bits is set in roughly half of the samples (no stuck bits).
    for bit in range(64):
        share = sum((v >> bit) & 1 for v in values) / len(values)
        assert 0.45 < share < 0.55, (bit, share)
