from __future__ import annotations

import pytest

from tests.watch.cluster_helpers import start_cluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("lease"))
    yield c
    c.stop()
