"""Shell completion scripts for the command-line programs built on this client (kvctl,
jobctl), as ``observe`` is their shared logging: ``script(parser, shell)`` turns a program's
argparse tree into a bash, zsh or tcsh completion script (shtab) or a fish one (``_fish``,
written here: shtab has none), and ``complete_files`` marks the flags whose value is a file
path. Static: a script completes commands, flags and paths, and never asks a cluster."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import shtab

__all__ = ["SHELLS", "complete_files", "script"]

SHELLS = ("bash", "zsh", "tcsh", "fish")


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell``; ``ValueError`` for another shell."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}: {parser.prog} writes {', '.join(SHELLS)} scripts")
    text: str = _fish(parser) if shell == "fish" else shtab.complete(parser, shell=shell)
    return text if text.endswith("\n") else text + "\n"


def complete_files(*actions: argparse.Action) -> None:
    """Mark flags whose value is a file path: the scripts complete paths there."""
    for action in actions:
        action.complete = shtab.FILE  # type: ignore[attr-defined]


# --- fish ------------------------------------------------------------------------------------


def _walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)parser with its command path ("" for the program, "lease grant", ...)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) in seen:  # an alias: the same parser under another name
                    continue
                seen.add(id(child))
                yield from _walk(child, f"{path} {name}".strip())


def _children(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(name, help) of the subcommands, aliases included, hidden ones left out."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            shown = {id(action.choices[n]) for n in helps if n in action.choices}
            for name, child in action.choices.items():
                if id(child) in shown:
                    main = next(n for n in helps if action.choices.get(n) is child)
                    out.append((name, str(helps[main])))
    return out


def _quote(text: str) -> str:
    """A fish single-quoted word."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _one_line(text: str, action: argparse.Action | None = None) -> str:
    """A help text as fish shows it beside a candidate: one line, argparse's ``%(default)s``
    filled in, cut at 120 characters."""
    text = " ".join(text.split())
    if action is not None and "%(" in text:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % {"default": action.default, "prog": "", "choices": action.choices}
    return text[:120]


def _fish(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog.split()[0]
    fn = "__" + "".join(c if c.isalnum() else "_" for c in prog)
    nodes = list(_walk(parser))
    paths = [p for p, _ in nodes]
    takes_value = [f"{p}|{opt}" for p, sub in nodes for a in sub._actions
                   if a.option_strings and a.nargs != 0 and a.help != argparse.SUPPRESS for opt in a.option_strings]
    lines = [
        f"# fish completion for {prog}: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        f"# (generated from {prog}'s own parser: its commands, subcommands and flags; never asks a cluster)",
        f"set -g {fn}_paths {' '.join(_quote(p) for p in paths)}",
        f"set -g {fn}_takes_value {' '.join(_quote(v) for v in takes_value)}",
        "",
        f"function {fn}_path --description 'the {prog} subcommand path typed so far'",
        "    set -l tokens (commandline -opc)",
        "    set -e tokens[1]",
        "    set -l path ''",
        "    set -l skip 0",
        "    for t in $tokens",
        "        if test $skip -eq 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $t",
        "            case '--*=*'",
        "                continue",
        "            case '-*'",
        f"                if contains -- \"$path|$t\" ${fn}_takes_value",
        "                    set skip 1",
        "                end",
        "                continue",
        "        end",
        "        set -l next $t",
        "        if test -n \"$path\"",
        "            set next \"$path $t\"",
        "        end",
        f"        if contains -- $next ${fn}_paths",
        "            set path $next",
        "        else",
        "            break",
        "        end",
        "    end",
        "    echo $path",
        "end",
        "",
        f"function {fn}_at --description 'whether the path typed so far is the one given'",
        f"    set -l path ({fn}_path)",
        "    test \"$path\" = \"$argv[1]\"",
        "end",
        "",
        f"complete -c {prog} -f",
    ]
    for path, sub in nodes:
        cond = f"-n {_quote(f'{fn}_at {_quote(path)}')}"
        for name, text in _children(sub):
            lines.append(f"complete -c {prog} {cond} -a {_quote(name)} -d {_quote(_one_line(text))}")
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                if not action.option_strings and getattr(action, "complete", None) == shtab.FILE:
                    lines.append(f"complete -c {prog} {cond} -F")
                continue
            spec = []
            for opt in action.option_strings:
                if opt.startswith("--"):
                    spec.append(f"-l {_quote(opt[2:])}")
                elif len(opt) == 2:
                    spec.append(f"-s {_quote(opt[1:])}")
                else:
                    spec.append(f"-o {_quote(opt[1:])}")
            if action.nargs != 0:
                if getattr(action, "complete", None) == shtab.FILE:
                    spec.append("-r -F")
                elif action.choices:
                    spec.append(f"-x -a {_quote(' '.join(str(c) for c in action.choices))}")
                else:
                    spec.append("-x")
            text = _one_line(str(action.help or ""), action)
            if text:
                spec.append(f"-d {_quote(text)}")
            lines.append(f"complete -c {prog} {cond} {' '.join(spec)}")
    return "\n".join(lines) + "\n"
