"""`sheaf-server build --target ...`: deployment files generated from the config, valid for
the tools that read them, and true to the server they start — every probe path and port
in the Kubernetes manifests answers as the probe expects on a real server started from the
same config. What the repository ships under deploy/ is exactly this output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cli_support import BIN, served

from sheaf_server.deploy import KubernetesServer
from sheaf_server.deploy.docker import SAGEMAKER_SERVE, dockerfile
from sheaf_server.settings import SheafConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def build(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "build", str(config), *options], capture_output=True,
                          text=True, timeout=120)


def kubernetes_validate(directory: Path) -> None:
    """Every object against the Kubernetes 1.37 schemas, unknown fields rejected — but
    KEDA's ScaledObject, a custom resource those schemas lack (checked field by field in
    test_a_config_with_jobs_gets_workers_that_keda_scales_on_each_stream)."""
    files = sorted(str(p) for p in directory.glob("*.yaml")
                   if "apiVersion: keda.sh/" not in p.read_text())
    ran = subprocess.run([str(VALIDATE), "--strict", *files], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.count("passed") + ran.stderr.count("passed") == len(files)


def objects(directory: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in directory.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


GPU_CONFIG = """\
models:
  - name: forecaster
    backend: chronos
    backend_kwargs: {model_id: /models/bolt}
    resources: {num_cpus: 2, num_gpus: 1, memory: 4294967296}
  - name: painter
    backend: flux
    backend_kwargs: {model_id: /models/flux}
    resources: {num_cpus: 1, num_gpus: 1}
server: {drain_timeout_s: 60}
"""


def test_kubernetes_manifests_are_valid_and_carry_what_the_specs_say(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text(GPU_CONFIG)  # weights paths are the cluster's: not checked here
    ran = build(config, "--target", "kubernetes", "-o", str(tmp_path / "k8s"),
                "--image", "registry.example/sheaf:1", "--max-replicas", "6")
    assert ran.returncode == 0, ran.stderr
    assert "next: kubectl apply -f" in ran.stdout
    kubernetes_validate(tmp_path / "k8s")
    found = objects(tmp_path / "k8s")
    assert set(found) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                          "PodDisruptionBudget"}
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/sheaf:1"
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["cpu"] == "3000m"
    assert resources["limits"]["memory"] == resources["requests"]["memory"]
    assert pod["terminationGracePeriodSeconds"] >= 60 + 5  # drain + preStop
    assert container["startupProbe"]["failureThreshold"] * 10 >= 20 * 60  # FLUX loads slowly
    assert load_config(config) == SheafConfig.model_validate(
        yaml.safe_load(found["ConfigMap"]["data"]["sheaf.yaml"]))
    assert found["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 6


def test_tier_2_and_the_queue_depth_autoscaler(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    ran = build(config, "--target", "kubernetes", "-o", str(tmp_path / "k8s"), "--runtime",
                "ray", "--hpa-metric", "queue_depth", "--bake-config")
    assert ran.returncode == 0, ran.stderr
    kubernetes_validate(tmp_path / "k8s")
    found = objects(tmp_path / "k8s")
    assert "ConfigMap" not in found  # baked into the image
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--runtime", "ray"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    metric = found["HorizontalPodAutoscaler"]["spec"]["metrics"][0]
    assert metric["pods"]["metric"]["name"] == "sheaf_queue_depth"


def test_every_probe_in_the_manifests_answers_on_a_server_started_from_the_config(
        tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    manifests = KubernetesServer(load_config(config)).manifests()
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (port,) = container["ports"]
    args = container["args"]
    assert args[args.index("--port") + 1] == str(port["containerPort"])
    with served(config) as server:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check = container[probe]["httpGet"]
            assert check["port"] == port["name"]
            answer = httpx.get(f"{server.url}{check['path']}")
            assert answer.status_code == 200, (probe, answer.text)
    service = next(m for m in manifests if m["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_repository_deploy_folder_is_the_generated_output(tmp_path: Path) -> None:
    """deploy/ is `build deploy/sheaf.yaml --target compose -o deploy`, deploy/kubernetes
    and deploy/sagemaker the kubernetes and sagemaker targets: regenerate, never hand-edit."""
    source = ROOT / "deploy" / "sheaf.yaml"
    for target, folder in (("compose", ROOT / "deploy"),
                           ("kubernetes", ROOT / "deploy" / "kubernetes"),
                           ("sagemaker", ROOT / "deploy" / "sagemaker")):
        out = tmp_path / target
        assert build(source, "--target", target, "-o", str(out)).returncode == 0
        for path in out.rglob("*"):
            if path.is_file():
                shipped = folder / path.relative_to(out)
                assert shipped.read_text() == path.read_text(), shipped
    assert (ROOT / "deploy" / "Dockerfile").read_text() == dockerfile()
    assert (ROOT / "deploy" / "sagemaker" / "serve").read_text() == SAGEMAKER_SERVE
    kubernetes_validate(ROOT / "deploy" / "kubernetes")


def test_a_build_that_cannot_be_right_writes_nothing_and_says_why(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: fc, backend: chronoss}\n")
    out = tmp_path / "out"
    ran = build(config, "--target", "kubernetes", "-o", str(out))
    assert ran.returncode == 2 and "unknown backend 'chronoss'" in ran.stderr
    assert "Did you mean 'chronos'?" in ran.stderr and not out.exists()

    config.write_text("models:\n  - {name: fc, backend: baseline}\n")
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    ran = build(config, "--target", "docker", "-o", str(out))
    assert ran.returncode == 2 and "already holds other files (notes.txt)" in ran.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing half-written
    assert build(config, "--target", "docker", "-o", str(out), "--force").returncode == 0
    assert (out / "Dockerfile").exists() and (out / "notes.txt").read_text() == "mine"

    ran = build(config, "--target", "helm", "-o", str(out))
    assert ran.returncode == 2 and "invalid choice: 'helm'" in ran.stderr
    ran = build(config, "--target", "kubernetes")
    assert ran.returncode == 2 and "-o DIR" in ran.stderr


def test_an_image_context_pins_what_the_config_serves(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: fc, backend: chronos, backend_kwargs: "
                      "{model_id: /models/bolt}}\n")
    ran = build(config, "--target", "compose", "-o", str(tmp_path / "ctx"))
    assert ran.returncode == 0, ran.stderr
    requirements = (tmp_path / "ctx" / "requirements.txt").read_text().split()
    assert requirements == ["sheaf-server==0.1.0", "sheaf-core==0.1.0",
                            "sheaf-backend-chronos==0.1.0"]
    compose = yaml.safe_load((tmp_path / "ctx" / "docker-compose.yml").read_text())
    assert compose["services"]["sheaf"]["build"] == {  # no GPU: a CPU-only torch
        "context": ".", "args": {"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}}
    scrape = yaml.safe_load((tmp_path / "ctx" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["sheaf:8000"]


def test_the_port_variable_moves_the_server_to_all_interfaces(tmp_path: Path) -> None:
    """Cloud Run and Fly.io say where to listen in $PORT."""
    import os

    from cli_support import free_port

    port = free_port()
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    process = subprocess.Popen([str(BIN), "serve", str(config)], env={**os.environ,
                               "PORT": str(port)}, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "Uvicorn running on" in line:
                assert f"http://0.0.0.0:{port}" in line
                break
        answer = httpx.get(f"http://127.0.0.1:{port}/health")
        assert answer.status_code == 200 and json.loads(answer.text) == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("path, status", [("/health", 0), ("/nope", 1)])
def test_the_image_healthcheck_asks_the_server_in_the_container(
        tmp_path: Path, path: str, status: int) -> None:
    import os

    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    with served(config) as server:
        port = server.url.rsplit(":", 1)[1]
        ran = subprocess.run([sys.executable, "-m", "sheaf_server.healthcheck", path],
                             env={**os.environ, "PORT": port}, capture_output=True,
                             timeout=30)
        assert ran.returncode == status


LAMBDA_EVENTS = Path(__file__).parent / "lambda_events"


@pytest.fixture(scope="module")
def lambda_handler() -> Any:
    """The Lambda handler over the embedded baseline, built as at a cold start."""
    from sheaf_server.aws_lambda import make_handler
    from sheaf_server.defaults import default_config

    return make_handler(default_config())


def invoke(handler: Any, event_file: str) -> tuple[int, dict[str, str], Any]:
    event = json.loads((LAMBDA_EVENTS / event_file).read_text())
    answer = handler(event, None)
    return answer["statusCode"], answer["headers"], json.loads(answer["body"])


def test_lambda_answers_function_url_events_through_mangum(lambda_handler: Any) -> None:
    """Real API Gateway v2 / function-URL events (version 2.0) through Mangum: a
    prediction, a 422 naming the field, a 404 listing the models, a base64 body, and the
    state carried from one invocation to the next (the model loaded once)."""
    status, headers, body = invoke(lambda_handler, "function_url_predict.json")
    assert status == 200 and body["mean"] == [4, 4], body
    assert headers["x-request-id"] == "lambda-1" == body["request_id"]
    status, _, body = invoke(lambda_handler, "function_url_invalid.json")
    assert status == 422 and body["details"][0]["field"] == "horizon"
    status, _, body = invoke(lambda_handler, "function_url_unknown_model.json")
    assert status == 404 and "served models: baseline" in body["message"]
    status, _, body = invoke(lambda_handler, "function_url_base64_body.json")
    assert status == 200 and body["mean"] == [4, 4]
    status, _, body = invoke(lambda_handler, "function_url_ready.json")
    assert status == 200 and body["ready"] is True


def test_lambda_builds_its_handler_from_the_environment(tmp_path: Path) -> None:
    """What the Lambda runtime does: import the module with SHEAF_CONFIG set and read
    `handler` (a fresh interpreter, as at a cold start)."""
    import os

    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: fc, backend: baseline}\n")
    event = json.loads((LAMBDA_EVENTS / "function_url_predict.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/fc/predict"
    code = ("import json, sys; from sheaf_server.aws_lambda import handler; "
            "print(json.dumps(handler(json.loads(sys.stdin.read()), None)))")
    ran = subprocess.run([sys.executable, "-c", code], input=json.dumps(event),
                         env={**os.environ, "SHEAF_CONFIG": str(config)},
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["model_name"] == "fc"


def test_the_kubernetes_quickstart_example_writes_valid_tier_2_manifests(
        tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart_kubernetes.py"),
                          "-o", str(tmp_path / "k8s")], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "kubectl apply -f" in ran.stdout
    kubernetes_validate(tmp_path / "k8s")
    container = objects(tmp_path / "k8s")["Deployment"]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["args"][-2:] == ["--runtime", "ray"]


def test_a_tier_2_image_starts_ray_and_installs_its_extra(tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    ran = build(config, "--target", "docker", "--runtime", "ray", "-o", str(tmp_path / "img"))
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "img" / "requirements.txt").read_text().startswith(
        "sheaf-server[ray]==")
    assert 'CMD ["serve", "--host", "0.0.0.0", "--runtime", "ray"]' in (
        tmp_path / "img" / "Dockerfile").read_text()


def test_the_compose_file_passes_the_compose_specification(tmp_path: Path) -> None:
    """Checked against the Compose Specification (compose-spec: unknown keys and wrong
    types rejected); no engine runs it here — the Prometheus image is not pulled, no
    registry is reachable."""
    from compose_spec import PyCompose

    config = tmp_path / "sheaf.yaml"
    config.write_text(GPU_CONFIG)
    assert build(config, "--target", "compose", "-o", str(tmp_path / "c")).returncode == 0
    for path, names in (
            (tmp_path / "c" / "docker-compose.yml", ["sheaf", "prometheus"]),
            (ROOT / "deploy" / "docker-compose.yml",  # deploy/sheaf.yaml has `jobs:`
             ["sheaf", "prometheus", "redis", "worker"])):
        compose = PyCompose.from_yaml(path.read_text())
        compose.validate()
        assert compose.service_names() == names
    gpus = yaml.safe_load((tmp_path / "c" / "docker-compose.yml").read_text())["services"][
        "sheaf"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus == [{"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}]
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  sheaf:\n    image: x\n    bogus_key: 1\n")
    with pytest.raises(ValueError, match="bogus_key"):
        PyCompose.from_yaml(bad.read_text()).validate()


def test_lambda_refuses_a_model_that_asks_for_a_gpu() -> None:
    from sheaf_core.errors import ConfigError
    from sheaf_core.spec import ModelSpec
    from sheaf_server.aws_lambda import make_handler

    config = SheafConfig(models=[ModelSpec(name="fc", backend="baseline",
                                           resources={"num_gpus": 1})])
    with pytest.raises(ConfigError, match=r"model 'fc': resources.num_gpus: AWS Lambda has "
                                          r"no GPUs"):
        make_handler(config)


def test_kubernetes_serves_https_from_a_tls_secret_and_reads_keys_from_a_secret(
        tmp_path: Path) -> None:
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    ran = build(config, "--target", "kubernetes", "-o", str(tmp_path / "k8s"),
                "--tls-secret", "sheaf-tls", "--api-keys-secret", "sheaf-keys")
    assert ran.returncode == 0, ran.stderr
    kubernetes_validate(tmp_path / "k8s")
    found = objects(tmp_path / "k8s")
    pod = found["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "tls", "secret": {"secretName": "sheaf-tls"}} in pod["volumes"]
    assert {"name": "SHEAF_API_KEYS", "valueFrom": {"secretKeyRef": {
        "name": "sheaf-keys", "key": "api-keys"}}} in container["env"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    served = SheafConfig.model_validate(yaml.safe_load(found["ConfigMap"]["data"]["sheaf.yaml"]))
    assert served.server.tls is not None
    assert served.server.tls.certfile.startswith(next(
        m["mountPath"] for m in container["volumeMounts"] if m["name"] == "tls"))
    on_ray = build(config, "--target", "kubernetes", "-o", str(tmp_path / "ray"),
                   "--runtime", "ray", "--tls-secret", "sheaf-tls")
    assert on_ray.returncode != 0 and "terminate TLS" in on_ray.stderr
    assert not (tmp_path / "ray").exists()


@pytest.mark.parametrize("target", ["docker", "compose", "kubernetes", "sagemaker", "ray",
                                    "kuberay"])
def test_planted_secrets_never_reach_what_build_writes(tmp_path: Path, target: str) -> None:
    """An API key, an exporter's headers and cloud credentials in the builder's shell stay
    out of every file a target writes (the cluster's Secrets hold them)."""
    planted = "planted-build-secret-71ac"
    config = tmp_path / "sheaf.yaml"
    config.write_text("models:\n  - {name: baseline, backend: baseline}\n")
    out = tmp_path / "out"
    ran = subprocess.run([str(BIN), "build", str(config), "--target", target, "-o", str(out)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SHEAF_API_KEYS": f"{planted}:*",
                              "OTEL_EXPORTER_OTLP_HEADERS": f"authorization={planted}",
                              "AWS_SECRET_ACCESS_KEY": planted})
    assert ran.returncode == 0, ran.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert planted.encode() not in path.read_bytes(), path
    assert planted not in ran.stdout + ran.stderr


def test_a_config_with_jobs_gets_workers_that_keda_scales_on_each_stream(
        tmp_path: Path) -> None:
    """`jobs:` adds a worker Deployment (the models it runs, no HTTP, a grace period that
    covers its drain) and a KEDA ScaledObject with two redis-streams triggers per model:
    the consumer group's lag (wakes workers from zero; Redis 7+) and its pending entries."""
    config = tmp_path / "sheaf.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "fc", "backend": "baseline", "resources": {"num_cpus": 2}},
                   {"name": "other", "backend": "baseline",
                    "resources": {"memory": 3 * 2**30}}],
        "jobs": {"redis_url": "rediss://queue.internal:6380/2", "models": ["fc"],
                 "drain_timeout_s": 60, "prefix": "prod",
                 "autoscaling": {"min_replicas": 0, "max_replicas": 7, "cooldown_s": 120,
                                 "lag_per_replica": 4, "pending_per_replica": 2}}}))
    out = tmp_path / "k8s"
    assert build(config, "--target", "kubernetes", "-o", str(out), "--redis-secret",
                 "queue").returncode == 0
    kubernetes_validate(out)
    worker = yaml.safe_load((out / "worker-deployment.yaml").read_text())
    server = yaml.safe_load((out / "deployment.yaml").read_text())
    keda = yaml.safe_load((out / "worker-keda.yaml").read_text())
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["worker"] and "ports" not in container
    assert container["resources"]["requests"]["cpu"] == "2000m"  # fc only
    assert pod["terminationGracePeriodSeconds"] == 75
    assert worker["spec"]["replicas"] == 0
    env = {e["name"]: e for e in container["env"]}
    assert env["SHEAF_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "queue",
                                                                    "key": "url"}
    assert "SHEAF_REDIS_URL" in {e["name"] for e in server["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    selector = yaml.safe_load((out / "service.yaml").read_text())["spec"]["selector"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())  # not served by it
    assert keda["apiVersion"] == "keda.sh/v1alpha1" and keda["kind"] == "ScaledObject"
    spec = keda["spec"]
    assert spec["scaleTargetRef"] == {"name": worker["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == \
        (0, 7, 120)
    lag, running = spec["triggers"]
    assert lag["type"] == running["type"] == "redis-streams"
    for trigger in (lag, running):
        meta = trigger["metadata"]
        assert meta["stream"] == "{prod}:jobs:stream:fc" and meta["consumerGroup"] == "workers"
        assert meta["address"] == "queue.internal:6380" and meta["databaseIndex"] == "2"
        assert meta["enableTLS"] == "true"
        assert meta["passwordFromEnv"] == "SHEAF_REDIS_PASSWORD"
    assert lag["metadata"]["lagCount"] == "4" and "pendingEntriesCount" not in lag["metadata"]
    assert running["metadata"]["pendingEntriesCount"] == "2"
    requirements = build(config, "--target", "docker", "-o", str(tmp_path / "img"))
    assert requirements.returncode == 0
    assert "sheaf-server[jobs]==" in (tmp_path / "img" / "requirements.txt").read_text()


def test_compose_with_jobs_runs_redis_with_an_append_only_file_and_a_worker(
        tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert "noeviction" in services["redis"]["command"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["image"] == services["sheaf"]["image"]
    assert "redis" in services["sheaf"]["depends_on"]
    assert "redis-data" in compose["volumes"]
