"""Run by tests/collective/test_processes.py in every rank (not a test module itself).

Checks allreduce against numpy sums for many shapes and dtypes (each rank regenerates every
rank's data from the seed), plus mean, compression, async handles, broadcast, allgather and
barrier. Prints ``CHECKED rank=<r> backend=<name> links=<kinds> cases=<k>`` and exits 0, or
raises (``links`` is what the ring backend's links use, ``-`` for MPI).
"""

from __future__ import annotations

import numpy as np

import agent.collective as gx

SHAPES = [(), (1,), (7,), (0,), (3, 5), (2, 3, 4), (1000,), (70_001,), (300_001,)]
DTYPES = [np.float32, np.float64, np.int32, np.int64, np.float16]


def data(rank: int, case: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    rng = np.random.default_rng([case, rank])
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-50, 50, shape).astype(dtype)


def main() -> None:
    comm = gx.init()
    n = comm.size
    cases = [(i, s, d) for i, (s, d) in enumerate((s, d) for s in SHAPES for d in DTYPES)]

    def want(i: int, s: tuple[int, ...], d: type) -> np.ndarray:
        return np.asarray(sum(data(r, i, s, d).astype(np.float64) for r in range(n))).astype(d)

    def check(got: np.ndarray, ref: np.ndarray, what: str) -> None:
        if got.dtype == np.float16:
            ok = np.allclose(got.astype(np.float32), ref.astype(np.float32), rtol=3e-3, atol=1e-2)
        elif got.dtype.kind == "f":
            ok = np.allclose(got, ref, rtol=1e-5, atol=1e-5)
        else:
            ok = np.array_equal(got, ref)
        assert ok and got.shape == ref.shape, f"rank {comm.rank} {comm.backend_name}: wrong result for {what}"

    arrays = [data(comm.rank, i, s, d) for i, s, d in cases]
    comm.allreduce(arrays)  # one fused call
    for (i, s, d), a in zip(cases, arrays, strict=True):
        check(a, want(i, s, d), f"fused {s} {np.dtype(d)}")
    for i, s, d in cases[::3]:  # one call per tensor
        a = data(comm.rank, i, s, d)
        comm.allreduce(a)
        check(a, want(i, s, d), f"single {s} {np.dtype(d)}")
    ramp = (np.arange(4_000_000) % 1000).astype(np.float32)  # 16 MB: more than the socket buffers
    big = ramp + comm.rank
    comm.allreduce(big)
    check(big, ramp * n + n * (n - 1) / 2, "16 MB")
    handles = []
    asyncs = [data(comm.rank, 900 + k, (50_000 + k,), np.float32) for k in range(4)]
    for a in asyncs:
        handles.append(comm.allreduce([a], op="mean", async_op=True))
    for k, (h, a) in enumerate(zip(handles, asyncs, strict=True)):
        h.wait(120)
        check(a, (want(900 + k, (50_000 + k,), np.float32) / n).astype(np.float32), "async mean")
    for comp, tol in (("fp16", 1e-2), ("bf16", 8e-2)):
        a = data(comm.rank, 950, (100_000,), np.float32)
        comm.allreduce(a, compression=comp)
        assert np.allclose(a, want(950, (100_000,), np.float32), rtol=tol, atol=tol), comp
        every = comm.allgather(a)
        assert (every == every[0]).all(), f"{comp}: ranks disagree"
    b = np.arange(10.0) * comm.rank
    comm.broadcast(b, root=n - 1)
    assert np.array_equal(b, np.arange(10.0) * (n - 1))
    g = comm.allgather(np.array([comm.rank], np.int64))
    assert g.ravel().tolist() == list(range(n))
    comm.barrier()
    links = getattr(comm.backend, "links", "-")
    print(f"CHECKED rank={comm.rank} backend={comm.backend_name} links={links} cases={len(cases) * 2}", flush=True)
    comm.close()


if __name__ == "__main__":
    main()
