"""etcd's TLS policy flags for every context a member makes (client URLs, metrics URLs, peer
listener and dialer): ``--cipher-suites`` (etcd 3.4) and ``--tls-min-version`` /
``--tls-max-version`` (etcd 3.5).

``--cipher-suites`` takes Go's names (``TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,...``, what an
etcd unit file already holds), mapped here to OpenSSL's. As in Go, the list governs TLS 1.2
only: TLS 1.3's suites are not configurable, and a list with ``--tls-min-version TLS1.3`` is
refused (etcd 3.5 refuses it the same way). RC4 suites, which Go still names, are refused:
OpenSSL 3 has none.
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["GO_CIPHER_SUITES", "TLSPolicyError", "check_tls_policy", "new_context"]

GO_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
}
_RC4 = {"TLS_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_RC4_128_SHA"}
_VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}


class TLSPolicyError(ValueError):
    """A TLS flag that cannot be honoured (the message names the flag)."""


def _openssl_ciphers(names: list[str]) -> str:
    unknown = [n for n in names if n not in GO_CIPHER_SUITES]
    if unknown:
        rc4 = [n for n in unknown if n in _RC4]
        raise TLSPolicyError(
            f"--cipher-suites: {', '.join(unknown)}: "
            + ("RC4 is not available in this OpenSSL" if rc4 == unknown else
               f"not a TLS 1.2 cipher suite name (Go's names: {', '.join(sorted(GO_CIPHER_SUITES))})"))
    return ":".join(dict.fromkeys(GO_CIPHER_SUITES[n] for n in names))


def _versions(config: Any) -> tuple[ssl.TLSVersion, ssl.TLSVersion | None]:
    low = config.tls_min_version or "TLS1.2"
    high = config.tls_max_version
    for flag, value in (("--tls-min-version", low), ("--tls-max-version", high)):
        if value and value not in _VERSIONS:
            raise TLSPolicyError(f"{flag}: {value!r} is not TLS1.2 or TLS1.3")
    if high and _VERSIONS[high] < _VERSIONS[low]:
        raise TLSPolicyError(f"--tls-max-version {high} is below --tls-min-version {low}")
    return _VERSIONS[low], _VERSIONS[high] if high else None


def check_tls_policy(config: Any) -> None:
    """Refuse, at start, flags no context could be built with."""
    low, _high = _versions(config)
    suites = config.cipher_suites
    if suites:
        if low >= ssl.TLSVersion.TLSv1_3:
            raise TLSPolicyError("--cipher-suites: cipher suites cannot be configured when only TLS1.3 or "
                                 "greater is supported (TLS 1.3's suites are fixed)")
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            probe.set_ciphers(_openssl_ciphers(suites))
        except ssl.SSLError as exc:
            raise TLSPolicyError(f"--cipher-suites: OpenSSL offers none of them ({exc.reason or exc})") from None


def new_context(protocol: int, config: Any, context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """An ``SSLContext`` (of ``context_class``) for ``protocol`` with the versions and TLS 1.2
    suites the flags allow."""
    context = context_class(protocol)
    low, high = _versions(config)
    context.minimum_version = low
    if high is not None:
        context.maximum_version = high
    suites = config.cipher_suites
    if suites:
        context.set_ciphers(_openssl_ciphers(suites))
    return context
