"""The whole flow on a local cluster (3 members, 2 schedulers, 4 agents in 2 racks, 4 fake GPUs
each, lease TTL 3 s): a data-parallel job submitted with jobctl forms one MPI world across
agents and succeeds with the weights a single process gets; a job that cannot fit stays
pending with a reason; a cancelled job leaves no process; a drained node's gang moves to the
other rack and a SIGKILLed node's gang finishes elsewhere, both from their checkpoints. The node-kill test runs last (it takes a node away)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np

from tests.e2e.conftest import ROOT, Cluster, job_yaml, processes_with_env, wait_for


def _submit(cluster: Cluster, text: str) -> str:
    r = cluster.jobctl("submit", "-f", "-", "-o", "name", stdin=text)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_mpi_world_across_agents_succeeds_with_single_process_weights(cluster: Cluster, tmp_path) -> None:
    weights = tmp_path / "dist.npz"
    name = _submit(cluster, job_yaml("e2e-mpi", "--epochs", "3", "--save-weights", str(weights)))
    assert name == "e2e-mpi"
    status = cluster.succeeded(name, 240)
    placement = status["placement"] or status.get("last_placement") or []
    nodes = {p["node"] for p in placement}
    assert len(placement) == 4 and len(nodes) == 2 and len({p["rack"] for p in placement}) == 1, placement
    done = cluster.progress(name)
    assert done.get("done") and done["ranks"] == 4, done
    assert done["backend"] == "mpi+hierarchical", done  # one MPI world, hierarchy from the placement
    assert 0.9 < done["test_acc"] <= 1.0
    # the same global batch and seed in one process gives the same weights
    single = tmp_path / "single.npz"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--epochs", "3",
                        "--save-weights", str(single)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    with np.load(weights) as got, np.load(single) as ref:
        assert sorted(got.files) == sorted(ref.files)
        for k in ref.files:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)


def test_a_job_that_cannot_fit_stays_pending_with_a_reason(cluster: Cluster) -> None:
    name = _submit(cluster, job_yaml("e2e-huge", "--epochs", "1", workers=3, gpus=4))  # 12 GPUs in one rack: 8 max
    status = wait_for(lambda: (s := cluster.status(name)) and s.get("message") and s.get("reason") != "Queued" and s,
                      120, "a pending reason")
    assert status["phase"] == "Pending", status
    assert "GPU" in status["message"] and "rack" in status["message"], status["message"]
    r = cluster.jobctl("describe", "job", name)
    assert "Why pending:" in r.stdout
    assert cluster.jobctl("cancel", name).returncode == 0


def test_cancel_stops_every_task_everywhere(cluster: Cluster) -> None:
    name = _submit(cluster, job_yaml("e2e-cancel", "--epochs", "200", "--epoch-pause-s", "1"))
    wait_for(lambda: cluster.progress(name).get("ranks") == 4, 240, "the MPI world of e2e-cancel")
    assert len(processes_with_env(f"KVRAFT_JOB={name}")) >= 8  # jobrun + rank on each of 4 tasks, at least
    r = cluster.jobctl("cancel", name)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: cluster.status(name).get("phase") == "Cancelled", 120, "phase Cancelled")
    wait_for(lambda: not processes_with_env(f"KVRAFT_JOB={name}"), 120, "no process of the job left")


def test_tcp_ring_through_the_kvraft_rendezvous(cluster: Cluster) -> None:
    name = _submit(cluster, job_yaml("e2e-tcp", "--epochs", "2", backend="tcp"))
    cluster.succeeded(name, 240)
    done = cluster.progress(name)
    assert done["ranks"] == 4 and done["backend"] == "tcp+hierarchical", done


def _rank_pid(name: str, rank: int) -> int | None:
    for pid in processes_with_env(f"KVRAFT_JOB={name}"):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()  # noqa: SIM115
            env = open(f"/proc/{pid}/environ", "rb").read()  # noqa: SIM115
        except OSError:
            continue
        if b"train_digits.py" in cmd and b"jobrun" not in cmd and f"KVRAFT_RANK={rank}\0".encode() in env:
            return pid
    return None


def test_a_crashed_worker_restarts_the_gang_by_policy(cluster: Cluster) -> None:
    name = _submit(cluster, job_yaml("e2e-crash", "--epochs", "8", "--epoch-pause-s", "1.5",
                                     restart_policy="OnFailure", max_restarts=2))
    wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
             240, "two epochs of e2e-crash")
    pid = wait_for(lambda: _rank_pid(name, 2), 30, "the process of rank 2")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.status(name).get("restarts", 0) >= 1, 120, "the gang restarted")
    cluster.succeeded(name, 300)
    done = cluster.progress(name)
    assert done["restarts"] >= 1 and done["resumed_from"] >= 2, done


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]  # noqa: SIM115
    except (OSError, IndexError):
        return "gone"


def test_a_hung_worker_is_detected_and_the_gang_restarts_from_its_checkpoint(cluster: Cluster) -> None:
    """SIGSTOP of one rank: the collective's monitor declares it hung after its hang timeout,
    every survivor raises, the world ends, the gang restarts (OnFailure) from its checkpoint and
    finishes; the stopped process does not outlive its run."""
    name = _submit(cluster, job_yaml("e2e-hang", "--epochs", "8", "--epoch-pause-s", "1.5",
                                     restart_policy="OnFailure", max_restarts=2))
    wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
             240, "two epochs of e2e-hang")
    pid = wait_for(lambda: _rank_pid(name, 2), 30, "the process of rank 2")
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: cluster.status(name).get("restarts", 0) >= 1, 120, "the gang restarted after the hang")
    wait_for(lambda: _state(pid) in ("gone", "Z"), 60, "the stopped rank to be killed")
    events = cluster.jobctl("describe", "job", name).stdout
    assert "Restarted" in events and "failed" in events, events
    # the Failed event ends with the failed task's last log line: jobrun's reason
    assert "the MPI world failed with exit code" in events or "MPI daemon ended with exit code" in events, events
    # the hang was detected by the collective's monitor, not by a timeout of mpirun's: rank 0's
    # jobrun names the first error the ranks raised (its last log line, in the job's event)
    first_run = [p.read_text(errors="replace") for p in cluster.dir.glob(f"agents/*/data/tasks/{name}/worker-0/1/*.log")]
    summary = [ln for text in first_run for ln in text.splitlines() if "the MPI world failed" in ln]
    assert summary and "first error: agent.collective.errors.PeerFailure" in summary[0] \
        and "rank 2 is hung (no heartbeat for" in summary[0], summary or first_run
    cluster.succeeded(name, 300)
    done = cluster.progress(name)
    assert done["restarts"] >= 1 and done["resumed_from"] >= 2, done


def test_a_drained_nodes_gang_moves_to_the_other_rack_and_resumes_from_its_checkpoint(cluster: Cluster) -> None:
    """``jobctl drain NODE --requeue`` (kubectl drain's eviction): the ranks are stopped with the
    grace period, the gang is bound in the other rack (its own rack is one node short), and
    the new world, in a rendezvous namespace of its own, resumes from the last checkpoint.
    ``restart_policy: Never``: a requeue is not a restart."""
    name = _submit(cluster, job_yaml("e2e-drain", "--epochs", "8", "--epoch-pause-s", "1.5"))
    wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
             240, "two epochs of e2e-drain")
    first = cluster.status(name)["placement"]
    victim = first[-1]["node"]
    racks = {p["rack"] for p in first}
    r = cluster.jobctl("drain", victim, "--requeue")
    try:
        assert r.returncode == 0 and f"job/{name} requeue requested" in r.stdout, (r.stdout, r.stderr)
        status = cluster.succeeded(name, 300)
        assert (status["evictions"], status["restarts"]) == (1, 0), status
        second = status["placement"] or status.get("last_placement") or []
        assert second and not {p["rack"] for p in second} & racks, (first, second)
        done = cluster.progress(name)
        assert done.get("done") and done["resumed_from"] >= 2, done
        assert "Evicted" in cluster.describe(name)
    finally:
        cluster.jobctl("uncordon", victim)


def test_an_elastic_job_starts_with_what_fits_then_grows_and_resumes_from_its_checkpoint(cluster: Cluster) -> None:
    """``min_available: 2`` of 4 workers: while three fillers hold three nodes, the gang starts
    as a 2-rank world on the fourth; once it has checkpointed two epochs the fillers are
    cancelled, and the elastic plugin (``grow_after_s`` 5 here) stops it with its grace period
    and binds all 4 workers in one rack: a 4-rank world in a rendezvous namespace of its own
    that resumes from the checkpoint. A resize, not a restart."""
    fillers = [_submit(cluster, f"name: e2e-fill-{i}\ntasks: [{{name: w, command: [sleep, '600'], "
                                f"resources: {{gpus: 4, cpu: 50m}}}}]\n") for i in range(3)]
    wait_for(lambda: all(cluster.status(f).get("phase") == "Running" for f in fillers), 60, "the fillers running")
    text = job_yaml("e2e-elastic", "--epochs", "20", "--epoch-pause-s", "1", min_available=2)
    name = _submit(cluster, text)
    try:
        wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
                 240, "two epochs of the 2-rank world")
        assert len(cluster.status(name)["placement"]) == 2, cluster.describe(name)
    finally:
        for f in fillers:
            cluster.jobctl("cancel", f)
    status = cluster.succeeded(name, 300)
    assert (status["resizes"], status["restarts"], status["preemptions"]) == (1, 0, 0), status
    last = status["placement"] or status.get("last_placement") or []
    assert len(last) == 4 and len({p["rack"] for p in last}) == 1, last
    done = cluster.progress(name)
    assert done.get("done") and done["ranks"] == 4 and done["resumed_from"] >= 2, done
    assert "growing from 2 to 4 tasks" in cluster.describe(name)


def test_a_preempted_elastic_job_goes_on_at_once_with_the_ranks_that_fit(cluster: Cluster) -> None:
    """Shrink on contention with real agents and MPI: an elastic gang of 4 x 2 GPUs
    (``min_available: 2``) fills one rack, two non-preemptible fillers the other; a priority-100
    job that needs one whole node preempts the gang. Its ranks are stopped with the grace
    period, the preemptor is bound on one of its nodes, and its next run -- 2 of its 4 ranks, on
    the node it kept (held for it) -- resumes from the last checkpoint while the preemptor
    runs. Once that one is cancelled the gang finishes: a preemption, not a restart."""
    text = job_yaml("e2e-shrink", "--epochs", "20", "--epoch-pause-s", "1", min_available=2)
    name = _submit(cluster, text)
    jobs: list[str] = []
    try:
        wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
                 240, "two epochs of the 4-rank world")
        first = cluster.status(name)["placement"]
        assert len(first) == 4 and len({p["node"] for p in first}) == 2, cluster.describe(name)
        jobs += [_submit(cluster, f"name: e2e-sfill-{i}\npreemptible: false\ntasks: [{{name: w, command: [sleep, '600'], "
                                  f"resources: {{gpus: 4, cpu: 50m}}}}]\n") for i in range(2)]
        wait_for(lambda: all(cluster.status(f).get("phase") == "Running" for f in jobs), 60, "the fillers running")
        jobs.append(_submit(cluster, "name: e2e-shi\npriority: 100\ntasks: [{name: w, command: [sleep, '600'], "
                                     "resources: {gpus: 4, cpu: 50m}}]\n"))
        wait_for(lambda: cluster.status("e2e-shi").get("phase") == "Running", 90, "the preemptor running")
        wait_for(lambda: cluster.progress(name).get("ranks") == 2
                 and (cluster.progress(name).get("epoch") or 0) > (cluster.progress(name).get("resumed_from") or 0),
                 240, "an epoch of the 2-rank world")
        status = cluster.status(name)
        assert (status["phase"], status["preemptions"], status.get("restarts", 0)) == ("Running", 1, 0), status
        kept = {p["node"] for p in status["placement"]}
        shi = {p["node"] for p in cluster.status("e2e-shi")["placement"]}
        assert len(status["placement"]) == 2 and len(kept) == 1 and kept | shi == {p["node"] for p in first}, \
            (first, status["placement"], shi)
        assert cluster.progress(name)["resumed_from"] >= 2
        assert "elastic: restarts with 2 of 4 tasks on" in cluster.describe(name)
    finally:
        for j in jobs:
            cluster.jobctl("cancel", j)
    status = cluster.succeeded(name, 300)
    assert (status["preemptions"], status.get("restarts", 0)) == (1, 0), status
    assert cluster.progress(name).get("done"), cluster.progress(name)


def test_killed_node_gang_finishes_elsewhere_from_its_checkpoint(cluster: Cluster) -> None:
    name = _submit(cluster, job_yaml("e2e-kill", "--epochs", "8", "--epoch-pause-s", "1.5",
                                     restart_policy="OnFailure", max_restarts=3))
    wait_for(lambda: (cluster.progress(name).get("epoch") or 0) >= 2 and not cluster.progress(name).get("started"),
             240, "two epochs of e2e-kill")
    placement = cluster.status(name)["placement"]
    victim = placement[-1]["node"]
    r = cluster.local("kill-node", victim)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: cluster.status(name).get("restarts", 0) >= 1, 120, "the gang restarted")
    status = cluster.succeeded(name, 300)
    assert victim not in {p["node"] for p in (status["placement"] or status.get("last_placement") or [])}
    # one restart for one lost node: the world aborts before the victim's lease expires, and
    # the restart is not bound onto the victim again (scheduler/suspects.py)
    assert status["restarts"] == 1, cluster.describe(name)
    done = cluster.progress(name)
    assert done.get("done") and done["restarts"] == 1 and done["resumed_from"] >= 2, done
    # resuming from a checkpoint reaches the accuracy of an uninterrupted run (same seed)
    r2 = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--epochs", "8", "--json"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    last = [line for line in r2.stdout.splitlines() if line.startswith("{")][-1]
    assert abs(json.loads(last)["test_acc"] - done["test_acc"]) <= 0.003, (last, done)
