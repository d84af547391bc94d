"""pytest fixtures for serving Sheaf in tests, registered as a pytest plugin (entry point
`pytest11`), so a plugin author's tests have them without a conftest:

    def test_my_backend_over_http(sheaf_serving):
        with sheaf_serving([ModelSpec(name="m", backend="mine")]) as client:
            assert client.post("/m/predict", json=...).status_code == 200

This module imports nothing beyond pytest when pytest starts: the helpers (and httpx, from
`sheaf-server[testing]`) load when a test asks for a fixture.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def sheaf_serving() -> Any:
    """`sheaf_server.testing.serving`: a config served by tier 1 on a real uvicorn (a free
    port on 127.0.0.1) for a `with` block, as a client, once /ready answers 200."""
    return _testing().serving


@pytest.fixture
def sheaf_sse_events() -> Any:
    """`sheaf_server.testing.sse_events`: (event, data) pairs of a streamed response."""
    return _testing().sse_events


def _testing() -> Any:
    try:
        from sheaf_server import testing
    except ImportError as exc:
        raise pytest.UsageError(
            f"the sheaf_serving fixtures need sheaf-server's test helpers ({exc}); "
            "pip install 'sheaf-server[testing]'") from exc
    return testing
