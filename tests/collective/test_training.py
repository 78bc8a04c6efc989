"""The example trainer: N ranks reach the weights of one process; checkpoints resume exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import Jobs, mpi_available

ROOT = Path(__file__).resolve().parents[2]
TRAINER = str(ROOT / "examples" / "train_digits.py")

pytest.importorskip("sklearn", reason="scikit-learn ships the digits data set (pip install -e '.[test]')")


def run_trainer(jobs: Jobs, size: int, backend: str, *args: str) -> list[dict[str, float]]:
    codes, out = jobs.run(size, [sys.executable, TRAINER, "--json", *args], backend=backend, timeout_s=120)
    assert all(c == 0 for c in codes), out[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    import subprocess

    path = tmp_path_factory.mktemp("single") / "w.npz"
    out = subprocess.run(
        [sys.executable, TRAINER, "--json", "--epochs", "4", "--save-weights", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    return weights(path), [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(
    ("size", "backend"),
    [(2, "tcp"), (3, "tcp"), pytest.param(2, "mpi", marks=pytest.mark.skipif(mpi_available() is not None, reason=str(mpi_available())))],
)
def test_n_ranks_reach_the_weights_of_one_process(jobs: Jobs, tmp_path: Path, single, size: int, backend: str) -> None:  # type: ignore[no-untyped-def]
    ref, ref_log = single
    path = tmp_path / "w.npz"
    log = run_trainer(jobs, size, backend, "--epochs", "4", "--save-weights", str(path))
    got = weights(path)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert all(r["ranks"] == size for r in log)
    for a, b in zip(log, ref_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert log[-1]["test_acc"] > 0.9  # it really learns the digits
    assert log[-1]["loss"] < log[0]["loss"] / 3


def test_checkpoint_resume_continues_the_same_trajectory(jobs: Jobs, tmp_path: Path, single) -> None:  # type: ignore[no-untyped-def]
    ref, _ = single
    ckpt = tmp_path / "ckpt"
    first = run_trainer(jobs, 2, "tcp", "--epochs", "2", "--checkpoint-dir", str(ckpt))
    assert [r["epoch"] for r in first] == [1, 2]
    assert (ckpt / "latest").read_text() == "epoch-0002.npz"
    path = tmp_path / "w.npz"
    second = run_trainer(jobs, 2, "tcp", "--epochs", "4", "--checkpoint-dir", str(ckpt), "--resume", "--save-weights", str(path))
    assert [r["epoch"] for r in second] == [3, 4]
    got = weights(path)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
