"""``kvraft-local``: start, inspect, break and stop a whole local cluster (issue 13)."""

from kvraft.local.cluster import ClusterError, LocalSpec, down, kill_node, status, up

__all__ = ["ClusterError", "LocalSpec", "down", "kill_node", "status", "up"]
