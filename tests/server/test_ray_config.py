"""`sheaf-server build`: a Ray Serve config that keeps the ModelSpecs, that Ray's own schema
accepts and Serve deploys, and whose `deployments` ops can edit; a RayService around it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from conftest import RayCluster

from sheaf_core import load_config
from sheaf_server.ray.serve_config import IMPORT_PATH, rayservice, requirements, serve_config

BIN = Path(sys.executable).parent / "sheaf-server"
SHEAF_YAML = """\
models:
  - name: fc
    backend: baseline
    batching: {max_batch_size: 8}
    resources: {num_cpus: 0.1}
    ray: {max_queued_requests: 64}
pipelines:
  - name: ens
    nodes: {a: {model: fc}, mix: {combiner: weighted_ensemble, inputs: [a]}}
    output: mix
server:
  ray: {app_name: built}
"""


def test_the_config_keeps_the_specs_and_lists_each_deployment(tmp_path: Path) -> None:
    source = tmp_path / "sheaf.yaml"
    source.write_text(SHEAF_YAML)
    out = tmp_path / "serve_config.yaml"
    subprocess.run([str(BIN), "build", str(source), "-o", str(out)], check=True, timeout=60)
    document = yaml.safe_load(out.read_text())
    [app] = document["applications"]
    assert app["name"] == "built" and app["import_path"] == IMPORT_PATH
    assert app["args"]["config"]["models"][0]["batching"] == {"max_batch_size": 8}
    deployments = {d["name"]: d for d in app["deployments"]}
    assert deployments["fc"]["max_ongoing_requests"] == 16
    assert deployments["fc"]["max_queued_requests"] == 64
    assert deployments["fc"]["ray_actor_options"]["num_cpus"] == 0.1
    assert "SheafIngress" in deployments
    assert deployments["ens"]["ray_actor_options"]["num_cpus"] == 0.0  # the pipeline's
    for deployment in deployments.values():  # every process sums into one GET /metrics
        env = deployment["ray_actor_options"]["runtime_env"]["env_vars"]
        assert env["PROMETHEUS_MULTIPROC_DIR"].endswith("sheaf-metrics/built")
    assert app["args"]["config"]["pipelines"][0]["output"] == "mix"
    assert app["runtime_env"]["pip"][0].startswith("sheaf-server[ray]==")


def test_requirements_name_the_plugin_of_each_backend(tmp_path: Path) -> None:
    source = tmp_path / "sheaf.yaml"
    source.write_text("models:\n  - {name: a, backend: baseline}\n"
                      "  - {name: b, backend: chronos, backend_kwargs: {model_id: x}}\n")
    pins = requirements(load_config(source))
    assert [p.split("==")[0] for p in pins] == [
        "sheaf-server[ray]", "sheaf-core", "sheaf-backend-chronos"]


def test_the_rayservice_carries_the_serve_config_and_the_cluster_environment(
        tmp_path: Path) -> None:
    source = tmp_path / "sheaf.yaml"
    source.write_text(SHEAF_YAML.replace("num_cpus: 0.1", "num_cpus: 1, num_gpus: 1"))
    config = load_config(source)
    manifest = rayservice(config, image="registry.example/sheaf:1")
    assert manifest["kind"] == "RayService" and manifest["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve_config(config)
    cluster = manifest["spec"]["rayClusterConfig"]
    [worker] = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    assert worker["image"] == "registry.example/sheaf:1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "sheaf_server.ray.http:middlewares"


def test_the_built_config_deploys_and_answers_with_an_ops_edit(ray_cluster: RayCluster,
                                                             tmp_path: Path) -> None:
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    source = tmp_path / "sheaf.yaml"
    source.write_text(SHEAF_YAML)
    # no pip list: replicas use this environment (a runtime_env pip would need the network)
    document = serve_config(load_config(source), pip=False, host="127.0.0.1")
    document["http_options"]["port"] = ray_cluster.port
    [app] = document["applications"]
    next(d for d in app["deployments"] if d["name"] == "fc")["num_replicas"] = 2  # ops' edit
    schema = ServeDeploySchema.model_validate(yaml.safe_load(yaml.safe_dump(document)))
    _get_global_client().deploy_apps(schema, _blocking=True)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{ray_cluster.port}", timeout=30)
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        response = client.post("/fc/predict", json={"history": [1, 2, 3], "horizon": 2})
        assert response.status_code == 200 and response.json()["mean"] == [3, 3]
        piped = client.post("/ens/predict", json={"history": [1, 2, 3], "horizon": 2})
        assert piped.status_code == 200 and piped.json()["model_name"] == "ens"
        replicas = serve.status().applications["built"].deployments["fc"].replica_states
        assert replicas.get("RUNNING") == 2
    finally:
        serve.delete("built")
