"""etcdctl's exit codes, and the error a command raises to stop with one.

``main`` prints ``Error: <message>`` on stderr and exits with the code, as etcdctl's
``ExitWithError`` does.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_ARGS",
    "EXIT_BAD_CONNECTION",
    "EXIT_BAD_FEATURE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID_INPUT",
    "EXIT_IO",
    "EXIT_SUCCESS",
    "CommandError",
]

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3  # txn and watch input
EXIT_BAD_FEATURE = 4  # a valid flag with an unsupported value
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class CommandError(Exception):
    """Stop the command: print ``Error: message`` (if any) and exit with ``code``."""

    def __init__(self, code: int, message: str | None) -> None:
        super().__init__(message or "")
        self.code = code
        self.message = message
