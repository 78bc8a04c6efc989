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
    "server_error_text",
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


_GRPC_CODES = ("OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
               "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
               "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated")


def server_error_text(code: int, message: str) -> str:
    """A server error as etcdctl prints it. clientv3's ``rpctypes.Error`` turns the errors
    it knows (every ``etcdserver: ...`` text) into their text; any other stays a gRPC status
    error, ``rpc error: code = Unknown desc = auth: permission denied``. kvraft's own
    errors (``kvraft: ...``, no etcdctl counterpart) keep their text."""
    if message.startswith(("etcdserver: ", "kvraft: ")) or not 0 < code < len(_GRPC_CODES):
        return message
    return f"rpc error: code = {_GRPC_CODES[code]} desc = {message}"

