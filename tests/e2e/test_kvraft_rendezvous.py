"""KvraftRendezvous (kvraft://) against a real one-member kvraft: a get waits for another
rank's set, a missing key times out, and a rank's keys vanish with it (its lease)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from agent.collective.errors import CollectiveTimeout
from agent.collective.rendezvous import KvraftRendezvous, from_url
from kvraft.server.local import LocalCluster


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalCluster(1, tmp_path_factory.mktemp("rdzv")) as cluster:
        cluster.start(timeout_s=120)
        yield cluster.url("m0")


def test_get_waits_for_set_and_keys_go_with_their_rank(endpoint: str) -> None:
    a = KvraftRendezvous([endpoint], "/jobs/t/rendezvous", "run1")
    b = from_url(f"kvraft://{endpoint.split('://')[1]}/jobs/t/rendezvous", rank=1, run_id="run1")
    try:
        threading.Timer(0.5, lambda: a.set("tcp/addr/0", b"127.0.0.1:1234")).start()
        assert b.get("tcp/addr/0", 60.0) == b"127.0.0.1:1234"
        with pytest.raises(CollectiveTimeout):
            b.get("never", 0.5)
        other_run = KvraftRendezvous([endpoint], "/jobs/t/rendezvous", "run2")
        assert other_run.try_get("tcp/addr/0") is None  # runs do not see each other's keys
        other_run.close()
    finally:
        a.close()
    deadline = time.monotonic() + 30
    while isinstance(b, KvraftRendezvous) and b.try_get("tcp/addr/0") is not None:
        assert time.monotonic() < deadline, "the closed rank's key outlived its lease"
        time.sleep(0.1)
    b.close()


def test_init_takes_the_kvraft_endpoints_from_its_env_argument(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # init(env=...) is the environment it reads; kvraft:// read KVRAFT_ENDPOINTS, KVRAFT_JOB,
    # the token and TLS files from os.environ instead ("no kvraft endpoints")
    import numpy as np

    import agent.collective as gx

    monkeypatch.delenv("KVRAFT_ENDPOINTS", raising=False)
    env = {"KVRAFT_ENDPOINTS": endpoint, "KVRAFT_JOB": "t", "KVRAFT_RUN_ID": "env-arg"}
    results: list[object] = [None, None]

    def rank(r: int) -> None:
        try:
            comm = gx.init(backend="tcp", rank=r, size=2, rendezvous="kvraft://", env=env, timeout_s=30)
            a = np.full(10, r + 1.0)
            comm.allreduce(a)
            comm.close()
            results[r] = a
        except BaseException as exc:  # noqa: BLE001
            results[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(a, np.ndarray) and np.all(a == 3.0) for a in results), results


def test_a_failed_init_revokes_its_lease_at_once(endpoint: str) -> None:
    # the rendezvous of a failed init stayed open: its lease was kept alive by its thread and
    # its address stayed published for as long as the process lived
    import agent.collective as gx

    env = {"KVRAFT_ENDPOINTS": endpoint, "KVRAFT_JOB": "t", "KVRAFT_RUN_ID": "failed-init"}
    with pytest.raises(CollectiveTimeout, match="rank 1 did not publish its address"):
        gx.init(backend="tcp", rank=0, size=2, rendezvous="kvraft://", env=env, timeout_s=1.0)
    look = KvraftRendezvous([endpoint], "/jobs/t/rendezvous", "failed-init")
    try:
        assert look.try_get("tcp/addr/0") is None
    finally:
        look.close()
    assert not [t.name for t in threading.enumerate() if t.name in ("rdzv-kvraft", "rdzv-lease") and t.is_alive()]
