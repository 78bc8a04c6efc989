"""What a power cut, and a flipped bit in a meta page, do to an LMDB file under each of the
flag settings we use (``tests/storage/lmdb_crash_model.py`` has the model; the results are
written up in docs/design/storage.md, section 8).

Outcomes of one image, against the commits that had returned before the cut (``r``): the
file opens at committed state ``j`` (``j - r``: ``+1`` the in-flight commit made it, ``-1``
an acknowledged commit was undone), LMDB refuses it, the reader dies of a signal, or it
opens with content that is no committed state at all ("silent")."""

from __future__ import annotations

import collections
import random
import struct
from pathlib import Path

from kvraft.apply.state_machine import StateMachine
from kvraft.server.membership import Membership
from kvraft.storage.mvcc.store import MVCCStore
from tests.storage.lmdb_crash_model import Recorder, crash_image, read_images

SEEDS = (0, 1)
IMAGES = 40


def outcomes(tmp_path: Path, sync: bool, metasync: bool) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for seed in SEEDS:
        rng = random.Random(seed)
        rec = Recorder(tmp_path / f"s{seed}.lmdb", sync, metasync)
        rec.run(rng, commits=10)
        paths, returned = [], []
        for i in range(IMAGES):
            path = tmp_path / f"s{seed}-{i}.img"
            returned.append(crash_image(rec, rng, path))
            paths.append(path)
        for r, result in zip(returned, read_images(paths), strict=True):
            if "digest" in result:
                if result["digest"] in rec.states:
                    counts[f"state {rec.states.index(result['digest']) - r:+d}"] += 1
                else:
                    counts["silent"] += 1
            else:
                counts["refused" if "error" in result else "signal"] += 1
        for path in paths:
            path.unlink()
    return counts


def test_synced_commits_survive_a_power_cut(tmp_path: Path) -> None:
    """sync + metasync (the LMDB Raft log; MVCC stores opened with sync=True): the file is
    always the last acknowledged commit or the one in flight."""
    counts = outcomes(tmp_path, sync=True, metasync=True)
    assert set(counts) <= {"state +0", "state +1"}, counts


def test_without_metasync_a_power_cut_undoes_at_most_the_last_acknowledged_commit(tmp_path: Path) -> None:
    """MDB_NOMETASYNC: integrity holds, but the meta page of the last acknowledged commit may
    not be on disk yet (it is fsynced by the next commit's data sync)."""
    counts = outcomes(tmp_path, sync=True, metasync=False)
    assert set(counts) <= {"state -1", "state +0", "state +1"}, counts
    assert counts["state -1"] > 0, counts  # the model does produce that case


def test_without_sync_a_power_cut_can_leave_a_file_that_is_no_committed_state(tmp_path: Path) -> None:
    """MDB_NOSYNC: nothing orders data pages before the meta page, and pages of the last
    durable tree are reused before any sync, so a cut can leave a damaged file, or one that
    opens with a mix of versions: LMDB's documented limit, and the reason a store that
    must survive power loss is not opened with ``sync=False``."""
    counts = outcomes(tmp_path, sync=False, metasync=True)
    assert counts["silent"] > 0 and counts["refused"] + counts["signal"] > 0, counts


def _meta_layout(psize: int, page: int) -> dict[str, tuple[int, int]]:
    """Field -> (offset in the file, length) of LMDB's MDB_meta on a 64-bit build: a 16-byte
    page header, then magic, version, address, mapsize, the free and main MDB_db records
    (48 bytes each, the root page number last), last_pg, txnid."""
    base = page * psize + 16
    return {"magic+version": (base, 8), "address+mapsize": (base + 8, 16), "free db": (base + 24, 48),
            "main db": (base + 72, 40), "main root": (base + 112, 8), "last_pg": (base + 120, 8),
            "txnid": (base + 128, 8)}


def test_a_flipped_bit_in_a_meta_page_is_refused_harmless_or_the_previous_commit(tmp_path: Path) -> None:
    """A synced file, every bit of both meta pages flipped in turn. LMDB keeps no checksum
    of its meta pages and opens the one with the larger txnid, so a flip that raises the
    older page's txnid or lowers the newer one's below it opens the previous commit without
    a word; a flip in the newer page's root page number can land on the root of any earlier
    commit whose pages LMDB has not reused yet and open that. In this file no flip opened as
    content that is no committed state."""
    rec = Recorder(tmp_path / "f.lmdb", True, True)
    rec.run(random.Random(7), commits=6)
    base = rec.files[-1]
    txnids = [struct.unpack_from("<Q", base, _meta_layout(rec.psize, p)["txnid"][0])[0] for p in (0, 1)]
    newer = txnids.index(max(txnids))
    assert abs(txnids[0] - txnids[1]) == 1
    paths, where = [], []
    for page in (0, 1):
        for field, (offset, length) in _meta_layout(rec.psize, page).items():
            for byte in range(offset, offset + length):
                for bit in range(8):
                    image = bytearray(base)
                    image[byte] ^= 1 << bit
                    path = tmp_path / f"flip-{page}-{byte}-{bit}.img"
                    path.write_bytes(bytes(image))
                    paths.append(path)
                    where.append(("newer" if page == newer else "older", field))
    last, previous = len(rec.states) - 1, len(rec.states) - 2
    seen: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for key, result in zip(where, read_images(paths), strict=True):
        if "digest" in result:
            assert result["digest"] in rec.states, (key, "opened as no committed state")
            state = rec.states.index(result["digest"])
            seen[key]["latest" if state == last else "previous" if state == previous else "earlier"] += 1
        else:
            seen[key]["refused" if "error" in result else "signal"] += 1
    assert seen[("older", "magic+version")] == {"refused": 64}  # LMDB checks both pages' magic
    assert seen[("older", "txnid")]["previous"] >= 56  # every bit above the low byte, and more
    assert set(seen[("older", "main db")]) == {"latest"}  # the older page is not read otherwise
    assert seen[("newer", "txnid")]["previous"] >= 1  # lowered below the older page's
    assert seen[("newer", "main root")]["previous"] + seen[("newer", "main root")]["earlier"] >= 1
    assert all(set(c) <= {"latest", "previous", "refused", "signal"} for k, c in seen.items() if k[1] != "main root")
    rollbacks = sum(c["previous"] + c["earlier"] for c in seen.values())
    assert rollbacks < 2 * 8 * 152 // 4, seen  # most flips are refused or harmless


def test_mvcc_store_opened_without_metasync(tmp_path: Path) -> None:
    """``metasync=False`` reaches LMDB (MDB_NOMETASYNC) and the store works and reopens."""
    store = MVCCStore(tmp_path / "kv", sync=True, metasync=False)
    try:
        flags = store.backend._live.env.flags()
        assert flags["sync"] is True and flags["metasync"] is False
        store.put(b"k", b"v")
    finally:
        store.close()
    store = MVCCStore(tmp_path / "kv")
    try:
        assert store.range(b"k").kvs[0].value == b"v"
    finally:
        store.close()


def test_the_state_machine_store_flags_are_what_the_design_doc_says(tmp_path: Path) -> None:
    """docs/design/storage.md, section 8, states the state machine's LMDB flags and what a
    power cut does with them; this keeps the two in step."""
    machine = StateMachine(tmp_path / "sm", quota_bytes=1 << 30, member_id=1, max_txn_ops=128,
                           membership=Membership())
    try:
        flags = machine.store.backend._live.env.flags()
    finally:
        machine.close()
    text = (Path(__file__).resolve().parents[2] / "docs" / "design" / "storage.md").read_text()
    expected = f"state machine store: sync={flags['sync']}, metasync={flags['metasync']}"
    assert expected in text, f"docs/design/storage.md should say {expected!r}"

