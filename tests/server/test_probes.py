"""``/livez``, ``/readyz`` (etcd 3.5.11+/3.6's probes) and ``/health``'s options
(``?exclude=ALARM``, ``?serializable=true``); kvraft.server.api.health. etcd 3.4, the version
the comparison tests run, has none of them, so the answers are held to etcd's health.go."""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from types import SimpleNamespace

from kvraft.server.api import health
from kvraft.server.local import post
from kvraft.server.membership import Member, Membership
from tests.server.helpers import wait_until


def _get(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_probes_of_a_healthy_member(kv_cluster) -> None:
    cluster = kv_cluster
    cluster.wait_leader()
    url = cluster.url("m0")
    for path in ("/livez", "/readyz", "/readyz/linearizable_read", "/livez/serializable_read",
                 "/readyz?exclude=linearizable_read&exclude=no-such-check"):
        status, body, headers = _get(url + path)
        assert (status, body) == (200, "ok\n"), (path, status, body)
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Content-Type"].startswith("text/plain")
    assert _get(url + "/readyz?verbose")[1] == ("[+]data_corruption ok\n[+]serializable_read ok\n"
                                                "[+]linearizable_read ok\nok\n")
    assert _get(url + "/readyz?verbose&exclude=serializable_read")[1] == ("[+]data_corruption ok\n"
                                                                          "[+]linearizable_read ok\nok\n")
    assert _get(url + "/livez?verbose")[1] == "[+]serializable_read ok\nok\n"
    assert _get(url + "/readyz/no-such-check")[0] == 404
    assert _get(url + "/livez", "POST")[0] == 405
    assert _get(url + "/readyz/non_learner")[0] == 200  # a voter


def test_probes_and_health_options_without_a_quorum_and_with_an_alarm(kv_cluster) -> None:
    cluster = kv_cluster
    cluster.wait_leader()
    url = cluster.url("m0")
    code, body = post(url, "/v3/maintenance/alarm", {"action": "ACTIVATE", "memberID": "0", "alarm": "NOSPACE"})
    assert code == 200, body
    assert _get(url + "/health")[0] == 503
    assert _get(url + "/health?exclude=NOSPACE")[:2] == (200, '{"health":"true"}')
    assert _get(url + "/readyz")[0] == 200  # (its alarm check is CORRUPT's, as etcd's)
    for name in ("m1", "m2"):
        cluster.stop_member(name, signal.SIGKILL)
    wait_until(lambda: _get(url + "/readyz")[0] == 503, 60, what="no quorum to read through")
    status, body, _ = _get(url + "/readyz")
    assert body.startswith("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: "), body
    assert body.endswith("\n\n")  # (Go's http.Error adds a newline to the listing)
    assert _get(url + "/livez")[:2] == (200, "ok\n")  # the process itself works: no restart
    assert _get(url + "/health?exclude=NOSPACE")[0] == 503  # no leader
    assert _get(url + "/health?exclude=NOSPACE&serializable=true")[:2] == (200, '{"health":"true"}')
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        metrics = r.read().decode()
    assert 'etcd_server_healthcheck{name="linearizable_read",type="readyz"} 0.0' in metrics
    assert 'etcd_server_healthcheck{name="serializable_read",type="livez"} 1.0' in metrics
    assert 'etcd_server_healthchecks_total{name="linearizable_read",status="error",type="readyz"}' in metrics


def test_a_learner_fails_non_learner_alone() -> None:
    membership = Membership()
    membership.members = {7: Member(7, "l", ["http://127.0.0.1:1"], is_learner=True)}
    node = SimpleNamespace(membership=membership, member_id=7)
    assert asyncio.run(health.CHECKS["readyz"]["non_learner"](node)) == "not supported for learner"
    assert "non_learner" not in health.ROOT_CHECKS["readyz"]  # a kvraft learner serves clients
    node.member_id = 8  # not in the registry yet (joining): not a learner as far as it knows
    assert asyncio.run(health.CHECKS["readyz"]["non_learner"](node)) == ""
