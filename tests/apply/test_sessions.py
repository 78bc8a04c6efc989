"""``kvraft.apply.sessions``: numbered writes (``Kvraft-Request-Id``) applied at most once.

The header's parser, the answers' codec, and the table driven through a real
``StateMachine`` (``apply_ops`` with ``SessionOp`` entries): a copy answered with the first
copy's answer and nothing applied again, ``first`` dropping answers, the table kept across a
restart, a snapshot and an aborted batch, clients expired by the entries' own clock, the
caps, and every member (restarted or not) ending in the same state."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.apply import sessions as sessions_module
from kvraft.apply.chain import CompactResult
from kvraft.apply.errors import (
    DataLoss,
    EtcdError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unknown,
)
from kvraft.apply.ops import BatchOp, Compare, DeleteRangeOp, PutOp, RangeOp, SessionOp, TxnOp
from kvraft.apply.sessions import (
    ALREADY_ANSWERED,
    ANSWER_NOT_KEPT,
    MAX_ANSWER_BYTES,
    PREFIX,
    TTL_MS,
    RequestId,
    decode_answer,
    encode_answer,
    parse_request_id,
)
from kvraft.apply.state_machine import StateMachine
from kvraft.raft.types import Snapshot, SnapshotMetadata
from kvraft.server.membership import Membership
from kvraft.storage.mvcc.types import DeleteRangeResult, KeyValue, PutResult, RangeResult, TxnResult
from kvraft.storage.schema import BUCKET_META
from tests.storage.test_mvcc_group_commit import Boom

A, B, C = 0xA1, 0xB2, 0xC3
T0 = 1_700_000_000_000  # a wall clock in ms


# -- helpers ----------------------------------------------------------------------------------

def machine(path: Path) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())


def apply(sm: StateMachine, *ops: Any) -> list[Any]:
    """``ops`` as the entries of one Ready (the next Raft index)."""
    index = sm.applied_index() + 1
    return sm.apply_ops([(i + 1, op) for i, op in enumerate(ops)], index, 1)


def one(sm: StateMachine, op: Any) -> Any:
    (result,) = apply(sm, op)
    return result


def numbered(client: int, seq: int, op: Any, *, first: int = 1, stamp: int = T0) -> SessionOp:
    return SessionOp(client, seq, first, stamp, op)


def kvs(sm: StateMachine) -> tuple[KeyValue, ...]:
    return tuple(sm.range(RangeOp(b"\0", b"\0")).kvs)


def get(sm: StateMachine, key: bytes) -> KeyValue | None:
    found = sm.range(RangeOp(key)).kvs
    return found[0] if found else None


def session_records(sm: StateMachine) -> dict[bytes, bytes]:
    """The table's records in the ``meta`` bucket (what a restart or a snapshot carries),
    once what is held is committed (a read transaction sees the last commit)."""
    sm.commit()
    records: dict[bytes, bytes] = {}
    with sm.store.backend.read() as read:
        cursor = read.txn.cursor(db=read.dbis[BUCKET_META])
        if cursor.set_range(PREFIX):
            for key, raw in cursor:
                if not bytes(key).startswith(PREFIX):
                    break
                records[bytes(key)] = bytes(raw)
    return records


def answer_records(sm: StateMachine, client: int) -> list[int]:
    """The seqs of ``client`` whose answers are on disk."""
    head = PREFIX + client.to_bytes(8, "big")
    return sorted(int.from_bytes(k[len(head):], "big") for k in session_records(sm) if k.startswith(head)
                  and len(k) == len(head) + 8)


def shape(value: Any) -> Any:
    """``value`` with every type spelled out, to compare: NamedTuples compare as plain
    tuples and bools as ints (``DeleteRangeResult(7, 0) == TxnResult(7, False)``)."""
    if isinstance(value, EtcdError):
        return ("error", type(value).__name__, value.code, value.message)
    if isinstance(value, tuple):
        return (type(value).__name__, tuple(shape(v) for v in value))
    return (type(value).__name__, value)


# -- 1. the header ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("a1:1:1", RequestId(0xA1, 1, 1)),
    ("ffffffffffffffff:5:3", RequestId(2**64 - 1, 5, 3)),
    ("A1:7:7", RequestId(0xA1, 7, 7)),
    ("1:9223372036854775807:1", RequestId(1, 2**63 - 1, 1)),
    (" a1:2:1 ", RequestId(0xA1, 2, 1)),  # (the header's surrounding blanks are not part of it)
])
def test_a_well_formed_request_id_parses(text: str, want: RequestId) -> None:
    assert parse_request_id(text) == want


@pytest.mark.parametrize("text", [
    "",
    "x:1:1",  # client not hex
    "0:1:1",  # client 0
    "a1:0:0",  # seq and first from 1
    "a1:1:0",
    "a1:2:3",  # first > seq
    "a1:1",  # two parts
    "a1:1:1:1",
    "a1::1",
    "a1:-1:1",
    "a1:1:-1",
    "a1: 1:1",  # blanks inside
    "0xa1:1:1",  # what Python's int() would also take: not the header's grammar
    "a_1:1:1",
    "a1:1_0:1",
    "a1:01:1",
    "a1:\u0661:\u0661",  # (Arabic-Indic digits)
    "a1:1:1\n:",
    "a1:1 :1",
    "+a1:1:1",  # signs
    "a1:+1:1",
    "-a1:1:1",
    "10000000000000000:1:1",  # client >= 2^64
    "a1:9223372036854775808:1",  # seq >= 2^63
    "a1:9223372036854775808:9223372036854775808",
])
def test_a_malformed_request_id_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_request_id(text)
    assert caught.value.code == 3
    assert sessions_module.HEADER in caught.value.message


# -- 2. the answers' codec ----------------------------------------------------------------------

KV1 = KeyValue(b"k", 2, 5, 3, b"v", 0)
KV2 = KeyValue(b"\x00\xff", 9, 9, 1, b"", 7)

ANSWERS: list[Any] = [
    PutResult(5),
    PutResult(6, KV1),
    DeleteRangeResult(7, 0),
    DeleteRangeResult(8, 2),  # deleted without prev_kv asked for
    DeleteRangeResult(8, 2, (KV1, KV2)),
    RangeResult(),
    RangeResult((KV1, KV2), True, 10, 11),
    TxnResult(12, False),
    TxnResult(13, True, (
        PutResult(13, KV1),
        RangeResult((KV2,), False, 1, 13),
        DeleteRangeResult(13, 1, (KV2,)),
        TxnResult(0, True, (PutResult(13), TxnResult(0, False, ()))),  # nested txns: header revision 0
    )),
    CompactResult(14),  # a compaction's (its physical job is not kept)
    15,  # a lease revoke's, a user or role change's revision
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: type(a).__name__)
def test_an_answer_round_trips(answer: Any) -> None:
    data = encode_answer(answer)
    assert isinstance(data, bytes) and len(data) <= MAX_ANSWER_BYTES
    assert shape(decode_answer(data)) == shape(answer)


ERRORS = [Unknown, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, FailedPrecondition,
          OutOfRange, Internal, Unavailable, DataLoss, Unauthenticated]


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_an_error_round_trips_with_its_class_code_and_message(cls: type[EtcdError]) -> None:
    error = cls(f"etcdserver: {cls.__name__} \u00e9 happened")
    decoded = decode_answer(encode_answer(error))
    assert type(decoded) is cls
    assert decoded.code == cls.code
    assert decoded.message == error.message and str(decoded) == str(error)


def test_an_answer_too_large_decodes_to_failed_precondition_naming_its_revision() -> None:
    big = PutResult(77, KeyValue(b"k", 3, 77, 2, b"x" * MAX_ANSWER_BYTES))
    data = encode_answer(big)
    assert len(data) < 100  # the revision alone is kept
    decoded = decode_answer(data)
    assert type(decoded) is FailedPrecondition and decoded.code == 9
    assert "revision 77" in decoded.message
    size = len(msgpack.packb(["p", 77, list(big.prev_kv)], use_bin_type=True))
    assert decoded.message == ANSWER_NOT_KEPT.format(revision=77, size=size)


def test_a_large_txn_answer_keeps_the_txns_revision() -> None:
    kvs_ = tuple(KeyValue(b"k%05d" % i, 2, 2, 1, b"v" * 64) for i in range(400))
    decoded = decode_answer(encode_answer(TxnResult(31, True, (RangeResult(kvs_, False, 400, 31),))))
    assert type(decoded) is FailedPrecondition and "revision 31" in decoded.message


def test_the_size_limit_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = PutResult(5, KV1)
    size = len(encode_answer(answer))
    monkeypatch.setattr(sessions_module, "MAX_ANSWER_BYTES", size)
    assert shape(decode_answer(encode_answer(answer))) == shape(answer)
    monkeypatch.setattr(sessions_module, "MAX_ANSWER_BYTES", size - 1)
    assert decode_answer(encode_answer(answer)).message == ANSWER_NOT_KEPT.format(revision=5, size=size)


def test_a_result_without_an_answer_form_is_kept_as_not_kept() -> None:
    """(Only put, delete and txn are numbered; anything else is kept as "applied, answer not
    kept" rather than stopping the member after it applied.)"""
    decoded = decode_answer(encode_answer([PutResult(1)]))  # (a batch's list has no answer form)
    assert isinstance(decoded, FailedPrecondition) and "too large to keep" in decoded.message


U63 = st.integers(0, 2**63 - 1)
key_values = st.builds(KeyValue, st.binary(max_size=8), U63, U63, U63, st.binary(max_size=16), U63)
answers = st.recursive(
    st.one_of(
        st.builds(PutResult, U63, st.none() | key_values),
        st.builds(DeleteRangeResult, U63, U63, st.lists(key_values, max_size=3).map(tuple)),
        st.builds(RangeResult, st.lists(key_values, max_size=3).map(tuple), st.booleans(), U63, U63),
    ),
    lambda inner: st.builds(TxnResult, U63, st.booleans(), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(answers)
def test_property_answers_round_trip(answer: Any) -> None:
    assert shape(decode_answer(encode_answer(answer))) == shape(answer)


# -- 3. through the state machine ---------------------------------------------------------------

def test_the_first_copy_applies_and_a_copy_gets_its_answer_applying_nothing(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        first = one(sm, numbered(A, 1, PutOp(b"k", b"v")))
        assert isinstance(first, PutResult)
        assert get(sm, b"k") == KeyValue(b"k", first.revision, first.revision, 1, b"v")
        rev = sm.revision()
        again = one(sm, numbered(A, 1, PutOp(b"k", b"v")))  # the same copy
        other = one(sm, numbered(A, 1, DeleteRangeOp(b"k")))  # a copy holding another op
        assert shape(again) == shape(first) and shape(other) == shape(first)
        assert sm.revision() == rev
        assert get(sm, b"k") == KeyValue(b"k", first.revision, first.revision, 1, b"v")  # version 1 still
        assert (sm.sessions.applied, sm.sessions.duplicates) == (1, 2)
        assert len(sm.sessions) == 1
    finally:
        sm.close()


def test_a_copy_gets_the_first_prev_kv_even_after_the_key_changed(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        apply(sm, PutOp(b"k", b"old"))
        old = get(sm, b"k")
        first = one(sm, numbered(A, 1, PutOp(b"k", b"new", prev_kv=True)))
        assert first.prev_kv == old
        apply(sm, PutOp(b"k", b"later"))  # an unnumbered write in between
        rev = sm.revision()
        copy = one(sm, numbered(A, 1, PutOp(b"k", b"new", prev_kv=True)))
        assert shape(copy) == shape(first) and copy.prev_kv == old
        assert sm.revision() == rev and get(sm, b"k").value == b"later"
    finally:
        sm.close()


def test_copies_in_the_same_ready_as_the_first_apply_once(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        rev = sm.revision()
        txn = TxnOp([Compare(target=0, key=b"t", version=0)], [PutOp(b"t", b"1"), RangeOp(b"t")], [])
        results = apply(sm, numbered(A, 1, txn), numbered(A, 1, txn), numbered(B, 1, PutOp(b"u", b"1")))
        assert isinstance(results[0], TxnResult) and results[0].succeeded
        assert shape(results[1]) == shape(results[0])
        assert sm.revision() == rev + 2  # A's txn and B's put
        assert get(sm, b"t").version == 1
    finally:
        sm.close()


def test_an_error_is_kept_and_raised_again_for_a_copy(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        refused = one(sm, numbered(A, 1, PutOp(b"missing", b"", ignore_value=True)))
        assert type(refused) is InvalidArgument and refused.message == "etcdserver: key not found"
        apply(sm, PutOp(b"missing", b"now"))  # the key exists now: applied again, it would succeed
        rev = sm.revision()
        copy = one(sm, numbered(A, 1, PutOp(b"missing", b"", ignore_value=True)))
        assert shape(copy) == shape(refused)
        assert sm.revision() == rev and get(sm, b"missing").version == 1
        assert sm.sessions.duplicates == 1
    finally:
        sm.close()


def test_a_seq_below_first_is_refused_already_answered_and_not_applied(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        for seq in (1, 2):
            one(sm, numbered(A, seq, PutOp(b"k%d" % seq, b"v"), first=1))
        third = one(sm, numbered(A, 3, PutOp(b"k3", b"v"), first=3))  # seqs 1 and 2 answered: dropped
        assert answer_records(sm, A) == [3]
        rev = sm.revision()
        for seq in (1, 2):
            refused = one(sm, numbered(A, seq, PutOp(b"k%d" % seq, b"again"), first=seq))
            assert type(refused) is FailedPrecondition and refused.code == 9
            assert refused.message == ALREADY_ANSWERED.format(client=A, seq=seq)
        assert sm.revision() == rev
        assert [kv.value for kv in kvs(sm)] == [b"v", b"v", b"v"]
        # a later op with a lower first does not move first back
        one(sm, numbered(A, 4, PutOp(b"k4", b"v"), first=1))
        assert type(one(sm, numbered(A, 1, PutOp(b"k1", b"again")))) is FailedPrecondition
        assert get(sm, b"k1").value == b"v"
        # the copy of an answer still kept is answered
        assert shape(one(sm, numbered(A, 3, PutOp(b"k3", b"x"), first=3))) == shape(third)
        assert get(sm, b"k3").value == b"v"
    finally:
        sm.close()


def test_first_advancing_drops_only_the_answers_below_it(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        firsts = {seq: one(sm, numbered(A, seq, PutOp(b"k", b"%d" % seq))) for seq in (1, 2, 3, 4)}
        one(sm, numbered(B, 1, PutOp(b"b", b"1")))
        assert answer_records(sm, A) == [1, 2, 3, 4]
        one(sm, numbered(A, 5, PutOp(b"k", b"5"), first=3))
        assert answer_records(sm, A) == [3, 4, 5]
        assert answer_records(sm, B) == [1]  # another client's answers are not touched
        rev = sm.revision()
        assert shape(one(sm, numbered(A, 3, PutOp(b"k", b"x"), first=3))) == shape(firsts[3])
        assert type(one(sm, numbered(A, 2, PutOp(b"k", b"x"), first=3))) is FailedPrecondition
        assert sm.revision() == rev and get(sm, b"k").value == b"5"
    finally:
        sm.close()


def test_seqs_out_of_order_each_apply_once(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        late = one(sm, numbered(A, 3, PutOp(b"k", b"3")))
        early = one(sm, numbered(A, 2, PutOp(b"k", b"2")))
        assert early.revision == late.revision + 1
        assert shape(one(sm, numbered(A, 3, PutOp(b"k", b"3")))) == shape(late)
        assert get(sm, b"k").value == b"2" and get(sm, b"k").version == 2
    finally:
        sm.close()


# -- 4. persistence -----------------------------------------------------------------------------

def fill(sm: StateMachine) -> dict[tuple[int, int], Any]:
    """A table with an answer, a kept error, a prev_kv, a txn and a moved ``first``."""
    apply(sm, PutOp(b"p", b"old"))
    got = {
        (A, 1): one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0)),
        (A, 2): one(sm, numbered(A, 2, PutOp(b"gone", b"", ignore_value=True), stamp=T0 + 5)),
        (B, 7): one(sm, numbered(B, 7, PutOp(b"p", b"new", prev_kv=True), first=7, stamp=T0 + 9)),
        (C, 2): one(sm, numbered(C, 2, TxnOp([], [PutOp(b"c", b"1"), RangeOp(b"p")], []), stamp=T0 + 3)),
    }
    one(sm, numbered(C, 3, PutOp(b"c", b"3"), first=2, stamp=T0 + 11))  # C's first: 2
    return got


def check_answers_as_before(sm: StateMachine, got: dict[tuple[int, int], Any]) -> None:
    rev, before = sm.revision(), kvs(sm)
    for (client, seq), answer in got.items():
        assert shape(one(sm, numbered(client, seq, PutOp(b"zz", b"x"), first=1, stamp=T0 + 20))) == shape(answer)
    stale = one(sm, numbered(C, 1, PutOp(b"zz", b"x"), stamp=T0 + 20))  # below C's first (2)
    assert type(stale) is FailedPrecondition
    assert sm.revision() == rev and kvs(sm) == before


def test_the_table_survives_a_restart(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    got = fill(sm)
    clients, clock, records = len(sm.sessions), sm.sessions.clock_ms, session_records(sm)
    assert (clients, clock) == (3, T0 + 11)
    sm.close()
    sm = machine(tmp_path)
    try:
        assert (len(sm.sessions), sm.sessions.clock_ms) == (clients, clock)
        assert session_records(sm) == records
        check_answers_as_before(sm, got)
    finally:
        sm.close()


def test_the_table_travels_in_a_snapshot(tmp_path: Path) -> None:
    src = machine(tmp_path / "src")
    dst = machine(tmp_path / "dst")
    try:
        got = fill(src)
        one(dst, numbered(0xD4, 1, PutOp(b"d", b"1")))  # the target's own table is replaced
        index = src.applied_index()
        data = src.snapshot_data()
        dst.restore(Snapshot(SnapshotMetadata(index=index, term=1), data))
        assert dst.applied_index() == index
        assert (len(dst.sessions), dst.sessions.clock_ms) == (len(src.sessions), src.sessions.clock_ms)
        assert session_records(dst) == session_records(src)
        check_answers_as_before(dst, got)
        check_answers_as_before(src, got)
        assert kvs(dst) == kvs(src)
        assert isinstance(one(dst, numbered(0xD4, 1, PutOp(b"d", b"2"))), PutResult)  # not known there
        assert get(dst, b"d").value == b"2"
    finally:
        src.close()
        dst.close()


def test_an_aborted_ready_leaves_the_table_as_on_disk(tmp_path: Path) -> None:
    sm = StateMachine(tmp_path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership(),
                      wrap=Boom)
    try:
        first = one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        sm.commit()
        records = session_records(sm)
        with pytest.raises(RuntimeError):
            apply(sm, numbered(A, 2, PutOp(b"a", b"2"), first=2, stamp=T0 + 50),
                  numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + 60), PutOp(b"boom", b"x"))
        assert (len(sm.sessions), sm.sessions.clock_ms) == (1, T0)
        assert session_records(sm) == records
        # the table forgot what rolled back: the log's re-apply applies it, and A's first is 1 again
        assert shape(one(sm, numbered(A, 1, PutOp(b"a", b"x"), stamp=T0))) == shape(first)
        assert isinstance(one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + 60)), PutResult)
        assert get(sm, b"b").version == 1 and get(sm, b"a").value == b"1"
    finally:
        sm.close()


# -- 5. expiry and caps -------------------------------------------------------------------------

def test_a_client_idle_for_more_than_the_ttl_is_forgotten_and_its_copy_applies_again(tmp_path: Path) -> None:
    """The documented limit: a copy arriving after the client expired is applied again."""
    sm = machine(tmp_path)
    try:
        one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + TTL_MS + 1))  # A idle TTL_MS + 1
        assert len(sm.sessions) == 1 and sm.sessions.expired == 1
        assert answer_records(sm, A) == [] and PREFIX + A.to_bytes(8, "big") not in session_records(sm)
        again = one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0 + TTL_MS + 1))
        assert isinstance(again, PutResult)
        assert get(sm, b"a").version == 2  # applied twice
    finally:
        sm.close()


def test_a_client_idle_for_exactly_the_ttl_is_kept(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        first = one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + TTL_MS))
        assert len(sm.sessions) == 2 and sm.sessions.expired == 0
        assert shape(one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0 + TTL_MS))) == shape(first)
        assert get(sm, b"a").version == 1
    finally:
        sm.close()


def test_a_client_heard_from_is_kept_by_its_last_entry(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + 10))
        first = one(sm, numbered(A, 2, PutOp(b"a", b"2"), stamp=T0 + TTL_MS // 2))  # A heard from again
        one(sm, numbered(C, 1, PutOp(b"c", b"1"), stamp=T0 + TTL_MS + 20))  # B expires, A does not
        assert sm.sessions.expired == 1 and len(sm.sessions) == 2
        assert shape(one(sm, numbered(A, 2, PutOp(b"a", b"2"), stamp=T0 + TTL_MS + 20))) == shape(first)
        assert answer_records(sm, B) == []
    finally:
        sm.close()


def test_a_stamp_below_the_clock_does_not_move_it_back(tmp_path: Path) -> None:
    sm = machine(tmp_path)
    try:
        one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0 + 5000))
        first = one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0))  # a slower proposer's clock
        assert sm.sessions.clock_ms == T0 + 5000
        # B's last entry counts at the table's clock (T0 + 5000), not at its own stamp: at
        # T0 + 5000 + TTL_MS it is not idle for more than TTL_MS, though T0 + TTL_MS is past
        one(sm, numbered(C, 1, PutOp(b"c", b"1"), stamp=T0 + 5000 + TTL_MS))
        assert sm.sessions.clock_ms == T0 + 5000 + TTL_MS
        assert len(sm.sessions) == 3 and sm.sessions.expired == 0
        assert shape(one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0))) == shape(first)
        assert get(sm, b"b").version == 1
    finally:
        sm.close()
    sm = machine(tmp_path)
    try:
        assert sm.sessions.clock_ms == T0 + 5000 + TTL_MS
    finally:
        sm.close()


def test_past_max_clients_the_longest_idle_client_is_forgotten(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "MAX_CLIENTS", 2)
    sm = machine(tmp_path)
    try:
        a = one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + 1))
        one(sm, numbered(A, 2, PutOp(b"a", b"2"), stamp=T0 + 2))  # A used again: B is the oldest
        one(sm, numbered(C, 1, PutOp(b"c", b"1"), stamp=T0 + 3))
        assert len(sm.sessions) == 2 and answer_records(sm, B) == []
        assert shape(one(sm, numbered(A, 1, PutOp(b"a", b"x"), stamp=T0 + 4))) == shape(a)
        assert isinstance(one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0 + 5)), PutResult)  # applied again
        assert get(sm, b"b").version == 2
        assert len(sm.sessions) == 2 and answer_records(sm, C) == []  # C was then the oldest
        assert sm.sessions.expired == 0  # (evicted, not expired)
    finally:
        sm.close()


def test_past_max_answers_the_oldest_answer_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client with more than MAX_ANSWERS requests in flight loses its oldest answer, and
    ``first`` moves above it: a copy of that seq is refused, never applied again (was: it
    applied again, and a seq below every kept answer applied at each copy)."""
    monkeypatch.setattr(sessions_module, "MAX_ANSWERS", 2)
    sm = machine(tmp_path)
    try:
        got = {seq: one(sm, numbered(A, seq, PutOp(b"k%d" % seq, b"v"))) for seq in (1, 2, 3)}
        assert answer_records(sm, A) == [2, 3]
        assert shape(one(sm, numbered(A, 2, PutOp(b"k2", b"x")))) == shape(got[2])
        assert shape(one(sm, numbered(A, 3, PutOp(b"k3", b"x")))) == shape(got[3])
        assert [kv.version for kv in kvs(sm)] == [1, 1, 1]
        for _ in range(2):
            refused = one(sm, numbered(A, 1, PutOp(b"k1", b"v")))
            assert isinstance(refused, FailedPrecondition) and "already answered" in refused.message
            assert get(sm, b"k1").version == 1
        assert answer_records(sm, A) == [2, 3]
    finally:
        sm.close()


def test_eviction_with_equal_last_ms_is_the_same_after_a_restart(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two clients last heard from at the same clock (the same stamp, or any stamp below the
    clock) were ordered by use in memory but by client id after ``load``: with the table
    full, a restarted member evicted the other one and then applied a copy the others
    answered (found by this test; the records now carry the use number)."""
    monkeypatch.setattr(sessions_module, "MAX_CLIENTS", 2)
    steady, restarted = machine(tmp_path / "steady"), machine(tmp_path / "restarted")
    try:
        for sm in (steady, restarted):
            one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0))  # B (the larger id) first
            one(sm, numbered(A, 1, PutOp(b"a", b"1"), stamp=T0))
        restarted.close()
        restarted = machine(tmp_path / "restarted")
        for sm in (steady, restarted):
            one(sm, numbered(C, 1, PutOp(b"c", b"1"), stamp=T0))  # the table is full: one goes
        outcomes = [shape(one(sm, numbered(B, 1, PutOp(b"b", b"1"), stamp=T0))) for sm in (steady, restarted)]
        assert kvs(steady) == kvs(restarted)
        assert outcomes[0] == outcomes[1]
    finally:
        steady.close()
        restarted.close()


# -- 6. determinism ------------------------------------------------------------------------------

KEYS = (b"k0", b"k1", b"k2")
inner_ops = st.one_of(
    st.builds(PutOp, st.sampled_from(KEYS), st.binary(max_size=3), prev_kv=st.booleans()),
    st.sampled_from(KEYS).map(lambda k: PutOp(k, b"", ignore_value=True)),  # refused while k is missing
    st.sampled_from(KEYS).map(lambda k: DeleteRangeOp(k, prev_kv=True)),
    st.tuples(st.sampled_from(KEYS), st.binary(max_size=2)).map(
        lambda kv: TxnOp([Compare(target=0, key=kv[0], version=1)], [PutOp(kv[0], kv[1])], [DeleteRangeOp(kv[0])])),
)
steps = st.tuples(
    st.sampled_from((A, B, C)),  # client
    st.integers(1, 6),  # seq
    st.integers(0, 5),  # first = max(1, seq - this)
    st.sampled_from((0, 0, 1, 1000, TTL_MS // 2, TTL_MS + 1, -7000)),  # the stamp's step
    inner_ops,
    st.booleans(),  # in the same Ready as the step before
)


@settings(max_examples=25, deadline=None)
@given(st.lists(steps, min_size=1, max_size=24), st.integers(0, 24), st.sampled_from((None, 2)))
def test_property_a_restarted_member_ends_as_one_that_was_not(plan: list[Any], restart_at: int,
                                                              max_answers: int | None) -> None:
    readies: list[list[SessionOp]] = []
    stamp = T0
    for client, seq, back, step, op, joined in plan:
        stamp += step
        entry = SessionOp(client, seq, max(1, seq - back), stamp, op)
        if joined and readies:
            readies[-1].append(entry)
        else:
            readies.append([entry])
    restart_at %= len(readies) + 1  # before that Ready (len: after the last)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        if max_answers is not None:
            patch.setattr(sessions_module, "MAX_ANSWERS", max_answers)
        steady, restarted = machine(Path(tmp) / "steady"), machine(Path(tmp) / "restarted")
        try:
            seen: list[list[Any]] = [[], []]
            for i, ready in enumerate(readies):
                if i == restart_at:
                    restarted.close()
                    restarted = machine(Path(tmp) / "restarted")
                for sm, out in zip((steady, restarted), seen, strict=True):
                    out.append([shape(r) for r in apply(sm, *ready)])
            if restart_at == len(readies):
                restarted.close()
                restarted = machine(Path(tmp) / "restarted")
            assert seen[0] == seen[1]
            assert kvs(steady) == kvs(restarted)
            assert steady.revision() == restarted.revision()
            assert (len(steady.sessions), steady.sessions.clock_ms) == (len(restarted.sessions),
                                                                        restarted.sessions.clock_ms)
            assert session_records(steady) == session_records(restarted)
        finally:
            steady.close()
            restarted.close()


def test_a_batch_of_numbered_and_plain_puts_applies_each_alone(tmp_path: Path) -> None:
    """The fast path's coalescer puts numbered puts (``SessionOp``) and plain ones in one
    ``BatchOp``: each gets its own revision and result, in order; a numbered copy in a later
    batch is answered from the table and applies nothing; a refused op refuses alone."""
    sm = machine(tmp_path)
    try:
        batch = BatchOp([numbered(A, 1, PutOp(b"a", b"1")), PutOp(b"p", b"1"),
                         numbered(A, 2, PutOp(b"b", b"1", ignore_value=True)),  # refused: no such key
                         numbered(B, 1, PutOp(b"a", b"2", prev_kv=True))])
        (results,) = apply(sm, batch)
        assert [type(r).__name__ for r in results] == ["PutResult", "PutResult", "InvalidArgument", "PutResult"]
        assert [r.revision for r in results if isinstance(r, PutResult)] == [2, 3, 4]
        assert results[3].prev_kv.value == b"1"
        (again,) = apply(sm, BatchOp([numbered(B, 1, PutOp(b"a", b"3")), numbered(A, 2, PutOp(b"b", b"x")),
                                      PutOp(b"p", b"2")]))
        assert shape(again[0]) == shape(results[3]) and shape(again[1]) == shape(results[2])
        assert again[2].revision == 5
        assert get(sm, b"a").value == b"2" and get(sm, b"a").version == 2 and get(sm, b"b") is None
        assert sm.sessions.duplicates == 2
    finally:
        sm.close()



def test_lease_grant_and_revoke_answers_round_trip() -> None:
    """(A copy of a numbered grant getting the first lease, not a second: on a real cluster,
    tests/server/test_request_ids.py.)"""
    from kvraft.apply.feature_appliers import LeaseGrantResult

    assert decode_answer(encode_answer(LeaseGrantResult(7, 30, 12))) == LeaseGrantResult(7, 30, 12)
    revoked = decode_answer(encode_answer(41))  # (a revoke's answer is its revision)
    assert revoked == 41 and type(revoked) is int
