"""The pure parts of job arrays (``scheduler.arrays``): Slurm's index syntax, the elements
jobctl stores, whose turn it is under a limit (a property: never more than the limit, always
the lowest indices), the stored record's checks, and the validation of ``array``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import arrays
from scheduler.jobs import check_stored_job, normalize_job, validate_job


@pytest.mark.parametrize(("text", "indices", "limit"), [
    ("0-3", (0, 1, 2, 3), None),
    ("0-15%4", tuple(range(16)), 4),
    ("1,3,5-9", (1, 3, 5, 6, 7, 8, 9), None),
    ("0-99:10%2", tuple(range(0, 100, 10)), 2),
    (" 7 ", (7,), None),
    ("9,2,5", (2, 5, 9), None),  # sorted: the limit runs the lowest first
])
def test_slurms_index_syntax(text: str, indices: tuple[int, ...], limit: int | None) -> None:
    assert arrays.parse(text) == arrays.ArraySpec(indices, limit)


@pytest.mark.parametrize(("text", "why"), [
    ("", "must be a list of indices"),
    ("5-1", "'5-1': the range ends before it starts"),
    ("0-10:0", "'0-10:0': the step must be >= 1"),
    ("0-3%0", "%0: the limit of elements running at once must be a whole number >= 1"),
    ("0-3%x", "%x: the limit"),
    ("a-b", "'a-b': expected N, N-M or N-M:STEP"),
    ("-1", "'-1': expected N"),
    ("1,1", "index 1 appears twice"),
    ("0-5,3", "index 3 appears twice"),
    ("0-10000", "'0-10000': indices go up to 9999"),
    ("0-1000", "more than 1000 elements"),
    ("0-3%\u00b2", "%\u00b2: the limit of elements running at once must be a whole number"),  # was int()'s ValueError
    ("\u0663", "'\u0663': expected N"),  # an Arabic-Indic 3 was index 3
])
def test_bad_index_lists_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        arrays.parse(text)
    assert str(caught.value).startswith(why), caught.value


def _template(**extra: object) -> dict:
    return normalize_job({"name": "sweep", "tasks": [{"name": "w", "command": "x", "resources": {"gpus": 1}}],
                          **extra}, submitted_at=5.0)


@pytest.mark.parametrize(("indices", "limit", "name"), [
    ([5, 6, 7, 9, 12, 13, 14, 15], 4, "sweep_[5-7,9,12-15%4]"),
    ([3, 2], None, "sweep_[2-3]"),
    ([0, 2, 4], 1, "sweep_[0,2,4%1]"),
])
def test_held_elements_are_named_as_squeue_names_them(indices: list[int], limit: int | None, name: str) -> None:
    assert arrays.folded_name("sweep", indices, limit) == name


def test_expand_names_each_element_and_gives_it_its_own_checkpoints() -> None:
    elements = arrays.expand(_template(checkpoint_dir="/ckpt/sweep/"), "2,4%1")
    assert [e["name"] for e in elements] == ["sweep_2", "sweep_4"]
    assert [e["array"] for e in elements] == [{"job": "sweep", "index": i, "count": 2, "parallelism": 1} for i in (2, 4)]
    assert [e["checkpoint_dir"] for e in elements] == ["/ckpt/sweep/2", "/ckpt/sweep/4"]
    assert [e["submitted_at"] for e in elements] == [5.0 + 2e-6, 5.0 + 4e-6]  # (index order, a microsecond apart)
    assert all(e["tasks"] == elements[0]["tasks"] for e in elements)
    for e in elements:
        assert check_stored_job(e["name"], e) == []
        assert arrays.env(e) == {"KVRAFT_ARRAY_JOB": "sweep", "KVRAFT_ARRAY_INDEX": str(e["array"]["index"]),
                                 "KVRAFT_ARRAY_COUNT": "2"}
    assert arrays.env(_template()) == {}
    assert arrays.expand(_template(), "0")[0]["checkpoint_dir"] is None


@pytest.mark.parametrize(("record", "name", "ok"), [
    ({"job": "s", "index": 3, "count": 4, "parallelism": None}, "s_3", True),
    ({"job": "s", "index": 3, "count": 4, "parallelism": 2}, "s_4", False),  # not its name
    ({"job": "s", "index": 3, "count": 4}, "s_3", False),
    ({"job": "s", "index": True, "count": 4, "parallelism": None}, "s_True", False),
    ({"job": "s", "index": 3, "count": 0, "parallelism": None}, "s_3", False),
    ({"job": "s", "index": 3, "count": 4, "parallelism": 0}, "s_3", False),
    ("s", "s_3", False),
])
def test_the_stored_record_is_checked_with_the_name(record: object, name: str, ok: bool) -> None:
    assert arrays.record_ok(record, name) is ok
    doc = dict(_template(), name=name, array=record)
    assert (check_stored_job(name, doc) == []) is ok


def test_a_hand_written_element_named_otherwise_says_its_name() -> None:
    doc = dict(_template(), name="other", array={"job": "s", "index": 3, "count": 4, "parallelism": None})
    assert [str(p) for p in check_stored_job("other", doc)] == ["array: an element of array 's' with index 3 is named 's_3'"]


def test_validation_of_array_in_a_job_file() -> None:
    base = {"tasks": [{"name": "w", "command": "x"}]}
    assert validate_job({"name": "sweep", "array": "0-3%2", **base}) == []
    assert [str(p) for p in validate_job({"name": "sweep", "array": "3-1", **base})] == [
        "array: '3-1': the range ends before it starts"]
    assert [str(p) for p in validate_job({"name": "sweep", "array": 5, **base})] == ["array: must be string, not int 5"]
    long = "x" * 60
    assert [str(p) for p in validate_job({"name": long, "array": "0-999", **base})] == [
        f"name: too long for a job array: its element '{long}_999' has more than 63 characters"]


STATES = st.lists(st.sampled_from(["running", "pending", "done"]), min_size=0, max_size=30)


@given(STATES, st.one_of(st.none(), st.integers(1, 8)))
def test_never_more_than_the_limit_and_always_the_lowest_pending_indices(states: list[str], limit: int | None) -> None:
    rows = [(i, f"a_{i}", s) for i, s in enumerate(states)]
    chosen = arrays.eligible(reversed(rows), limit)  # (any order in)
    pending = [name for _, name, s in rows if s == "pending"]
    running = states.count("running")
    assert chosen <= set(pending)
    if limit is None:
        assert chosen == set(pending)
    else:
        assert running + len(chosen) <= max(limit, running)
        assert chosen == set(pending[:max(0, limit - running)])


def test_the_example_sweep_is_valid_and_each_trial_gets_its_own_rate() -> None:
    import subprocess
    from pathlib import Path

    from scheduler.cli.submit import validated_jobs

    path = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "sweep.yaml"
    sweep, done = validated_jobs(path.read_text(), str(path))
    assert done["depends_on"] == [{"job": "digits-sweep"}]
    elements = arrays.expand(normalize_job(sweep), sweep["array"])
    assert [e["array"]["parallelism"] for e in elements] == [2] * 8
    command = elements[0]["tasks"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    rates = [subprocess.run(["/bin/sh", "-c", command[2].replace("python3 examples/train_digits.py", "echo")],
                            env=arrays.env(e), capture_output=True, text=True, check=True).stdout.split()[-1]
             for e in elements]
    assert rates == [f"0.0{i}" for i in range(2, 10)]
