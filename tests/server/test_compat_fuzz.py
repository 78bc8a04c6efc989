"""The randomized etcd comparison (``tests/server/compat_fuzz.py``) on a few fixed seeds:
the same generated requests to a real etcd 3.4 and to kvraft must get the same status and
JSON body. Longer campaigns: ``python -m tests.server.compat_fuzz --seeds 0-99 --ops 300``.

Skipped when the ``etcd`` binary is absent (``.ci/run`` installs Debian's etcd-server).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.compat_fuzz import (
    Divergence,
    Pair,
    Raw,
    Request,
    Rev,
    answers_match,
    body_text,
    generate,
    prefix_end,
    run_sequence,
    shrink,
)
from tests.server.conftest import needs_etcd

SEEDS = [0, 1, 2, 3, 4, 5]
OPS = 200


def test_the_generator_is_a_pure_function_of_the_seed() -> None:
    assert generate(7, 200) == generate(7, 200)
    assert generate(7, 200) != generate(8, 200)
    paths = {request.path for seed in range(20) for request in generate(seed, 200)}
    for route in ("/v3/kv/put", "/v3/kv/range", "/v3/kv/deleterange", "/v3/kv/txn", "/v3/kv/compaction",
                  "/v3/lease/grant", "/v3/lease/revoke", "/v3/lease/timetolive", "/v3/lease/leases"):  # fmt: skip
        assert route in paths
    bodies = [request.body for seed in range(20) for request in generate(seed, 200)]
    assert any(isinstance(body, Raw) for body in bodies)
    assert any(body is None for body in bodies)


def test_revisions_are_relative_to_the_seeds_base() -> None:
    assert body_text(Request("POST", "/v3/kv/range", {"revision": Rev(2)}), 10) == '{"revision": "12"}'
    assert body_text(Request("POST", "/v3/kv/range", {"revision": Rev(2, as_int=True)}), 10) == '{"revision": 12}'
    assert body_text(Request("POST", "/v3/kv/range", Raw("{x")), 10) == "{x"
    assert body_text(Request("GET", "/v3/kv/range", None), 10) is None


def test_prefix_end_follows_etcds_rule() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


def test_the_comparison_scrubs_only_ids_terms_lease_order_and_ttl_drift() -> None:
    header = {"cluster_id": "1", "member_id": "2", "revision": "3", "raft_term": "4"}
    other = {"cluster_id": "9", "member_id": "8", "revision": "3", "raft_term": "7"}
    assert answers_match((200, {"header": header}), (200, {"header": other}))
    assert not answers_match((200, {"header": header}), (200, {"header": {**other, "revision": "4"}}))
    assert not answers_match((200, {"header": header}), (400, {"header": header}))
    leases = [{"ID": "1"}, {"ID": "2"}]
    assert answers_match((200, {"leases": leases}), (200, {"leases": leases[::-1]}))
    ttl = {"ID": "1", "TTL": "59", "grantedTTL": "60", "keys": ["YQ==", "Yg=="]}
    assert answers_match((200, ttl), (200, {**ttl, "keys": ["Yg==", "YQ=="]}))
    assert not answers_match((200, ttl), (200, {**ttl, "keys": ["YQ=="]}))
    assert answers_match((200, ttl), (200, {**ttl, "TTL": "58"}))
    assert not answers_match((200, ttl), (200, {**ttl, "TTL": "57"}))
    assert not answers_match((200, {"TTL": "59"}), (200, {"TTL": "58"}))  # a grant's TTL is exact


def test_shrink_keeps_only_what_the_divergence_needs() -> None:
    """A fake pair of servers that diverges on "c" only after "a" and then "b" were sent."""
    requests = [Request("POST", f"/{name}", None) for name in "xaxyxbzzcx"]
    fresh_runs: list[int] = []

    def replay(trial: list[Request], fresh: bool) -> Divergence | None:
        if fresh:
            fresh_runs.append(len(trial))
        seen = ""
        for index, request in enumerate(trial):
            seen += request.path[1:]
            if request.path == "/c" and "a" in seen and "b" in seen[seen.index("a"):]:
                return Divergence(index, request, None, (200, {}), (400, {}))
        return None

    minimal, last = shrink(replay, requests, lambda _line: None)
    assert [r.path for r in minimal] == ["/a", "/b", "/c"]
    assert last.index == 2 and fresh_runs[-1] == 3  # the result checked on fresh servers


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    servers = Pair(tmp_path_factory.mktemp("compat-fuzz"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@needs_etcd
@pytest.mark.parametrize("seed", SEEDS)
def test_generated_requests_get_etcds_answers(pair: Pair, seed: int) -> None:
    base = pair.reset()
    if base is None:  # an earlier seed diverged and left the two apart: start afresh
        pair.start()
        base = pair.reset()
    assert base is not None
    found = run_sequence(*pair.urls, generate(seed, OPS), base)
    assert found is None, (
        f"seed {seed}: {found.describe()}\n"
        f"shrink it with: python -m tests.server.compat_fuzz --seeds {seed} --ops {found.index + 1}"
    )
