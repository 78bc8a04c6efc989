"""The gateway codec: etcd's JSON mapping rules and Go's error texts, and msgpack."""

from __future__ import annotations

import msgpack
import pytest

from kvraft.apply.errors import InvalidArgument
from kvraft.apply.ops import Compare, PutOp, RangeOp, TxnOp, decode_entry, encode_entry
from kvraft.server.api import schemas
from kvraft.server.api.codec import JSON_OUT, MSGPACK, MSGPACK_OUT, decode_body
from kvraft.server.api.encode import (
    encode_header,
    encode_put,
    encode_range,
    encode_range_json,
    encode_txn,
)
from kvraft.storage.mvcc.types import KeyValue, PutResult, RangeResult, TxnResult

JSON = "application/json"


def test_bytes_are_base64_and_int64_accepts_strings_and_numbers() -> None:
    op = decode_body(b'{"key":"Zm9v","limit":"1","revision":2,"sort_order":"DESCEND"}', JSON, schemas.RANGE)
    assert op == RangeOp(key=b"foo", limit=1, revision=2, sort_order=2)
    assert decode_body(b'{"key":"Zm9v","sort_order":1}', JSON, schemas.RANGE).sort_order == 1


def test_empty_body_and_nulls_mean_defaults_and_unknown_fields_are_ignored() -> None:
    assert decode_body(b"", JSON, schemas.PUT) == PutOp()
    assert decode_body(b'{"key":null,"whatever":[1]}', JSON, schemas.PUT) == PutOp()


@pytest.mark.parametrize(
    ("body", "schema", "message"),
    [
        (b'{"key":123}', schemas.PUT, "json: cannot unmarshal number into Go value of type []uint8"),
        (b'{"key":"Zm9v","lease":"abc"}', schemas.PUT, "invalid character 'a' looking for beginning of value"),
        (b'{"prev_kv":"yes"}', schemas.PUT, "json: cannot unmarshal string into Go value of type bool"),
        (b"[1,2]", schemas.PUT, "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        (b"not json", schemas.PUT, "invalid character 'o' in literal null (expecting 'u')"),
        (b'{"key":"!!!"}', schemas.RANGE, "illegal base64 data at input byte 0"),
        (b'{"limit":1.5}', schemas.RANGE, "json: cannot unmarshal number 1.5 into Go value of type int64"),
        (b'{"sort_order":"BOGUS"}', schemas.RANGE, 'unknown value "BOGUS" for enum etcdserverpb.RangeRequest_SortOrder'),
        (b"{bad", schemas.RANGE, "invalid character 'b' looking for beginning of object key string"),
    ],
)
def test_bad_json_gets_gos_error_text(body: bytes, schema, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_body(body, JSON, schema)
    assert info.value.message == message
    assert info.value.code == 3


def test_txn_decodes_nested_ops_and_empty_request_op_is_kept_for_validation() -> None:
    body = b'{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}},{}],"failure":[{"request_txn":{"success":[{"request_range":{"key":"Zm9v"}}]}}]}'
    op = decode_body(body, JSON, schemas.TXN)
    assert op.compare == [Compare(result=0, target=3, key=b"foo", value=b"bar")]
    assert op.success == [PutOp(key=b"foo", value=b"qux"), None]
    assert op.failure == [TxnOp(success=[RangeOp(key=b"foo")])]


def test_msgpack_requests_carry_native_values() -> None:
    body = msgpack.packb({"key": b"foo", "value": b"\x00\xff", "lease": 7}, use_bin_type=True)
    assert decode_body(body, MSGPACK, schemas.PUT) == PutOp(key=b"foo", value=b"\x00\xff", lease=7)
    with pytest.raises(InvalidArgument):
        decode_body(b"\xc1", MSGPACK, schemas.PUT)


@pytest.mark.parametrize("value", [1e300, -1e300, 2.0**31])
def test_a_msgpack_float_enum_beyond_int32_is_invalid_argument(value: float) -> None:
    """An integral float for an enum was taken whole; 1e300 as an alarm action was an
    OverflowError when the log entry was packed (a 500)."""
    body = msgpack.packb({"action": value}, use_bin_type=True)
    with pytest.raises(InvalidArgument) as info:
        decode_body(body, MSGPACK, schemas.ALARM)
    assert info.value.message.startswith("json: cannot unmarshal number")
    assert decode_body(msgpack.packb({"action": 2.0}), MSGPACK, schemas.ALARM)["action"] == 2


def test_responses_omit_defaults_and_spell_int64_as_strings() -> None:
    header = encode_header(JSON_OUT, 1, 2, 3, 4)
    assert header == {"cluster_id": "1", "member_id": "2", "revision": "3", "raft_term": "4"}
    kv = KeyValue(b"foo", 2, 3, 2, b"baz")
    doc = encode_range(JSON_OUT, header, RangeResult(kvs=(kv,), count=1, revision=3))
    assert doc["kvs"] == [{"key": "Zm9v", "create_revision": "2", "mod_revision": "3", "version": "2", "value": "YmF6"}]
    assert doc["count"] == "1" and "more" not in doc
    assert encode_range(JSON_OUT, header, RangeResult(revision=3)) == {"header": header}
    assert encode_put(JSON_OUT, header, PutResult(revision=3)) == {"header": header}
    failed = encode_txn(JSON_OUT, header, TxnResult(revision=3, responses=(PutResult(revision=3),)))
    assert failed == {"header": header, "responses": [{"response_put": {"header": {"revision": "3"}}}]}
    nested = encode_txn(JSON_OUT, header, TxnResult(3, True, (TxnResult(0, True, ()),)))
    assert nested["responses"] == [{"response_txn": {"header": {}, "succeeded": True}}]
    packed = encode_range(MSGPACK_OUT, encode_header(MSGPACK_OUT, 1, 2, 3, 4), RangeResult(kvs=(kv,), count=1, revision=3))
    assert packed["kvs"][0]["key"] == b"foo" and packed["count"] == 1


@pytest.mark.parametrize("seed", range(8))
def test_the_direct_json_range_answer_is_the_encoders_byte_for_byte(seed: int) -> None:
    """``encode_range_json`` against ``JSON_OUT.dumps(encode_range(...))``: zero fields
    (omitted), empty and binary keys and values, leases, ``more``, ``count`` without kvs."""
    import random

    rng = random.Random(seed)

    def number() -> int:
        return rng.choice([0, 0, 1, rng.randrange(2**63)])

    def blob() -> bytes:
        return rng.choice([b"", b"k", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))])

    for _ in range(200):
        kvs = tuple(KeyValue(blob(), number(), number(), number(), blob(), number()) for _ in range(rng.randrange(4)))
        result = RangeResult(kvs=kvs, more=rng.random() < 0.3, count=number(), revision=number())
        ids = number(), number(), number()
        want = JSON_OUT.dumps(encode_range(JSON_OUT, encode_header(JSON_OUT, ids[0], ids[1], result.revision, ids[2]), result))
        assert encode_range_json(*ids, result) == want


def test_entries_round_trip() -> None:
    op = TxnOp([Compare(key=b"a", target=3, value=b"x")], [PutOp(b"a", b"y")], [TxnOp([], [RangeOp(b"a")], [])])
    assert decode_entry(encode_entry(42, op)) == (42, op)


# What etcd 3.4's gateway answered where kvraft differed (found by the randomized comparison,
# tests/server/compat_fuzz.py): Go's json.Decoder reads only the first value of the body,
# jsonpb takes camelCase names too (the camelCase one wins), an int64 given as a string is
# the string's raw contents handed to json.Unmarshal, bytes fields go through Go's base64
# (CR/LF skipped, strict padding) or are an array of uint8 numbers, number errors quote
# the literal, and enum errors name the enum's Go type.
@pytest.mark.parametrize(
    ("body", "schema", "want"),
    [
        (b'{"key":"YQ=="}x', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":"YQ=="} {"key":"Yg=="}', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":"YQ=="},', schemas.RANGE, RangeOp(key=b"a")),
        (b"null", schemas.RANGE, RangeOp()),
        (b'{"key":"YQ==","rangeEnd":"AA==","range_end":"Yg==","countOnly":true}', schemas.RANGE,
         RangeOp(key=b"a", range_end=b"\x00", count_only=True)),
        (b'{"key":"YQ==","limit":"null"}', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":"YQ==","limit":" 5"}', schemas.RANGE, RangeOp(key=b"a", limit=5)),
        (b'{"key":"YQ==","limit":-0}', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":"YQ==\\n"}', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":"YQ=\\r\\n="}', schemas.RANGE, RangeOp(key=b"a")),
        (b'{"key":[97, null],"value":[]}', schemas.PUT, PutOp(key=b"a\x00")),
        (b'{"key":"YQ==","prevKv":true}', schemas.PUT, PutOp(key=b"a", prev_kv=True)),
        (b'{"success":[{"requestPut":{"key":"YQ=="}}]}', schemas.TXN, TxnOp(success=[PutOp(key=b"a")])),
        # a lone surrogate escape is U+FFFD, as Go decodes it (it stayed a surrogate: a 500 on encoding)
        (b'{"peerURLs":["a\\ud800b","\\udc00","\\ud83d\\ude00"]}', schemas.MEMBER_ADD,
         {"peerURLs": ["a\ufffdb", "\ufffd", "\U0001f600"], "isLearner": False}),
    ],
)
def test_what_etcds_gateway_accepts(body: bytes, schema, want) -> None:
    assert decode_body(body, JSON, schema) == want


@pytest.mark.parametrize(
    ("body", "schema", "message"),
    [
        (b'{"key":', schemas.RANGE, "unexpected EOF"),
        (b"nul", schemas.RANGE, "unexpected EOF"),
        (b"1x", schemas.RANGE, "json: cannot unmarshal number into Go value of type map[string]json.RawMessage"),
        (b"\xef\xbb\xbf{}", schemas.RANGE, "invalid character '\u00ef' looking for beginning of value"),
        (b'{"key":"YQ==","limit":"+5"}', schemas.RANGE, "invalid character '+' looking for beginning of value"),
        (b'{"key":"YQ==","limit":"1_0"}', schemas.RANGE, "invalid character '_' after top-level value"),
        (b'{"key":"YQ==","limit":"true"}', schemas.RANGE, "json: cannot unmarshal bool into Go value of type int64"),
        (b'{"key":"YQ==","limit":"\\"5\\""}', schemas.RANGE, "invalid character '\\\\' looking for beginning of value"),
        (b'{"key":"YQ==","limit":"\xd9\xa3"}', schemas.RANGE, "invalid character '\u00d9' looking for beginning of value"),
        (b'{"key":"YQ==","limit":2.0}', schemas.RANGE, "json: cannot unmarshal number 2.0 into Go value of type int64"),
        (b'{"key":"YQ==","limit":1e30}', schemas.RANGE, "json: cannot unmarshal number 1e30 into Go value of type int64"),
        (b'{"key":"YQ==","limit":1E2}', schemas.RANGE, "json: cannot unmarshal number 1E2 into Go value of type int64"),
        (b'{"key":"YQ==","limit":NaN}', schemas.RANGE, "invalid character 'N' looking for beginning of value"),
        (b'{"key":"YQ==","limit":-}', schemas.RANGE, "invalid character '}' in numeric literal"),
        (b'{"key":"YQ==","limit":1.}', schemas.RANGE, "invalid character '}' after decimal point in numeric literal"),
        (b'{"key":"YQ==","limit":01}', schemas.RANGE, "invalid character '1' after object key:value pair"),
        (b'{"key":"YQ==","a":"\t"}', schemas.RANGE, "invalid character '\\t' in string literal"),
        (b'{"key":"YQ==","sort_order":5000000000}', schemas.RANGE,
         "json: cannot unmarshal number 5000000000 into Go value of type etcdserverpb.RangeRequest_SortOrder"),
        (b'{"key":"YQ==","sort_order":1.0}', schemas.RANGE,
         "json: cannot unmarshal number 1.0 into Go value of type etcdserverpb.RangeRequest_SortOrder"),
        (b'{"key":"YQ==","sortOrder":"BAD"}', schemas.RANGE, 'unknown value "BAD" for enum etcdserverpb.RangeRequest_SortOrder'),
        (b'{"key":"YQ==","sort_order":"ASCEND\\n"}', schemas.RANGE,
         'unknown value "ASCEND\\\\n" for enum etcdserverpb.RangeRequest_SortOrder'),
        (b'{"key":"YQ==","sort_order":"\\"x"}', schemas.RANGE,
         'unknown value "\\\\\\"x" for enum etcdserverpb.RangeRequest_SortOrder'),
        (b'{"key":"YQ==","prevKv":5}', schemas.PUT, "json: cannot unmarshal number into Go value of type bool"),
        (b'{"key":"YWJj="}', schemas.RANGE, "illegal base64 data at input byte 4"),
        (b'{"key":"YQ==="}', schemas.RANGE, "illegal base64 data at input byte 4"),
        (b'{"key":"YQ==YQ=="}', schemas.RANGE, "illegal base64 data at input byte 4"),
        (b'{"key":"YQ"}', schemas.RANGE, "illegal base64 data at input byte 0"),
        # json.Unmarshal of a cut number or literal reports the space it scans at the end
        (b'{"key":"YQ==","limit":"-"}', schemas.RANGE, "invalid character ' ' in numeric literal"),
        (b'{"key":"YQ==","limit":"1e"}', schemas.RANGE, "invalid character ' ' in exponent of numeric literal"),
        (b'{"key":"YQ==","limit":"1e+"}', schemas.RANGE, "invalid character ' ' in exponent of numeric literal"),
        (b'{"key":"YQ==","limit":"1."}', schemas.RANGE, "invalid character ' ' after decimal point in numeric literal"),
        (b'{"key":"YQ==","limit":"tr"}', schemas.RANGE, "invalid character ' ' in literal true (expecting 'u')"),
        (b'{"key":"YQ==","limit":"[1,"}', schemas.RANGE, "unexpected end of JSON input"),
        # a string written with escapes: jsonpb reads the raw text between the quotes
        (b'{"key":"YQ==","limit":"\\u00e9==="}', schemas.RANGE, "invalid character '\\\\' looking for beginning of value"),
        (b'{"key":"YQ==","sort_order":"\\u0041SCEND"}', schemas.RANGE,
         'unknown value "\\\\u0041SCEND" for enum etcdserverpb.RangeRequest_SortOrder'),
        (b'{"key":[256]}', schemas.PUT, "json: cannot unmarshal number 256 into Go value of type uint8"),
        (b'{"key":[1.5]}', schemas.PUT, "json: cannot unmarshal number 1.5 into Go value of type uint8"),
        (b'{"key":["a"]}', schemas.PUT, "json: cannot unmarshal string into Go value of type uint8"),
    ],
)
def test_what_etcds_gateway_refuses_and_how(body: bytes, schema, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_body(body, JSON, schema)
    assert info.value.message == message
