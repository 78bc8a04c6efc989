"""agent.eviction: kubelet's --eviction-hard thresholds behind the pressure conditions."""

from __future__ import annotations

import pytest

from agent.config import load_config
from agent.devices import load_gpu_inventory, machine_facts
from agent.eviction import DEFAULT_EVICTION_HARD, Threshold, parse_eviction_hard, pressures
from agent.node_record import conditions

GI = 2**30


def test_defaults_are_kubelets_and_a_flag_overrides_only_what_it_names() -> None:
    t = parse_eviction_hard("")
    assert t["memory.available"] == Threshold("memory.available", amount=100 * 2**20)
    assert t["nodefs.available"] == Threshold("nodefs.available", percent=10.0)
    assert t["nodefs.inodesFree"].percent == 5.0 and t["pid.available"].percent == 10.0
    assert parse_eviction_hard(DEFAULT_EVICTION_HARD) == t
    local = parse_eviction_hard("nodefs.available<1Gi, nodefs.inodesFree<1%")
    assert local["nodefs.available"] == Threshold("nodefs.available", amount=GI)
    assert local["nodefs.inodesFree"].percent == 1.0 and local["memory.available"] == t["memory.available"]
    assert parse_eviction_hard("pid.available<2000")["pid.available"] == Threshold("pid.available", amount=2000)
    assert parse_eviction_hard("memory.available<1.5G")["memory.available"].amount == 1.5e9


@pytest.mark.parametrize(("text", "message"), [
    ("nodefs.available", "is not signal<quantity"),
    ("disk.free<10%", "unknown signal 'disk.free'"),
    ("nodefs.available<110%", "is not a percentage from 0% to 100%"),
    ("nodefs.available<-1%", "is not a percentage"),
    ("nodefs.available<ten", "is not a byte quantity"),
    ("nodefs.available<1Zi", "is not a byte quantity"),
    ("pid.available<1Gi", "is not a count"),
    ("nodefs.available<1Gi,nodefs.available<2Gi", "nodefs.available given twice"),
])
def test_a_bad_threshold_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--eviction-hard") as err:
        parse_eviction_hard(text)
    assert message in str(err.value)


def test_pressure_is_below_a_percentage_or_an_amount_and_zero_turns_a_signal_off() -> None:
    disk = {"nodefs.available": (25.0 * GI, 258.0 * GI)}  # CI's disk on 2026-12-05: 9.7% free
    assert pressures(disk, parse_eviction_hard("")) == {
        "DiskPressure": ("nodefs.available < 10%", "nodefs.available 25.0Gi (9.7%) < 10%")}
    assert pressures(disk, parse_eviction_hard("nodefs.available<1Gi")) == {}
    assert pressures({"nodefs.available": (0.5 * GI, 258.0 * GI)}, parse_eviction_hard("nodefs.available<1Gi")) == {
        "DiskPressure": ("nodefs.available < 1.0Gi", "nodefs.available 512.0Mi (0.2%) < 1.0Gi")}
    assert pressures({"nodefs.available": (0.0, 1.0)}, parse_eviction_hard("nodefs.available<0%")) == {}
    both = pressures({"nodefs.available": (1.0, 100.0), "nodefs.inodesFree": (1.0, 100.0)}, parse_eviction_hard(""))
    assert both["DiskPressure"][0] == "nodefs.available < 10%; nodefs.inodesFree < 5%"
    assert pressures({"pid.available": (100.0, 32768.0), "memory.available": (50.0 * 2**20, 24.0 * GI)},
                     parse_eviction_hard("")).keys() == {"PIDPressure", "MemoryPressure"}


def test_a_node_under_disk_pressure_is_not_ready_and_says_why(tmp_path) -> None:
    gpus = load_gpu_inventory(None, nvidia_smi="no-such-nvidia-smi")
    facts = machine_facts(tmp_path, parse_eviction_hard("nodefs.available<100%"))  # never all free
    assert "DiskPressure" in facts["pressure"] and "MemoryPressure" not in facts["pressure"]
    conds = {c["type"]: c for c in conditions(facts, gpus, [], 1.0)}
    assert conds["DiskPressure"] == {"type": "DiskPressure", "status": "True", "message": "nodefs.available < 100%",
                                     "last_transition": 1.0}
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["message"] == "DiskPressure: nodefs.available < 100%"
    relaxed = machine_facts(tmp_path, parse_eviction_hard("nodefs.available<0%,nodefs.inodesFree<0%"))
    assert relaxed["pressure"].keys() <= {"MemoryPressure", "PIDPressure"}
    gone = machine_facts(tmp_path / "removed", parse_eviction_hard("nodefs.available<1Gi"))  # no data dir: no room
    assert "DiskPressure" in gone["pressure"]


def test_the_flag_and_the_yaml_mapping(tmp_path) -> None:
    cfg = load_config(["--name", "n1", "--eviction-hard", "nodefs.available<1Gi"])
    assert cfg.eviction_hard == "nodefs.available<1Gi"
    conf = tmp_path / "agent.yaml"
    conf.write_text("name: n1\neviction-hard: {nodefs.available: 2Gi, pid.available: '5%'}\n")
    cfg = load_config(["--config", str(conf)])
    assert parse_eviction_hard(cfg.eviction_hard)["nodefs.available"].amount == 2 * GI
    with pytest.raises(ValueError, match="unknown signal"):
        load_config(["--name", "n1", "--eviction-hard", "imagefs.available<15%"])


async def test_the_agent_logs_when_a_pressure_begins_and_ends(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """One warning with the figures when DiskPressure begins (the failure digest shows it: CI's
    NotReady agents of stop 34 logged nothing), one info line when it ends; none while it lasts."""
    import logging

    from agent.agent import Agent
    from agent.config import AgentConfig
    from agent.runtime.fake import FakeRuntime

    agent = Agent(AgentConfig(endpoints=["127.0.0.1:1"], name="n-ev", data_dir=tmp_path / "agent", runtime="fake",
                              eviction_hard="nodefs.available<100%"), FakeRuntime())
    try:
        (tmp_path / "agent").mkdir(exist_ok=True)
        with caplog.at_level(logging.INFO, logger="kvraft.agent"):
            first = agent.node_record()
            agent.node_record()
            agent.eviction_hard = parse_eviction_hard("nodefs.available<0%")
            last = agent.node_record()
    finally:
        await agent.client.close()
    assert first["healthy"] is False and first["machine"]["eviction_hard"]["nodefs.available"] == "100%"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "DiskPressure" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    assert "nodefs.available" in warned[0].fields["why"] and "< 100%" in warned[0].fields["why"]  # type: ignore[attr-defined]
    assert [r.getMessage() for r in caplog.records if "any more" in r.getMessage()] == ["no DiskPressure any more"]
    assert {c["type"]: c["status"] for c in last["conditions"]}["DiskPressure"] == "False"
