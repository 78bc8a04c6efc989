"""Every etcdctl 3.4 command and every one of its flags exists in kvctl (read from
``etcdctl <command> --help``), except the ones docs/kvctl.md says do not apply."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest
from kvclusters import etcdctl_path

from kvraft.cli.main import build_parser

NOT_APPLICABLE = {"migrate", "help", "completion"}  # v2 store conversion; cobra's own commands


def _child(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            child: argparse.ArgumentParser = action.choices[name]
            return child
    return None


def test_every_etcdctl_command_and_flag_exists() -> None:
    binary = etcdctl_path()
    if binary is None:
        pytest.skip("etcdctl not installed")
    parser, _bools, _true = build_parser()
    top = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout
    commands = re.findall(r"^\t([a-z-]+(?: [a-z-]+)?)\t", top, re.M)
    assert len(commands) > 40
    missing = []
    for command in commands:
        words = command.split()
        if words[0] in NOT_APPLICABLE:
            continue
        node: argparse.ArgumentParser | None = parser
        for word in words:
            node = _child(node, word) if node is not None else None
        if node is None:
            missing.append(command)
            continue
        text = subprocess.run([binary, *words, "--help"], capture_output=True, text=True, timeout=60).stdout
        options = text.split("OPTIONS:")[1].split("GLOBAL OPTIONS:")[0] if "OPTIONS:" in text else ""
        have = {flag for action in node._actions for flag in action.option_strings}
        missing += [f"{command} --{flag}" for flag in re.findall(r"--([a-z0-9-]+)", options)
                    if flag != "help" and f"--{flag}" not in have]
    assert not missing, missing


def test_every_etcdctl_global_flag_exists() -> None:
    """``etcdctl --help``'s OPTIONS, short forms included (``-d`` was missing until kvctl took DNS
    discovery)."""
    binary = etcdctl_path()
    if binary is None:
        pytest.skip("etcdctl not installed")
    parser, _bools, _true = build_parser()
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout
    options = text.split("OPTIONS:")[1]
    wanted = re.findall(r"^\s+(?:(-[a-z]), )?--([a-z0-9-]+)", options, re.M)
    assert len(wanted) > 15
    have = {flag for action in parser._actions for flag in action.option_strings}
    missing = [f for short, long in wanted for f in (short, f"--{long}") if f and f not in have]
    assert not missing, missing
