# Types of the C module firmware/runtime/_udp.c (see firmware/runtime/udp.py).
from typing import Any

def recv_datagrams(
    sock: Any, max_count: int, bufsize: int, /
) -> list[tuple[bytes, float | None, Any]]: ...
