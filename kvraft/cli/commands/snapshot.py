"""``snapshot save <file>`` (with a progress bar on stderr), ``snapshot status <file>`` and
``snapshot restore <file> --data-dir ... --name ... --initial-cluster ...``.

``save`` streams one member's backend to ``<file>.part``, fsyncs it and renames it into
place, so an interrupted save never leaves a file that looks complete. From a kvraft
member the file is kvraft's framed snapshot (``kvraft.cli.snapshot_file``), checked
end to end (every frame's CRC, the trailer's SHA-256) before the rename; from etcd it is
etcd's bbolt file. ``status`` reads either kind (``-w simple|json|table|fields``).
``restore`` turns a kvraft snapshot, or an etcd one (converted by
``kvraft.cli.etcd_import``), into the data dir of a member of a new cluster
(``kvraft.server.restore``); it writes JSON log lines on stderr, as etcdctl does, and
nothing on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from kvraft.cli.bbolt import BoltError, snapshot_status
from kvraft.cli.context import Context
from kvraft.cli.errors import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    CommandError,
    server_error_text,
)
from kvraft.cli.etcd_import import EtcdImportError, frames_from_etcd_snapshot
from kvraft.cli.parsing import subcommands
from kvraft.cli.printers import DBStatus
from kvraft.cli.progress import ProgressBar
from kvraft.cli.snapshot_file import SnapshotFileError, is_kvraft_snapshot, verify_snapshot
from kvraft.client import ClientError, ServerError
from kvraft.client.completion import complete_files

__all__ = ["register"]


async def run_save(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "snapshot save expects one argument")
    try:
        await _save(ctx, ns.args[0])
    except CommandError as exc:  # etcdctl: any error of the save itself exits ExitInterrupted
        raise CommandError(EXIT_INTERRUPTED, exc.message) from None
    except ServerError as exc:
        raise CommandError(EXIT_INTERRUPTED, server_error_text(exc.code, exc.message)) from None
    except ClientError as exc:
        raise CommandError(EXIT_INTERRUPTED, str(exc)) from None


async def _save(ctx: Context, path: str) -> None:
    if len(ctx.options.endpoints) != 1:
        endpoints = " ".join(ctx.options.endpoints)
        raise CommandError(EXIT_ERROR, f"snapshot must be requested to one selected node, not multiple [{endpoints}]")
    partial = path + ".part"
    client = await ctx.client()
    bar = ProgressBar(ctx.stderr, 0)
    written = 0
    try:
        out = open(partial, "wb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise CommandError(EXIT_ERROR, f"could not open {partial} (open {partial}: {_go_errno_text(exc)})") from None
    try:
        try:
            with out:
                async for chunk in client.snapshot(endpoint=ctx.options.endpoints[0]):
                    out.write(chunk.blob)
                    written += len(chunk.blob)
                    bar.update(written, written + chunk.remaining_bytes)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:  # a full disk: etcdctl's "write PATH: no space left on device"
            raise CommandError(EXIT_ERROR, f"write {partial}: {_go_errno_text(exc)}") from None
        if written == 0:
            raise CommandError(EXIT_ERROR, "snapshot stream ended without data")
        if is_kvraft_snapshot(partial):
            try:
                verify_snapshot(partial)
            except SnapshotFileError as exc:
                raise CommandError(EXIT_ERROR, f"snapshot stream is incomplete or damaged: {exc}") from None
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    bar.finish()
    try:
        os.replace(partial, path)
    except OSError as exc:
        os.unlink(partial)
        # (Go's os.Rename onto a directory reports EEXIST: "file exists")
        why = "file exists" if isinstance(exc, IsADirectoryError) else _go_errno_text(exc)
        raise CommandError(EXIT_ERROR, f"could not rename {partial} to {path} (rename {partial} {path}: {why})") from None
    ctx.stdout.write(f"Snapshot saved at {path}\n")


async def run_status(ctx: Context, ns: argparse.Namespace) -> None:
    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    path = ns.args[0]
    try:
        if is_kvraft_snapshot(path):
            kv = verify_snapshot(path)
            ctx.printer.db_status(DBStatus(kv.hash, kv.revision, kv.total_key, kv.total_size))
            return
        status = snapshot_status(path)
    except (OSError, BoltError, SnapshotFileError) as exc:
        raise CommandError(EXIT_ERROR, _os_text(exc)) from None
    ctx.printer.db_status(DBStatus(status.hash, status.revision, status.total_key, status.total_size))


def _go_errno_text(exc: OSError) -> str:
    """Go's text for an errno (``no such file or directory``, ``permission denied``)."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _os_text(exc: BaseException) -> str:
    """Go's wording for a file that does not open (``open x: no such file or directory``,
    ``open x: is a directory``)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"open {exc.filename}: {_go_errno_text(exc)}"
    return str(exc)


def _log(ctx: Context, msg: str, **fields: Any) -> None:
    ctx.stderr.write(json.dumps({"level": "info", "ts": time.time(), "caller": "kvctl/snapshot", "msg": msg, **fields}) + "\n")


async def run_restore(ctx: Context, ns: argparse.Namespace) -> None:
    from kvraft.server.restore import RestoreError, restore_member_dir  # the server side: only here

    if len(ns.args) != 1:
        raise CommandError(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    if (ns.bump_revision == 0) == ns.mark_compacted:  # (etcdutl's words: it says --revision-bump)
        raise CommandError(EXIT_BAD_ARGS, "--mark-compacted required if --revision-bump > 0")
    path = ns.args[0]
    data_dir = ns.data_dir or f"{ns.name}.kvraft"
    peer_urls = [u.strip() for u in ns.initial_advertise_peer_urls.split(",") if u.strip()]
    _log(ctx, "restoring snapshot", path=path, **{"data-dir": data_dir})
    try:
        chunks = None
        if os.path.isfile(path) and not is_kvraft_snapshot(path):  # an etcd file: converted as it is read
            chunks = _worded(frames_from_etcd_snapshot(path, skip_hash_check=ns.skip_hash_check), RestoreError)
            _log(ctx, "converting an etcd snapshot", path=path)
        restored = restore_member_dir(
            path, data_dir, name=ns.name, initial_cluster=ns.initial_cluster,
            initial_cluster_token=ns.initial_cluster_token, initial_advertise_peer_urls=peer_urls, chunks=chunks,
            wal_dir=ns.wal_dir, bump_revision=ns.bump_revision, mark_compacted=ns.mark_compacted,
        )
    except (RestoreError, OSError, EtcdImportError) as exc:
        raise CommandError(EXIT_ERROR, _os_text(exc)) from None
    for name, member_id in sorted(restored.members.items()):
        _log(ctx, "added member", **{"cluster-id": f"{restored.cluster_id:x}", "added-peer-id": f"{member_id:x}",
                                     "added-peer-name": name})
    _log(ctx, "restored snapshot", path=path, **{"data-dir": data_dir, "revision": restored.revision,
                                                  "records": restored.records})


def _worded(frames: Iterator[bytes], error: type[Exception]) -> Iterator[bytes]:
    """The frames, with a conversion error re-raised as ``error`` (the restore reports it
    as it is, without the file name in front)."""
    try:
        yield from frames
    except EtcdImportError as exc:
        raise error(str(exc)) from None


def _uint64(text: str) -> int:
    """pflag's ``Uint64Var``: a decimal that fits 64 bits unsigned."""
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}" for "--bump-revision" flag: '
                                         f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return value


def register(sub: Any, parent: argparse.ArgumentParser,
             save: tuple[Any, str] = (run_save, "Stores an etcd node backend snapshot to a given file")) -> None:
    """``snapshot save|status|restore``; ``save`` is (handler, help): kvutl's refuses."""
    snapshot = sub.add_parser("snapshot", help="Manages etcd node snapshots")
    snapshot.set_defaults(help_parser=snapshot)
    verbs = subcommands(snapshot, "verb")
    for name, handler, text in (
        ("save", *save),
        ("status", run_status, "Gets backend snapshot status of a given file"),
        ("restore", run_restore, "Restores an etcd member snapshot to an etcd directory"),
    ):
        p = verbs.add_parser(name, parents=[parent], help=text)
        complete_files(p.add_argument("args", nargs="*", metavar="<filename>"))
        p.set_defaults(handler=handler)
        if name == "restore":
            add_restore_flags(p)


def add_restore_flags(p: argparse.ArgumentParser) -> None:
    """``snapshot restore``'s flags (kvctl's, and kvutl's as etcdutl's)."""
    p.add_argument("--data-dir", default="", help="Path to the data directory (default <name>.kvraft)")
    p.add_argument("--wal-dir", default="", help="Path to the WAL directory (default: inside --data-dir)")
    p.add_argument("--name", default="default", help="Human-readable name for this member")
    p.add_argument("--initial-cluster", default="default=http://localhost:2380",
                   help="Initial cluster configuration for restore bootstrap")
    p.add_argument("--initial-cluster-token", default="etcd-cluster",
                   help="Initial cluster token for the etcd cluster during restore bootstrap")
    p.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380",
                   help="List of this member's peer URLs to advertise to the rest of the cluster")
    p.add_argument("--skip-hash-check", action="store_true",
                   help="Ignore an etcd snapshot's integrity hash (required if copied from a data directory); "
                        "a kvraft snapshot is always checked")
    p.add_argument("--bump-revision", type=_uint64, default=0,
                   help="How much to increase the latest revision after restore")
    p.add_argument("--mark-compacted", action="store_true",
                   help="Mark the latest revision after restore as the point of scheduled compaction "
                        "(required if --bump-revision > 0, disallowed otherwise)")
