"""Root filesystems for runc bundles, without a registry or daemon.

- ``host``: an empty root with the host's ``/usr`` bound read-only and the merged-/usr
  symlinks (``bin -> usr/bin`` ...), plus a generated ``/etc`` (the reference's verified
  recipe: the host's python3 and tools run, nothing of the host's ``/etc`` leaks in).
- an **OCI image layout** directory (``index.json``, ``blobs/sha256/...``), optionally
  ``path:tag``: unpacked once per manifest digest into ``<data_dir>/images/<digest>/rootfs``
  (layers applied in order, whiteouts honoured) and shared read-only by every task using it.
  Every digest must match the OCI grammar (``algorithm:encoded``) before it names a blob or a
  cache directory; anything malformed in the layout is an ``ImageError``.
- any other directory: used as the root filesystem as it is (read-only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

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


# The OCI image spec's digest grammar (descriptor.md): algorithm ":" encoded. Nothing else may
# name a blob or a cache directory: "sha256:../../x" would reach outside both.
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def _digest(descriptor: object) -> str:
    """The digest of a descriptor (a JSON object), checked against the spec's grammar."""
    if not isinstance(descriptor, dict):
        raise ImageError(f"descriptor {descriptor!r} is not a JSON object")
    digest = descriptor.get("digest")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageError(f"digest {digest!r} is not algorithm:encoded")
    return digest


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


def _json_object(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ImageError(f"{path.name}: not a JSON object")
    return doc


def _list(doc: dict[str, Any], key: str, *, required: bool = False) -> list[Any]:
    if required and key not in doc:
        raise ImageError(f"no {key!r}")
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ImageError(f"{key!r} is not a list")
    return value


def unpack_oci(layout: Path, tag: str, cache_dir: Path) -> Path:
    try:
        index = _json_object(layout / "index.json")
        manifests = _list(index, "manifests")
        if tag:
            manifests = [m for m in manifests if isinstance(m, dict) and isinstance(m.get("annotations"), dict)
                         and m["annotations"].get("org.opencontainers.image.ref.name") == tag]
        if not manifests:
            raise ImageError(f"no manifest{' tagged ' + tag if tag else ''}")
        digest = _digest(manifests[0])
        manifest = _json_object(_blob(layout, digest))
        if "manifests" in manifest:  # an image index: take the first platform's manifest
            platforms = _list(manifest, "manifests")
            if not platforms:
                raise ImageError(f"image index {digest}: no manifests")
            digest = _digest(platforms[0])
            manifest = _json_object(_blob(layout, digest))
        layers = [_digest(layer) for layer in _list(manifest, "layers", required=True)]
    except ImageError as exc:
        raise ImageError(f"OCI layout {layout}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"OCI layout {layout}: {exc}") from exc
    target = cache_dir / digest.replace(":", "-")
    rootfs = target / "rootfs"
    if rootfs.is_dir():
        return rootfs
    tmp = cache_dir / f".{digest.replace(':', '-')}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "rootfs").mkdir(parents=True)
    for layer in layers:
        blob = _blob(layout, layer)
        try:
            if hashlib.sha256(blob.read_bytes()).hexdigest() != layer.partition(":")[2]:
                raise ImageError("digest mismatch")
            _apply_layer(blob, tmp / "rootfs")
        except (ImageError, tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImageError(f"OCI layout {layout}: layer {layer}: {exc}") from exc
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
