"""The dialog event package's body, application/dialog-info+xml (RFC 4235); sans-IO.

`parse_dialog_info` reads one NOTIFY body; `DialogInfoState` folds a subscription's NOTIFYs
(full and partial state, RFC 4235 4.1) into the set of dialogs the monitored entity has now.

The XML comes from the network, so it is parsed with defusedxml: a DTD (and with it any entity
definition - "billion laughs", external entities fetching files or URLs) is refused outright
rather than expanded; the standard library's parser would expand internal entities.
Element and attribute values are read leniently where real notifiers differ from the RFC
(Kamailio's pua_dialoginfo writes ``<state>Trying</state>`` capitalised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

NS = "urn:ietf:params:xml:ns:dialog-info"
MAX_BODY = 64 * 1024  # a dialog-info document for one extension is a few kB
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")
EARLY_STATES = frozenset({"trying", "proceeding", "early"})


class DialogInfoError(ValueError):
    """A body that is not a usable dialog-info document; the reason names the defect."""


@dataclass(frozen=True)
class Participant:
    """<local> or <remote>: identity, display name, target URI and its parameters."""

    identity: str | None = None
    display: str | None = None
    target: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return next((v for n, v in self.params if n.lower() == name.lower()), None)


@dataclass(frozen=True)
class DialogEntry:
    """One <dialog> element."""

    id: str
    state: str  # one of STATES (lower case)
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: str | None = None  # "initiator" | "recipient"
    event: str | None = None  # on terminated: cancelled, rejected, replaced, local-bye...
    code: int | None = None
    local: Participant = field(default_factory=Participant)
    remote: Participant = field(default_factory=Participant)

    @property
    def early(self) -> bool:
        return self.state in EARLY_STATES

    @property
    def held(self) -> bool:
        """The monitored side renders no media: +sip.rendering=no on its target (4235 4.1.6.2)."""
        return (self.local.param("+sip.rendering") or "").lower() == "no"


@dataclass(frozen=True)
class DialogInfo:
    """A parsed document: <dialog-info version state entity>."""

    entity: str
    version: int
    full: bool
    dialogs: tuple[DialogEntry, ...]


def _tag(name: str) -> str:
    return f"{{{NS}}}{name}"


def _text(parent: Element | None, name: str) -> str | None:
    if parent is None:
        return None
    node = parent.find(_tag(name))
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def _participant(node: Element | None) -> Participant:
    if node is None:
        return Participant()
    identity_node = node.find(_tag("identity"))
    identity = display = None
    if identity_node is not None:
        identity = (identity_node.text or "").strip() or None
        display = identity_node.get("display")
    target_node = node.find(_tag("target"))
    target = None
    params: list[tuple[str, str]] = []
    if target_node is not None:
        target = target_node.get("uri")
        for p in target_node.findall(_tag("param")):
            name, value = p.get("pname"), p.get("pval") or p.get("pvalue")
            if name is not None and value is not None:
                params.append((name, value))
    return Participant(identity, display, target, tuple(params))


def parse_dialog_info(body: bytes) -> DialogInfo:
    """Parse an application/dialog-info+xml body; `DialogInfoError` names what is wrong."""
    if len(body) > MAX_BODY:
        raise DialogInfoError(f"dialog-info body larger than {MAX_BODY} bytes")
    try:
        root = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as e:
        raise DialogInfoError(f"dialog-info refused: {type(e).__name__}") from None
    except ParseError as e:
        raise DialogInfoError(f"dialog-info is not well-formed XML: {e}") from None
    if root.tag != _tag("dialog-info"):
        raise DialogInfoError(f"root element is {root.tag}, not dialog-info")
    version_text = root.get("version", "")
    if not version_text.isdigit():
        raise DialogInfoError("dialog-info version is missing or not a number")
    state = (root.get("state") or "").lower()
    if state not in ("full", "partial"):
        raise DialogInfoError("dialog-info state must be full or partial")
    dialogs = []
    for node in root.findall(_tag("dialog")):
        dialog_id = node.get("id")
        if not dialog_id:
            raise DialogInfoError("dialog element without id")
        state_node = node.find(_tag("state"))
        dstate = (state_node.text or "").strip().lower() if state_node is not None else ""
        if dstate not in STATES:
            raise DialogInfoError(f"dialog {dialog_id}: unknown state {dstate!r}")
        code_text = state_node.get("code") if state_node is not None else None
        direction = node.get("direction")
        dialogs.append(
            DialogEntry(
                id=dialog_id,
                state=dstate,
                call_id=node.get("call-id"),
                local_tag=node.get("local-tag"),
                remote_tag=node.get("remote-tag"),
                direction=direction.lower() if direction else None,
                event=state_node.get("event") if state_node is not None else None,
                code=int(code_text) if code_text and code_text.isdigit() else None,
                local=_participant(node.find(_tag("local"))),
                remote=_participant(node.find(_tag("remote"))),
            )
        )
    return DialogInfo(root.get("entity", ""), int(version_text), state == "full", tuple(dialogs))


@dataclass
class DialogInfoState:
    """The monitored entity's dialogs as one subscription's NOTIFYs describe them."""

    version: int | None = None
    dialogs: dict[str, DialogEntry] = field(default_factory=dict)

    def reset(self) -> None:
        """A new subscription: versions start again (RFC 4235 4.1)."""
        self.version = None
        self.dialogs.clear()

    def apply(self, info: DialogInfo) -> bool:
        """Fold one document in; False when it is stale (an older version) and was ignored.

        A partial document that skips versions means we missed one: RFC 4235 4.1 says to
        re-fetch full state; we apply it anyway (the next full NOTIFY corrects us) so the LED
        does not freeze.
        """
        if self.version is not None and (
            info.version < self.version or (info.version == self.version and not info.full)
        ):
            return False
        if info.full:
            self.dialogs.clear()
        for entry in info.dialogs:
            self.dialogs[entry.id] = entry
        # Terminated dialogs are history: keep only the live ones.
        self.dialogs = {k: d for k, d in self.dialogs.items() if d.state != "terminated"}
        self.version = info.version
        return True
