"""A Kamailio that is also a presence server for the dialog event package (BLF), for issue 5.

`PresenceKamailio` is the test registrar/proxy of kamailio.py (same template, same users,
same digest rules) plus Debian's kamailio-presence-modules, all memory-only:

* ``dialog`` tracks every authenticated initial INVITE (``dlg_manage``) and ``pua_dialoginfo``
  PUBLISHes caller's and callee's dialog state (RFC 4235) through ``pua`` to ourselves
  (``outbound_proxy``); PUBLISH is taken only from our own socket;
* ``presence`` + ``presence_dialoginfo`` answer SUBSCRIBE ``Event: dialog`` (after the same
  proxy digest challenge as any request from our users, T10) and send the NOTIFYs - from the
  proxy's own UDP socket, i.e. on the phone's registrar flow;
* in-dialog SUBSCRIBE refreshes addressed to the presence server are handled, not relayed;
* ``presence_mwi`` answers SUBSCRIBE ``Event: message-summary`` (RFC 3842) with what a
  voicemail system on 127.0.0.1 PUBLISHes.

A separate instance (fixture in the BLF test module) so the shared ``kamailio`` keeps its
exact behaviour for every other test. Known quirks of pua_dialoginfo (DESIGN.md): it writes
``Trying`` capitalised, carries local/remote tags only in the early state, and sends one more
empty NOTIFY some seconds after ``terminated``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.interop.kamailio import Kamailio, KamailioError

# Debian ships the db_text table definitions; pua and presence insist on a database module even
# when they keep everything in memory, so they get an empty copy of these in the workdir.
DBTEXT_SCHEMA = Path("/usr/share/kamailio/dbtext/kamailio")

MODULES = """
loadmodule "db_text.so"
loadmodule "dialog.so"
loadmodule "presence.so"
loadmodule "presence_dialoginfo.so"
loadmodule "presence_mwi.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"
"""

PARAMS = """
modparam("presence", "db_url", "text://@@DBDIR@@")
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 2)
modparam("presence", "server_address", "sip:127.0.0.1:@@UDP_PORT@@")
modparam("presence", "min_expires", 10)
modparam("presence", "max_expires", @@MAX_SUB_EXPIRES@@)
modparam("pua", "db_url", "text://@@DBDIR@@")
modparam("pua", "db_mode", 0)
modparam("pua", "outbound_proxy", "sip:127.0.0.1:@@UDP_PORT@@")
modparam("pua_dialoginfo", "include_callid", 1)
modparam("pua_dialoginfo", "include_tags", 1)
modparam("pua_dialoginfo", "include_localremote", 1)
modparam("pua_dialoginfo", "caller_confirmed", 1)
"""

PRESENCE_ROUTE = """
route[PRESENCE] {
	if (is_method("PUBLISH")) {
		# Only our own pua publishes dialog state; nobody else may fake a BLF lamp. The lab's
		# voicemail system (a sipp on this host) may publish message-summary (MWI).
		if ($si != "127.0.0.1" || ($sp != @@UDP_PORT@@ && $hdr(Event) != "message-summary")) {
			sl_send_reply("403", "PUBLISH only from the presence agent");
			exit;
		}
		if (!t_newtran()) { sl_reply_error(); exit; }
		handle_publish();
		t_release();
		exit;
	}
	if (!has_totag()) {
		route(AUTH);
	}
	if (!t_newtran()) { sl_reply_error(); exit; }
	handle_subscribe();
	t_release();
	exit;
}
"""


class PresenceKamailio(Kamailio):
    """`Kamailio` with the presence modules (see the module docstring).

    ``max_subscription`` caps the subscription lifetime it grants (seconds), so subscribers
    refresh within a test.
    """

    def __init__(self, *args: Any, max_subscription: int = 3600, **kwargs: Any) -> None:
        self.max_subscription = max_subscription
        super().__init__(*args, **kwargs)

    def _write_config(self) -> None:
        super()._write_config()
        text = self.cfg_path.read_text()
        port = str(self.udp_addr[1])
        dbdir = self.workdir / "dbtext"
        if not dbdir.exists():
            if not DBTEXT_SCHEMA.is_dir():
                raise KamailioError(f"{DBTEXT_SCHEMA} missing (Debian package kamailio)")
            shutil.copytree(DBTEXT_SCHEMA, dbdir)

        def patch(anchor: str, replacement: str) -> None:
            nonlocal text
            if text.count(anchor) != 1:
                raise KamailioError(f"presence patch: anchor {anchor!r} not found once")
            text = text.replace(anchor, replacement)

        patch('loadmodule "tls.so"\n', 'loadmodule "tls.so"\n' + MODULES)
        patch(
            'modparam("tls", "config",',
            PARAMS.replace("@@UDP_PORT@@", port)
            .replace("@@DBDIR@@", str(dbdir))
            .replace("@@MAX_SUB_EXPIRES@@", str(self.max_subscription))
            + 'modparam("tls", "config",',
        )
        # In-dialog SUBSCRIBE (refresh / unsubscribe) to the presence server itself.
        patch(
            "\tif (!has_totag()) return;\n",
            "\tif (!has_totag()) return;\n"
            '\tif (is_method("SUBSCRIBE") && uri==myself) {\n\t\troute(PRESENCE);\n\t}\n',
        )
        patch(
            '\tremove_hf("Route");\n',
            '\tif (is_method("PUBLISH|SUBSCRIBE")) {\n\t\troute(PRESENCE);\n\t}\n'
            '\tremove_hf("Route");\n',
        )
        patch(
            "\troute(AUTH);\n\troute(LOCATION);\n",
            "\troute(AUTH);\n"
            '\tif (is_method("INVITE") && !has_totag()) {\n\t\tdlg_manage();\n\t}\n'
            "\troute(LOCATION);\n",
        )
        text += PRESENCE_ROUTE.replace("@@UDP_PORT@@", port)
        self.cfg_path.write_text(text)
