"""``kvctl check datascale``: against kvraft (whose /metrics now carries the process memory
gauges the check reads), and its refusals compared with etcdctl's against etcd 3.4."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from kvclusters import Runtime, start_runtime
from kvctl_harness import Identity, run_etcdctl, run_kvctl

from kvraft.client import SyncClient


@pytest.fixture(scope="module")
def kvraft_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = start_runtime("kvraft", tmp_path_factory.mktemp("ds"))
    yield rt
    rt.stop()


def test_datascale_on_kvraft_writes_measures_and_cleans_up(kvraft_runtime: Runtime) -> None:
    endpoint = kvraft_runtime.endpoints[0]
    result = run_kvctl([f"--endpoints={endpoint}", "check", "datascale", "--limit", "300", "--auto-compact",
                        "--auto-defrag"])
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "Start data scale check for work load [300 key-value pairs, 1024 bytes per key-value, 50 concurrent clients]."
    revision = int(lines[1].rsplit(" ", 1)[1])
    assert lines[1:5] == [f"Compacting with revision {revision}", f"Compacted with revision {revision}",
                          f'Defragmenting "{endpoint}"', f'Defragmented "{endpoint}"']
    assert re.fullmatch(r"PASS: Approximate system memory used : -?\d+\.\d\d MB\.", lines[5]), lines[5]
    assert len(lines) == 6 and "100.00%" in result.err
    with SyncClient([endpoint]) as client:
        assert client.get("/etcdctl-check-datascale/", prefix=True).count == 0


@pytest.mark.parametrize("case", ["has_keys", "bad_load"])
def test_datascale_refusals_match_etcdctl(etcd_pair: tuple[Identity, Identity], case: str) -> None:
    outputs = []
    for ident, runner in ((etcd_pair[0], run_etcdctl), (etcd_pair[1], run_kvctl)):
        argv = [f"--endpoints={ident.endpoint()}", "check", "datascale", "--prefix", "ds/"]
        if case == "has_keys":
            with SyncClient(ident.runtime.endpoints) as client:
                client.put("ds/x", "1")
        else:
            argv += ["--load", "huge"]
        result = runner(argv)
        outputs.append((result.rc, result.out, result.err))
        with SyncClient(ident.runtime.endpoints) as client:
            client.delete("ds/", prefix=True)
    assert outputs[0] == outputs[1]
    assert outputs[1][0] == (3 if case == "has_keys" else 4)
