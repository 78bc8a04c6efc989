"""OCI image layouts that are broken or hostile: a clear ImageError, nothing written outside
the cache (agent/runtime/images.py). The happy path with runc is in test_runtimes.py."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.images import ImageError, unpack_oci


def _put(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    blob = layout / "blobs" / "sha256" / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return f"sha256:{digest}"


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _manifest(layers: list[Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "layers": layers}).encode()


def _index(layout: Path, manifests: Any) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "layout", tmp_path / "cache"


def test_a_good_layout_unpacks(tmp_path: Path) -> None:
    layout, cache = _layout(tmp_path)
    layout.mkdir()
    layer = _put(layout, _layer({"etc/motd": b"hi\n"}))
    _index(layout, [{"digest": _put(layout, _manifest([{"digest": layer}]))}])
    rootfs = unpack_oci(layout, "", cache)
    assert (rootfs / "etc" / "motd").read_bytes() == b"hi\n"
    assert rootfs.is_relative_to(cache)


def test_a_digest_that_climbs_out_of_the_blobs_is_refused(tmp_path: Path) -> None:
    """A manifest outside blobs/, named by "sha256:../../../evil.json": it used to be read, and
    the rootfs unpacked under a cache directory named after it, outside the cache."""
    layout, cache = _layout(tmp_path)
    layout.mkdir()
    layer = _put(layout, _layer({"x": b"x"}))
    (tmp_path / "evil.json").write_bytes(_manifest([{"digest": layer}]))
    _index(layout, [{"digest": "sha256:../../../evil.json"}])
    with pytest.raises(ImageError, match="is not algorithm:encoded"):
        unpack_oci(layout, "", cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.json", "layout"], "nothing unpacked anywhere"


BROKEN: list[tuple[str, Any, str]] = [
    ("index not an object", ["a list"], "index.json: not a JSON object"),
    ("manifests not a list", {"digest": "sha256:00"}, "'manifests' is not a list"),
    ("no manifest", [], "no manifest"),
    ("descriptor not an object", ["sha256:00"], "is not a JSON object"),
    ("digest not a string", [{"digest": 123}], "digest 123 is not algorithm:encoded"),
    ("no digest", [{"size": 3}], "digest None is not"),
    ("absolute digest", [{"digest": "/etc/passwd"}], "is not algorithm:encoded"),
]


@pytest.mark.parametrize(("name", "manifests", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_index_is_an_image_error(tmp_path: Path, name: str, manifests: Any, message: str) -> None:
    layout, cache = _layout(tmp_path)
    if name == "index not an object":
        layout.mkdir()
        (layout / "index.json").write_text(json.dumps(manifests))
    else:
        _index(layout, manifests)
    with pytest.raises(ImageError, match=message):
        unpack_oci(layout, "", cache)


def test_broken_manifests_and_layers_are_image_errors(tmp_path: Path) -> None:
    layout, cache = _layout(tmp_path)
    layout.mkdir()
    cases = {
        "no layers": (json.dumps({"schemaVersion": 2}).encode(), "no 'layers'"),
        "layer digest climbs out": (_manifest([{"digest": "sha256:../../../../x"}]), "is not algorithm:encoded"),
        "layer descriptor not an object": (_manifest(["sha256:00"]), "is not a JSON object"),
        "empty image index": (json.dumps({"manifests": []}).encode(), "no manifests"),
        "missing layer blob": (_manifest([{"digest": "sha256:" + "0" * 64}]), "No such file"),
        "layer not a tar": (_manifest([{"digest": _put(layout, b"not a tar archive" * 40)}]), "layer sha256:"),
    }
    for name, (manifest, message) in cases.items():
        _index(layout, [{"digest": _put(layout, manifest)}])
        with pytest.raises(ImageError, match=message):
            unpack_oci(layout, "", cache)
        leftovers = [p.name for p in cache.iterdir() if p.name.startswith(".")] if cache.exists() else []
        assert leftovers == [], f"{name}: the unpack directory is removed"
