"""Config layers and how they merge (the rules are also in docs/provisioning.md).

Order, lowest first: fleet ``common``, ``models/<model>``, ``devices/<id>``, then ``local/<id>``
(changes made on the phone itself, kept in their own file so a central re-render never silently
overwrites them).

- Tables merge key by key, recursively; a higher layer's value replaces a lower one's.
- ``accounts`` (an array of tables) merges by account ``id`` (default ``line<N>`` by position):
  a higher layer's account with the same id updates that account's keys, a new id is appended.
- Any other array, and every scalar, is replaced as a whole.
- A local change to a key that the central layers also set is a *conflict*: the local value
  wins and `render` lists it, unless the admin forces central values (``render --force``): the
  conflicting paths are then removed from the fleet's copy of the local layer, remembered in
  the inventory (``local_reset``) and sent in every document (``local_reset``) so the phone
  deletes them from its own local changes too, until a status report shows they are gone.
"""

from __future__ import annotations

import copy
from typing import Any

from firmware.provisioning.document import drop_local_paths


def _account_key(account: Any, index: int) -> str:
    if isinstance(account, dict) and "id" in account:
        return str(account["id"])
    return f"line{index + 1}"


def _merge_accounts(low: list[Any], high: list[Any]) -> list[Any]:
    out = [copy.deepcopy(a) for a in low]
    index = {_account_key(a, i): i for i, a in enumerate(out)}
    for j, account in enumerate(high):
        key = _account_key(account, j)
        if key in index and isinstance(out[index[key]], dict) and isinstance(account, dict):
            out[index[key]] = merge(out[index[key]], account)
            out[index[key]].setdefault("id", key)
        else:
            new = copy.deepcopy(account)
            if isinstance(new, dict):
                new.setdefault("id", key)
            index[key] = len(out)
            out.append(new)
    return out


def merge(low: dict[str, Any], high: dict[str, Any], *, top: bool = True) -> dict[str, Any]:
    """``high`` over ``low`` by the rules above; neither input is modified."""
    out = copy.deepcopy(low)
    for key, value in high.items():
        if top and key == "accounts" and isinstance(value, list):
            old = out.get("accounts")
            out["accounts"] = _merge_accounts(old if isinstance(old, list) else [], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_all(layers: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for layer in layers:
        result = merge(result, layer)
    return result


def _leaves(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every scalar or non-account array; accounts by id."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if not prefix and key == "accounts" and isinstance(value, list):
            for i, account in enumerate(value):
                if isinstance(account, dict):
                    acc = {k: v for k, v in account.items() if k != "id"}
                    out.update(_leaves(acc, f"accounts.{_account_key(account, i)}."))
        elif isinstance(value, dict):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def conflicts(central: dict[str, Any], local: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted paths both set, with different values: {path: (central value, local value)}."""
    c, loc = _leaves(central), _leaves(local)
    return {p: (c[p], v) for p, v in loc.items() if p in c and c[p] != v}


def drop_paths(local: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    """A copy of ``local`` without the given dotted paths (the phone applies the same function
    to its own local changes when a document carries ``local_reset``)."""
    return drop_local_paths(local, paths)


def leaves(obj: dict[str, Any]) -> set[str]:
    """Every dotted path set in a layer."""
    return set(_leaves(obj))
