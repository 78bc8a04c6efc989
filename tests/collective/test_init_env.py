"""``init()`` checks the launcher's environment before it connects anywhere: a bad value is a
ValueError that names the variable (it was int()'s or float()'s bare message, or accepted:
a heartbeat of 0 made the monitor spin, a NaN hang timeout never judged a rank hung)."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.collective as gx


@pytest.mark.parametrize(("env", "message"), [
    ({"KVRAFT_WORLD_SIZE": "two"}, "KVRAFT_WORLD_SIZE='two' is not an integer"),
    ({"KVRAFT_WORLD_SIZE": "2", "KVRAFT_RANK": "0x1"}, "KVRAFT_RANK='0x1' is not an integer"),
    ({"KVRAFT_WORLD_SIZE": "", "OMPI_COMM_WORLD_SIZE": "4.0"}, "OMPI_COMM_WORLD_SIZE='4.0' is not an integer"),
    ({"KVRAFT_WORLD_SIZE": "0"}, "world size must be at least 1, not 0"),
    ({"KVRAFT_WORLD_SIZE": "-2", "KVRAFT_RANK": "-1"}, "world size must be at least 1, not -2"),
    ({"KVRAFT_WORLD_SIZE": "2", "KVRAFT_RANK": "-1"}, "rank -1 out of range for world size 2"),
    ({"KVRAFT_COLLECTIVE_HEARTBEAT_S": "fast"}, "KVRAFT_COLLECTIVE_HEARTBEAT_S='fast' is not a number of seconds"),
    ({"KVRAFT_COLLECTIVE_HEARTBEAT_S": "0"}, "KVRAFT_COLLECTIVE_HEARTBEAT_S must be a positive number of seconds, not 0.0"),
    ({"KVRAFT_COLLECTIVE_HANG_TIMEOUT_S": "nan"}, "KVRAFT_COLLECTIVE_HANG_TIMEOUT_S must be a positive number"),
    ({"KVRAFT_COLLECTIVE_HANG_TIMEOUT_S": "inf"}, "KVRAFT_COLLECTIVE_HANG_TIMEOUT_S must be a positive number"),
    ({"KVRAFT_COLLECTIVE_STALL_TIMEOUT_S": "-1"}, "KVRAFT_COLLECTIVE_STALL_TIMEOUT_S must be a positive number"),
    ({"KVRAFT_COLLECTIVE_STARVED_TIMEOUT_S": "30s"}, "KVRAFT_COLLECTIVE_STARVED_TIMEOUT_S='30s' is not a number"),
])
def test_bad_environment_is_named_before_connecting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    # two ranks through a directory no peer ever writes: only a check before it can answer at once
    env = {"KVRAFT_RENDEZVOUS": f"file://{tmp_path}", "KVRAFT_WORLD_SIZE": "2", "KVRAFT_RANK": "1", **env}
    with pytest.raises(ValueError) as info:
        gx.init(env=env, timeout_s=30)
    assert message in str(info.value)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="heartbeat_s must be a positive number of seconds, not -1"):
        gx.init(heartbeat_s=-1, env={})
    with pytest.raises(ValueError, match="hang_timeout_s must be a positive number of seconds, not nan"):
        gx.init(hang_timeout_s=float("nan"), env={})
    for bad in (0, -1, float("nan"), float("inf")):  # "within nan s" at once; inf waited for ever
        with pytest.raises(ValueError, match="timeout_s must be a positive number of seconds"):
            gx.init(timeout_s=bad, env={})


def test_a_fixed_cma_threshold_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    env = {"KVRAFT_RENDEZVOUS": f"file://{tmp_path}", "KVRAFT_COLLECTIVE_CMA_MIN_BYTES": "lots"}
    with pytest.raises(ValueError, match=r"KVRAFT_COLLECTIVE_CMA_MIN_BYTES='lots' is not a number of bytes \(or 'probe'\)"):
        gx.init(backend="tcp", rank=1, size=2, env=env, timeout_s=30)


def test_init_timeout_bounds_the_wait_for_a_rank_that_never_arrives(tmp_path: Path) -> None:
    # the ring waited its own 60 s whatever init(timeout_s=) said
    env = {"KVRAFT_RENDEZVOUS": f"file://{tmp_path}", "KVRAFT_WORLD_SIZE": "2", "KVRAFT_RANK": "0"}
    with pytest.raises(gx.CollectiveTimeout, match=r"rank 1 did not publish its address \(tcp/addr/1\) within 0.5 s"):
        gx.init(backend="tcp", env=env, timeout_s=0.5)


def test_a_failed_init_releases_the_store_rank_0_hosts() -> None:
    # the server, its port and its thread outlived the error: a training script that retried
    # init in the same process got 'Address already in use' instead of the real cause again
    from agent.collective.launch import free_port

    url = f"tcp://127.0.0.1:{free_port()}"
    for _ in range(2):
        with pytest.raises(gx.CollectiveTimeout, match="rank 1 did not publish its address"):
            gx.init(backend="tcp", rank=0, size=2, rendezvous=url, env={}, timeout_s=0.5)


def test_an_empty_collective_host_is_the_default_not_every_interface(tmp_path: Path) -> None:
    # KVRAFT_COLLECTIVE_HOST="" bound the ring's listener to every interface and published
    # ":<port>", an address no peer can dial
    from agent.collective.rendezvous import FileRendezvous

    env = {"KVRAFT_RENDEZVOUS": f"file://{tmp_path}", "KVRAFT_RUN_ID": "r", "KVRAFT_COLLECTIVE_HOST": ""}
    with pytest.raises(gx.CollectiveTimeout):
        gx.init(backend="tcp", rank=0, size=2, env=env, timeout_s=0.5)
    assert FileRendezvous(tmp_path, "r").get("tcp/addr/0", 1).startswith(b"127.0.0.1:")


def test_empty_collective_variables_are_unset(tmp_path: Path) -> None:
    # KVRAFT_COLLECTIVE_HIERARCHICAL="" forced the hierarchical mode on, and an empty
    # KVRAFT_COLLECTIVE_BACKEND or _LINKS was "unknown backend ''" / "links must be one of"
    import threading

    env = {"KVRAFT_RENDEZVOUS": f"file://{tmp_path}", "KVRAFT_RUN_ID": "r", "KVRAFT_WORLD_SIZE": "2",
           "KVRAFT_PLACEMENT": "n0,n1", "KVRAFT_COLLECTIVE_HIERARCHICAL": "", "KVRAFT_COLLECTIVE_BACKEND": "",
           "KVRAFT_COLLECTIVE_LINKS": ""}
    names: list[object] = [None, None]

    def rank(r: int) -> None:
        try:
            comm = gx.init(env=dict(env, KVRAFT_RANK=str(r)), timeout_s=30)
            names[r] = (comm.backend_name, comm.backend.link_mode)  # type: ignore[attr-defined]
            comm.close()
        except BaseException as exc:  # noqa: BLE001
            names[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert names == [("tcp", "auto")] * 2
