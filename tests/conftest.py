"""Shared pytest options.

``--rewrite``: regenerate the expected output of data-driven tests (for example the Raft
interaction transcripts in tests/raft/testdata) instead of comparing against it; review
the diff before committing.
"""

from __future__ import annotations

import signal

import pytest

from kvraft.bytecode import compile_packages


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (``make test &``, a
    script's ``pytest ... &``) inherits SIGINT ignored (POSIX: an asynchronous command's
    SIGINT and SIGQUIT are ignored), and so does every process it starts, through exec: the
    Ctrl-C tests then saw no KeyboardInterrupt, and a `kvraft-local up` given SIGINT went on.
    Python's own handler is put back here (xdist's workers run this too); a handler, unlike
    SIG_IGN, is reset to the default in the children at exec.

    The project's bytecode is written first (``kvraft.bytecode``): the members, schedulers and
    agents the tests start each compiled the sources again without it."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not hasattr(config, "workerinput"):  # (once, in the controller: before the workers start)
        compile_packages()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite expected outputs of data-driven tests instead of checking them",
    )


# a failed test's report carries what its daemons logged and the machine's state (CI keeps
# nothing else): tests/failure_digest.py
from tests.failure_digest import pytest_runtest_makereport, pytest_runtest_setup  # noqa: E402, F401
