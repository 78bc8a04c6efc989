"""Hypothesis settings for the storage suite.

``KVRAFT_STORAGE_PROFILE=storage-ci`` (the default) is derandomized and sized to keep the
suite fast; ``storage-deep`` explores far more (run it by hand after touching mvcc/).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]

settings.register_profile(
    "storage-ci", max_examples=100, deadline=None, derandomize=True, database=None, phases=_PHASES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
settings.register_profile(
    "storage-deep", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

STORAGE = settings.get_profile(os.environ.get("KVRAFT_STORAGE_PROFILE", "storage-ci"))
