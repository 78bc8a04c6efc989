"""``kvutl``: etcdutl's commands, on a kvraft member's files (no member needed, none running).

etcd 3.5 moved the commands that work on data files out of etcdctl into ``etcdutl`` (3.6
removed them from etcdctl), so runbooks written for etcd 3.5+ name etcdutl. Each command is
kvctl's own code; only the surface is etcdutl's:

- ``defrag --data-dir DIR`` (required): ``kvctl defrag --data-dir``; nothing on stdout, and
  "Failed to defragment etcd data[DIR] (why)" on failure;
- ``snapshot restore FILE`` with etcdutl's flags, ``--bump-revision`` and ``--mark-compacted``
  included (``kvraft.server.restore``);
- ``snapshot status FILE`` (``-w simple|json|table|fields``);
- ``snapshot save``: etcdutl's refusal (a snapshot is saved over the network, by kvctl);
- ``hashkv PATH [--rev N]``: the key-value history hash (``hash, hash revision, compact
  revision``) of a stopped member's data dir (or its ``mvcc.lmdb``), or of a kvraft snapshot
  file, equal to what ``kvctl endpoint hashkv`` reports of a member at that revision and
  compaction point; an etcd (bbolt) file is refused (etcd's hash is over protobuf records);
- ``completion bash|zsh|tcsh|fish``: kvutl's completion script (etcdutl 3.6's ``completion``);
- ``version``.

Errors print ``Error: <message>`` and exit non-zero with etcdctl's codes, as kvctl does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from kvraft import __version__
from kvraft.cli.commands import completion, snapshot
from kvraft.cli.commands.defrag import defrag_data_dir, in_use
from kvraft.cli.context import Context, GlobalOptions
from kvraft.cli.entry import console, execute, guarded
from kvraft.cli.errors import EXIT_BAD_ARGS, EXIT_ERROR, CommandError
from kvraft.cli.parsing import GoArgumentParser, normalize_bools, subcommands, take_positionals
from kvraft.cli.printers.base import DBHashKV
from kvraft.cli.snapshot_file import SnapshotFileError, is_kvraft_snapshot, verify_snapshot
from kvraft.client.completion import complete_files
from kvraft.storage.mvcc.types import HashKVResult

__all__ = ["build_parser", "main", "run"]


async def _defrag(_ctx: Context, ns: argparse.Namespace) -> None:
    if not ns.data_dir:
        raise CommandError(EXIT_ERROR, 'required flag(s) "data-dir" not set')
    try:
        defrag_data_dir(ns.data_dir)
    except CommandError as exc:
        raise CommandError(EXIT_ERROR, f"Failed to defragment etcd data[{ns.data_dir}] ({exc.message})") from None


async def _hashkv(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_ERROR, f"accepts 1 arg(s), received {len(ns.args)}")  # (cobra ExactArgs)
    if ns.rev < 0:
        raise CommandError(EXIT_ERROR, "mvcc: required revision is a future revision")
    result = await asyncio.to_thread(hash_data_file, ns.args[0], ns.rev)
    ctx.printer.db_hash_kv(DBHashKV(result.hash, result.hash_revision, result.compact_revision))


def hash_data_file(path: str, rev: int) -> HashKVResult:
    """etcdutl's ``calculateHashKV``: the store at ``path`` (a data dir, its ``mvcc.lmdb``, or a
    kvraft snapshot file restored into a scratch store) hashed at ``rev`` (0: its revision)."""
    from kvraft.storage.mvcc import MVCCStore  # offline only: the storage layer itself
    from kvraft.storage.mvcc.errors import CompactedRevisionError, FutureRevisionError

    where = Path(path)
    try:
        if where.is_file():
            if not is_kvraft_snapshot(path):
                raise CommandError(EXIT_ERROR, f"{path} is not a kvraft snapshot or data directory (an etcd "
                                               "database's hash is over etcd's records: use etcdutl hashkv)")
            verify_snapshot(path)
            with tempfile.TemporaryDirectory(prefix="kvutl-hashkv-") as scratch, \
                    MVCCStore(Path(scratch) / "mvcc.lmdb", sync=False) as store:
                store.restore(_chunks(path))
                return store.hash_by_rev(rev)
        store_dir = where if any(where.glob("kv-*.lmdb")) else where / "mvcc.lmdb"
        if not any(store_dir.glob("kv-*.lmdb")):
            raise CommandError(EXIT_ERROR, f"open {path}: no kvraft store there (want a data dir, its mvcc.lmdb, "
                                           "or a snapshot file)")
        if any(in_use(lock) for lock in [*store_dir.glob("*-lock"), *where.glob("*-lock")]):
            raise CommandError(EXIT_ERROR, f"cannot hash {path}: a running member has it open (stop it first, or "
                                           "ask the member: kvctl endpoint hashkv)")
        with MVCCStore(store_dir, sync=True) as store:
            return store.hash_by_rev(rev)
    except CompactedRevisionError:
        raise CommandError(EXIT_ERROR, "mvcc: required revision has been compacted") from None
    except FutureRevisionError:
        raise CommandError(EXIT_ERROR, "mvcc: required revision is a future revision") from None
    except (OSError, SnapshotFileError) as exc:
        raise CommandError(EXIT_ERROR, str(exc)) from None


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            yield block


async def _save(_ctx: Context, _ns: argparse.Namespace) -> None:
    raise CommandError(EXIT_BAD_ARGS, "In order to download snapshot use: `kvctl snapshot save ...`")


async def _version(ctx: Context, _ns: argparse.Namespace) -> None:
    ctx.stdout.write(f"kvutl version: {__version__}\nAPI version: 3.4\n")


def build_parser() -> argparse.ArgumentParser:
    parent = GoArgumentParser(add_help=False)
    parent.add_argument("-w", "--write-out", default=argparse.SUPPRESS,
                        help="set the output format (fields, json, simple, table)")
    parser = GoArgumentParser(prog="kvutl", parents=[parent],
                              description="An administrative command line tool for kvraft's (and etcd's) data files, "
                                          "in etcdutl's image.")
    sub = subcommands(parser, "command")
    defrag = sub.add_parser("defrag", parents=[parent], help="Defragments the storage of the etcd")
    defrag.add_argument("--data-dir", default="", help="Required. Defragments a data directory not in use by etcd.")
    defrag.set_defaults(handler=_defrag)
    snapshot.register(sub, parent, save=(_save, "Deprecated: use `kvctl snapshot save` to download a snapshot"))
    hashkv = sub.add_parser("hashkv", parents=[parent], help="Prints the KV history hash of a given file")
    complete_files(hashkv.add_argument("args", nargs="*", metavar="<filename>"))
    hashkv.add_argument("--rev", type=int, default=0, help="maximum revision to hash (default: latest revision)")
    hashkv.set_defaults(handler=_hashkv)
    completion.register(sub, parent, build_parser)
    version = sub.add_parser("version", parents=[parent], help="Prints the version of kvutl")
    version.set_defaults(handler=_version)
    return parser


def run(argv: Sequence[str], stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """Run one kvutl command line; returns the exit code (used by ``main`` and tests)."""
    def body() -> int:
        parser = build_parser()
        ns, extras = parser.parse_known_args(normalize_bools(list(argv), {"--skip-hash-check", "--mark-compacted"}))
        take_positionals(ns, extras, "kvutl")
        options = GlobalOptions(endpoints=(), write_out=getattr(ns, "write_out", "simple"))
        return execute(parser, ns, lambda: Context(options, stdin, stdout, stderr), stdout)

    return guarded(body, stdout, stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``kvutl``)."""
    return console(run, argv)


if __name__ == "__main__":
    sys.exit(main())
