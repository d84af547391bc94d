"""The pytest plugin sheaf-server installs (entry point `pytest11`): a plugin author's test
gets `sheaf_serving` and `sheaf_sse_events` without a conftest."""

from __future__ import annotations

from typing import Any

import pytest

from sheaf_core import ModelSpec


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("sheaf-server")


def test_sheaf_serving_serves_a_config_on_a_real_server(sheaf_serving: Any,
                                                        sheaf_sse_events: Any) -> None:
    body = {"history": [1.0, 2.0, 3.0], "horizon": 2, "request_id": "plugin-1"}
    with sheaf_serving([ModelSpec(name="m", backend="baseline")]) as client:
        answer = client.post("/m/predict", json=body)
        assert answer.status_code == 200 and answer.json()["request_id"] == "plugin-1"
        with client.stream("POST", "/m/stream", json=body) as streamed:
            events = list(sheaf_sse_events(streamed))
        assert events[-1][0] == "result" and events[-1][1]["mean"] == answer.json()["mean"]
