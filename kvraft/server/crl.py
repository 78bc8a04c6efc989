"""Certificate revocation lists: etcd's ``--client-crl-file`` and ``--peer-crl-file``.

OpenSSL does the checking. The CRL file (PEM; one CRL per CA, concatenated) is loaded into
the context that verifies certificates (``load_verify_locations``) with
``VERIFY_CRL_CHECK_LEAF``: a certificate whose serial its CA's CRL lists fails the handshake
("certificate revoked"). As OpenSSL checks a CRL, and etcd does not, the CRL's signature, its
issuer and its next update count: a certificate whose CA has no CRL in the file ("unable to
get certificate CRL"), or any certificate once the CRL is past its next update, is refused.
A client that offers no certificate is not checked at all (``CERT_OPTIONAL``: the scoped-token
path of ``--client-cert-auth``, kvraft.server.api.gate).

Reload without a restart (etcd reads the file on every accepted connection)::

    a handshake ──> sni_callback(ssl_object)      (OpenSSL calls it in every handshake, SNI or not)
                      stat(file): (device, inode, size, mtime, ctime) as last seen?
                        no: read it, check it, build a context with it   (once per change)
                            a file that does not parse: log an error, keep the last good one
                      ssl_object.context = that context    (its verify store checks the peer)
                      a resumed TLS session made before that list was loaded: refused

The swap works because OpenSSL verifies with the store of the context the connection has at
that point (``SSL_set_SSL_CTX``); the verify mode and flags were copied from the listener's
context when the connection was made, and every context here is built the same way.
Resumption is the one way around a new list: a resumed session (a TLS 1.3 ticket or a TLS 1.2
session id) skips certificate verification, so one that predates the list in force is refused
(the client gets a handshake failure; a new connection without the session is checked in
full). Connections open before a change are not closed, as in etcd.

The dialing side (the peer transport's client context, ``--peer-crl-file``) has no such
callback: ``CRLContexts.current`` is asked for the context before each dial.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["CRLContexts", "CRLError", "RevocationList", "read_crl"]

log = logging.getLogger("kvraft.tls")

_PEM = re.compile(rb"-----BEGIN X509 CRL-----(.*?)-----END X509 CRL-----", re.S)
_SEQUENCE, _INTEGER, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0x02, 0x17, 0x18


class CRLError(ValueError):
    """A CRL file that cannot be used (unreadable, not PEM CRLs, or refused by OpenSSL)."""


@dataclass(frozen=True)
class RevocationList:
    """What a CRL file holds: ``lists`` CRLs (one per CA) naming ``revoked`` serials in all;
    ``next_update`` is the earliest of their next updates (None when none has one)."""

    lists: int
    revoked: int
    next_update: datetime | None

    def expired(self, now_s: float) -> bool:
        """Past its next update: OpenSSL then refuses every certificate it would check."""
        return self.next_update is not None and now_s > self.next_update.timestamp()

    def describe(self) -> str:
        when = self.next_update.strftime("%Y-%m-%d %H:%M:%S UTC") if self.next_update else "none"
        return f"{self.revoked} revoked certificate(s) in {self.lists} list(s), next update {when}"


def read_crl(path: str) -> RevocationList:
    """Read and check a PEM CRL file; CRLError says what is wrong with it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CRLError(f"{path} is not a readable file ({exc.strerror or exc})") from None
    blocks = _PEM.findall(data)
    if not blocks:
        raise CRLError(f"{path} holds no PEM CRL (-----BEGIN X509 CRL-----)")
    revoked, updates = 0, []
    for number, block in enumerate(blocks, 1):
        try:
            count, next_update = _parse_crl(base64.b64decode(b"".join(block.split()), validate=True))
        except (ValueError, binascii.Error) as exc:
            raise CRLError(f"{path}: CRL {number} of {len(blocks)} does not parse ({exc})") from None
        revoked += count
        if next_update is not None:
            updates.append(next_update)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:  # what the listeners will do with it
        probe.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise CRLError(f"{path}: OpenSSL cannot load it ({exc.reason or exc})") from None
    return RevocationList(len(blocks), revoked, min(updates) if updates else None)


class CRLContexts:
    """The ``ssl.SSLContext`` that verifies with a CRL file, built again when the file changes.

    ``build(crl_path)`` makes the context: it loads that CRL and sets ``VERIFY_CRL_CHECK_LEAF``
    (kvraft.server.tls). ``what`` names the listener or dialer in log lines. Raises CRLError
    or ``ssl.SSLError`` when the file cannot be used at start. Called only from the event
    loop's thread (handshakes and dials run there)."""

    def __init__(self, flag: str, path: str, what: str, build: Callable[[str], ssl.SSLContext],
                 clock: Callable[[], float] = time.time) -> None:
        self.flag, self.path, self.what = flag, path, what
        self._build = build
        self._clock = clock
        self._seen: tuple[int, ...] | None = _file_key(path)  # before reading: a change while reading is seen next time
        self.crl = read_crl(path)
        self._context = build(path)
        self.loaded_at_s = clock()
        """When the list in force was loaded (wall clock, as a TLS session's time)."""
        self.builds = 1
        self._expiry_logged = False
        log.info("%s %s for the %s: %s", flag, path, what, self.crl.describe())
        stats = self._context.cert_store_stats()
        if stats["crl"] < stats["x509_ca"]:
            log.warning("%s %s: %d CRL(s) for %d CA certificate(s): a certificate from a CA without a CRL "
                        "in the file is refused", flag, path, stats["crl"], stats["x509_ca"])

    def current(self) -> ssl.SSLContext:
        """The context with the file's current list: built again when the file changed since
        last seen; the last good one when the changed file cannot be used."""
        try:
            key: tuple[int, ...] | None = _file_key(self.path)
        except OSError:
            key = None
        if key != self._seen:
            self._seen = key
            self._reload()
        if not self._expiry_logged and self.crl.expired(self._clock()):
            self._expiry_logged = True
            log.error("%s %s is past its next update: every certificate it checks is refused until it is "
                      "replaced (deploy/make-certs.sh -l writes a new one)", self.flag, self.path)
        return self._context

    def serving(self) -> ssl.SSLContext:
        """The context to listen with: each handshake on it swaps in ``current()``."""
        self._context.sni_callback = self._on_handshake
        return self._context

    def _reload(self) -> None:
        try:
            crl = read_crl(self.path)
            context = self._build(self.path)
        except (CRLError, OSError, ssl.SSLError) as exc:
            log.error("%s for the %s: %s; the list loaded before stays in force", self.flag, self.what, exc)
            return
        self.crl, self._context, self.loaded_at_s = crl, context, self._clock()
        self.builds += 1
        self._expiry_logged = False
        log.info("%s %s reloaded for the %s: %s", self.flag, self.path, self.what, crl.describe())

    def _on_handshake(self, ssl_object: ssl.SSLObject, _server_name: str | None,
                      _context: ssl.SSLContext) -> int | None:
        ssl_object.context = self.current()
        if ssl_object.session_reused:  # no certificate check on resumption: only for sessions
            try:  # made under the list in force (a session's time is in whole seconds)
                made_s = ssl_object.session.time if ssl_object.session is not None else 0
            except ValueError:
                made_s = 0
            if made_s <= self.loaded_at_s:
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return None


def _file_key(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# -- DER, just enough of RFC 5280's CertificateList to count and date it ---------------------
def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The DER element at ``pos`` (within ``end``): (tag, start of its contents, their end)."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("bad length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > end:
        raise ValueError("truncated")
    return tag, pos, pos + size


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        element = _element(data, start, end)
        out.append(element)
        start = element[2]
    return out


def _parse_crl(der: bytes) -> tuple[int, datetime | None]:
    """(revoked serials, next update) of one DER CRL."""
    tag, start, end = _element(der, 0, len(der))
    outer = _children(der, start, end)
    if tag != _SEQUENCE or end != len(der) or len(outer) != 3 or outer[0][0] != _SEQUENCE:
        raise ValueError("not a CertificateList")
    fields = _children(der, outer[0][1], outer[0][2])
    if fields and fields[0][0] == _INTEGER:  # version (v2)
        fields = fields[1:]
    # signature algorithm, issuer, thisUpdate, [nextUpdate], [revokedCertificates], [extensions]
    if len(fields) < 3 or fields[0][0] != _SEQUENCE or fields[1][0] != _SEQUENCE or not _is_time(fields[2]):
        raise ValueError("not a TBSCertList")
    _time(der, fields[2])
    rest = fields[3:]
    next_update = None
    if rest and _is_time(rest[0]):
        next_update = _time(der, rest[0])
        rest = rest[1:]
    revoked = 0
    if rest and rest[0][0] == _SEQUENCE:
        entries = _children(der, rest[0][1], rest[0][2])
        if any(tag != _SEQUENCE for tag, _, _ in entries):
            raise ValueError("malformed revokedCertificates")
        revoked = len(entries)
    return revoked, next_update


def _is_time(element: tuple[int, int, int]) -> bool:
    return element[0] in (_UTC_TIME, _GENERALIZED_TIME)


def _time(der: bytes, element: tuple[int, int, int]) -> datetime:
    tag, start, end = element
    text = der[start:end].decode("ascii")
    form = "%y%m%d%H%M%SZ" if tag == _UTC_TIME else "%Y%m%d%H%M%SZ"
    return datetime.strptime(text, form).replace(tzinfo=UTC)
