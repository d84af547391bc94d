"""Real components for batch jobs: one local Ray cluster per test session (shared with the
server tests when both run). The S3 API (moto) is in tests/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import batch_support
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray
    import ray.cloudpickle

    from sheaf_core import RayServeSettings
    from sheaf_server.ray import runner

    # Started as the server tests start theirs (the cluster environment Serve needs), so
    # that one cluster serves both folders when they run in one session.
    started = runner.connect(None, RayServeSettings(), num_cpus=2, include_dashboard=False,
                             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    ray.cloudpickle.register_pickle_by_value(batch_support)  # workers cannot import it
    yield
    if started:
        ray.shutdown()
