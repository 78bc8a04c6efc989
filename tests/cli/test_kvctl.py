"""kvctl behaviour beyond the golden sequences: snapshot save/status (against etcdctl on
the same file), watch and lock/elect processes, environment variables, error texts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kvctl_harness import Identity, run_etcdctl, run_kvctl

from kvraft.client import SyncClient

KVCTL = [sys.executable, "-m", "kvraft.cli"]


def _spawn(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "ETCDCTL_API": "3", **(env or {})})


def _stop(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out.decode(), "\n".join(line for line in err.decode().splitlines() if not line.startswith('{"level"'))


def _wait_line(proc: subprocess.Popen[bytes], count: int) -> list[bytes]:
    assert proc.stdout is not None
    return [proc.stdout.readline() for _ in range(count)]


def test_snapshot_save_progress_and_status_match_etcdctl(etcd_pair: tuple[Identity, Identity], tmp_path: Path) -> None:
    a, b = etcd_pair
    mine = run_kvctl([f"--endpoints={b.endpoint()}", "snapshot", "save", str(tmp_path / "kv.db")])
    assert mine.rc == 0 and mine.out == f"Snapshot saved at {tmp_path / 'kv.db'}\n"
    assert "100.00%" in mine.err and "[" in mine.err  # the progress bar (stderr)
    assert not (tmp_path / "kv.db.part").exists()
    golden = run_etcdctl([f"--endpoints={a.endpoint()}", "snapshot", "save", str(tmp_path / "ctl.db")])
    assert golden.rc == 0
    for path in (tmp_path / "kv.db", tmp_path / "ctl.db"):
        for fmt in ("simple", "json", "table", "fields"):
            want = run_etcdctl(["snapshot", "status", str(path), "-w", fmt])
            got = run_kvctl(["snapshot", "status", str(path), "-w", fmt])
            assert (got.rc, got.out) == (want.rc, want.out), (path.name, fmt)
    missing = run_kvctl(["snapshot", "status", str(tmp_path / "nope.db")])
    assert missing.rc == 1 and missing.err.startswith("Error: ")


def test_snapshot_save_errors_exit_like_etcdctl(etcd_pair: tuple[Identity, Identity], tmp_path: Path) -> None:
    """etcdctl exits 5 (ExitInterrupted) on any error of the save itself, with its texts."""
    a, b = etcd_pair
    missing_dir = str(tmp_path / "no" / "such" / "dir.db")
    for argv in (["--endpoints=127.0.0.1:1,127.0.0.1:2", "snapshot", "save", "x.db"],
                 [f"--endpoints={a.endpoint()}", "snapshot", "save", missing_dir]):
        want = run_etcdctl(argv)
        got = run_kvctl([f"--endpoints={b.endpoint()}", *argv[1:]] if a.endpoint() in argv[0] else argv)
        assert (got.rc, got.out, got.err) == (want.rc, want.out, want.err), argv
        assert got.rc == 5


def test_watch_prints_like_etcdctl(etcd_pair: tuple[Identity, Identity]) -> None:
    outputs = []
    for ident, command in ((etcd_pair[0], ["etcdctl"]), (etcd_pair[1], KVCTL)):
        with SyncClient(ident.runtime.endpoints) as client:
            start = client.put("wseed", b"0").header.revision
            client.put("wk", b"a")
            client.put("wk", b"b")
            client.delete("wk")
        proc = _spawn([*command, f"--endpoints={ident.endpoint()}", "watch", "wk", "--prev-kv", "--rev", str(start)])
        lines = _wait_line(proc, 13)  # PUT wk a / PUT (prev) wk a, wk b / DELETE (prev) wk b, wk ""
        _stop(proc)
        outputs.append(b"".join(lines).decode())
    assert outputs[0] == outputs[1] == "PUT\nwk\na\nPUT\nwk\na\nwk\nb\nDELETE\nwk\nb\nwk\n\n"


def test_watch_on_compacted_revision_exits_like_etcdctl(etcd_pair: tuple[Identity, Identity]) -> None:
    results = []
    for ident, runner in ((etcd_pair[0], run_etcdctl), (etcd_pair[1], run_kvctl)):
        with SyncClient(ident.runtime.endpoints) as client:
            client.put("cw", b"1")
            now = client.put("cw", b"2").header.revision
            client.compact(now, physical=True)
        result = runner([f"--endpoints={ident.endpoint()}", "watch", "cw", "--rev", "1", "-w", "json"])
        results.append((result.rc, ident.normalize(result.out), result.err))
    assert results[0] == results[1]
    assert results[1][0] == 5 and "watch was canceled" in results[1][2]


def test_watch_exec_runs_the_command_per_event(etcd_pair: tuple[Identity, Identity]) -> None:
    b = etcd_pair[1]
    with SyncClient(b.runtime.endpoints) as client:
        start = client.put("ex", b"v1").header.revision
    proc = _spawn([*KVCTL, f"--endpoints={b.endpoint()}", "watch", "ex", "--rev", str(start), "--",
                   "sh", "-c", 'echo "$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"'])
    lines = _wait_line(proc, 4)
    _stop(proc)
    assert lines == [b"PUT\n", b"ex\n", b"v1\n", b'"PUT" "ex" "v1"\n']


def test_lock_with_a_command_and_interop_with_etcdctl(etcd_pair: tuple[Identity, Identity]) -> None:
    b = etcd_pair[1]
    got = run_kvctl([f"--endpoints={b.endpoint()}", "lock", "L", "--ttl", "5", "--", "sh", "-c", 'echo "held $ETCD_LOCK_KEY"'])
    assert got.rc == 0 and got.out.startswith("held L/")
    holder = _spawn(["etcdctl", f"--endpoints={b.endpoint()}", "lock", "L2"])  # etcdctl holds L2
    key = _wait_line(holder, 1)[0].decode().strip()
    assert key.startswith("L2/")
    waiter = _spawn([*KVCTL, f"--endpoints={b.endpoint()}", "lock", "L2", "echo", "mine"])
    time.sleep(1.0)
    assert waiter.poll() is None  # kvctl waits for etcdctl's lock: same key layout, same recipe
    _stop(holder)
    out, _ = waiter.communicate(timeout=30)
    assert out == b"mine\n" and waiter.returncode == 0


def test_elect_prints_leader_then_observer_sees_it(etcd_pair: tuple[Identity, Identity]) -> None:
    b = etcd_pair[1]
    leader = _spawn([*KVCTL, f"--endpoints={b.endpoint()}", "elect", "E", "p1"])
    key, value = _wait_line(leader, 2)
    assert key.startswith(b"E/") and value == b"p1\n"
    observer = _spawn(["etcdctl", f"--endpoints={b.endpoint()}", "elect", "-l", "E"])
    assert _wait_line(observer, 2) == [key, b"p1\n"]
    _stop(leader)
    _stop(observer)
    assert leader.returncode == 0


def test_endpoints_from_environment_and_flag_precedence(etcd_pair: tuple[Identity, Identity]) -> None:
    b = etcd_pair[1]
    run_kvctl([f"--endpoints={b.endpoint()}", "put", "envk", "v"])
    for name in ("ETCDCTL_ENDPOINTS", "KVCTL_ENDPOINTS"):
        got = run_kvctl(["get", "envk", "--print-value-only"], env={name: b.endpoint()})
        assert (got.rc, got.out) == (0, "v\n"), name
    both = run_kvctl(["get", "envk", "-w", "json"], env={"KVCTL_ENDPOINTS": b.endpoint(), "ETCDCTL_ENDPOINTS": "127.0.0.1:1"})
    assert both.rc == 0
    flag = run_kvctl([f"--endpoints={b.endpoint()}", "get", "envk"], env={"ETCDCTL_ENDPOINTS": "127.0.0.1:1"})
    assert flag.rc == 0
    fmt = run_kvctl(["get", "envk"], env={"ETCDCTL_ENDPOINTS": b.endpoint(), "ETCDCTL_WRITE_OUT": "json"})
    assert fmt.out.startswith('{"header":')


def test_bad_input_is_a_clear_error_and_nonzero_exit() -> None:
    cases = [
        (["bogus"], 1, 'Error: unknown command "bogus" for "kvctl"\n'),
        (["get", "k", "--bogus"], 1, "Error: unknown flag: --bogus\n"),
        (["get", "k", "--limit", "x"], 1, 'Error: invalid argument "x" for "--limit" flag: strconv.ParseInt: parsing "x": invalid syntax\n'),
        (["get", "k", "--prefix=maybe"], 1, 'Error: invalid argument "maybe" for "--prefix" flag: strconv.ParseBool: parsing "maybe": invalid syntax\n'),
        (["--dial-timeout", "soon", "get", "k"], 1, 'Error: invalid argument "soon" for "--dial-timeout" flag: time: invalid duration "soon"\n'),
        (["-w", "protobuf", "get", "k"], 4, None),
    ]
    for argv, code, err in cases:
        result = run_kvctl(["--endpoints=127.0.0.1:1", *argv])
        assert result.rc == code, argv
        if err is not None:
            assert result.err == err, argv
        assert result.out == ""


def test_unreachable_endpoint_times_out_with_etcdctls_message() -> None:
    result = run_kvctl(["--endpoints=127.0.0.1:1", "--dial-timeout=200ms", "get", "k"])
    assert result.rc == 1 and result.err.startswith("Error: context deadline exceeded\n")


def test_bool_flags_accept_explicit_values(etcd_pair: tuple[Identity, Identity]) -> None:
    b = etcd_pair[1]
    run_kvctl([f"--endpoints={b.endpoint()}", "put", "bf1", "x"])
    on = run_kvctl([f"--endpoints={b.endpoint()}", "get", "bf", "--prefix=true", "--keys-only=false"])
    off = run_kvctl([f"--endpoints={b.endpoint()}", "get", "bf", "--prefix=false"])
    assert on.out == "bf1\nx\n" and off.out == ""


@pytest.mark.parametrize("load", ["s"])
def test_check_perf_runs_and_cleans_up(etcd_pair: tuple[Identity, Identity], load: str) -> None:
    b = etcd_pair[1]
    result = run_kvctl([f"--endpoints={b.endpoint()}", "check", "perf", "--load", load, "--duration", "2s",
                        "--prefix", "/perf/"])
    lines = result.out.splitlines()
    assert result.rc in (0, 1)  # throughput depends on the machine; the verdict is printed either way
    assert lines[-1] in ("PASS", "FAIL") and any("writes/s" in line for line in lines)
    assert (result.rc == 0) == (lines[-1] == "PASS")
    assert run_kvctl([f"--endpoints={b.endpoint()}", "get", "/perf/", "--prefix", "--keys-only"]).out == ""
    bad = run_kvctl([f"--endpoints={b.endpoint()}", "check", "perf", "--load", "huge"])
    assert (bad.rc, bad.err) == (4, "Error: unknown load option huge\n")


def test_lease_keep_alive_until_revoked_like_etcdctl(etcd_pair: tuple[Identity, Identity]) -> None:
    outputs = []
    for ident, command in ((etcd_pair[0], ["etcdctl"]), (etcd_pair[1], KVCTL)):
        with SyncClient(ident.runtime.endpoints) as client:
            # long enough that a slow start-up (seconds on a loaded box) cannot let it expire
            lease_id = client.lease_grant(15).id
            proc = _spawn([*command, f"--endpoints={ident.endpoint()}", "lease", "keep-alive", f"{lease_id:x}"])
            first = _wait_line(proc, 2)  # two renewals
            client.lease_revoke(lease_id)
            out, _err = proc.communicate(timeout=30)
        lines = [line.decode() for line in first] + out.decode().splitlines(keepends=True)
        outputs.append((proc.returncode, ident.normalize("".join(lines[:2]) + lines[-1])))
    assert outputs[0] == outputs[1]
    assert outputs[1][1].endswith("expired or revoked.\n") and outputs[1][0] == 0


def test_kvraft_only_commands(tmp_path: Path) -> None:
    from kvclusters import start_runtime

    kvraft = start_runtime("kvraft", tmp_path)
    try:
        endpoint = f"--endpoints={kvraft.endpoints[0]}"
        status = run_kvctl([endpoint, "auth", "status"])
        assert status.rc == 0 and status.out.startswith("Authentication Status: false\nAuthRevision: ")
        hashkv = run_kvctl([endpoint, "endpoint", "hashkv", "-w", "json"])
        assert hashkv.rc == 0 and '"HashKV":{"header":' in hashkv.out
        put = run_kvctl([endpoint, "--encoding=json", "put", "enc", "v"])
        assert (put.rc, put.out) == (0, "OK\n")
        assert run_kvctl([endpoint, "get", "enc", "--print-value-only"]).out == "v\n"  # msgpack by default
        saved = run_kvctl([endpoint, "snapshot", "save", str(tmp_path / "kv.snap")])
        assert saved.rc == 0 and (tmp_path / "kv.snap").stat().st_size > 0
        status = run_kvctl(["snapshot", "status", str(tmp_path / "kv.snap")])  # kvraft's own format
        assert status.rc == 0 and status.out.count(", ") == 3, status.err
    finally:
        kvraft.stop()


def test_password_prompt_at_end_of_input_like_etcdctl(etcd_pair: tuple[Identity, Identity]) -> None:
    """A prompt that meets the end of stdin reads an empty answer, as etcdctl's does: the
    same refusal and exit code, no traceback. A new session: no terminal to prompt on."""
    cases = [(["user", "add", "eof1"], ""), (["user", "add", "eof2"], "pw\n"), (["user", "passwd", "eof3"], "pw\n")]
    for argv, stdin in cases:
        results = []
        for ident, command in ((etcd_pair[0], ["etcdctl"]), (etcd_pair[1], KVCTL)):
            proc = subprocess.run([*command, f"--endpoints={ident.endpoint()}", *argv], input=stdin.encode(),
                                  capture_output=True, timeout=60, start_new_session=True,
                                  env={**os.environ, "ETCDCTL_API": "3"})
            results.append((proc.returncode, proc.stderr.decode().splitlines()[-1:]))
        assert results[0] == results[1], argv
    assert results[1][0] == 128


def test_message_size_limits_are_etcdctl_36s(etcd_pair: tuple[Identity, Identity]) -> None:
    """etcdctl 3.6's ``--max-request-bytes``/``--max-recv-bytes``: client-side limits, gRPC's
    ResourceExhausted texts (counted on kvctl's encoded bodies: JSON or msgpack, where gRPC
    counts protobuf bytes); 0 is clientv3's defaults (2 MiB to send)."""
    _, b = etcd_pair
    ep = f"--endpoints={b.endpoint()}"
    assert run_kvctl([ep, "put", "limits/k", "v" * 200]).rc == 0
    sent = run_kvctl([ep, "--max-request-bytes", "100", "put", "limits/k", "v" * 200])
    assert sent.rc == 1 and sent.err.startswith(
        "Error: rpc error: code = ResourceExhausted desc = trying to send message larger than max ("), sent.err
    assert sent.err.rstrip().endswith(" vs. 100)")
    got = run_kvctl([ep, "--max-request-bytes", "50", "--max-recv-bytes", "60", "get", "limits/k"])
    assert got.rc == 1 and "desc = grpc: received message larger than max (" in got.err, got.err
    assert run_kvctl([ep, "--max-request-bytes", "0", "--max-recv-bytes", "0", "get", "limits/k", "--print-value-only"]) \
        .out == "v" * 200 + "\n"
    big = run_kvctl([ep, "put", "limits/big", "x" * (2 * 1024 * 1024 + 1)])  # (clientv3's 2 MiB send default)
    assert big.rc == 1 and "trying to send message larger than max" in big.err and "vs. 2097152)" in big.err
    bad = run_kvctl([ep, "--max-request-bytes", "100", "--max-recv-bytes", "10", "get", "limits/k"])
    assert (bad.rc, bad.err) == (1, "Error: gRPC message recv limit (10 bytes) must be greater than send limit "
                                    "(100 bytes)\n")


def test_get_takes_etcdctl_35s_revision_filters_and_count_only(etcd_pair: tuple[Identity, Identity],
                                                                tmp_path: Path) -> None:
    """``get --min-create-rev/--max-create-rev/--min-mod-rev/--max-mod-rev`` (etcdctl 3.5's) and
    ``--count-only`` (etcdctl 3.4.45's, fields output only), on etcd and on kvraft."""
    from kvclusters import start_runtime

    kvraft = start_runtime("kvraft", tmp_path)
    try:
        for endpoint in (etcd_pair[1].endpoint(), kvraft.endpoints[0]):
            ep = f"--endpoints={endpoint}"
            revs = []
            for key in ("filt/a", "filt/b", "filt/a"):
                out = run_kvctl([ep, "-w", "json", "put", key, "v"]).out
                revs.append(int(out.split('"revision":')[1].split(",")[0]))
            r1, r2, r3 = revs

            def keys(*flags: str, ep: str = ep) -> list[str]:
                result = run_kvctl([ep, "get", "filt/", "--prefix", "--keys-only", *flags])
                assert result.rc == 0, result.err
                return [line for line in result.out.splitlines() if line]

            assert keys("--min-mod-rev", str(r3)) == ["filt/a"]
            assert keys("--max-mod-rev", str(r2)) == ["filt/b"]
            assert keys("--max-create-rev", str(r1)) == ["filt/a"]
            assert keys("--min-create-rev", str(r2)) == ["filt/b"]
            bad = run_kvctl([ep, "get", "filt/", "--prefix", "--min-create-rev", str(r2), "--max-create-rev", str(r1)])
            assert (bad.rc, bad.err) == (4, f"Error: getMinCreateRev(={r2}) > getMaxCreateRev(={r1})\n")
            counted = run_kvctl([ep, "-w", "fields", "get", "filt/", "--prefix", "--count-only"])
            assert counted.rc == 0 and '"Count" : 2\n' in counted.out and '"Key"' not in counted.out, counted.out
            simple = run_kvctl([ep, "get", "filt/", "--prefix", "--count-only"])
            assert (simple.rc, simple.err) == (128, "Error: --count-only is only for `--write-out=fields`\n")
            both = run_kvctl([ep, "get", "filt/", "--prefix", "--count-only", "--keys-only"])
            assert (both.rc, both.err) == (
                128, "Error: `--keys-only` and `--count-only` cannot be set at the same time, choose one\n")
    finally:
        kvraft.stop()


def test_member_list_consistency_is_etcdctl_36s(etcd_pair: tuple[Identity, Identity], tmp_path: Path) -> None:
    """``member list --consistency l`` (etcdctl 3.6's default) answers only with a quorum, as
    the leader has committed the members; ``s`` answers from the member asked. etcd 3.4 does
    not take the field, so it gets none (and answers as before)."""
    from kvclusters import FAST_FLAGS

    from kvraft.server.local import LocalCluster

    etcd = f"--endpoints={etcd_pair[1].endpoint()}"
    assert run_kvctl([etcd, "member", "list"]).rc == 0
    bad = run_kvctl([etcd, "member", "list", "--consistency", "x"])
    assert (bad.rc, bad.err) == (4, 'Error: unknown consistency flag "x"\n')
    cluster = LocalCluster(3, tmp_path / "kv", extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=90)
        survivor = cluster.members["m0"]
        ep = f"--endpoints={survivor.client_url}"
        assert run_kvctl([ep, "member", "list"]).out.count("started") == 3
        cluster.stop_member("m1")
        cluster.stop_member("m2")
        time.sleep(1.5)  # (past the election timeout: m0 has no leader)
        serializable = run_kvctl([ep, "--command-timeout=2s", "member", "list", "--consistency", "s"])
        assert serializable.rc == 0 and serializable.out.count("started") == 3, serializable.err
        linearizable = run_kvctl([ep, "--command-timeout=2s", "member", "list"])
        assert linearizable.rc != 0, linearizable.out
    finally:
        cluster.stop()
