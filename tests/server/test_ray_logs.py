"""On Ray, `server.log_format: json` with `access_log: true`: the ingress replica's Serve
log file holds an access record per request as a JSON line with its fields (request id,
model, route, status, latency), beside Serve's own records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hosts import Host

from sheaf_core import ModelSpec

BODY = {"history": [1.0, 2.0, 3.0, 4.0], "horizon": 3}


def serve_log_records() -> list[dict[str, Any]]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    records = []
    for path in logs.glob("replica_*SheafIngress*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def test_access_records_are_json_lines_in_the_ingress_replica_log(
        request: pytest.FixtureRequest) -> None:
    host = Host("ray", request)
    with host.serve(ModelSpec(name="logged", backend="test"), log_format="json",
                    access_log=True) as client:
        ok = client.post("/logged/predict", json=BODY, headers={"x-request-id": "ray-log-1"})
        bad = client.post("/logged/predict", json={"horizon": 0},
                          headers={"x-request-id": "ray-log-2"})
        assert (ok.status_code, bad.status_code) == (200, 422)
        deadline = time.monotonic() + 30
        while True:
            access = {r.get("request_id"): r for r in serve_log_records()
                      if r.get("model") == "logged" and "latency_ms" in r}
            if {"ray-log-1", "ray-log-2"} <= set(access) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert {"ray-log-1", "ray-log-2"} <= set(access), sorted(map(str, access))
    assert access["ray-log-1"]["status"] == 200 and access["ray-log-2"]["status"] == 422
    assert access["ray-log-1"]["latency_ms"] > 0
    assert access["ray-log-1"]["method"] == "POST"
    assert access["ray-log-1"]["path"] == "/logged/predict"
    # Serve's request context sets `route` (the route it matched) on every record there
    assert access["ray-log-1"]["route"] == "/logged/predict"
