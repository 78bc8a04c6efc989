"""Root filesystems for runc bundles, without a registry or daemon.

- ``host``: an empty root with the host's ``/usr`` bound read-only and the merged-/usr
  symlinks (``bin -> usr/bin`` ...), plus a generated ``/etc`` (the reference's verified
  recipe: the host's python3 and tools run, nothing of the host's ``/etc`` leaks in).
- an **OCI image layout** directory (``index.json``, ``blobs/sha256/...``), optionally
  ``path:tag``: unpacked once per manifest digest into ``<data_dir>/images/<digest>/rootfs``
  (layers applied in order, whiteouts honoured) and shared read-only by every task using it.
- any other directory: used as the root filesystem as it is (read-only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

__all__ = ["ImageError", "host_rootfs", "resolve_image", "unpack_oci"]

MERGED_USR = ("bin", "lib", "lib64", "sbin", "lib32", "libx32")


class ImageError(Exception):
    pass


def host_rootfs(rootfs: Path, *, uid: int = 0, gid: int = 0, hostname: str = "task") -> None:
    """Create the skeleton of the read-only host-/usr root (``/usr`` itself is a bind mount)."""
    rootfs.mkdir(parents=True, exist_ok=True)
    for d in ("usr", "etc", "proc", "sys", "dev", "tmp", "workdir", "run", "var", "root", "home", "opt", "mnt"):
        (rootfs / d).mkdir(exist_ok=True)
    for name in MERGED_USR:
        host = Path("/") / name
        if host.is_symlink() and not (rootfs / name).is_symlink():
            (rootfs / name).symlink_to(os.readlink(host))
    etc = rootfs / "etc"
    users = {0: "root", 65534: "nobody"}
    users.setdefault(uid, "task")
    (etc / "passwd").write_text("".join(f"{n}:x:{u}:{u if u != uid else gid}:{n}:/{'root' if u == 0 else 'tmp'}:/bin/sh\n"
                                        for u, n in sorted(users.items())))
    groups = {0: "root", 65534: "nogroup"}
    groups.setdefault(gid, "task")
    (etc / "group").write_text("".join(f"{n}:x:{g}:\n" for g, n in sorted(groups.items())))
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n")
    with contextlib.suppress(OSError):
        shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")


def resolve_image(image: str, cache_dir: Path) -> Path:
    """The rootfs directory of a non-host image (unpacking an OCI layout when needed)."""
    path, tag = image, ""
    if ":" in image.rsplit("/", 1)[-1]:  # "<layout dir>:<tag>"
        path, _, tag = image.rpartition(":")
    p = Path(path)
    if not p.is_dir():
        raise ImageError(f"image {image!r}: no such directory")
    if (p / "index.json").exists() and (p / "blobs").is_dir():
        return unpack_oci(p, tag, cache_dir)
    return p


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


def unpack_oci(layout: Path, tag: str, cache_dir: Path) -> Path:
    try:
        index = json.loads((layout / "index.json").read_text())
        manifests = index.get("manifests", [])
        if tag:
            manifests = [m for m in manifests if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        if not manifests:
            raise ImageError(f"OCI layout {layout}: no manifest{' tagged ' + tag if tag else ''}")
        digest: str = manifests[0]["digest"]
        manifest = json.loads(_blob(layout, digest).read_text())
        if "manifests" in manifest:  # an image index: take the first platform's manifest
            digest = manifest["manifests"][0]["digest"]
            manifest = json.loads(_blob(layout, digest).read_text())
        layers = manifest["layers"]
    except (OSError, ValueError, KeyError) as exc:
        raise ImageError(f"OCI layout {layout}: {exc}") from exc
    target = cache_dir / digest.replace(":", "-")
    rootfs = target / "rootfs"
    if rootfs.is_dir():
        return rootfs
    tmp = cache_dir / f".{digest.replace(':', '-')}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "rootfs").mkdir(parents=True)
    for layer in layers:
        blob = _blob(layout, layer["digest"])
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() != layer["digest"].partition(":")[2]:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"layer {layer['digest']}: digest mismatch")
        _apply_layer(blob, tmp / "rootfs")
    target.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp / "rootfs", rootfs)
    except OSError:  # another task unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return rootfs


def _apply_layer(blob: Path, rootfs: Path) -> None:
    with tarfile.open(blob, "r:*") as tar:
        members = []
        for m in tar.getmembers():
            name = os.path.normpath(m.name).lstrip("/")
            if name.startswith(".."):
                continue
            base = os.path.basename(name)
            parent = rootfs / os.path.dirname(name)
            if base == ".wh..wh..opq":
                if parent.is_dir():
                    for child in parent.iterdir():
                        _rm(child)
                continue
            if base.startswith(".wh."):
                _rm(parent / base[4:])
                continue
            m.name = name
            members.append(m)
        tar.extractall(rootfs, members=members, filter="tar")


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
