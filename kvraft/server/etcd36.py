"""etcd 3.6's member flags: the ``--experimental-`` flags under their new names, and
``--feature-gates``.

etcd 3.6 renamed most ``--experimental-*`` flags (``--experimental-corrupt-check-time`` is now
``--corrupt-check-time``) and moved the boolean ones behind ``--feature-gates``
(``--experimental-initial-corrupt-check`` is ``--feature-gates=InitialCorruptCheck=true``). It
takes both spellings until 3.7, and so does kvraft, as etcd 3.6 does:

- An old name set explicitly (a flag, a config-file key or an ``ETCD_*`` variable) gives its
  value to the new one and is warned about with etcd's deprecation text; setting both is
  refused ("cannot set --experimental-X and --X at the same time"). The new names are the
  ones kvraft's code reads.
- ``--feature-gates`` takes ``Name=bool,...`` (Go's ParseBool words) for the gates below and
  ``AllAlpha``/``AllBeta`` (every alpha/beta gate not named otherwise). An experimental boolean
  flag set explicitly sets its gate, and naming the gate too is refused, as etcd does.
- ``--warning-unary-request-duration`` and its experimental name: both non-zero is refused;
  neither gives etcd's 300ms.

The gates, and what each does in kvraft (``Config.feature``):

- ``InitialCorruptCheck``, ``CompactHashCheck``: the corruption checks
  (``kvraft.server.corruption``), off by default as in etcd.
- ``SetMemberLocalAddr``: peer connections leave from the first non-loopback IP address in
  ``--initial-advertise-peer-urls`` (``local_peer_address``).
- ``StopGRPCServiceOnDefrag``, ``TxnModeWriteWithSharedBuffer``: nothing to change (kvraft's
  defragmentation does not stop serving; its write txns read their own view), noted at start.
- ``LeaseCheckpoint``, ``LeaseCheckpointPersist``: kvraft always replicates and stores leases'
  remaining TTL, so both are on by default here (off in etcd); turning them off is noted and
  changes nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kvraft.durations import parse_go_duration_s

if TYPE_CHECKING:
    from kvraft.server.config import Config

__all__ = ["GATES", "RENAMED", "Gate", "local_peer_address", "parse_feature_gates", "resolve"]

ALPHA, BETA = "ALPHA", "BETA"
"""etcd's stage names (the ``stage`` label of ``etcd_server_feature_enabled``)."""


@dataclass(frozen=True, slots=True)
class Gate:
    default: bool
    stage: str
    experimental: str = ""
    """The 3.5 flag (a ``Config`` field) that sets this gate, if any."""


GATES: dict[str, Gate] = {
    "AllAlpha": Gate(False, ALPHA),
    "AllBeta": Gate(False, BETA),
    "CompactHashCheck": Gate(False, ALPHA, "experimental_compact_hash_check_enabled"),
    "InitialCorruptCheck": Gate(False, ALPHA, "experimental_initial_corrupt_check"),
    "LeaseCheckpoint": Gate(True, ALPHA, "experimental_enable_lease_checkpoint"),
    "LeaseCheckpointPersist": Gate(True, ALPHA, "experimental_enable_lease_checkpoint_persist"),
    "SetMemberLocalAddr": Gate(False, ALPHA),
    "StopGRPCServiceOnDefrag": Gate(False, ALPHA, "experimental_stop_grpc_service_on_defrag"),
    "TxnModeWriteWithSharedBuffer": Gate(True, BETA, "experimental_txn_mode_write_with_shared_buffer"),
}
"""etcd 3.6's server feature gates; defaults are etcd's except the two lease ones (above)."""

RENAMED: dict[str, str] = {
    "experimental_compact_hash_check_time": "compact_hash_check_time",
    "experimental_corrupt_check_time": "corrupt_check_time",
    "experimental_compaction_batch_limit": "compaction_batch_limit",
    "experimental_watch_progress_notify_interval": "watch_progress_notify_interval",
    "experimental_warning_apply_duration": "warning_apply_duration",
    "experimental_bootstrap_defrag_threshold_megabytes": "bootstrap_defrag_threshold_megabytes",
    "experimental_memory_mlock": "memory_mlock",
    "experimental_snapshot_catchup_entries": "snapshot_catchup_entries",
    "experimental_compaction_sleep_interval": "compaction_sleep_interval",
    "experimental_downgrade_check_time": "downgrade_check_time",
    "experimental_peer_skip_client_san_verification": "peer_skip_client_san_verification",
    "experimental_enable_distributed_tracing": "enable_distributed_tracing",
    "experimental_distributed_tracing_address": "distributed_tracing_address",
    "experimental_distributed_tracing_service_name": "distributed_tracing_service_name",
    "experimental_distributed_tracing_instance_id": "distributed_tracing_instance_id",
    "experimental_distributed_tracing_sampling_rate": "distributed_tracing_sampling_rate",
}
"""etcd 3.6's ``experimentalFlagMigrationMap``, as ``Config`` fields: old -> new."""

_DEPRECATED_ELSEWHERE = {
    "max_snapshots": "--max-snapshots is deprecated in 3.6 and will be decommissioned in 3.8.",
    "v2_deprecation": "--v2-deprecation is deprecated and scheduled for removal in v3.8. The default value is "
                      "enforced, ignoring user input.",
}

DEFAULT_WARNING_UNARY_REQUEST_S = 0.3
"""etcd's ``DefaultWarningUnaryRequestDuration``."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _deprecation(old: str) -> str:
    """etcd 3.6's warning for an old flag set explicitly."""
    if old in _DEPRECATED_ELSEWHERE:
        return _DEPRECATED_ELSEWHERE[old]
    if old in RENAMED:
        return f"{_flag(old)} is deprecated in v3.6 and will be decommissioned in v3.7. Use '{_flag(RENAMED[old])}' instead."
    gate = next(name for name, spec in GATES.items() if spec.experimental == old)
    return (f"{_flag(old)} is deprecated in v3.6 and will be decommissioned in v3.7. "
            f"Use '--feature-gates={gate}=true' instead.")


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_feature_gates(text: str) -> dict[str, bool]:
    """``Name=bool,...`` as etcd's featuregate parses it; ``ValueError`` with etcd's words."""
    gates: dict[str, bool] = {}
    for item in text.split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep:
            raise ValueError(f"missing bool value for {name}")
        if value not in _TRUE + _FALSE:
            raise ValueError(f'invalid value of {name}={value}, err: strconv.ParseBool: parsing "{value}": '
                             "invalid syntax")
        if name not in GATES:
            raise ValueError(f"unrecognized feature gate: {name}")
        gates[name] = value in _TRUE
    return gates


def enabled_gates(given: dict[str, bool]) -> dict[str, bool]:
    """Every gate's value: what was given, then AllAlpha/AllBeta for the gates of their stage
    not given, then the defaults."""
    out = {}
    for name, spec in GATES.items():
        if name in given:
            out[name] = given[name]
        elif spec.stage == ALPHA and "AllAlpha" in given:
            out[name] = given["AllAlpha"]
        elif spec.stage == BETA and "AllBeta" in given:
            out[name] = given["AllBeta"]
        else:
            out[name] = spec.default
    return out


def resolve(config: Config, explicit: set[str]) -> list[str]:
    """Bring the old spellings ``explicit``ly set (``Config`` field names) into the new
    ones, in ``config``; the deprecation warnings to print. ``ValueError`` for a conflict."""
    warnings = []
    for old, new in RENAMED.items():
        if old not in explicit:
            continue
        if new in explicit:
            raise ValueError(f"cannot set {_flag(old)} and {_flag(new)} at the same time, please use {_flag(new)} only")
        setattr(config, new, getattr(config, old))
        warnings.append(_deprecation(old))
    try:
        named = parse_feature_gates(config.feature_gates)
    except ValueError as exc:
        raise ValueError(f'invalid value "{config.feature_gates}" for flag -feature-gates: {exc}') from None
    given = dict(named)
    for name, spec in GATES.items():
        if not spec.experimental or spec.experimental not in explicit:
            continue
        value = bool(getattr(config, spec.experimental))
        if name in named:
            raise ValueError(
                f"cannot specify both flags: {_flag(spec.experimental)}={str(value).lower()} and "
                f"--feature-gates={name}={str(named[name]).lower()} at the same time, "
                f"please just use --feature-gates={name}={str(named[name]).lower()}")
        given[name] = value
        warnings.append(_deprecation(spec.experimental))
    config.feature_gates = ",".join(f"{name}={str(value).lower()}" for name, value in sorted(given.items()))
    unary, old_unary = config.warning_unary_request_duration, config.experimental_warning_unary_request_duration
    if _nonzero(unary) and _nonzero(old_unary):
        raise ValueError("both --experimental-warning-unary-request-duration and --warning-unary-request-duration "
                         "flags are set. Use only --warning-unary-request-duration")
    if _nonzero(old_unary):
        config.warning_unary_request_duration = old_unary
        warnings.append("--experimental-warning-unary-request-duration is deprecated, and will be decommissioned in "
                        "v3.7. Use --warning-unary-request-duration instead.")
    warnings += [text for name, text in _DEPRECATED_ELSEWHERE.items() if name in explicit]
    return warnings


def _nonzero(duration: str) -> bool:
    try:
        return parse_go_duration_s(duration) != 0
    except ValueError:
        return True  # (validated, with the flag's name, later)


def local_peer_address(advertise_peer_urls: list[str]) -> str | None:
    """``SetMemberLocalAddr``: the first IP address in the URLs that is neither loopback nor
    unspecified (etcd's ``InferLocalAddr``); None when there is none (a host name, or only
    127.0.0.1: the system picks, as without the gate)."""
    for url in advertise_peer_urls:
        try:
            address = ipaddress.ip_address(urlsplit(url).hostname or "")
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified):
            return str(address)
    return None
