"""``iter_requests``: the several request objects of one streaming body (lease keepalive),
and etcd's InvalidArgument for a body that is not one, never another exception (which the
routes would answer as a 500: the fuzz found a msgpack one, ``b"\\xc1"``)."""

from __future__ import annotations

import msgpack
import pytest

from kvraft.apply.errors import InvalidArgument
from kvraft.server.api.lease import LEASE_ID
from kvraft.server.api.stream import iter_requests

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
    (b'{"ID": 1} {', False, "invalid character"),
])  # fmt: skip
def test_a_malformed_body_is_invalid_argument(body: bytes, packed: bool, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        list(iter_requests(body, packed, LEASE_ID))
