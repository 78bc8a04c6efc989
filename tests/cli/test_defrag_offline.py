"""``kvctl defrag --data-dir``: a stopped member's backend defragmented in place (data
intact, the member starts from it); refused while the member runs or when there is no
backend."""

from __future__ import annotations

from pathlib import Path

from kvclusters import start_runtime
from kvctl_harness import run_kvctl

from kvraft.client import SyncClient


def _backend_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "mvcc.lmdb").glob("kv-*.lmdb"))


def test_offline_defrag_of_a_stopped_member(tmp_path: Path) -> None:
    rt = start_runtime("kvraft", tmp_path)
    member = next(iter(rt.cluster.members.values()))
    try:
        with SyncClient(rt.endpoints) as client:
            for i in range(300):
                client.put(f"df/{i:03d}", "x" * 2000)
            client.delete("df/", prefix=True)
            revision = client.put("df/kept", "yes").header.revision
            client.compact(revision, physical=True)
        running = run_kvctl(["defrag", "--data-dir", str(member.data_dir)])
        assert running.rc == 1 and "a running member has it open" in running.err
        rt.cluster.stop_member(member.name)
        before = _backend_bytes(member.data_dir)
        result = run_kvctl(["defrag", "--data-dir", str(member.data_dir)])
        assert (result.rc, result.out, result.err) == (0, "", "")
        assert _backend_bytes(member.data_dir) < before
        rt.cluster.start_member(member.name)
        rt.cluster.wait_ready(90)
        with SyncClient(rt.endpoints) as client:
            got = client.get("df/", prefix=True)
            assert [(kv.key, kv.value) for kv in got.kvs] == [(b"df/kept", b"yes")]
            assert got.header.revision == revision
    finally:
        rt.stop()


def test_offline_defrag_without_a_backend(tmp_path: Path) -> None:
    result = run_kvctl(["defrag", "--data-dir", str(tmp_path / "none")])
    assert result.rc == 1 and result.err.startswith(f"Error: cannot open database at {tmp_path / 'none' / 'mvcc.lmdb'}")
