"""Interaction transcripts: whole-cluster scenarios in tests/raft/testdata/*.txt, run by
``kvraft.testing.interaction.InteractionEnv``. ``pytest --rewrite`` regenerates the
expected blocks; read the diff before committing it."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from kvraft.testing.interaction import InteractionEnv

from .datadriven import format_case, parse, rewrite

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_interaction(path: Path, request: pytest.FixtureRequest) -> None:
    cases = parse(path.read_text())
    env = InteractionEnv()
    outputs = [env.run(case.command) for case in cases]
    if request.config.getoption("--rewrite"):
        rewrite(path, cases, outputs)
        return
    for case, output in zip(cases, outputs, strict=True):
        if output != case.expected:
            want = format_case(case.command, case.expected)
            got = format_case(case.command, output)
            diff = "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
            pytest.fail(f"{path.name}:{case.line_no}: output differs\n{diff}", pytrace=False)


def test_runner_rewrites_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(
        "# c\nadd-nodes 1 voters=(1)\n----\nstale\n\nraft-state\n----\n----\nold\n\nold\n----\n----\n"
    )
    cases = parse(path.read_text())
    assert [c.command for c in cases] == ["add-nodes 1 voters=(1)", "raft-state"]
    assert cases[1].expected == "old\n\nold"
    env = InteractionEnv()
    rewrite(path, cases, [env.run(c.command) for c in cases])
    again = parse(path.read_text())
    assert path.read_text().startswith("# c\n")
    assert [c.expected for c in again] == [
        "1: Voters:[1] VotersOutgoing:[] Learners:[] LearnersNext:[] AutoLeave:false Term:1 Commit:1",
        "1: StateFollower (Voter) Term:1 Lead:0",
    ]
