"""Data-parallel training of a two-layer MLP on scikit-learn's digits (shipped with the package).

    python -m agent.collective.launch -n 2 examples/train_digits.py --epochs 10
    mpirun -n 2 python examples/train_digits.py              # (see docs/design/collective.md)
    python examples/train_digits.py                          # one process

Every step takes the same *global* batch (``--batch`` samples, order fixed by ``--seed`` and
the epoch); rank ``r`` computes the gradient of its contiguous share of it, divided by the
global batch size, and an allreduce *sum* gives every rank the full-batch mean gradient. So
N ranks follow the same trajectory as one process, up to floating-point summation order
(tests/collective/test_training.py checks the final weights).

The backward pass overlaps communication: the output layer's gradients start their
(async) allreduce while the hidden layer's gradients are computed. Rank 0 writes a checkpoint
after every epoch (atomically); ``--resume`` continues from the latest one.

Run as a scheduled job (``examples/digits-dp.yaml``, ``KVRAFT_JOB`` and ``KVRAFT_ENDPOINTS``
set by the agent), rank 0 also reports every epoch to kvraft at ``/jobs/<job>/progress``
(``jobctl describe`` and ``kvraft-local demo`` show it) and, unless ``--checkpoint-dir`` or
``KVRAFT_CHECKPOINT_DIR`` names a shared directory, keeps the checkpoint in kvraft at
``/jobs/<job>/<job uid>/checkpoint``: nodes share no filesystem, and a gang rescheduled on
other nodes resumes from there (``--resume`` is the default in a job).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

import agent.collective as gx


def load_digits_array() -> np.ndarray:
    """The 1,797 x 65 digits table (8x8 pixels + label) that scikit-learn ships.

    Read straight from the package's data file: importing ``sklearn`` itself costs seconds
    per rank on a 2-core machine; ``sklearn.datasets.load_digits`` is the fallback.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            return np.loadtxt(path, delimiter=",")
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.column_stack([d.data, d.target])


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    table = load_digits_array()
    x = (table[:, :64] / 16.0).astype(np.float64)
    y = table[:, 64].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_test = len(y) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def init_params(seed: int, hidden: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {
        "w1": (rng.standard_normal((64, hidden)) * np.sqrt(2 / 64)).astype(dtype),
        "b1": np.zeros(hidden, dtype),
        "w2": (rng.standard_normal((hidden, 10)) * np.sqrt(1 / hidden)).astype(dtype),
        "b2": np.zeros(10, dtype),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h_pre = x @ p["w1"] + p["b1"]
    h = np.maximum(h_pre, 0)
    logits = h @ p["w2"] + p["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return h_pre, h, probs


def save_checkpoint(directory: Path, epoch: int, params: dict[str, np.ndarray], velocity: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch-{epoch:04d}.npz"
    tmp = directory / f".epoch-{epoch:04d}.tmp.npz"
    arrays = {f"p_{k}": v for k, v in params.items()} | {f"v_{k}": v for k, v in velocity.items()}
    np.savez(tmp, epoch=np.array(epoch), **arrays)
    os.replace(tmp, path)
    (directory / ".latest.tmp").write_text(path.name)
    os.replace(directory / ".latest.tmp", directory / "latest")


def load_checkpoint(directory: Path) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    latest = directory / "latest"
    if not latest.exists():
        return None
    with np.load(directory / latest.read_text().strip()) as z:
        params = {k[2:]: z[k].copy() for k in z.files if k.startswith("p_")}
        velocity = {k[2:]: z[k].copy() for k in z.files if k.startswith("v_")}
        return int(z["epoch"]), params, velocity


class JobStore:
    """Progress and checkpoints of a scheduled job in kvraft (rank 0 only)."""

    def __init__(self, env: dict[str, str]) -> None:
        from agent.collective.rendezvous import client_options
        from kvraft.client import SyncClient

        self.job = env["KVRAFT_JOB"]
        self.uid = env.get("KVRAFT_JOB_UID", "0")
        self.run = env.get("KVRAFT_RUN_ID", "")
        self.restarts = int(env.get("KVRAFT_RESTARTS", "0") or 0)
        # user/password or the TLS files the agent passes on (agent.rankenv), as the rendezvous
        self.client = SyncClient(env["KVRAFT_ENDPOINTS"].split(","), request_timeout_s=10.0, **client_options(env))

    @property
    def checkpoint_key(self) -> str:
        return f"/jobs/{self.job}/{self.uid}/checkpoint"

    def report(self, record: dict[str, object]) -> None:
        doc = dict(record, job=self.job, run=self.run, restarts=self.restarts, at=time.time())
        self.client.put(f"/jobs/{self.job}/progress", json.dumps(doc).encode())

    def save(self, epoch: int, params: dict[str, np.ndarray], velocity: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        arrays = {f"p_{k}": v for k, v in params.items()} | {f"v_{k}": v for k, v in velocity.items()}
        np.savez(buf, epoch=np.array(epoch), **arrays)
        self.client.put(self.checkpoint_key, buf.getvalue())

    def load(self) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]] | None:
        got = self.client.get(self.checkpoint_key)
        if not got.kvs:
            return None
        with np.load(io.BytesIO(bytes(got.kvs[0].value))) as z:
            params = {k[2:]: z[k].copy() for k in z.files if k.startswith("p_")}
            velocity = {k[2:]: z[k].copy() for k in z.files if k.startswith("v_")}
            return int(z["epoch"]), params, velocity

    def close(self) -> None:
        self.client.close()


Checkpoint = tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]


def _env_rank() -> int:
    """This process's rank as the launcher set it, before MPI init (``agent.collective.bootstrap``
    reads the same variables)."""
    for name in ("KVRAFT_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class _Early:
    """``JobStore`` and its checkpoint, made on a thread while the main thread loads the data."""

    def __init__(self, wanted: bool, load: bool) -> None:
        self.store: JobStore | None = None
        self.loaded: Checkpoint | None = None
        self.error: BaseException | None = None
        self.load = load
        self.thread = threading.Thread(target=self._run, name="jobstore", daemon=True) if wanted else None
        if self.thread is not None:
            self.thread.start()

    def _run(self) -> None:
        try:
            self.store = JobStore(dict(os.environ))
            self.loaded = self.store.load() if self.load else None
        except BaseException as exc:  # raised on the main thread by result()
            self.error = exc

    def result(self) -> tuple[JobStore | None, Checkpoint | None]:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.store, self.loaded


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``), -1 where unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="global batch size (all ranks together)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--compression", choices=["fp16", "bf16"], default=None)
    ap.add_argument("--checkpoint-dir", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--save-weights", type=Path, help="rank 0 writes the final weights here (.npz)")
    ap.add_argument("--json", action="store_true", help="one JSON object per epoch")
    ap.add_argument("--epoch-pause-s", type=float, default=0.0, help="sleep after each epoch (fault drills)")
    ns = ap.parse_args(argv)
    in_job = bool(os.environ.get("KVRAFT_JOB") and os.environ.get("KVRAFT_ENDPOINTS"))
    if ns.checkpoint_dir is None and os.environ.get("KVRAFT_CHECKPOINT_DIR"):
        ns.checkpoint_dir = Path(os.environ["KVRAFT_CHECKPOINT_DIR"])
    ns.resume = ns.resume or in_job

    t_main = time.monotonic()
    # Rank 0 connects to kvraft and fetches the checkpoint *before* MPI init, beside loading
    # the data: after init the other ranks wait for it in a busy MPI broadcast, and on a
    # loaded machine their polling made this step take 5 s instead of 1 (docs/e2e.md).
    early = _Early(in_job and _env_rank() == 0, ns.resume and ns.checkpoint_dir is None)
    x_train, y_train, x_test, y_test = load_data(ns.seed)  # before init: ranks start in step
    store, stored = early.result()
    t_data = time.monotonic()
    comm = gx.init(compression=ns.compression)
    t_init = time.monotonic()
    if store is not None and comm.rank != 0:  # the launcher numbered the ranks otherwise
        store.close()
        store, stored = None, None
    elif store is None and in_job and comm.rank == 0:
        store = JobStore(dict(os.environ))
        stored = store.load() if ns.resume and ns.checkpoint_dir is None else None
    dtype = np.dtype(ns.dtype)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    params = init_params(ns.seed, ns.hidden, dtype)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    start_epoch = 0
    if ns.resume and comm.rank == 0:  # rank 0 loads; the broadcast below gives it to everyone
        loaded = load_checkpoint(ns.checkpoint_dir) if ns.checkpoint_dir is not None else stored
        if loaded is not None:
            start_epoch, params, velocity = loaded
            print(f"resumed from the checkpoint of epoch {start_epoch}", flush=True)
    epoch_box = np.array([start_epoch], np.int64)
    comm.broadcast([epoch_box], root=0)
    start_epoch = int(epoch_box[0])
    if comm.rank == 0:  # where the time to form the world goes (docs/e2e.md)
        print(f"world formed: {comm.size} ranks ({comm.backend_name}); {_process_age_s() - (time.monotonic() - t_main):.2f}"
              f" s to start and import, {t_data - t_main:.2f} s loading data and connecting to kvraft, "
              f"{t_init - t_data:.2f} s in init, {time.monotonic() - t_init:.2f} s to the first broadcast",
              file=sys.stderr, flush=True)
    if store is not None:  # the world is formed: every rank is in it
        store.report({"epoch": start_epoch, "started": True, "resumed_from": start_epoch, "ranks": comm.size,
                      "backend": comm.backend_name})
    names = ["w1", "b1", "w2", "b2"]
    comm.broadcast([params[k] for k in names] + [velocity[k] for k in names], root=0)  # one source of truth

    n = len(y_train)
    last: dict[str, object] = {}
    for epoch in range(start_epoch, ns.epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([ns.seed, epoch]).permutation(n)
        totals = np.zeros(3, np.float64)  # loss sum, correct, samples (this rank's share)
        for start in range(0, n, ns.batch):
            batch = order[start : start + ns.batch]
            global_b = len(batch)
            lo = global_b * comm.rank // comm.size
            hi = global_b * (comm.rank + 1) // comm.size
            idx = batch[lo:hi]
            x, y = x_train[idx], y_train[idx]
            h_pre, h, probs = forward(params, x)
            totals += (-np.log(probs[np.arange(len(y)), y] + 1e-12).sum(), (probs.argmax(1) == y).sum(), len(y))
            # backward, output layer first; its exchange overlaps the hidden layer's backward
            d_logits = probs.copy()
            d_logits[np.arange(len(y)), y] -= 1
            d_logits /= global_b
            g = {"w2": h.T @ d_logits, "b2": d_logits.sum(0)}
            out_handle = comm.allreduce([g["w2"], g["b2"]], async_op=True, name="out-layer")
            d_h = (d_logits @ params["w2"].T) * (h_pre > 0)
            g["w1"], g["b1"] = x.T @ d_h, d_h.sum(0)
            hid_handle = comm.allreduce([g["w1"], g["b1"]], async_op=True, name="hidden-layer")
            out_handle.wait()
            hid_handle.wait()
            for k in names:
                velocity[k] *= ns.momentum
                velocity[k] += g[k].astype(dtype, copy=False)
                params[k] -= ns.lr * velocity[k]
        comm.allreduce([totals])
        _, _, test_probs = forward(params, x_test)
        test_acc = float((test_probs.argmax(1) == y_test).mean())
        record = {
            "epoch": epoch + 1,
            "loss": round(totals[0] / totals[2], 6),
            "train_acc": round(totals[1] / totals[2], 4),
            "test_acc": round(test_acc, 4),
            "seconds": round(time.perf_counter() - t0, 3),
            "ranks": comm.size,
            "backend": comm.backend_name,
        }
        last = {"loss": record["loss"], "train_acc": record["train_acc"]}
        if comm.rank == 0:
            print(json.dumps(record) if ns.json else " ".join(f"{k} {v}" for k, v in record.items()), flush=True)
            if ns.checkpoint_dir is not None:
                save_checkpoint(ns.checkpoint_dir, epoch + 1, params, velocity)
            elif store is not None:
                store.save(epoch + 1, params, velocity)
            if store is not None:
                store.report(dict(record, resumed_from=start_epoch))
        comm.barrier()  # the checkpoint exists before anyone can resume from it
        if ns.epoch_pause_s:
            time.sleep(ns.epoch_pause_s)
    if ns.save_weights is not None and comm.rank == 0:
        np.savez(ns.save_weights, **params)
    if store is not None:
        _, _, test_probs = forward(params, x_test)
        final = {"epoch": ns.epochs, "test_acc": round(float((test_probs.argmax(1) == y_test).mean()), 4),
                 "done": True, "ranks": comm.size, "backend": comm.backend_name, "resumed_from": start_epoch, **last}
        store.report(final)
        store.close()
    comm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
