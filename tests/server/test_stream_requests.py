"""``iter_requests``: the several request objects of one streaming body (lease keepalive),
and etcd's InvalidArgument for a body that is not one, never another exception (which the
routes would answer as a 500: the fuzz found a msgpack one, ``b"\\xc1"``)."""

from __future__ import annotations

import msgpack
import pytest

from kvraft.apply.errors import InvalidArgument, Unknown
from kvraft.server.api.lease import LEASE_ID
from kvraft.server.api.stream import decode_stream, iter_requests

ONE = msgpack.packb({"ID": 5})


@pytest.mark.parametrize(("body", "packed", "want"), [
    (ONE * 2, True, [5, 5]),
    (b"", True, []),
    (b'{"ID": "7"} {"ID": 8}', False, [7, 8]),
    (b"  ", False, []),
])  # fmt: skip
def test_every_object_of_the_body(body: bytes, packed: bool, want: list[int]) -> None:
    assert [r["ID"] for r in iter_requests(body, packed, LEASE_ID)] == want


@pytest.mark.parametrize(("body", "packed", "message"), [
    (b"\xc1", True, "msgpack: FormatError"),  # a byte msgpack reserves
    (b"\x92\x01", True, "msgpack: unexpected end of data"),  # an array of two holding one
    (ONE + b"\x81", True, "msgpack: unexpected end of data"),  # whole, then a truncated one
    (b"[" * 100_000, False, "exceeded max depth"),
    (b'{"ID": 1' + b"1" * 5000 + b"}", False, "json: cannot unmarshal number"),
    (b'{"ID": 1} {', False, "unexpected EOF"),
])  # fmt: skip
def test_a_malformed_body_is_invalid_argument(body: bytes, packed: bool, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        list(iter_requests(body, packed, LEASE_ID))


# etcd 3.4's gateway decodes a keepalive body one object at a time (Go's json.Decoder under
# jsonpb) and stops at the first that does not decode: the first one failing is the bare
# error (gRPC Unknown, HTTP 500), a later one ends the stream after the ones before it.
# kvraft refused every such body whole with InvalidArgument (found by the randomized
# etcd comparison, tests/server/compat_fuzz.py).
@pytest.mark.parametrize(("body", "want"), [
    (b'{"ID": "1"}{"ID": "1e3"}', [1]),
    (b'{"ID": "3"}{"ID": "77"}{"ID": "a==="}', [3, 77]),
    (b'{"ID": "1"}] {"ID": 3}', [1]),
    (b'{"ID": "77"}\n{"ID": "+5"}', [77]),
    (b'{"ID": "2"}null{"ID": "2"}', [2, 0, 2]),
    (b'{"ID": "77"}\n{}{}', [77, 0, 0]),
    (b'{"ID": "1"}\n{"ID": "-0"}', [1, 0]),
])  # fmt: skip
def test_a_later_object_that_does_not_decode_ends_the_stream(body: bytes, want: list[int]) -> None:
    assert [r["ID"] for r in decode_stream(body, False, LEASE_ID)] == want


@pytest.mark.parametrize(("body", "message"), [
    (b'{"ID": "999", "ID": "a==="} {"ID": 77}', "invalid character 'a' looking for beginning of value"),
    (b'{"ID": ""} {"ID": "77"}', "unexpected end of JSON input"),
    (b'{"ID": 1.5}{"ID": "4"}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
    (b'{"ID": "\n{"ID": "1"}', "invalid character '\\n' in string literal"),
])  # fmt: skip
def test_a_first_object_that_does_not_decode_is_a_bare_error(body: bytes, message: str) -> None:
    with pytest.raises(Unknown) as info:
        decode_stream(body, False, LEASE_ID)
    assert info.value.message == message and info.value.code == 2
