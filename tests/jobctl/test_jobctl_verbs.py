"""jobctl's verbs in process, against a small synchronous store in place of the cluster
(``FakeSync``: get, txn with compares, put, get): what a user sees for bad input, fast."""

from __future__ import annotations

import base64
import io
import json
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from scheduler import keys
from scheduler.cli import main as cli_main
from scheduler.jobs import normalize_job

from .store_values import KV, Header, Resp


@dataclass
class TxnResp:
    succeeded: bool
    responses: list[Any]


class FakeSync:
    """The store a ``SyncClient`` would reach; ``writes`` counts every put."""

    def __init__(self) -> None:
        self.data: dict[str, KV] = {}
        self.rev = 1
        self.writes = 0

    def __enter__(self) -> FakeSync:
        return self

    def __exit__(self, *a: Any) -> None:
        return None

    def put(self, key: str, value: bytes) -> None:
        self.rev += 1
        self.writes += 1
        old = self.data.get(key)
        self.data[key] = KV(key.encode(), value, old.create_revision if old else self.rev, self.rev)

    def get(self, key: str, prefix: bool = False, **_: Any) -> Resp:
        kvs = [kv for k, kv in sorted(self.data.items()) if (k.startswith(key) if prefix else k == key)]
        return Resp(Header(self.rev), kvs)

    def get_all(self, key: str, prefix: bool = False, **_: Any) -> Resp:
        """The streamed range jobctl lists with, gathered (Client.get_all)."""
        return self.get(key, prefix)

    def call(self, helper: Any) -> Any:
        """``SyncClient.call``: the helper runs against a kvraft whose auth is off."""
        import asyncio
        from types import SimpleNamespace

        class AuthOff:
            async def auth_status(self) -> Any:
                return SimpleNamespace(enabled=False)

        return asyncio.run(helper(AuthOff()))

    def _range(self, body: dict[str, Any]) -> Resp:
        key = body["key"].decode()
        return self.get(key, prefix="range_end" in body)

    def txn(self) -> Any:
        store = self

        class Txn:
            def __init__(self) -> None:
                self.compares: list[Any] = []
                self.ops: list[Any] = []

            def if_(self, *compares: Any) -> Txn:
                self.compares += compares
                return self

            def then(self, *ops: Any) -> Txn:
                self.ops += ops
                return self

            def commit(self) -> TxnResp:
                for c in self.compares:  # (jobctl submit compares create revisions with 0: absent)
                    assert (c.target, c.result, c.operand) == ("CREATE", "EQUAL", 0), c
                    if c.key.decode() in store.data:
                        return TxnResp(False, [])
                out: list[Any] = []
                for op in self.ops:
                    if op.kind == "range":
                        out.append(store._range(op.body))
                    else:
                        assert op.kind == "put", op
                        store.put(op.body["key"].decode(), op.body.get("value", b""))
                        out.append(None)
                return TxnResp(True, out)

        return Txn()


def job(name: str, tenant: str = "default", **extra: Any) -> dict[str, Any]:
    return normalize_job({"name": name, "tenant": tenant, "tasks": [{"name": "w", "command": "x"}], **extra},
                         submitted_at=1.0)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeSync:
    fake = FakeSync()
    monkeypatch.setattr(cli_main, "SyncClient", lambda *a, **k: fake)
    return fake


def jobctl(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
           stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    try:
        rc = cli_main.main(args, out=out)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    return rc, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize("output", [[], ["-o", "wide"], ["-o", "json"], ["-o", "yaml"]],
                         ids=["table", "wide", "json", "yaml"])
def test_a_named_get_answers_as_kubectl(output: list[str], store: FakeSync, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``get job ""`` listed every job (kubectl: resource name may not be empty), and ``get job x
    --tenant other`` for an x of another tenant said "No jobs found." with exit 0 (kubectl get
    pod x -n other: NotFound, exit 1); the same for the name of a job array."""
    store.put(keys.job_key("x"), json.dumps(job("x", "nlp")).encode())
    for i in range(2):
        store.put(keys.job_key(f"sweep_{i}"),
                  json.dumps(dict(job(f"sweep_{i}", "nlp"),
                                  array={"job": "sweep", "index": i, "count": 2, "parallelism": None})).encode())
    writes = store.writes
    assert jobctl(["get", "job", "", *output], capsys, monkeypatch) == \
        (1, "", "error: resource name may not be empty\n")
    for name in ("x", "sweep"):
        assert jobctl(["get", "job", name, "--tenant", "other", *output], capsys, monkeypatch) == \
            (1, "", f'Error from server (NotFound): jobs "{name}" not found\n')
        rc, out, err = jobctl(["get", "job", name, "--tenant", "nlp", *output], capsys, monkeypatch)
        assert (rc, err) == (0, "") and name in out
    assert store.writes == writes
    # without a name, a tenant with no jobs is still an empty list
    rc, out, err = jobctl(["get", "jobs", "--tenant", "other", *output], capsys, monkeypatch)
    assert (rc, err) == (0, "") and ("No jobs found." in out if output in ([], ["-o", "wide"]) else "items" in out)


@pytest.mark.parametrize("noun", ["nodes", "queues", "priorityclasses"])
def test_an_empty_name_is_refused_for_every_noun(noun: str, store: FakeSync, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert jobctl(["get", noun, ""], capsys, monkeypatch) == (1, "", "error: resource name may not be empty\n")


def _seeded(store: FakeSync) -> None:
    store.put(keys.job_key("taken"), json.dumps(job("taken")).encode())
    store.put(keys.priority_class_key("high"), json.dumps({"kind": "PriorityClass", "name": "high", "value": 100}).encode())
    store.put(keys.TENANTS + "nlp", json.dumps({"kind": "Tenant", "name": "nlp", "nominal_gpus": 8,
                                                "job_name_prefix": "nlp-", "max_priority": 10}).encode())


@pytest.mark.parametrize(("text", "want"), [
    ("name: a\npriority_class: nope\ntasks: [{name: w, command: x}]\n",
     'error: job a: priority_class: no priority class "nope"'),
    ("name: a\ndepends_on: [{job: ghost}]\ntasks: [{name: w, command: x}]\n", 'error: job a: depends_on: no job "ghost"'),
    ("name: taken\ntasks: [{name: w, command: x}]\n", 'Error from server (AlreadyExists): jobs "taken" already exists'),
    ("name: a\ntasks: [{name: w, command: x}]\n---\nname: taken\ntasks: [{name: w, command: x}]\n",
     'Error from server (AlreadyExists): jobs "taken" already exists'),
    ("name: a\ntenant: nlp\ntasks: [{name: w, command: x}]\n", "error: not admitted\n  job a: tenant nlp admits only"),
    ("name: nlp-a\ntenant: nlp\npriority_class: high\ntasks: [{name: w, command: x}]\n",
     "error: not admitted\n  job nlp-a: tenant nlp allows priority up to 10; this job has 100"),
    ("name: taken\narray: '0-1'\ntasks: [{name: w, command: x}]\n",
     "Error from server (AlreadyExists): jobs \"taken\" already exists (a job array may not take a job's name)"),
], ids=["priority-class", "dependency", "name-taken", "name-taken-second", "admission-prefix", "admission-priority",
        "array-name-taken"])
def test_a_server_dry_run_refuses_what_a_submit_refuses(text: str, want: str, store: FakeSync,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--dry-run`` passed all these (it never connects) and the server-side branch of
    submit.run could never be reached; ``--dry-run=server`` says what submit says, writes nothing.
    (A real submit writes the jobs before a taken name, and says so; the dry run writes none.)"""
    _seeded(store)
    writes = store.writes
    assert jobctl(["submit", "-f", "-", "--dry-run"], capsys, monkeypatch, text)[0] == 0  # (the file alone is fine)
    rc, out, err = jobctl(["submit", "-f", "-", "--dry-run=server"], capsys, monkeypatch, text)
    assert (rc, out) == (1, "") and err.startswith(want), err
    assert store.writes == writes
    real = jobctl(["submit", "-f", "-"], capsys, monkeypatch, text)
    if "---" in text:
        assert real == (1, "job/a submitted\n", want + " (1 submitted before it: a)\n")
    else:
        assert real == (rc, out, err)


def test_a_server_dry_run_that_passes_writes_nothing(store: FakeSync, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _seeded(store)
    writes = store.writes
    text = ("name: nlp-a\ntenant: nlp\ntasks: [{name: w, command: x}]\n---\nname: b\npriority_class: high\n"
            "depends_on: [{job: taken}, {job: nlp-a}]\ntasks: [{name: w, command: x}]\n---\n"
            "name: sweep\narray: '0-2'\ntasks: [{name: w, command: x}]\n")
    rc, out, err = jobctl(["submit", "-f", "-", "--dry-run=server"], capsys, monkeypatch, text)
    assert (rc, err) == (0, "")
    assert out == "".join(f"job/{n} created (server dry run)\n" for n in ("nlp-a", "b", "sweep_0", "sweep_1", "sweep_2"))
    assert jobctl(["submit", "-f", "-", "--dry-run=server", "-o", "name"], capsys, monkeypatch, text) == \
        (0, "nlp-a\nb\nsweep_0\nsweep_1\nsweep_2\n", "")
    assert store.writes == writes
    rc, out, err = jobctl(["submit", "-f", "-"], capsys, monkeypatch, text)
    assert (rc, out.split()) == (0, [f"job/{n}" if i % 2 == 0 else "submitted"
                                     for n in ("nlp-a", "b", "sweep_0", "sweep_1", "sweep_2") for i in range(2)]), err
    assert store.writes == writes + 5


def test_the_dry_run_values_are_kubectls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_cluster(*a: Any, **k: Any) -> Any:
        raise AssertionError("a client dry run connected")

    monkeypatch.setattr(cli_main, "SyncClient", no_cluster)
    text = "name: a\npriority_class: nope\ntasks: [{name: w, command: x}]\n"
    for flag in ("--dry-run", "--dry-run=client"):
        assert jobctl(["submit", "-f", "-", flag], capsys, monkeypatch, text) == (0, "job/a valid (dry run)\n", "")
    assert jobctl(["submit", "--dry-run", "-f", "-"], capsys, monkeypatch, text) == (0, "job/a valid (dry run)\n", "")
    for bad in ("--dry-run=true", "--dry-run=", "--dry-run=Server"):
        rc, out, err = jobctl(["submit", "-f", "-", bad], capsys, monkeypatch, text)
        assert (rc, out) == (2, "") and 'must be "none", "server", or "client"' in err and "usage:" in err, err
    fake = FakeSync()
    monkeypatch.setattr(cli_main, "SyncClient", lambda *a, **k: fake)  # =none: a real submit, as kubectl's
    assert jobctl(["submit", "-f", "-", "--dry-run=none"], capsys, monkeypatch, text.replace("priority_class: nope\n", "")) \
        == (0, "job/a submitted\n", "") and fake.writes == 1


@pytest.fixture
def agent_logs(store: FakeSync):
    """A job running on n1, whose agent's log endpoint answers what ``body`` holds, and the
    query strings it was asked with."""
    import http.server
    import threading

    asked: list[str] = []
    body: list[bytes] = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path.partition("?")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body[0])))
            self.end_headers()
            self.wfile.write(body[0])

        def do_POST(self) -> None:  # /exec: the command's answer, as the agent gives it
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(f"exec {self.path} {request['argv']} {request['timeout_s']}")
            answer = json.dumps({"exit_code": 3, "stdout": "out\n", "stderr": "err\n",
                                 "stdout_b64": base64.b64encode(b"out\n").decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store.put(keys.job_key("x"), json.dumps(job("x")).encode())
    store.put(keys.jobstatus_key("x"), json.dumps({"phase": "Running", "reason": "Running", "message": "", "placement": [
        {"task": "w-0", "node": "n1", "rack": "r0", "gpus": [0]}]}).encode())
    store.put(keys.node_key("n1"), json.dumps({"name": "n1", "agent": {
        "url": f"http://127.0.0.1:{server.server_address[1]}"}}).encode())
    try:
        yield body, asked
    finally:
        server.shutdown()
        server.server_close()


def test_logs_keep_characters_cut_by_a_read(agent_logs: Any, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """jobctl decoded each 8 KiB read on its own: a character whose UTF-8 bytes a read cut in
    two came out as two replacement characters."""
    body, _ = agent_logs
    text = "x" * 8191 + "é€😀 done\n"
    body[0] = text.encode() + b"\xff junk\n"  # bytes that are no UTF-8 are still replaced
    assert jobctl(["logs", "x"], capsys, monkeypatch) == (0, text + "\ufffd junk\n", "")


def test_logs_tail_below_minus_one_is_refused(agent_logs: Any, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl logs --tail -2: 'error: --tail must be greater than or equal to -1'; jobctl
    asked the agent for it (which now answers 400)."""
    _, asked = agent_logs
    assert jobctl(["logs", "x", "--tail", "-2"], capsys, monkeypatch) == \
        (1, "", "error: --tail must be greater than or equal to -1\n")
    assert asked == []
    assert jobctl(["logs", "x", "--tail", "-1"], capsys, monkeypatch)[0] == 0 and asked == ["tail=-1"]


@pytest.mark.parametrize(("flags", "query"), [
    (["--since", "10m"], "tail=-1&since_seconds=600"),
    (["--since", "1.5s", "--tail", "3"], "tail=3&since_seconds=2"),  # whole seconds, rounded up
    (["--since-time", "2026-12-05T10:00:00Z", "--timestamps"], "tail=-1&since_time=2026-12-05T10%3A00%3A00%2B00%3A00&timestamps=1"),
    (["-p"], "tail=-1&previous=1"),
    (["--previous", "--timestamps"], "tail=-1&timestamps=1&previous=1"),
])
def test_logs_take_kubectls_since_timestamps_and_previous(agent_logs: Any, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch, flags: list[str], query: str) -> None:
    _, asked = agent_logs
    assert jobctl(["logs", "x", *flags], capsys, monkeypatch)[0] == 0
    assert asked == [query]


@pytest.mark.parametrize(("flags", "err"), [
    (["--since", "0s"], "error: --since must be greater than 0"),
    (["--since=-5m"], "error: --since must be greater than 0"),
    (["--since", "ten"], 'error: --since: time: invalid duration "ten"'),
    (["--since-time", "yesterday"], "error: --since-time: 'yesterday' is not an RFC 3339 time such as 2026-12-05T10:00:00Z"),
    (["--since-time", "2026-12-05T10:00:00"], "error: --since-time: '2026-12-05T10:00:00' is not an RFC 3339 time"),
    (["--since", "5m", "--since-time", "2026-12-05T10:00:00Z"], "error: at most one of --since-time or --since may be specified"),
])
def test_logs_flags_kubectl_refuses_are_refused_before_asking(agent_logs: Any, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch, flags: list[str], err: str) -> None:
    _, asked = agent_logs
    code, out, stderr = jobctl(["logs", "x", *flags], capsys, monkeypatch)
    assert (code, out, asked) == (1, "", []) and stderr.startswith(err), stderr


def test_exec_runs_through_the_agent_and_exits_with_the_commands_code(
        agent_logs: Any, store: FakeSync, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl exec's contract: stdout and stderr as the command wrote them, its exit code."""
    _, asked = agent_logs
    assert jobctl(["exec", "x", "--", "sh", "-c", "exit 3"], capsys, monkeypatch) == (3, "out\n", "err\n")
    assert asked == ["exec /exec/x/w-0 ['sh', '-c', 'exit 3'] 30.0"]
    assert jobctl(["exec", "x", "--task", "w-0", "--timeout-s", "5", "--", "nvidia-smi", "-L"], capsys,
                  monkeypatch)[0] == 3  # (after --, -L is the command's: argparse took it for its own)
    assert asked[-1] == "exec /exec/x/w-0 ['nvidia-smi', '-L'] 5.0"
    for args, says in ((["exec", "x"], "you must specify at least one command"),
                       (["exec", "x", "--"], "you must specify at least one command"),
                       (["exec", "x", "--timeout-s", "0", "--", "true"], "--timeout-s must be a number of seconds > 0"),
                       (["exec", "x", "--task", "w-9", "--", "true"], "job x has no task 'w-9'")):
        rc, out, err = jobctl(args, capsys, monkeypatch)
        assert rc == 1 and says in err, (args, rc, err)
    store.put(keys.jobstatus_key("x"), json.dumps({"phase": "Suspended", "reason": "", "message": "", "placement": [
        {"task": "w-0", "node": "n1", "rack": "r0", "gpus": [0]}]}).encode())
    rc, _, err = jobctl(["exec", "x", "--", "true"], capsys, monkeypatch)
    assert rc == 1 and "job x is not running (Suspended)" in err, err
    assert len(asked) == 2  # nothing was sent for the refused ones
    assert jobctl(["logs", "x", "--", "y"], capsys, monkeypatch)[0] == 2  # other verbs: argparse's own rules

def test_listing_reads_jobs_and_statuses_at_one_revision(store: FakeSync) -> None:
    """``get jobs`` lists through ``Client.get_all`` (a streamed range; one range from etcd:
    tests/server/test_range_stream.py), the statuses at the jobs' revision."""
    from scheduler.cli.common import list_prefix

    for i in range(5):
        store.put(f"/registry/jobs/j{i}", b"{}")
    kvs, revision = list_prefix(store, "/registry/jobs/")
    assert [kv.key for kv in kvs] == [f"/registry/jobs/j{i}".encode() for i in range(5)] and revision == store.rev
    assert list_prefix(store, "/registry/jobs/", 3)[1] == 3
