"""Member peer URLs as etcd reads them (its ``types.NewURLs``), shared by the client and the
server so that ``member add`` / ``member update`` refuse the same lists in both places.

Each URL is trimmed of surrounding white space, must have the scheme http, https, unix or
unixs, a ``host:port`` address and no path; the list comes back trimmed and sorted, which is
how etcd stores a member's peer URLs. The messages are etcdctl's, since the client checks
before it sends (``etcdctl member add x --peer-urls=foo`` prints
``Error: URL scheme must be http, https, unix, or unixs: foo``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["go_quote", "parse_peer_urls"]

_SCHEMES = ("http", "https", "unix", "unixs")
_HOST_PORT = re.compile(r"^(?:\[[^\]]*\]|[^:\[\]]*):[^:]*$")


def parse_peer_urls(urls: Iterable[str]) -> list[str]:
    """The trimmed, sorted URLs; ``ValueError`` with etcdctl's message for the first bad one."""
    out: list[str] = []
    for raw in urls:
        text = raw.strip()
        try:
            parts = urlsplit(text)
        except ValueError:
            raise ValueError(f"parse {go_quote(text)}: missing ']' in host") from None
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"URL scheme must be http, https, unix, or unixs: {text}")
        address = parts.netloc.rpartition("@")[2]
        if not _HOST_PORT.match(address):
            raise ValueError(f'URL address does not have the form "host:port": {text}')
        port = address.rpartition(":")[2]
        if port and not port.isdigit():
            raise ValueError(f'parse {go_quote(text)}: invalid port ":{port}" after host')
        if parts.path:
            raise ValueError(f"URL must not contain a path: {text}")
        out.append(parts.geturl())
    if not out:
        raise ValueError("no valid URLs given")
    return sorted(out)


def go_quote(text: str) -> str:
    """Go's ``%q`` of plain text (quotes and backslashes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
