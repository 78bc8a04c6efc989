"""An LMDB Raft log (``raft.lmdb``, older data directories) must never open as an older
commit than its last synced one: that would forget synced entries (acknowledged to a
leader) or a vote, while nothing else would notice (the member's check that the state
machine is not ahead of the log only catches a rollback that lost applied entries).

- A power cut, with the log's flags (sync + metasync), leaves the last acknowledged commit
  or the one in flight: the power-loss model of ``lmdb_crash_model.py``, run on the Raft
  log itself; the log's rollback checks raise no false alarm on any of those images.
- A damaged meta page (LMDB keeps no checksum of it) is what remains: the meta-page check
  and the txnid sealed in every commit's tree refuse it (``raft_log.check_meta_pages``,
  ``LmdbLogStorage._load``). Every bit of the txnid, root and last-page fields of both meta
  pages is flipped in turn: none opens an older commit."""

from __future__ import annotations

import collections
import random
import struct
from pathlib import Path

import pytest

from kvraft.raft.types import ConfState, Entry, HardState
from kvraft.storage.errors import LogCorruptionError
from kvraft.storage.lmdb_env import read_meta_pages
from kvraft.storage.raft_log import LmdbLogStorage
from tests.storage.lmdb_crash_model import Recorder, crash_image, log_digest, read_images


def _batch(log: LmdbLogStorage, rng: random.Random, k: int) -> None:
    """One synced batch of a member's log writes: entries, a hard state (a vote), now and
    then a snapshot and a compaction."""
    hard = log.initial_state()[0]
    term = max(hard.term, 1) + (1 if rng.random() < 0.2 else 0)
    last = log.last_index()
    log.append([Entry(term=term, index=last + 1 + i, data=rng.randbytes(rng.randint(20, 400)))
                for i in range(rng.choice([1, 4, 30]))])
    commit = max(hard.commit, log.last_index() - rng.randint(0, 5))
    log.set_hard_state(HardState(term=term, vote=rng.randint(1, 3), commit=commit))
    if k % 5 == 0 and commit > log.snapshot().metadata.index:
        log.create_snapshot(commit, ConfState(voters=frozenset({1, 2, 3})), b"snap@%d" % commit)
        log.compact(commit - 3)
    log.sync()


def _record(path: Path, seed: int, commits: int) -> Recorder:
    """The file after every synced batch, for the power-loss model."""
    rec = Recorder(path, sync=True, metasync=True)
    rng = random.Random(seed)
    log = LmdbLogStorage(path, map_size=1 << 26)
    try:
        rec.psize = int(log._env.stat()["psize"])
        rec.states.append(log_digest(log))
        rec.files.append(path.read_bytes())
        for k in range(1, commits + 1):
            _batch(log, rng, k)
            rec.states.append(log_digest(log))
            rec.files.append(path.read_bytes())
    finally:
        log.close()
    return rec


def test_the_lmdb_log_is_opened_with_sync_and_metasync(tmp_path: Path) -> None:
    """What the rest of this file relies on: without metasync a power cut can undo the last
    acknowledged commit, and no check inside the file could tell (it is a consistent older
    state, meta pages included)."""
    log = LmdbLogStorage(tmp_path / "raft.lmdb", map_size=1 << 26)
    try:
        flags = log._env.flags()
        assert flags["sync"] is True and flags["metasync"] is True
    finally:
        log.close()


def test_a_power_cut_leaves_the_last_acknowledged_commit_or_the_next(tmp_path: Path) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for seed in (0, 1):
        rec = _record(tmp_path / f"s{seed}.lmdb", seed, commits=12)
        rng = random.Random(100 + seed)
        paths, returned = [], []
        for i in range(40):
            path = tmp_path / f"s{seed}-{i}.img"
            returned.append(crash_image(rec, rng, path))
            paths.append(path)
        for r, result in zip(returned, read_images(paths, raft_log=True), strict=True):
            assert "digest" in result, result  # no refusal: the rollback checks raise no false alarm
            assert result["digest"] in rec.states, "opened as no synced state"
            counts[f"state {rec.states.index(result['digest']) - r:+d}"] += 1
        for path in paths:
            path.unlink()
            Path(f"{path}-lock").unlink(missing_ok=True)
    assert set(counts) <= {"state +0", "state +1"}, counts
    assert counts["state +0"] > 0, counts


def _fields(psize: int, page: int) -> dict[str, tuple[int, int]]:
    """Field -> (offset, length) in the file of LMDB's MDB_meta (64-bit build; see
    ``lmdb_env.read_meta_pages``)."""
    base = page * psize + 16
    return {"free root": (base + 64, 8), "main root": (base + 112, 8), "last_pg": (base + 120, 8),
            "txnid": (base + 128, 8)}


def test_a_damaged_meta_page_never_opens_an_older_commit(tmp_path: Path) -> None:
    rec = _record(tmp_path / "f.lmdb", 7, commits=9)
    base = rec.files[-1]
    metas = read_meta_pages(tmp_path / "f.lmdb")
    assert metas is not None
    txnids = [m.txnid for m in metas]
    newer = txnids.index(max(txnids))
    latest = rec.states[-1]
    paths, where = [], []
    for page in (0, 1):
        for field, (offset, length) in _fields(rec.psize, page).items():
            for bit in range(length * 8):
                image = bytearray(base)
                image[offset + bit // 8] ^= 1 << (bit % 8)
                path = tmp_path / f"flip-{page}-{offset}-{bit}.img"
                path.write_bytes(bytes(image))
                paths.append(path)
                where.append(("newer" if page == newer else "older", field, bit))
    outcomes: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    older_commits = []
    for (role, field, bit), result in zip(where, read_images(paths, raft_log=True), strict=True):
        if "digest" in result:
            assert result["digest"] in rec.states, (role, field, bit, "opened as no synced state")
            if result["digest"] == latest:
                outcomes[(role, field)]["latest"] += 1
            else:
                outcomes[(role, field)]["older"] += 1
                older_commits.append((role, field, bit))
        elif "error" in result:
            kind = "refused: rollback" if "meta page" in result["error"] else "refused"
            outcomes[(role, field)][kind] += 1
        else:
            outcomes[(role, field)]["signal"] += 1
    assert older_commits == [], (older_commits, dict(outcomes))
    assert max(txnids) & 2  # so the newer txnid lowered by exactly 2 (bit 1) is among the flips
    assert outcomes[("older", "txnid")]["refused: rollback"] == 64, dict(outcomes)  # LMDB opened older before
    assert outcomes[("newer", "txnid")]["refused: rollback"] >= 62, dict(outcomes)
    assert outcomes[("older", "main root")] == {"latest": 64}  # LMDB does not read it


def test_the_checks_name_the_transactions(tmp_path: Path) -> None:
    path = tmp_path / "raft.lmdb"
    rec = _record(path, 3, commits=4)
    metas = read_meta_pages(path)
    assert metas is not None
    newer = max((0, 1), key=lambda p: metas[p].txnid)
    t_new, t_old = metas[newer].txnid, metas[1 - newer].txnid
    older_txnid = _fields(rec.psize, 1 - newer)["txnid"][0]

    def damaged(offset: int, value: int) -> None:
        data = bytearray(rec.files[-1])
        struct.pack_into("<Q", data, offset, value)
        path.write_bytes(bytes(data))

    damaged(older_txnid, t_new + 3)  # the older page made newest, its txnid's parity kept
    with pytest.raises(LogCorruptionError, match=f"meta pages hold transactions .*{t_new}.* a meta page is damaged"):
        LmdbLogStorage(path, map_size=1 << 26)
    damaged(older_txnid, t_new + 1)  # the same, with txnids consecutive: the tree says who wrote it
    with pytest.raises(LogCorruptionError, match=f"opened transaction {t_new + 1}, but the tree it reads was "
                       f"written by transaction {t_old}"):
        LmdbLogStorage(path, map_size=1 << 26)
    damaged(_fields(rec.psize, newer)["txnid"][0], t_new - 2)  # lowered by 2: still consecutive with t_old
    with pytest.raises(LogCorruptionError, match=f"LMDB would open transaction {t_old}, but the other meta page "
                       f"points at a tree written by transaction {t_new}"):
        LmdbLogStorage(path, map_size=1 << 26)
    older_root = struct.unpack_from("<Q", rec.files[-1], _fields(rec.psize, 1 - newer)["main root"][0])[0]
    damaged(_fields(rec.psize, newer)["main root"][0], older_root)  # the newer page pointing at the older tree
    with pytest.raises(LogCorruptionError, match=f"opened transaction {t_new}, but the tree it reads was "
                       f"written by transaction {t_old}"):
        LmdbLogStorage(path, map_size=1 << 26)
    path.write_bytes(rec.files[-1])
    log = LmdbLogStorage(path, map_size=1 << 26)  # intact: opens, and every sync seals the next txnid
    try:
        assert log_digest(log) == rec.states[-1]
        _batch(log, random.Random(9), 1)
    finally:
        log.close()
    LmdbLogStorage(path, map_size=1 << 26).close()


def test_files_of_older_versions_open_and_are_sealed_from_their_next_commit(tmp_path: Path) -> None:
    """Older versions created the two databases in two commits and sealed no txnid."""
    import lmdb

    empty = tmp_path / "empty.lmdb"
    env = lmdb.open(str(empty), subdir=False, map_size=1 << 26, max_dbs=2)
    env.open_db(b"entries")
    env.open_db(b"state")
    env.close()
    LmdbLogStorage(empty, map_size=1 << 26).close()

    path = tmp_path / "raft.lmdb"
    rec = _record(path, 4, commits=3)
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, max_dbs=2)
    with env.begin(write=True) as txn:  # as an older version left it: no sealed txnid
        assert txn.delete(b"txnid", db=env.open_db(b"state", txn=txn))
    env.close()
    log = LmdbLogStorage(path, map_size=1 << 26)
    try:
        assert log_digest(log) == rec.states[-1]
        _batch(log, random.Random(5), 1)
        digest = log_digest(log)
    finally:
        log.close()
    log = LmdbLogStorage(path, map_size=1 << 26)
    try:
        assert log_digest(log) == digest
        with log._env.begin() as txn:
            assert txn.get(b"txnid", db=log._state_db) is not None
    finally:
        log.close()


def test_a_member_refuses_to_start_on_a_rolled_back_lmdb_log(tmp_path: Path) -> None:
    """End to end: a member of an older data directory (``raft.lmdb``) serves, stops; its
    newer meta page's txnid lowered by 2 (the flip that keeps the txnids consistent) makes
    it exit 1 with the reason, every time; the intact file starts again."""
    import base64
    import shutil
    import subprocess

    from kvraft.server.local import LocalCluster, post
    from kvraft.storage.wal import WalLogStorage

    def put(url: str, key: str) -> None:
        status, _ = post(url, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(), "value": "dg=="})
        assert status == 200

    with LocalCluster(1, tmp_path / "c") as cluster:
        cluster.start(timeout_s=120)
        put(cluster.url("m0"), "before")
        cluster.stop_member("m0")
        member = cluster.members["m0"]
        data = member.data_dir
        wal = WalLogStorage(data / "raft.wal")  # the same log, as an older version kept it
        legacy = LmdbLogStorage(data / "raft.lmdb")
        if wal.snapshot().metadata.index:
            legacy.apply_snapshot(wal.snapshot())
        legacy.append(wal.entries(wal.first_index(), wal.last_index() + 1))
        hard, conf = wal.initial_state()
        legacy.set_conf_state(conf, wal._conf_index)
        legacy.set_hard_state(hard)
        legacy.close()
        wal.close()
        shutil.rmtree(data / "raft.wal")
        cluster.start_member("m0")
        cluster.wait_ready(120)
        put(cluster.url("m0"), "after")
        cluster.stop_member("m0")
        assert not (data / "raft.wal").exists()  # it ran on the LMDB log

        path = data / "raft.lmdb"
        intact = path.read_bytes()
        metas = read_meta_pages(path)
        assert metas is not None
        newer = max((0, 1), key=lambda p: metas[p].txnid)
        damaged = bytearray(intact)
        struct.pack_into("<Q", damaged, newer * metas[0].psize + 16 + 128, metas[newer].txnid - 2)
        path.write_bytes(bytes(damaged))
        for _ in range(2):
            done = subprocess.run(cluster.command(member, cluster.initial_cluster(), "new"),
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, done.stderr[-2000:]
            assert "newer meta page's txnid is damaged" in done.stderr and "refusing to open it" in done.stderr
        assert path.read_bytes() == bytes(damaged)  # nothing was written to it
        path.write_bytes(intact)
        cluster.start_member("m0")
        cluster.wait_ready(120)
        status, doc = post(cluster.url("m0"), "/v3/kv/range", {"key": base64.b64encode(b"after").decode()})
        assert status == 200 and doc.get("count") in (1, "1"), doc


def test_copies_made_by_lmdb_open(tmp_path: Path) -> None:
    """A plain copy keeps the txnids; a compacting one (``mdb_copy -c``) restarts them at 1
    with the copied tree: both are intact logs, not rollbacks."""
    rec = _record(tmp_path / "raft.lmdb", 6, commits=6)
    log = LmdbLogStorage(tmp_path / "raft.lmdb", map_size=1 << 26)
    try:
        log._env.copy(str(tmp_path / "plain.lmdb"))
        log._env.copy(str(tmp_path / "compact.lmdb"), compact=True)
    finally:
        log.close()
    for name in ("plain.lmdb", "compact.lmdb"):
        copy = LmdbLogStorage(tmp_path / name, map_size=1 << 26)
        try:
            assert log_digest(copy) == rec.states[-1]
            _batch(copy, random.Random(2), 1)
            digest = log_digest(copy)
        finally:
            copy.close()
        again = LmdbLogStorage(tmp_path / name, map_size=1 << 26)
        try:
            assert log_digest(again) == digest
        finally:
            again.close()
