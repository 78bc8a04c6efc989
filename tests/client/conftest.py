"""Fixtures for the client suite: a shared single-member cluster per runtime (session
scope), fresh 3-member clusters for the failover tests, and unique key prefixes."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kvclusters import RUNTIMES, Runtime, start_runtime  # noqa: E402

from kvraft.client import Client  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    rt = start_runtime(request.param, tmp_path_factory.mktemp("cluster"))
    yield rt
    rt.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"t{next(_counter)}-{request.node.name[:40]}/"


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[Client]:
    async with Client(runtime.endpoints, request_timeout_s=15.0, dial_timeout_s=5.0) as c:
        yield c
