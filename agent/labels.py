"""Label keys and values as Kubernetes has them (kubelet's ``--node-labels``, a pod's
``nodeSelector``): a key is an optional DNS-subdomain prefix and a slash, then a name of at
most 63 alphanumerics, ``-``, ``_`` and ``.`` that starts and ends alphanumeric; a value is
empty or of a name's form. Node labels go into the node record, job tables and the
dashboard, and a job's ``node_selector`` is matched against them, so a value that could never
be matched (a space, a comma, a newline) is refused where it is given."""

from __future__ import annotations

import re

__all__ = ["label_problem"]

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"


def label_problem(key: str, value: str) -> str | None:
    """What is wrong with the label ``key=value``, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"label key {key!r}: the prefix before '/' must not be empty"
    if slash and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        return (f"label key {key!r}: the prefix {prefix[:40]!r} must be a DNS subdomain (lower-case alphanumerics, "
                "'-' and '.', at most 253 characters)")
    if not name:
        return f"label key {key!r}: the name must not be empty"
    if len(name) > 63:
        return f"label key {key[:40]!r}...: the name must be at most 63 characters, not {len(name)}"
    if not _NAME.fullmatch(name):
        return f"label key {key!r}: the name must be {_NAME_RULE}"
    if len(value) > 63:
        return f"label {key}: the value {value[:40]!r}... must be at most 63 characters, not {len(value)}"
    if value and not _NAME.fullmatch(value):
        return f"label {key}: the value {value!r} must be empty or {_NAME_RULE}"
    return None
