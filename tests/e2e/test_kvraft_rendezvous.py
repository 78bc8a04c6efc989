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
