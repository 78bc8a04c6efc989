"""kvraft: an etcd-compatible Raft key-value store for GPU training clusters."""

__all__ = ["__version__"]
__version__ = "0.1.0"
