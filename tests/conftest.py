"""Shared pytest options.

``--rewrite``: regenerate the expected output of data-driven tests (for example the Raft
interaction transcripts in tests/raft/testdata) instead of comparing against it; review
the diff before committing.
"""

from __future__ import annotations

import pytest


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
