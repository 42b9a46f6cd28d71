"""Leaving a local 3-way conference (RFC 5850 7): the host transfers the two others to each other.

Three real deskphone processes through Kamailio (users 1134-1136). A hosts a 3-way conference
with B and C, then "leave"s it: A REFERs B with Refer-To C's Contact and Replaces of the A-C
dialog (RFC 5589 7); B's INVITE with Replaces takes over C's call with A. In the end B and C
talk to each other, A has no call, and the conference on A is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.test_attended import _call
from tests.interop.test_calls_baresip import connected, deskphone, ended


def test_host_leaves_the_conference_and_the_others_keep_talking(
    kamailio: Kamailio, phones: Callable[..., PhoneProcess], tmp_path: Path
) -> None:
    a, _ = deskphone(phones, kamailio, "1134", tmp_path)
    b, _ = deskphone(phones, kamailio, "1135", tmp_path)
    c, _ = deskphone(phones, kamailio, "1136", tmp_path)
    a_b, b_a = _call(a, b, "1135")
    a_c, c_a = _call(a, c, "1136")  # dialling held B first (one talking call at a time)
    assert a.call(a_b)["state"] == "held"
    a.call_action(a_b, "conference", **{"with": a_c})
    a.wait_call(connected(a_b), 10, "B resumed into the conference")
    assert a.status()["conference"] == [a_b, a_c]

    code, reply = a.post(f"/api/calls/{a_b}/leave")
    assert code == 200, reply
    assert reply["transfer_role"] == "transferor" and "Replaces=" in reply["transfer_to"]
    assert a.status()["conference"] == []

    new_c = c.wait_call(
        lambda x: x.get("replaces_call") == c_a and x["state"] == "connected",
        15,
        "C's call taken over by B",
    )
    assert "1135" in new_c["remote"]
    c.wait_call(ended(c_a), 10, "C's call with A to end")
    b.wait_call(ended(b_a), 10, "B's call with A to end")
    new_b = b.wait_call(
        lambda x: x["direction"] == "outgoing" and x["state"] == "connected", 10, "B talks to C"
    )
    assert "1136" in new_b["remote"]
    a.wait_for(lambda s: all(x["state"] == "ended" for x in s["calls"]), 10, "A to have no call")
    assert a.call(a_b)["transfer"] == "done"

    # leaving needs a 3-way conference
    code, reply = b.post(f"/api/calls/{new_b['id']}/leave")
    assert code == 409 and "not in a 3-way conference" in reply["error"], reply
