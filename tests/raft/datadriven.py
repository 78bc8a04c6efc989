"""A tiny reader/writer for data-driven test files (the format of cockroachdb/datadriven,
as used by etcd-io/raft's testdata).

A file is a sequence of cases::

    # comments and blank lines between cases are kept as they are
    command arg key=(1,2)
    ----
    expected output, ending at the first blank line

When the output itself contains a blank line, the case uses a doubled separator::

    command
    ----
    ----
    output

    with blank lines
    ----
    ----
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEP = "----"


@dataclass
class Case:
    line_no: int  # 1-based line of the command
    command: str
    expected: str
    span: tuple[int, int]  # lines [start, end) of the whole case in the file


def parse(text: str) -> list[Case]:
    lines = text.split("\n")
    cases: list[Case] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start = i
        command = line.strip()
        i += 1
        if i >= len(lines) or lines[i] != SEP:
            raise ValueError(f"line {start + 1}: expected {SEP!r} after command {command!r}")
        i += 1
        out: list[str] = []
        if i < len(lines) and lines[i] == SEP:  # doubled separator: read to the closing pair
            i += 1
            while i < len(lines) and not (
                lines[i] == SEP and i + 1 < len(lines) and lines[i + 1] == SEP
            ):
                out.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"line {start + 1}: unterminated {SEP}/{SEP} block")
            i += 2
        else:
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
        cases.append(Case(start + 1, command, "\n".join(out), (start, i)))
    return cases


def format_case(command: str, output: str) -> list[str]:
    body = output.split("\n")
    if any(not line.strip() for line in body):
        return [command, SEP, SEP, *body, SEP, SEP]
    return [command, SEP, *body]


def rewrite(path: Path, cases: list[Case], outputs: list[str]) -> None:
    """Write ``path`` again with each case's expected output replaced."""
    lines = path.read_text().split("\n")
    for case, output in reversed(list(zip(cases, outputs, strict=True))):
        start, end = case.span
        lines[start:end] = format_case(case.command, output)
    path.write_text("\n".join(lines))
