"""Printers against outputs captured from etcdctl 3.4.23 (verbatim), fed the same values.
These run without any server and pin column widths, which the cluster-pair goldens can
only compare loosely (their member ids differ in length)."""

from __future__ import annotations

import io

import pytest

from kvraft.cli.errors import CommandError
from kvraft.cli.goformat import format_duration, go_quote, humanize_bytes, parse_duration
from kvraft.cli.printers import (
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    make_printer,
)
from kvraft.client import (
    GetResponse,
    HashKVResponse,
    KeyValue,
    LeaseGrantResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    Member,
    MemberListResponse,
    ResponseHeader,
    StatusResponse,
    WatchResponse,
)

H = ResponseHeader(324952591200643719, 3319814642761637952, 13, 2)
MEMBERS = MemberListResponse(ResponseHeader(324952591200643719, 3319814642761637952, 0, 2), (
    Member(3319814642761637952, "lab1", ("http://127.0.0.1:23800",), ("http://127.0.0.1:23790",)),))
STATUS = [EndpointStatus("127.0.0.1:23790", StatusResponse(H, "3.4.23", 20480, 3319814642761637952, 23, 2, 23, (), 16384))]


def show(fmt: str, method: str, *args: object) -> str:
    out = io.StringIO()
    getattr(make_printer(fmt, out, io.StringIO()), method)(*args)
    return out.getvalue()


def test_member_list_table() -> None:
    assert show("table", "member_list", MEMBERS) == (
        "+------------------+---------+------+------------------------+------------------------+------------+\n"
        "|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |\n"
        "+------------------+---------+------+------------------------+------------------------+------------+\n"
        "| 2e1259d415f2a040 | started | lab1 | http://127.0.0.1:23800 | http://127.0.0.1:23790 |      false |\n"
        "+------------------+---------+------+------------------------+------------------------+------------+\n"
    )


def test_endpoint_status_table_and_simple() -> None:
    assert show("table", "endpoint_status", STATUS) == (
        "+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n"
        "|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n"
        "+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n"
        "| 127.0.0.1:23790 | 2e1259d415f2a040 |  3.4.23 |   20 kB |      true |      false |         2 |         23 |                 23 |        |\n"
        "+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+\n"
    )
    assert show("simple", "endpoint_status", STATUS) == "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 20 kB, true, false, 2, 23, 23, \n"
    assert show("json", "endpoint_status", STATUS) == (
        '[{"Endpoint":"127.0.0.1:23790","Status":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,'
        '"revision":13,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":3319814642761637952,"raftIndex":23,'
        '"raftTerm":2,"raftAppliedIndex":23,"dbSizeInUse":16384}}]\n')


def test_health_hashkv_and_snapshot_tables() -> None:
    assert show("table", "endpoint_health", [EndpointHealth("127.0.0.1:23790", True, "955.337µs")]) == (
        "+-----------------+--------+-----------+-------+\n"
        "|    ENDPOINT     | HEALTH |   TOOK    | ERROR |\n"
        "+-----------------+--------+-----------+-------+\n"
        "| 127.0.0.1:23790 |   true | 955.337µs |       |\n"
        "+-----------------+--------+-----------+-------+\n"
    )
    assert show("table", "endpoint_hashkv", [EndpointHashKV("127.0.0.1:23790", HashKVResponse(H, 1852058789, -1))]) == (
        "+-----------------+------------+\n"
        "|    ENDPOINT     |    HASH    |\n"
        "+-----------------+------------+\n"
        "| 127.0.0.1:23790 | 1852058789 |\n"
        "+-----------------+------------+\n"
    )
    assert show("json", "endpoint_hashkv", [EndpointHashKV("127.0.0.1:23790", HashKVResponse(H, 1852058789, -1))]) == (
        '[{"Endpoint":"127.0.0.1:23790","HashKV":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,'
        '"revision":13,"raft_term":2},"hash":1852058789,"compact_revision":-1}}]\n')
    status = DBStatus(451667502, 13, 21, 20480)
    assert show("simple", "db_status", status) == "1aebe62e, 13, 21, 20 kB\n"
    assert show("json", "db_status", status) == '{"hash":451667502,"revision":13,"totalKey":21,"totalSize":20480}\n'


def test_lease_json_shapes_are_etcdctls_quirks() -> None:
    grant = LeaseGrantResponse(ResponseHeader(324952591200643719, 3319814642761637952, 11, 2), 2324035753303967774, 100)
    assert show("json", "lease_grant", grant) == (
        '{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":11,"raft_term":2,'
        '"ID":2324035753303967774,"TTL":100,"Error":""}\n')
    assert show("simple", "lease_grant", grant) == "lease 2040a23450fd881e granted with TTL(100s)\n"
    ttl = LeaseTimeToLiveResponse(ResponseHeader(324952591200643719, 3319814642761637952, 22, 2), 0x1234, -1)
    assert show("json", "lease_time_to_live", ttl, False) == (
        '{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":22,"raft_term":2,'
        '"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}\n')
    assert show("simple", "lease_time_to_live", ttl, False) == "lease 0000000000001234 already expired\n"
    leases = LeaseLeasesResponse(ResponseHeader(1, 2, 13, 2), (10, 11))
    assert show("simple", "lease_leases", leases) == "found 2 leases\n000000000000000a\n000000000000000b\n"


def test_watch_json_and_fields() -> None:
    canceled = WatchResponse(ResponseHeader(324952591200643719, 3319814642761637952, 0, 2), canceled=True, compact_revision=4)
    assert show("json", "watch", canceled) == (
        '{"Header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"raft_term":2},'
        '"Events":[],"CompactRevision":4,"Canceled":true,"Created":false}\n')


def test_hex_and_unsupported_formats() -> None:
    resp = GetResponse(H, (KeyValue(b"foo", 2, 3, 2, b"baz"),), False, 1)
    out = io.StringIO()
    make_printer("simple", out, io.StringIO(), hex_output=True).get(resp)
    assert out.getvalue() == "\\x66\\x6f\\x6f\n\\x62\\x61\\x7a\n"
    with pytest.raises(CommandError) as info:
        show("table", "get", resp)
    assert (info.value.code, info.value.message) == (4, "table not supported as output format")


def test_go_formatting_helpers() -> None:
    assert [humanize_bytes(n) for n in (0, 9, 20480, 1_500_000, 10**9)] == ["0 B", "9 B", "20 kB", "1.5 MB", "1.0 GB"]
    assert format_duration(0.001231782) == "1.231782ms" and format_duration(60.5) == "1m0.5s"
    assert parse_duration("1m30s") == 90.0 and parse_duration("500ms") == 0.5
    assert go_quote(b'a"\n\xff') == '"a\\"\\n\\xff"'


def test_table_cells_over_30_columns_wrap_as_etcdctls() -> None:
    """tablewriter wraps a cell wider than 30 columns at its spaces (a status error list);
    a single word stays whole however long (client URLs are joined by commas only). Both
    captured from etcdctl 3.4.23; kvctl printed the first on one line before."""
    me = 13668033151171901709
    header = ResponseHeader(15118495548433857066, me, 2, 2)
    corrupt = [EndpointStatus("http://127.0.0.1:23791", StatusResponse(
        header, "3.4.23", 20480, me, 13, 2, 13, (f"memberID:{me} alarm:CORRUPT ",), 16384))]
    line = ("+------------------------+------------------+---------+---------+-----------+------------+-----------"
            "+------------+--------------------+--------------------------------+\n")
    assert show("table", "endpoint_status", corrupt) == (
        line
        + "|        ENDPOINT        |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM "
          "| RAFT INDEX | RAFT APPLIED INDEX |             ERRORS             |\n"
        + line
        + "| http://127.0.0.1:23791 | bdae9bbc11dd390d |  3.4.23 |   20 kB |      true |      false |         2 "
          "|         13 |                 13 |  memberID:13668033151171901709 |\n"
        + "|                        |                  |         |         |           |            |           "
          "|            |                    |                 alarm:CORRUPT  |\n"
        + line
    )
    urls = ("http://127.0.0.1:23791", "http://127.0.0.2:23791", "http://localhost:23791")
    members = MemberListResponse(header, (Member(me, "lab1", ("http://127.0.0.1:23801",), urls),))
    line = ("+------------------+---------+------+------------------------+"
            "----------------------------------------------------------------------+------------+\n")
    assert show("table", "member_list", members) == (
        line
        + "|        ID        | STATUS  | NAME |       PEER ADDRS       |                             CLIENT ADDRS"
          "                             | IS LEARNER |\n"
        + line
        + "| bdae9bbc11dd390d | started | lab1 | http://127.0.0.1:23801 | http://127.0.0.1:23791,http://127.0.0.2:23791,"
          "http://localhost:23791 |      false |\n"
        + line
    )


@pytest.mark.parametrize(
    ("text", "limit", "lines"),
    [
        ("short", 30, ["short"]),
        ("a b c", 3, ["a b", "c"]),
        ("aaaa bb cc ddddd", 6, ["aaaa", "bb cc", "ddddd"]),  # least ragged, not greedy ("aaaa bb")
        ("averyveryverylongword x", 5, ["averyveryverylongword", "x"]),
        ("x  y", 2, ["x ", "y"]),  # two spaces: an empty word
    ],
)
def test_wrap_cell(text: str, limit: int, lines: list[str]) -> None:
    from kvraft.cli.printers.table import wrap_cell

    assert wrap_cell(text, limit) == lines
