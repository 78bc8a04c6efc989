"""The node record the agent writes to ``/registry/nodes/<node>`` (docs/keyspace.md).

It carries what placement needs -- the fields of ``scheduler.model.Node`` (``gpus``,
``gpu_type``, ``cpu_milli``, ``memory_mib``, ``rack``, ``spine``, ``islands``, ``labels``,
``healthy``) at the top level -- plus the full inventory (per-GPU records, the link matrix,
NUMA, RDMA devices), the conditions, and how to reach the agent.
"""

from __future__ import annotations

from typing import Any

from agent.devices import GpuInventory, RdmaDevice, islands

__all__ = ["AGENT_VERSION", "build_node_record", "conditions"]

AGENT_VERSION = "0.1.0"
CONDITION_TYPES = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "GPUHealthy")


def conditions(facts: dict[str, Any], gpus: GpuInventory, previous: list[dict[str, Any]], now_s: float) -> list[dict[str, Any]]:
    """kubelet-style conditions; ``last_transition`` moves only when a status changes."""
    pressure = facts.get("pressure") or {}  # condition -> (what crossed, figures): agent.eviction
    values = {t: (t in pressure, pressure[t][0] if t in pressure else "")
              for t in ("MemoryPressure", "DiskPressure", "PIDPressure")}
    values["GPUHealthy"] = (gpus.healthy, gpus.health_message)
    runtime_down = str(facts.get("runtime_down") or "")  # the runtime's ping failed (kubelet's runtime check)
    reasons = [f"{t}: {values[t][1]}" for t in ("MemoryPressure", "DiskPressure", "PIDPressure") if values[t][0]]
    if not gpus.healthy:
        reasons.append(f"GPUs unhealthy: {gpus.health_message}" if gpus.health_message else "GPUs unhealthy")
    if runtime_down:
        reasons.insert(0, f"container runtime is down: {runtime_down}")
    ready = not reasons
    values["Ready"] = (ready, "; ".join(reasons))
    old = {c["type"]: c for c in previous}
    out = []
    for t in CONDITION_TYPES:
        flag, message = values[t]
        status = "True" if flag else "False"
        prev = old.get(t)
        since = prev["last_transition"] if prev and prev["status"] == status else now_s
        out.append({"type": t, "status": status, "message": message, "last_transition": since})
    return out


def build_node_record(
    name: str,
    labels: dict[str, str],
    facts: dict[str, Any],
    gpus: GpuInventory,
    rdma: tuple[RdmaDevice, ...],
    conds: list[dict[str, Any]],
    *,
    runtime: str,
    capabilities: dict[str, Any],
    url: str,
    started_at: float,
    lease_id: int,
) -> dict[str, Any]:
    models = sorted({g.model for g in gpus.gpus})
    ready = next((c["status"] == "True" for c in conds if c["type"] == "Ready"), False)
    return {
        "name": name,
        # the scheduler.model.Node fields
        "gpus": len(gpus.gpus),
        "gpu_type": models[0] if len(models) == 1 else ",".join(models),
        "cpu_milli": facts["cpus"] * 1000,
        "memory_mib": facts["memory_mib"],
        "rack": labels.get("rack", "rack-0"),
        "spine": labels.get("spine", "spine-0"),
        "islands": list(islands(gpus.gpus, gpus.links)),
        "labels": dict(sorted(labels.items())),
        "healthy": ready,
        # inventory
        "capacity": {"cpus": facts["cpus"], "memory_mib": facts["memory_mib"], "gpus": len(gpus.gpus),
                     "rdma": len(rdma)},
        "gpu_list": [g.to_json() for g in sorted(gpus.gpus, key=lambda g: g.index)],
        "gpu_links": gpus.links_json(),
        "gpu_source": gpus.source,
        "numa": facts.get("numa", []),
        "rdma": [r.to_json() for r in rdma],
        "machine": {k: facts[k] for k in ("memory_available_mib", "disk_free_fraction", "eviction_hard") if k in facts},
        "conditions": conds,
        "agent": {"version": AGENT_VERSION, "url": url, "runtime": runtime, "capabilities": capabilities,
                  "started_at": started_at, "lease_id": lease_id},
    }
