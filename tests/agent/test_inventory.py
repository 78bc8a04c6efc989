"""Inventories, node record, keys and configuration (no processes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import load_config, parse_labels
from agent.devices import (
    Gpu,
    islands,
    load_gpu_inventory,
    load_rdma_inventory,
    parse_query_csv,
    parse_topo_matrix,
)
from agent.keys import assignment_key, split_assignment_key, status_key
from agent.node_record import build_node_record, conditions
from scheduler.model import Node

DATA = Path(__file__).parent / "data"


def test_topo_matrix_space_separated_capture() -> None:
    links, affinity, nics = parse_topo_matrix((DATA / "topo_v100x8.txt").read_text())
    assert links[(0, 1)] == "NV1" and links[(0, 3)] == "NV2" and links[(0, 5)] == "SYS" and links[(7, 6)] == "NV2"
    assert len(links) == 56
    assert affinity[0] == {"CPU Affinity": "0-11,24-35"} and affinity[7] == {"CPU Affinity": "12-23,36-47"}
    assert nics["mlx5_0"]["GPU2"] == "PIX" and nics["mlx5_0"]["GPU4"] == "SYS"


def test_topo_matrix_tabs_nic_legend_and_numa_columns() -> None:
    links, affinity, nics = parse_topo_matrix((DATA / "topo_h100x4_tabs.txt").read_text())
    assert {v for v in links.values()} == {"NV18"} and len(links) == 12
    assert affinity[2] == {"CPU Affinity": "48-95", "NUMA Affinity": "1", "GPU NUMA ID": "N/A"}
    assert set(nics) == {"mlx5_0", "mlx5_1"} and nics["mlx5_1"]["GPU3"] == "PXB"


def test_topo_matrix_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_topo_matrix("no matrix here\n")


def test_query_csv() -> None:
    text = "0, GPU-11111111-2222, NVIDIA H100 80GB HBM3, 81559, 00000000:18:00.0\n1, GPU-3333, NVIDIA H100 80GB HBM3, 81559, 00000000:2A:00.0\n"
    gpus = parse_query_csv(text)
    assert [(g.index, g.uuid, g.memory_mib, g.pci, g.device) for g in gpus] == [
        (0, "GPU-11111111-2222", 81559, "00000000:18:00.0", ("/dev/nvidia0", 195, 0)),
        (1, "GPU-3333", 81559, "00000000:2a:00.0", ("/dev/nvidia1", 195, 1)),
    ]


@pytest.mark.parametrize("codes,want", [
    ({}, (1, 1, 1, 1)),
    ({(a, b): "NV18" for a in range(4) for b in range(4) if a != b}, (4,)),
    ({(0, 1): "NV4", (2, 3): "NV4"}, (2, 2)),
    ({(0, 1): "NV4", (1, 2): "NV4"}, (2, 1, 1)),  # 0-2 not joined directly: no all-to-all island of 3
])
def test_islands(codes, want) -> None:
    gpus = [Gpu(i, f"u{i}") for i in range(4)]
    assert islands(gpus, codes) == want


def test_fake_inventory_shortcut_and_grant(tmp_path) -> None:
    inv = tmp_path / "g.yaml"
    inv.write_text("count: 8\nmodel: H100-SXM\nmemory_mib: 81559\nislands: [4, 4]\nnuma: [0,0,0,0,1,1,1,1]\nuuid_prefix: n7\n")
    g = load_gpu_inventory(inv)
    assert g.source == "fake" and len(g.gpus) == 8 and islands(g.gpus, g.links) == (4, 4)
    assert g.links[(0, 3)] == "NV18" and g.links[(3, 4)] == "SYS"
    grant = g.grant((1, 6))
    assert grant.env() == {"NVIDIA_VISIBLE_DEVICES": "GPU-fake-n7-01,GPU-fake-n7-06",
                           "CUDA_VISIBLE_DEVICES": "GPU-fake-n7-01,GPU-fake-n7-06"}
    assert [d.path for d in grant.gpus] == ["/dev/null", "/dev/null"]
    with pytest.raises(KeyError):
        g.grant((8,))


def test_no_inventory_means_no_gpus(tmp_path) -> None:
    g = load_gpu_inventory(None, nvidia_smi="no-such-nvidia-smi")
    assert g.gpus == () and g.source == "none"
    assert load_rdma_inventory(None, sys_root=tmp_path / "none") == ()


def test_node_record_feeds_the_scheduler_model(tmp_path) -> None:
    inv = tmp_path / "g.json"
    inv.write_text('{"count": 8, "model": "H100", "islands": [8]}')
    g = load_gpu_inventory(inv)
    facts = {"cpus": 2, "memory_mib": 24000, "numa": [],
             "pressure": {"DiskPressure": ("nodefs.available < 10%", "nodefs.available 1.0Gi (0.4%) < 10%")}}
    conds = conditions(facts, g, [], 100.0)
    rec = build_node_record("n7", {"rack": "r3", "spine": "s1"}, facts, g, (), conds, runtime="process",
                            capabilities={}, url="http://x", started_at=1.0, lease_id=5)
    node = Node(name=rec["name"], gpus=rec["gpus"], gpu_type=rec["gpu_type"], cpu_milli=rec["cpu_milli"],
                memory_mib=rec["memory_mib"], rack=rec["rack"], spine=rec["spine"], islands=tuple(rec["islands"]),
                labels=tuple(rec["labels"].items()), healthy=rec["healthy"])
    assert (node.gpus, node.islands, node.rack, node.healthy) == (8, (8,), "r3", False)
    by_type = {c["type"]: c for c in conds}
    assert by_type["DiskPressure"]["status"] == "True" and by_type["Ready"]["status"] == "False"
    later = conditions({**facts, "pressure": {}}, g, conds, 200.0)
    assert {c["type"]: c["last_transition"] for c in later} == {
        "Ready": 200.0, "MemoryPressure": 100.0, "DiskPressure": 200.0, "PIDPressure": 100.0, "GPUHealthy": 100.0}


def test_keys() -> None:
    assert assignment_key("n1", "j/t") == "/registry/assignments/n1/j/t"
    assert split_assignment_key("n1", "/registry/assignments/n1/j/t") == "j/t"
    assert split_assignment_key("n1", "/registry/assignments/n10/j/t") is None
    assert split_assignment_key("n1", "/registry/assignments/n1/j/t/x") is None
    for job, task in ((".", "t"), ("..", "t"), ("j", ".."), ("..", "..")):
        # the key names refuse them, and "../.." would be a task directory outside the agent's
        assert split_assignment_key("n1", f"/registry/assignments/n1/{job}/{task}") is None, (job, task)
    # a key that is not UTF-8 (kv.key.decode() raised out of the assignment loop) or whose
    # names carry control characters (a NUL in a task directory's path) is not an assignment
    assert split_assignment_key("n1", b"/registry/assignments/n1/j/t") == "j/t"
    assert split_assignment_key("n1", b"/registry/assignments/n1/j/\xff") is None
    assert split_assignment_key("n1", "/registry/assignments/n1/j/t\x00") is None
    assert split_assignment_key("n1", "/registry/assignments/n1/j\n/t") is None
    assert status_key("j/t") == "/registry/tasks/j/t/status"
    with pytest.raises(ValueError):
        assignment_key("n/1", "j/t")


def test_config_flags_override_yaml(tmp_path) -> None:
    cfg_file = tmp_path / "agent.yaml"
    cfg_file.write_text("endpoints: a:1,b:2\nname: from-yaml\nlabels: {rack: r1}\nlease-ttl-s: 20\nheartbeat_s: 5\n")
    cfg = load_config(["--config", str(cfg_file), "--name", "from-flag", "--labels", "rack=r2,switch=s1"])
    assert (cfg.endpoints, cfg.name, cfg.labels, cfg.lease_ttl_s, cfg.heartbeat_s) == (
        ["a:1", "b:2"], "from-flag", {"rack": "r2", "switch": "s1"}, 20, 5.0)
    with pytest.raises(ValueError, match="heartbeat"):
        load_config(["--lease-ttl-s", "5", "--heartbeat-s", "6"])
    cfg_file.write_text("nonsense: 1\n")
    with pytest.raises(ValueError, match="unknown settings: nonsense"):
        load_config(["--config", str(cfg_file)])
    with pytest.raises(ValueError):
        parse_labels("rack")


def test_log_line_formats_and_docker_demux() -> None:
    from agent.logs import parse_line
    from agent.runtime.docker import demux

    assert parse_line(b"2026-12-02T01:47:59.168078184Z stdout F hi there") == (
        b"2026-12-02T01:47:59.168078184Z", "stdout", False, b"hi there")
    assert parse_line(b"2026-12-02T01:47:59Z stderr P part")[2] is True
    assert parse_line(b'{"log":"x\\n","stream":"stderr","time":"2026-12-02T01:00:00Z"}') == (
        b"2026-12-02T01:00:00Z", "stderr", False, b"x")
    assert parse_line(b"garbage") is None
    frames = bytes([1, 0, 0, 0, 0, 0, 0, 3]) + b"out" + bytes([2, 0, 0, 0, 0, 0, 0, 4]) + b"err!"
    assert demux(frames) == (b"out", b"err!")


async def test_a_failed_nvidia_smi_keeps_the_gpus_unhealthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent asks nvidia-smi again every --node-status-s; one call that failed (a timeout
    under load, a GPU off the bus) replaced the inventory with no GPUs at all: the node record
    said 0 GPUs, and every assignment parsed meanwhile was Failed/InvalidSpec ('GPU index [1]
    not on this node') for good. Now the GPUs last listed stay, unhealthy, until it answers."""
    import asyncio
    import json

    from agent.agent import Agent
    from agent.config import AgentConfig
    from agent.runtime.fake import FakeRuntime

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
echo call >> {tmp_path}/calls
[ -e {tmp_path}/broken ] && {{ echo "Unable to determine the device handle for GPU1: Unknown Error" >&2; exit 15; }}
case "$1" in --query-gpu*) echo "0, GPU-a, Fake, 1000, 00000000:01:00.0"; echo "1, GPU-b, Fake, 1000, 00000000:02:00.0";;
*) exit 1;; esac
""")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    agent = Agent(AgentConfig(endpoints=["127.0.0.1:1"], name="n-smi", data_dir=tmp_path / "agent", node_status_s=0.02),
                  FakeRuntime())
    assert [g.uuid for g in agent.gpus.gpus] == ["GPU-a", "GPU-b"]

    async def put(key: str, value: bytes, **_: object) -> None:
        return None
    agent.client.put = put  # type: ignore[method-assign]
    agent.registered.set()
    (tmp_path / "broken").touch()
    calls = len((tmp_path / "calls").read_text().split())
    loop = asyncio.get_running_loop().create_task(agent._status_loop())
    try:
        while len((tmp_path / "calls").read_text().split()) < calls + 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        assert ([g.uuid for g in agent.gpus.gpus], agent.gpus.healthy) == (["GPU-a", "GPU-b"], False)
        assert "nvidia-smi failed" in agent.gpus.health_message
        a = agent._parse("j/t", 3, json.dumps({"spec": {"command": ["x"], "resources": {"gpus": [1]}}}).encode())
        assert (a.error, a.spec is not None) == ("", True)
        (tmp_path / "broken").unlink()
        while not agent.gpus.healthy:
            await asyncio.sleep(0.02)
        assert [g.uuid for g in agent.gpus.gpus] == ["GPU-a", "GPU-b"]
    finally:
        loop.cancel()
        await agent.client.close()


@pytest.mark.parametrize(("text", "want"), [
    ("gpus: [{index: 0, uuid: a}, {index: 0, uuid: b}]\n", "GPU index 0 is listed twice"),
    ("gpus: [{index: 0, uuid: a}, {index: 2, uuid: b}]\n", "GPU indices must be 0..1 (the node has 2), not [0, 2]"),
    ("gpus: [{index: -1, uuid: a}]\n", "GPU indices must be 0..0 (the node has 1), not [-1]"),
    ("gpus: [{index: 0, uuid: a}, {index: 1, uuid: a}]\n", "GPU uuid 'a' is listed twice"),
    ("count: -2\n", "count: must be >= 0, not -2"),
    ("count: 1\nhealthy: 'no'\n", "healthy: must be true or false, not 'no'"),  # bool('no') was True: healthy
], ids=["twice", "gap", "negative", "uuid-twice", "count-negative", "healthy-not-a-bool"])
def test_an_inventory_whose_gpus_the_scheduler_cannot_address_is_refused(tmp_path: Path, text: str, want: str) -> None:
    """The node record says how many GPUs there are, and the scheduler hands out indices
    0..N-1: an inventory listing index 0 twice, or 0 and 2, was taken, and every task given
    index 1 then failed InvalidSpec ('GPU index [1] not on this node'), or two tasks shared a
    GPU. kvraft-agent now refuses it at start (preflight: exit 2 naming --gpu-inventory)."""
    inv = tmp_path / "gpus.yaml"
    inv.write_text(text)
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        load_gpu_inventory(inv)


async def test_a_runtime_that_is_down_makes_the_node_not_ready(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """dockerd stopped under a running agent: every reconcile pass logged a traceback (each
    relist_s) and the node stayed Ready, so the scheduler kept placing tasks that could not
    start. Now the runtime's ping (kubelet's runtime status check) makes the node NotReady
    with the reason until it answers again, and the reconcile passes log one line."""
    import asyncio
    import json

    from agent.agent import Agent
    from agent.config import AgentConfig
    from agent.runtime.base import RuntimeUnavailable
    from agent.runtime.fake import FakeRuntime

    class Broken(FakeRuntime):
        async def observe(self):  # type: ignore[no-untyped-def]
            if self.down:
                raise RuntimeUnavailable(self.down)
            return await super().observe()

    runtime = Broken()
    agent = Agent(AgentConfig(endpoints=["127.0.0.1:1"], name="n-rt", data_dir=tmp_path / "agent", node_status_s=0.02,
                              relist_s=0.01, runtime="fake",  # Ready whatever the test machine's disk holds
                              eviction_hard="nodefs.available<0%,nodefs.inodesFree<0%"), runtime)
    records: list[dict[str, object]] = []

    async def put(key: str, value: bytes, **_: object) -> None:
        records.append(json.loads(value))
    agent.client.put = put  # type: ignore[method-assign]
    agent.registered.set()
    agent._desired_loaded.set()

    def ready() -> tuple[str, str] | None:
        if not records:
            return None
        c = next(c for c in records[-1]["conditions"] if c["type"] == "Ready")  # type: ignore[attr-defined]
        return c["status"], c["message"]

    async def until(want: str) -> tuple[str, str]:
        for _ in range(500):
            got = ready()
            if got is not None and got[0] == want:
                return got
            await asyncio.sleep(0.01)
        raise AssertionError(f"Ready never {want}: {ready()}")

    tasks = [asyncio.get_running_loop().create_task(c) for c in (agent._status_loop(), agent._reconcile_loop())]
    try:
        await until("True")
        runtime.down = "the Docker daemon at /run/docker.sock: Cannot connect"
        status, message = await until("False")
        assert message == "container runtime is down: the Docker daemon at /run/docker.sock: Cannot connect"
        assert records[-1]["healthy"] is False
        passes = agent.reconcile_passes
        for _ in range(20):
            agent.wake()
            await asyncio.sleep(0.01)
        failed = [r for r in caplog.records if "reconcile pass failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].exc_info is None, [r.getMessage() for r in failed]
        assert agent.reconcile_passes == passes
        runtime.down = ""
        await until("True")
        assert records[-1]["healthy"] is True
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.client.close()
