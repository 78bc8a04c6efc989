"""etcd's access controller on the client URLs: ``--cors`` and ``--host-whitelist``.

As etcd 3.4 serves its HTTP mux (``embed/serve.go``'s access controller):

* **Host whitelist** (DNS rebinding, CVE-2018-5702): a plain-http request whose ``Host``
  (without its port) is not in ``--host-whitelist`` is refused before anything else, 421
  Misdirected Request, with etcd's text, as Go's ``http.Error`` writes it. TLS requests are
  not checked. ``*`` or an empty list: every host.
* **CORS**: with ``--cors`` ``*`` (the default) every answer carries the CORS headers with
  ``Access-Control-Allow-Origin: *``; with a list of origins, only a request whose ``Origin``
  header is exactly one of them gets the headers, with that origin; others get none. An
  ``OPTIONS`` request on any path is answered 200 (a browser's preflight) with those headers.

A member whose access is not the default serves every request through aiohttp's routes: the
fast path (``fast.py``) writes etcd's default headers without looking at the request.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from kvraft.urls import go_quote

__all__ = ["ACCESS", "Access", "CORS", "GATEWAY", "answer_headers", "refusal"]

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}


class Access:
    def __init__(self, cors: Iterable[str] = ("*",), hosts: Iterable[str] = ("*",)) -> None:
        self.origins = frozenset(cors)
        self.hosts = frozenset(hosts)
        self.any_origin = not self.origins or "*" in self.origins
        self.any_host = not self.hosts or "*" in self.hosts

    @classmethod
    def of(cls, config: object) -> Access:
        """A member's ``--cors`` and ``--host-whitelist`` (etcd's ``*`` where the config has none)."""
        return cls(getattr(config, "cors", ("*",)), getattr(config, "host_whitelist", ("*",)))

    @property
    def default(self) -> bool:
        """etcd's defaults: every origin, every host (what the fast path assumes)."""
        return self.any_origin and self.any_host

    def cors(self, origin: str | None) -> dict[str, str]:
        """The CORS headers for a request from ``origin`` (its ``Origin`` header)."""
        if self.any_origin:
            return CORS
        if origin is not None and origin in self.origins:
            return {**CORS, "Access-Control-Allow-Origin": origin}
        return {}

    def host_refused(self, request: web.BaseRequest) -> str | None:
        """The host a plain-http request names, when the whitelist does not hold it."""
        if self.any_host or request.secure:
            return None
        host = hostname(request.host)
        return None if host in self.hosts else host


def hostname(host: str) -> str:
    """Go's ``net.SplitHostPort`` host part, or the whole value when it has no port."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0 and host[end + 1:].startswith(":"):
            return host[1:end]
        return host
    name, sep, port = host.rpartition(":")
    return name if sep and ":" not in name else host


def refusal(host: str) -> web.Response:
    """etcd's answer to a request for a host not whitelisted (Go's ``http.Error``, 421)."""
    text = ("\netcd received your request, but the Host header was unrecognized.\n\n"
            "To fix this, choose one of the following options:\n"
            "- Enable TLS, then any HTTPS request will be allowed.\n"
            "- Add the hostname you want to use to the whitelist in settings.\n"
            f"  - e.g. etcd --host-whitelist {go_quote(host)}\n\n"
            "This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n\n")
    return web.Response(status=421, body=text.encode(), headers={
        "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"})


ACCESS = web.AppKey("kvraft.access", Access)
_DEFAULT = Access()

GATEWAY = {"Grpc-Metadata-Content-Type": "application/grpc"}
"""What grpc-gateway adds to every answer it relays."""


def answer_headers(request: web.Request) -> dict[str, str]:
    """The CORS headers this request gets, and the gateway's (a stream's answer is sent
    before any middleware sees it, so streams ask here)."""
    access = request.app.get(ACCESS, _DEFAULT)
    return {**access.cors(request.headers.get("Origin")), **GATEWAY}
