"""What the phone UI reads (a view of calls, registrations and features) and what it asks for.

The UI never holds a CallManager: the runtime hands it a `PhoneView` built from the same status
dicts the action API serves, so the screens show exactly what `GET /api/status` says, and the UI
answers with `UiAction`s that the runtime carries out through the same code paths as the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTION_KINDS = frozenset(
    {
        "dial",  # target: number or URI; purpose: "call" | "transfer" | "conference"
        "answer",
        "reject",
        "hangup",
        "hold",
        "resume",
        "transfer",  # blind: call_id, target
        "transfer_attended",  # call_id -> target (the consultation call's id)
        "conference",  # call_id with target (another call's id)
        "dtmf",  # call_id, target = digits
        "mute",  # value: bool
        "volume",  # value: 0..VOLUME_MAX
        "dnd",  # value: bool
        "forward",  # target: number or None (off)
        "blf",  # target: key name
    }
)


@dataclass(frozen=True, slots=True)
class UiAction:
    """One thing the UI wants the phone to do (carried out by the runtime's UI driver)."""

    kind: str
    call_id: str | None = None
    target: str | None = None
    value: Any = None
    purpose: str = "call"

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown UI action {self.kind!r}")


@dataclass(frozen=True, slots=True)
class CallView:
    """A call as the UI needs it (a subset of the action API's call status)."""

    id: str
    state: str
    direction: str
    remote: str
    remote_display: str | None = None
    held: bool = False
    remote_held: bool = False
    codec: str | None = None
    srtp: bool = False
    duration: float = 0.0
    end_status: int | None = None
    end_reason: str | None = None
    end_cause: str | None = None

    @classmethod
    def from_status(cls, item: dict[str, Any]) -> CallView:
        return cls(
            id=str(item["id"]),
            state=str(item["state"]),
            direction=str(item.get("direction", "outgoing")),
            remote=str(item.get("remote", "")),
            remote_display=item.get("remote_display"),
            held=bool(item.get("held", False)),
            remote_held=bool(item.get("remote_held", False)),
            codec=item.get("codec"),
            srtp=bool(item.get("srtp", False)),
            duration=float(item.get("duration") or 0.0),
            end_status=item.get("end_status"),
            end_reason=item.get("end_reason"),
            end_cause=item.get("end_cause"),
        )


@dataclass(frozen=True, slots=True)
class PhoneView:
    """Everything on the screen that is not the UI's own state; `clock` is the wall time text."""

    calls: tuple[CallView, ...] = ()
    registrations: tuple[dict[str, Any], ...] = ()
    mwi: dict[str, Any] | None = None
    dnd: bool = False
    forward: dict[str, Any] | None = None
    blf: tuple[dict[str, Any], ...] = ()
    conference: tuple[str, ...] = ()
    clock: str = ""

    @classmethod
    def from_status(cls, status: dict[str, Any], clock: str = "") -> PhoneView:
        """Build from the action API's status dict (keys a feature does not provide are absent)."""
        return cls(
            calls=tuple(CallView.from_status(c) for c in status.get("calls", [])),
            registrations=tuple(status.get("registrations", [])),
            mwi=status.get("mwi"),
            dnd=bool(status.get("dnd", False)),
            forward=status.get("forward"),
            blf=tuple(status.get("blf", [])),
            conference=tuple(status.get("conference", [])),
            clock=clock,
        )


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    name: str
    number: str
    uri: str | None = None  # where the number is reached when it is not on the PBX (direct)


@dataclass(frozen=True, slots=True)
class UiSettings:
    """[ui] in phone.toml, plus the display size and line-key count from the board profile."""

    name: str = "deskphone"
    digit_map: str = "[2-9]xxx|0[1-9]x.T|*xx|x.T"
    inter_digit_timeout: float = 5.0
    voicemail: str | None = None
    directory: tuple[DirectoryEntry, ...] = ()
    cols: int = 20
    rows: int = 4
    line_keys: int = 4
    notice_time: float = 3.0  # how long an error or notice stays on the screen
    history_size: int = 30
    extra: dict[str, Any] = field(default_factory=dict)
