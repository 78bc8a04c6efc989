"""``kvctl completion`` and ``jobctl completion``: the bash script completes commands,
subcommands, flags and file paths, as a shell would ask it (the completion function called
with COMP_WORDS set), and so does the fish one (fish's ``complete -C``); other shells are
refused with a message; no cluster is asked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

ASK = r"""
source <("$1" completion bash)
shift
words=("$@")
COMP_WORDS=("${words[@]}"); COMP_CWORD=$((${#words[@]} - 1)); COMP_LINE="${words[*]}"; COMP_POINT=${#COMP_LINE}
fn=$(complete -p "${words[0]}" | sed -E 's/.* -F ([^ ]+) .*/\1/')
"$fn" "${words[0]}" "${words[-1]}" "${words[-2]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(program: str, *words: str) -> list[str]:
    done = subprocess.run(["bash", "-c", ASK, "ask", str(BIN / program), program, *words],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(("words", "want"), [
    (("mem",), ["member"]),
    (("member", "l"), ["list"]),
    (("snapshot", "s"), ["save", "status"]),
    (("get", "--pre"), ["--prefix"]),
    (("--write-o",), ["--write-out"]),
    (("comp",), ["compaction", "completion"]),
])
def test_kvctl_completes_commands_and_flags(words: tuple[str, ...], want: list[str]) -> None:
    assert sorted(complete("kvctl", *words)) == want


def test_file_flags_complete_paths(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "job.yaml").write_text("x")
    assert complete("kvctl", "get", "--cacert", f"{tmp_path}/c") == [f"{tmp_path}/ca.crt"]
    assert complete("kvctl", "snapshot", "save", f"{tmp_path}/j") == [f"{tmp_path}/job.yaml"]
    assert complete("jobctl", "submit", "-f", f"{tmp_path}/j") == [f"{tmp_path}/job.yaml"]


def test_jobctl_completes_its_verbs_without_a_cluster() -> None:
    assert complete("jobctl", "sus") == ["suspend"]
    assert sorted(complete("jobctl", "c")) == ["cancel", "completion", "cordon"]


@pytest.mark.parametrize("program", ["kvctl", "jobctl"])
def test_other_shells_are_refused_with_the_ones_there_are(program: str) -> None:
    done = subprocess.run([str(BIN / program), "--endpoints", "127.0.0.1:1", "completion", "powershell"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no completion for 'powershell'" in done.stderr and "bash, zsh, tcsh, fish" in done.stderr


def test_kvctl_completion_wants_one_shell() -> None:
    done = subprocess.run([str(BIN / "kvctl"), "completion"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "one argument, the shell" in done.stderr


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
@pytest.mark.parametrize("program", ["kvctl", "jobctl"])
def test_the_zsh_script_parses(program: str, tmp_path: Path) -> None:
    script = tmp_path / f"_{program}"
    script.write_text(subprocess.run([str(BIN / program), "completion", "zsh"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    subprocess.run(["zsh", "-n", str(script)], check=True, timeout=60)


def complete_fish(program: str, line: str, tmp_path: Path) -> list[str]:
    """What fish offers for ``line`` with ``program``'s script loaded (the candidates, their
    descriptions dropped)."""
    script = tmp_path / "scripts" / f"{program}.fish"
    script.parent.mkdir(exist_ok=True)
    script.write_text(subprocess.run([str(BIN / program), "completion", "fish"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    done = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C {_fish_quote(line)}"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stderr == ""
    return sorted(ln.split("\t")[0] for ln in done.stdout.splitlines() if ln)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


needs_fish = pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")


@needs_fish
@pytest.mark.parametrize(("line", "want"), [
    ("kvctl mem", ["member"]),
    ("kvctl member l", ["list"]),
    ("kvctl lease gr", ["grant"]),
    ("kvctl snapshot s", ["save", "status"]),
    ("kvctl get --pre", ["--prefix"]),
    ("kvctl get foo --pre", ["--prefix"]),  # a key typed: still get's flags
    ("kvctl --write-o", ["--write-out"]),
    ("kvctl -w json member l", ["list"]),  # -w's value is not taken for a command
    ("kvctl --endpoints=127.0.0.1:2379 mem", ["member"]),
    ("kvctl comp", ["compaction", "completion"]),
    ("kvctl --encoding ", ["auto", "json", "msgpack"]),
    ("jobctl sus", ["suspend"]),
    ("jobctl c", ["cancel", "completion", "cordon"]),
    ("kvutl snapshot ", ["restore", "save", "status"]),
])
def test_the_fish_script_completes_commands_and_flags(line: str, want: list[str], tmp_path: Path) -> None:
    assert complete_fish(line.split()[0], line, tmp_path) == want


@needs_fish
def test_the_fish_script_completes_paths_where_a_file_goes(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "job.yaml").write_text("x")
    assert complete_fish("kvctl", f"kvctl get --cacert {tmp_path}/c", tmp_path) == [f"{tmp_path}/ca.crt"]
    assert complete_fish("kvctl", f"kvctl snapshot save {tmp_path}/j", tmp_path) == [f"{tmp_path}/job.yaml"]
    assert complete_fish("jobctl", f"jobctl submit -f {tmp_path}/j", tmp_path) == [f"{tmp_path}/job.yaml"]
    assert complete_fish("kvctl", f"kvctl get {tmp_path}/j", tmp_path) == []  # a key, not a path


@needs_fish
@pytest.mark.parametrize("program", ["kvctl", "jobctl", "kvutl"])
def test_the_fish_script_parses(program: str, tmp_path: Path) -> None:
    script = tmp_path / f"{program}.fish"
    script.write_text(subprocess.run([str(BIN / program), "completion", "fish"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    subprocess.run(["fish", "--no-config", "-n", str(script)], check=True, timeout=60)
