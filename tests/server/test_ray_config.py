"""`sheaf-server build`: a Ray Serve config that keeps the ModelSpecs, that Ray's own schema
accepts and Serve deploys, and whose `deployments` ops can edit; a RayService around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from hosts import RayCluster

from sheaf_server.ray.serve_config import IMPORT_PATH, rayservice, requirements, serve_config
from sheaf_server.settings import load_config
from sheaf_server.testing import wait_until_ready

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
    gpu_group = next(g for g in cluster["workerGroupSpecs"] if "gpu" in g["groupName"])
    [worker] = gpu_group["template"]["spec"]["containers"]
    assert worker["image"] == "registry.example/sheaf:1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "sheaf_server.ray.http:middlewares"


TWO_GPU_MODELS = """\
models:
  - {name: big, backend: baseline, resources: {num_cpus: 4, num_gpus: 1, memory: 17179869184},
     ray: {num_replicas: 4}}
  - {name: small, backend: baseline, resources: {num_cpus: 4, num_gpus: 1, memory: 17179869184},
     ray: {autoscaling_config: {min_replicas: 1, max_replicas: 2}}}
  - {name: cpu, backend: baseline}
"""


def test_kuberay_as_generated_runs_sheaf_on_its_own_image_one_group_per_shape(
        tmp_path: Path) -> None:
    """`--target kuberay`: the Sheaf image (Ray and the pinned packages inside, no
    runtime_env install from an index that lacks them), the GPU image for GPU groups, one
    worker group per resource shape with per-replica pods whose counts add up the
    deployments' replicas, and Ray's autoscaler on. Checked with Ray's own schema for the
    Serve config and the RayService's required fields (its CRD is not vendored here)."""
    from ray.serve.schema import ServeDeploySchema

    source = tmp_path / "sheaf.yaml"
    source.write_text(TWO_GPU_MODELS)
    ran = subprocess.run([str(BIN), "build", str(source), "--target", "kuberay", "-o",
                          str(tmp_path / "out"), "--image", "reg/sheaf:1", "--gpu-image",
                          "reg/sheaf:1-cuda"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    manifest = yaml.safe_load((tmp_path / "out" / "rayservice.yaml").read_text())
    spec = manifest["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    assert "runtime_env" not in serve["applications"][0]  # the image has the packages
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["rayVersion"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"] == "reg/sheaf:1"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert len(groups) == len(cluster["workerGroupSpecs"])  # names are unique
    gpu = groups["workers-4cpu-1gpu-16384mi"]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (5, 6)  # 4 + 1..2, one GPU each
    [container] = gpu["template"]["spec"]["containers"]
    assert container["image"] == "reg/sheaf:1-cuda"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16384Mi",
                                                 "nvidia.com/gpu": "1"}
    assert gpu["rayStartParams"] == {"num-cpus": "4", "num-gpus": "1"}
    cpu = groups["workers-1cpu-4096mi"]  # the ingress and the CPU model
    assert cpu["template"]["spec"]["containers"][0]["image"] == "reg/sheaf:1"
    for group in cluster["workerGroupSpecs"]:
        for field in ("groupName", "minReplicas", "maxReplicas", "rayStartParams",
                      "template"):
            assert field in group, field


def test_a_runtime_env_install_can_name_a_private_index_and_wheels(tmp_path: Path) -> None:
    from ray._private.runtime_env.validation import parse_and_validate_pip
    from ray.serve.schema import ServeDeploySchema

    source = tmp_path / "sheaf.yaml"
    source.write_text("models:\n  - {name: a, backend: baseline}\n")
    ran = subprocess.run([str(BIN), "build", str(source), "--target", "ray", "-o",
                          str(tmp_path / "out"), "--pip-index-url", "https://pypi.example/simple",
                          "--find-links", "https://wheels.example/sheaf/"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    serve = yaml.safe_load((tmp_path / "out" / "serve_config.yaml").read_text())
    pip = serve["applications"][0]["runtime_env"]["pip"]
    assert pip["pip_install_options"] == ["--index-url", "https://pypi.example/simple",
                                          "--find-links", "https://wheels.example/sheaf/"]
    assert parse_and_validate_pip(pip)["packages"][0].startswith("sheaf-server[ray]==")
    ServeDeploySchema.model_validate(serve)


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
        wait_until_ready(client, 60)
        response = client.post("/fc/predict", json={"history": [1, 2, 3], "horizon": 2})
        assert response.status_code == 200 and response.json()["mean"] == [3, 3]
        piped = client.post("/ens/predict", json={"history": [1, 2, 3], "horizon": 2})
        assert piped.status_code == 200 and piped.json()["model_name"] == "ens"
        replicas = serve.status().applications["built"].deployments["fc"].replica_states
        assert replicas.get("RUNNING") == 2
    finally:
        serve.delete("built")
