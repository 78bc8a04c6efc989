"""kvctl test harness (imported by conftest and the tests; not named conftest so that no
other directory's conftest can shadow it): etcd 3.4 members (and kvraft), an in-process kvctl runner, an
etcdctl runner, and the normalizer that makes two clusters' outputs comparable."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "client"))

from kvclusters import Runtime, etcdctl_path, started  # noqa: E402

__all__ = ["Identity", "Result", "etcd_pair", "run_etcdctl", "run_kvctl"]

from kvraft.cli.main import run  # noqa: E402
from kvraft.client import SyncClient  # noqa: E402

_ETCDCTL_LOG = re.compile(r'^\{"level":.*\}$')


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def run_kvctl(argv: list[str], stdin: str = "", env: dict[str, str] | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        rc = run(argv, io.StringIO(stdin), out, err)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(rc, out.getvalue(), err.getvalue())


def run_etcdctl(argv: list[str], stdin: str = "", env: dict[str, str] | None = None) -> Result:
    binary = etcdctl_path()
    assert binary is not None
    proc = subprocess.run([binary, *argv], input=stdin.encode(), capture_output=True, timeout=60,
                          env={**os.environ, "ETCDCTL_API": "3", **(env or {})})
    err = "\n".join(line for line in proc.stderr.decode().splitlines() if not _ETCDCTL_LOG.match(line))
    return Result(proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"), err + ("\n" if err else ""))


@dataclass
class Identity:
    """What differs between two otherwise identical clusters: ids, ports, lease ids."""

    runtime: Runtime
    replacements: list[tuple[str, str]] = field(default_factory=list)

    def learn(self) -> None:
        with SyncClient(self.runtime.endpoints) as client:
            members = client.member_list()
        cluster_id = members.header.cluster_id
        pairs = [(str(cluster_id), "<CLUSTER_ID>"), (f"{cluster_id:16x}", "<CLUSTER_HEX>"),
                 (f"{cluster_id:x}", "<CLUSTER_HEX>")]
        for index, member in enumerate(sorted(members.members, key=lambda m: m.name)):
            pairs += [(str(member.id), f"<MEMBER{index}>"), (f"{member.id:16x}", f"<MEMBER{index}_HEX>"),
                      (f"{member.id:x}", f"<MEMBER{index}_HEX>")]
            for kind, urls in (("CLIENT", member.client_urls), ("PEER", member.peer_urls)):
                for url in urls:
                    pairs += [(url, f"<{kind}_URL:{member.name}>")]
                    pairs += [(url.split("://", 1)[1], f"<{kind}_HOSTPORT:{member.name}>")]
        self.replacements = sorted(pairs, key=lambda p: -len(p[0]))

    def endpoint(self) -> str:
        return self.runtime.endpoints[0].split("://", 1)[1]

    def normalize(self, text: str) -> str:
        for old, new in self.replacements:
            if old.startswith(" "):
                # a "%16x" id padded with spaces (etcdctl's "Member %16x added"): only where
                # a space precedes the padding, or ", <id>" in a list would lose its space
                # when the id happens to have fewer than 16 hex digits
                text = re.sub(r"(?<= )" + re.escape(old), new, text)
            else:
                text = text.replace(old, new)
        text = re.sub(r"\b[0-9a-f]{16}\b", "<HEX16>", text)  # lease ids (server-chosen, time based)
        text = re.sub(r"\b\d{17,20}\b", "<ID>", text)
        text = re.sub(r"(took = |\"took\":\"|\| )\d+(\.\d+)?(ns|µs|ms|s)\b", r"\1<TOOK>", text)
        return text


@pytest.fixture(scope="module")
def etcd_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Identity, Identity]]:
    """Two single-member etcd 3.4 clusters: etcdctl runs on the first, kvctl on the second."""
    if etcdctl_path() is None:
        pytest.skip("etcdctl not installed (apt-get install etcd-client; .ci/run does)")
    base = tmp_path_factory.mktemp("pair")
    with started(("etcd", base / "a"), ("etcd", base / "b")) as (first, second):
        a, b = Identity(first), Identity(second)
        a.learn()
        b.learn()
        yield a, b
