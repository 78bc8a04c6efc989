"""kvraft's streamed range (``/v3/kvraft/kv/rangestream``, ``Client.get_stream``): a range in
pages, all at the first page's revision, one page held at a time (etcd has RangeStream in 3.7,
over gRPC alone; its users' large lists run members out of memory, etcd-io/etcd#12342)."""

from __future__ import annotations

import pytest

from kvraft.client import (
    CompactedError,
    InvalidArgumentError,
    Op,
    PermissionDeniedError,
    SyncClient,
)
from tests.server.conftest import FAST_FLAGS, needs_etcd, start_cluster


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = start_cluster(tmp_path_factory.mktemp("stream"), size=1, extra=FAST_FLAGS)
    try:
        with SyncClient([cluster.url("m0")], request_timeout_s=30.0) as client:
            for start in range(0, 2500, 100):  # s/0000 .. s/2499, 100 puts a txn
                client.txn().then(*(Op.put(f"s/{i:04d}", f"v{i}") for i in range(start, start + 100))).commit()
            client.put("t/other", "x")
        yield cluster
    finally:
        cluster.stop()


def test_pages_are_one_snapshot(member) -> None:  # type: ignore[no-untyped-def]
    with SyncClient([member.url("m0")]) as client:
        pages = client.get_stream("s/", prefix=True, page_size=1000)
        first = next(pages)
        # writes between the pages: the stream reads on at the first page's revision
        client.delete("s/2000")
        client.put("s/9999", "late")
        rest = list(pages)
    got = [first, *rest]
    assert [len(p.kvs) for p in got] == [1000, 1000, 500]
    assert [p.more for p in got] == [True, True, False]
    assert [kv.key for p in got for kv in p.kvs] == [f"s/{i:04d}".encode() for i in range(2500)]
    assert got[2].kvs[0].value == b"v2000"  # deleted after the first page: still in the snapshot
    assert got[0].count == 2500 and got[1].count == got[2].count == 0  # (counting the rest cost each page it all)


def test_limit_keys_only_and_the_default_page(member) -> None:  # type: ignore[no-untyped-def]
    with SyncClient([member.url("m0")]) as client:
        pages = list(client.get_stream("s/", prefix=True, limit=1500, keys_only=True))
        assert [len(p.kvs) for p in pages] == [1000, 500] and [p.more for p in pages] == [True, False]
        assert pages[0].count == 2500 and pages[1].count == 0  # keys_only too: later pages count nothing
        ascending = list(client.get_stream("s/", prefix=True, page_size=1000, sort_order="ASCEND"))
        assert [p.count for p in ascending] == [2500, 0, 0]
        assert all(kv.value == b"" for p in pages for kv in p.kvs)
        assert [len(p.kvs) for p in client.get_stream("s/", prefix=True, page_size=700)][:3] == [700, 700, 700]
        [single] = list(client.get_stream("t/other"))
        assert [kv.key for kv in single.kvs] == [b"t/other"] and not single.more


@pytest.mark.parametrize(("options", "says"), [
    ({"sort_order": "DESCEND"}, "a sort other than by key, ascending"),
    ({"sort_target": "MOD"}, "a sort other than by key, ascending"),
    ({"count_only": True}, "count_only"),
    ({"min_mod_revision": 2}, "min/max revision filters"),
    ({"page_size": 20_000}, "page_size must be from 1 to 10000"),
])
def test_what_a_stream_does_not_take_is_refused_before_it_starts(member, options, says) -> None:  # type: ignore[no-untyped-def]
    with SyncClient([member.url("m0")]) as client, pytest.raises(InvalidArgumentError, match=says):
        list(client.get_stream("s/", prefix=True, **options))


def test_a_page_whose_revision_was_compacted_ends_the_stream_with_the_error(member) -> None:  # type: ignore[no-untyped-def]
    """The member reads a page only when the one before is on its way (the stream's writes
    wait for the client): 24 MB in pages of 400 KB are far more than the sockets buffer, so
    pages read after the compaction below fail, and the stream ends with etcd's error."""
    with SyncClient([member.url("m0")], request_timeout_s=30.0) as client:
        for i in range(120):
            client.put(f"big/{i:03d}", b"x" * 200_000)
        pages = client.get_stream("big/", prefix=True, page_size=2)
        next(pages)
        client.put("big/zzz", "x")
        client.compact(client.get("big/zzz").header.revision, physical=True)
        read = 1
        with pytest.raises(CompactedError):
            for _page in pages:
                read += 1
        assert read < 60  # (some were sent before the compaction)


def test_each_page_is_checked_against_the_callers_rights(member) -> None:  # type: ignore[no-untyped-def]
    url = member.url("m0")
    with SyncClient([url]) as root:
        root.user_add("root", "rootpw")
        root.role_add("root")
        root.user_grant_role("root", "root")
        root.user_add("reader", "readerpw")
        root.role_add("s-reader")
        root.role_grant_permission("s-reader", "READ", "s/", "s0")
        root.user_grant_role("reader", "s-reader")
        root.auth_enable()
    try:
        with SyncClient([url], user="reader", password="readerpw") as client:
            assert sum(len(p.kvs) for p in client.get_stream("s/", prefix=True)) >= 2499
            with pytest.raises(PermissionDeniedError):
                list(client.get_stream("t/", prefix=True))
    finally:
        with SyncClient([url], user="root", password="rootpw") as root:
            root.auth_disable()


def test_over_json_each_page_is_one_result_line(member) -> None:  # type: ignore[no-untyped-def]
    """As the watch stream through etcd's gateway: one ``{"result": RangeResponse}`` and a
    newline per chunk, keys base64, int64s as strings, defaults left out."""
    import base64
    import json
    import urllib.request

    body = json.dumps({"key": base64.b64encode(b"s/").decode(), "range_end": base64.b64encode(b"s0").decode(),
                       "limit": "5", "page_size": "2", "keys_only": True}).encode()
    request = urllib.request.Request(member.url("m0") + "/v3/kvraft/kv/rangestream", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        lines = r.read().decode().splitlines()
    pages = [json.loads(line)["result"] for line in lines]
    assert [len(p["kvs"]) for p in pages] == [2, 2, 1]
    assert [p.get("more", False) for p in pages] == [True, True, False]
    assert base64.b64decode(pages[0]["kvs"][0]["key"]) == b"s/0000" and "value" not in pages[0]["kvs"][0]
    assert isinstance(pages[0]["header"]["revision"], str)


@needs_etcd
def test_etcd_has_no_streamed_range_and_the_informer_lists_in_one_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The scheduler's informer lists with a streamed range; against etcd (404) it falls back
    to one range, once, and remembers."""
    import asyncio

    from kvraft.client import Client, ServerError
    from scheduler.informer import Informer

    cluster = start_cluster(tmp_path, size=1, binary="etcd")
    try:
        url = cluster.url("m0")
        with SyncClient([url]) as client:
            client.put("/registry/nodes/a", "{}")
            with pytest.raises(ServerError) as info:
                list(client.get_stream("/registry/", prefix=True))
            assert info.value.code == 12

        class Sink:
            listed: list[tuple[list[bytes], int]] = []

            def replace(self, kvs, revision):  # type: ignore[no-untyped-def]
                self.listed.append(([kv.key for kv in kvs], revision))

            def apply(self, events, revision):  # type: ignore[no-untyped-def]
                pass

        async def list_twice() -> bool:
            async with Client([url]) as client:
                informer = Informer(client, "/registry/", Sink())
                await informer.list_once()
                await informer.list_once()
                return client._no_stream_range  # (remembered: the second list asked no stream)

        assert asyncio.run(list_twice()) and [keys for keys, _ in Sink.listed] == [[b"/registry/nodes/a"]] * 2
        with SyncClient([url]) as client:  # what jobctl lists with
            assert [kv.key for kv in client.get_all("/registry/", prefix=True).kvs] == [b"/registry/nodes/a"]
    finally:
        cluster.stop()


def test_kvctl_get_prints_a_range_page_by_page(member, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``kvctl get --prefix`` (simple format, key order) prints as kvraft streams: the same
    lines as one range; with --order DESCEND (not streamable) one range, as before."""
    import io

    from kvraft.cli.commands import kv as kv_command
    from kvraft.cli.main import run
    from kvraft.client import Client

    pages: list[int] = []
    real = Client.stream_range

    async def counted(self, op, *, page_size=0):  # type: ignore[no-untyped-def]
        async for page in real(self, op, page_size=page_size):
            pages.append(len(page.kvs))
            yield page

    monkeypatch.setattr(Client, "stream_range", counted)
    monkeypatch.setattr(kv_command, "STREAM_PAGE", 300)

    def kvctl(*argv: str) -> list[str]:
        out, err = io.StringIO(), io.StringIO()
        assert run(["--endpoints", member.url("m0"), *argv], io.StringIO(), out, err) == 0, err.getvalue()
        return out.getvalue().splitlines()

    with SyncClient([member.url("m0")]) as client:
        kvs = client.get("s/", prefix=True).kvs
    expected = [kv.key.decode() for kv in kvs]
    lines = kvctl("get", "s/", "--prefix", "--keys-only")
    assert [ln for ln in lines if ln] == expected and pages[0] == 300 and len(pages) == -(-len(expected) // 300)
    assert kvctl("get", "s/", "--prefix", "--limit", "450") == [ln for kv in kvs[:450]
                                                               for ln in (kv.key.decode(), kv.value.decode())]
    pages.clear()
    assert kvctl("get", "s/", "--prefix", "--keys-only", "--order", "DESCEND", "--limit", "2")[0] == expected[-1]
    assert pages == []



def test_the_benchmark_lists_both_ways_and_prints_its_figures(capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from kvraft.bench.__main__ import main

    assert main(["range-stream", "--keys", "300", "--runs", "1", "--page-size", "100"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["one_range"]["keys"] == summary["streamed"]["keys"] == 300
    assert summary["streamed_first_run"]["seconds"] > 0 and "rss_peak_over_mib" in summary["one_range"]


def test_get_all_gathers_the_pages_at_one_revision(member) -> None:  # type: ignore[no-untyped-def]
    with SyncClient([member.url("m0")]) as client:
        one = client.get("s/", prefix=True)
        whole = client.get_all("s/", prefix=True, page_size=400)
    assert [kv.key for kv in whole.kvs] == [kv.key for kv in one.kvs] and not whole.more
    assert whole.count == one.count == len(one.kvs)

