"""``python -m kvraft.bench``: an etcd-benchmark-like load generator for any v3 endpoint."""

from __future__ import annotations

import argparse
import shutil

__all__ = ["add_compare_etcd", "compared_etcd"]


def add_compare_etcd(parser: argparse.ArgumentParser) -> None:
    """``--compare-etcd ETCD``: the benchmarks that run kvraft and etcd side by side."""
    parser.add_argument("--compare-etcd", metavar="ETCD", default="", help="also run etcd (a path to its binary)")


def compared_etcd(parser: argparse.ArgumentParser, binary: str) -> str:
    """``binary`` ("" for none), refused at once (exit 2) unless it is an executable: before any
    cluster starts, not after kvraft's rounds."""
    if binary and shutil.which(binary) is None:
        parser.error(f"--compare-etcd: {binary} is not an executable")
    return binary
