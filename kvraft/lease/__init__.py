"""Leases: the lessor (pure, time as an input) and its persisted records."""

from kvraft.lease.lessor import (
    MAX_LEASE_TTL_S,
    Lease,
    LeaseExists,
    LeaseNotFound,
    LeaseTTLTooLarge,
    Lessor,
    NotPrimary,
)

__all__ = ["MAX_LEASE_TTL_S", "Lease", "LeaseExists", "LeaseNotFound", "LeaseTTLTooLarge", "Lessor", "NotPrimary"]
