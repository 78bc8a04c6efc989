"""``NamedContext``: a TLS client context that checks every server's certificate as one name.

Go's ``tls.Config.ServerName``. etcdctl sets it to the SRV domain for ``-d`` (its secure DNS
discovery), and etcd to ``--discovery-srv`` for its peers: the certificates then name the
domain, not each machine. asyncio and aiohttp hand the connection's host to ``wrap_bio``;
this context replaces it with ``server_name``. The client library (``TLSConfig.server_name``)
and the member's peer dialer (``kvraft.server.tls``) both use it.
"""

from __future__ import annotations

import ssl

__all__ = ["NamedContext"]


class NamedContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` whose connections are checked as ``server_name`` (when set)."""

    server_name = ""

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name or server_hostname, session)
