"""Checks of daemon settings shared by ``kvraft-agent`` and ``kvraft-scheduler``: the YAML file,
values of the wrong type, numbers out of range, URLs and endpoints. Each failure is a
``ValueError`` naming the flag, the bad value and what is allowed (the daemons print it and
exit 2)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from agent.strict_yaml import StrictLoader
from kvraft.client.srv import DiscoveryError, discover

__all__ = ["MAX_LEASE_TTL_S", "check_endpoints", "check_name", "check_serving_tls", "check_tls_files", "check_url", "coerce", "in_range",
           "load_mapping"]

MAX_LEASE_TTL_S = 9_000_000_000  # kvraft's (and etcd's) largest lease TTL


def load_mapping(path: str, flag: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty file: {}), keys as settings names (``-`` -> ``_``)."""
    try:
        with open(path) as f:
            doc = yaml.load(f, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{flag} {path}: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{flag} {path}: must be a mapping of settings, not a {type(doc).__name__}")
    return doc


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` (a flag's text or a YAML value) as the type of ``default``; bool, int, float
    and str settings (lists and mappings are the caller's)."""
    flag = _flag(name)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{flag}: must be true or false, not {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{flag}: must be an integer, not {value!r}")
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ValueError(f"{flag}: must be a number, not {value!r}") from None
        else:
            raise ValueError(f"{flag}: must be a number, not {value!r}")
        if not math.isfinite(out):
            raise ValueError(f"{flag}: must be a finite number, not {value!r}")
        return out
    if value is None:
        return ""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{flag}: must be a string, not {value!r}")


def in_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
             above: bool = False, note: str = "") -> None:
    """Refuse ``value`` below ``low`` (or not above it, ``above``) or above ``high``."""
    bad = (low is not None and (value <= low if above else value < low)) or (high is not None and value > high)
    if bad:
        want = []
        if low is not None:
            want.append(f"{'>' if above else '>='} {low:g}")
        if high is not None:
            want.append(f"<= {high:g}")
        raise ValueError(f"{_flag(name)}: {value!r} is out of range: must be {' and '.join(want)}{note}")


def check_url(flag: str, url: str, *, schemes: tuple[str, ...] = ("http", "https"), default_port: int | None = None,
              bare: bool = False) -> str:
    """``url`` as ``scheme://host:port`` (``bare``: ``host:port`` allowed too), no path, a valid
    port; returns it unchanged."""
    text = url.strip()
    if not text:
        raise ValueError(f"{flag}: empty URL; expected {schemes[0]}://HOST:PORT")
    if "://" not in text and not bare:
        raise ValueError(f"{flag}: {url!r} is not a URL; expected {schemes[0]}://HOST:PORT")
    target = text if "://" in text else f"{schemes[0]}://{text}"
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{flag}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{flag}: {url!r}: the scheme must be {' or '.join(schemes)}")
    if not parts.hostname:
        raise ValueError(f"{flag}: {url!r} has no host; expected {schemes[0]}://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{flag}: {url!r} has a path; expected {schemes[0]}://HOST:PORT")
    if port is None and default_port is None:
        raise ValueError(f"{flag}: {url!r} has no port; expected {schemes[0]}://HOST:PORT")
    if port == 0:
        raise ValueError(f"{flag}: {url!r}: port 0 is not allowed; expected 1-65535")
    return url


def check_endpoints(flag: str, endpoints: list[str]) -> list[str]:
    if not endpoints:
        raise ValueError(f"{flag}: no endpoint given; expected HOST:PORT or http(s)://HOST:PORT, comma-separated")
    for e in endpoints:
        check_url(flag, e, bare=True)
    return endpoints


def add_cluster_flags(parser: argparse.ArgumentParser, auto_sync_default_s: float) -> None:
    """How a daemon finds its kvraft cluster: ``--endpoints``, ``--discovery-srv`` (and
    ``--discovery-srv-name``), ``--auto-sync-interval-s`` (defaults filled from the settings'
    dataclass: the flags default to None so that a YAML file's value is kept)."""
    parser.add_argument("--endpoints", help="kvraft client URLs, comma-separated (default 127.0.0.1:2379)")
    parser.add_argument("--discovery-srv", help="take the endpoints from this domain's _etcd-client-ssl._tcp and "
                                                "_etcd-client._tcp SRV records (at start; none: --endpoints)")
    parser.add_argument("--discovery-srv-name", help="service name suffix of those records (_etcd-client-NAME._tcp)")
    parser.add_argument("--auto-sync-interval-s", type=float,
                        help="take the members' client URLs as the endpoints this often, as clientv3's "
                             f"AutoSyncInterval (only URLs that answer from here; default {auto_sync_default_s:g}; "
                             "0: never)")


def discovered_endpoints(domain: str, service_name: str, endpoints: list[str]) -> list[str]:
    """``--discovery-srv DOMAIN``: the endpoints of the domain's ``_etcd-client(-ssl)._tcp``
    SRV records, looked up once at start as etcd's gateway does (kvraft.client.srv); none
    found: ``endpoints``. ``ValueError`` when the lookups fail."""
    if not domain:
        if service_name:
            raise ValueError("--discovery-srv-name needs --discovery-srv (the domain whose SRV records it names)")
        return endpoints
    try:
        found = discover(domain, service_name)
    except DiscoveryError as exc:
        raise ValueError(f"--discovery-srv {domain}: {exc}") from None
    return found or endpoints


def check_name(flag: str, name: str, max_len: int = 253) -> str:
    """A name that goes into kvraft keys: not empty, no '/', not '.' or '..', no whitespace or
    control characters, at most ``max_len`` characters."""
    if not name:
        raise ValueError(f"{flag}: must not be empty")
    if "/" in name or name in (".", "..") or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"{flag}: {name!r}: must not contain '/', whitespace or control characters, "
                         "nor be '.' or '..'")
    if len(name) > max_len:
        raise ValueError(f"{flag}: {name[:20]!r}... is {len(name)} characters long; at most {max_len}")
    return name


def check_tls_files(cacert: str, cert: str, key: str) -> None:
    if bool(cert) != bool(key):
        raise ValueError("--cert and --key go together: " + ("--key" if cert else "--cert") + " is missing")
    _readable(("--cacert", cacert), ("--cert", cert), ("--key", key))


def _readable(*flags: tuple[str, str]) -> None:
    """Each (flag, path) given names a file this process can read."""
    for flag, path in flags:
        if path and not (Path(path).is_file() and os.access(path, os.R_OK)):
            why = "is not a readable file" if Path(path).exists() else "does not exist"
            raise ValueError(f"{flag} {path}: {why}")


def check_serving_tls(listen_url: str, cert: str, key: str) -> None:
    """An https ``--listen-url`` needs ``--tls-cert-file`` and ``--tls-private-key-file`` (both
    readable), and they need an https URL: either alone would serve other than asked."""
    https = listen_url.startswith("https://")
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert-file and --tls-private-key-file go together: "
                         + ("--tls-private-key-file" if cert else "--tls-cert-file") + " is missing")
    if https and not cert:
        raise ValueError(f"--listen-url {listen_url}: https needs --tls-cert-file and --tls-private-key-file")
    if cert and not https:
        raise ValueError(f"--tls-cert-file: the endpoint serves plain http at --listen-url {listen_url}; "
                         "make it https://")
    _readable(("--tls-cert-file", cert), ("--tls-private-key-file", key))

