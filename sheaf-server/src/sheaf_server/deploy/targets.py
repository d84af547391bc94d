"""`sheaf-server build CONFIG --target TARGET -o DIR`: every deployment target rendered from
one checked config — the files (all rendered before any is written) and the commands to run
next. The config is checked first as `validate --skip-files` checks it (weights paths are
the deployment's, not this machine's): a backend that is not installed here fails the
build, naming the package that provides it, since the image's pins come from here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sheaf_core.errors import ConfigError
from sheaf_core.registry import Registry
from sheaf_server import __version__
from sheaf_server.config_check import check_config
from sheaf_server.deploy import docker, packages
from sheaf_server.deploy.files import dump, write_files
from sheaf_server.deploy.kubernetes import HpaMetric, KubernetesServer, Runtime
from sheaf_server.settings import SheafConfig

Target = Literal["docker", "compose", "kubernetes", "sagemaker", "ray", "kuberay"]
TARGETS: tuple[Target, ...] = ("docker", "compose", "kubernetes", "sagemaker", "ray",
                               "kuberay")
DEFAULT_IMAGE = f"sheaf:{__version__}"


@dataclass(frozen=True)
class BuildOptions:
    image: str = DEFAULT_IMAGE
    name: str = "sheaf"
    runtime: Runtime = "asgi"
    replicas: int = 1
    max_replicas: int = 4
    hpa_metric: HpaMetric = "cpu"
    bake_config: bool = False
    #: ray/kuberay: install the pinned packages through the runtime_env (None: ray yes,
    #: kuberay only when `pip_options` say where the packages are).
    pip: bool | None = None
    #: Options of that install: ("--index-url", URL), ("--find-links", URL).
    pip_options: tuple[str, ...] = ()
    #: kuberay: the image of GPU worker groups (a CUDA torch); default `image`.
    gpu_image: str | None = None
    #: Wheels to copy into an image's build context (packages not on the index).
    wheels: Path | None = None
    #: kubernetes: a TLS Secret to serve HTTPS with; a Secret holding the API keys.
    tls_secret: str | None = None
    api_keys_secret: str | None = None
    #: kubernetes with `jobs:`: a Secret with the Redis `url` (and `password`, for KEDA).
    redis_secret: str | None = None


@dataclass
class Build:
    """What a target writes: text files, copied files, and what to run next."""

    files: dict[str, str]
    copies: dict[str, Path] = field(default_factory=dict)
    executable: frozenset[str] = frozenset()
    #: Commands to run next; `{dir}` stands for the output directory.
    next_steps: list[str] = field(default_factory=list)

    def write(self, directory: str | Path, *, force: bool = False) -> list[Path]:
        texts = {**self.files, **{name: "" for name in self.copies}}
        written = write_files(directory, texts, force=force, executable=self.executable)
        for name, source in self.copies.items():
            (Path(directory) / name).write_bytes(source.read_bytes())
        return written


def build(target: Target, config: SheafConfig, options: BuildOptions | None = None,
          registry: Registry | None = None) -> Build:
    options = options or BuildOptions()
    check_config(config, registry, local_files=False, source="config")
    if target == "kubernetes":
        return _kubernetes(config, options, registry)
    if target in ("docker", "compose", "sagemaker"):
        return _image(target, config, options, registry)
    return _ray(target, config, options, registry)


def _image_context(config: SheafConfig, options: BuildOptions, registry: Registry | None,
                   *, sagemaker: bool = False) -> Build:
    runtime = "asgi" if sagemaker else options.runtime
    requirements = packages.requirements(config, runtime, registry)
    files = {
        "Dockerfile": docker.dockerfile(sagemaker=sagemaker, runtime=runtime),
        ".dockerignore": docker.DOCKERIGNORE,
        "requirements.txt": "\n".join(requirements) + "\n",
        "sheaf.yaml": dump(config.model_dump(mode="json", exclude_defaults=True)),
        "wheels/.keep": "",
    }
    copies: dict[str, Path] = {}
    if options.wheels is not None:
        found = sorted(Path(options.wheels).glob("*.whl"))
        if not found:
            raise ConfigError(f"--wheels: no .whl files in {options.wheels} (build them "
                              "with ./dev wheels --out DIR)")
        copies = {f"wheels/{wheel.name}": wheel for wheel in found}
    executable: frozenset[str] = frozenset()
    if sagemaker:
        files["serve"] = docker.SAGEMAKER_SERVE
        executable = frozenset({"serve"})
    return Build(files, copies, executable)


def _gpus(config: SheafConfig) -> int:
    return math.ceil(sum(spec.resources.num_gpus for spec in config.models))


CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def _build_args(config: SheafConfig, requirements: list[str]) -> dict[str, str]:
    """A CPU-only torch when a backend package (which pulls torch) is installed and no
    model asks for a GPU: the image is ~4 GB smaller. sheaf-core and sheaf-server alone
    (the baseline) need no torch."""
    if _gpus(config) or len(requirements) <= 2:
        return {}
    return {"TORCH_INDEX_URL": CPU_TORCH_INDEX}


def _image(target: Target, config: SheafConfig, options: BuildOptions,
           registry: Registry | None) -> Build:
    context = _image_context(config, options, registry, sagemaker=target == "sagemaker")
    build_args = _build_args(config, context.files["requirements.txt"].split())
    flags = "".join(f" --build-arg {k}={v}" for k, v in build_args.items())
    build_line = f"docker build -t {options.image}{flags} {{dir}}"
    if target == "docker":
        gpus = " --gpus all" if _gpus(config) else ""
        context.next_steps = [build_line, f"docker run --rm{gpus} -p {config.server.port}:8000 "
                              f"{options.image}"]
    elif target == "compose":
        context.files["docker-compose.yml"] = docker.compose(
            image=options.image, port=config.server.port, gpus=_gpus(config),
            build_args=build_args, jobs=config.jobs)
        context.files["prometheus.yml"] = docker.prometheus_config()
        context.next_steps = ["docker compose -f {dir}/docker-compose.yml up --build"]
    else:
        context.next_steps = [
            build_line,
            f"docker run --rm -p 8080:8080 -v MODEL_DIR:/opt/ml/model {options.image} serve",
            "push it to ECR and create the model and endpoint: docs/sagemaker.md"]
    return context


def _kubernetes(config: SheafConfig, options: BuildOptions,
                registry: Registry | None) -> Build:
    server = KubernetesServer(config, image=options.image, name=options.name,
                              runtime=options.runtime, replicas=options.replicas,
                              max_replicas=options.max_replicas,
                              hpa_metric=options.hpa_metric, bake_config=options.bake_config,
                              registry=registry, tls_secret=options.tls_secret,
                              api_keys_secret=options.api_keys_secret,
                              redis_secret=options.redis_secret)
    steps = []
    if options.image == DEFAULT_IMAGE:
        steps.append("build the image first: sheaf-server build CONFIG --target docker -o "
                     "IMAGE_DIR, then push it and pass --image REGISTRY/sheaf:TAG")
    steps.append("kubectl apply -f {dir}")
    return Build(server.files(), next_steps=steps)


def ray_document(config: SheafConfig, options: BuildOptions,
                 registry: Registry | None = None) -> dict[str, Any]:
    """The Ray Serve config; the runtime_env installs the pinned packages unless
    `options.pip` is False (the cluster's image has them)."""
    from sheaf_server.ray import serve_config

    pip = True if options.pip is None else options.pip
    return serve_config.serve_config(config, pip=pip, pip_options=options.pip_options,
                                     registry=registry)


def kuberay_document(config: SheafConfig, options: BuildOptions,
                     registry: Registry | None = None) -> dict[str, Any]:
    """The RayService on the Sheaf image (Ray and the pinned packages inside it), so no
    runtime_env install — unless `options.pip`, or pip options naming where the packages
    are, ask for one (a plain Ray image as `--image`)."""
    from sheaf_server.ray import serve_config

    pip = bool(options.pip_options) if options.pip is None else options.pip
    return serve_config.rayservice(config, name=options.name, image=options.image,
                                   gpu_image=options.gpu_image, pip=pip,
                                   pip_options=options.pip_options, registry=registry)


def _ray(target: Target, config: SheafConfig, options: BuildOptions,
         registry: Registry | None) -> Build:
    from sheaf_server.ray import serve_config

    if target == "ray":
        return Build({"serve_config.yaml": serve_config.dump(
                          ray_document(config, options, registry))},
                     next_steps=["serve deploy {dir}/serve_config.yaml  (on the Ray cluster)"])
    steps = []
    if options.image == DEFAULT_IMAGE:
        steps.append("build the image first: sheaf-server build CONFIG --target docker "
                     "--runtime ray -o IMAGE_DIR (and for GPU groups once more, without the "
                     "CPU-only torch, as --gpu-image), push it and pass --image")
    steps.append("kubectl apply -f {dir}/rayservice.yaml  (KubeRay installed)")
    return Build({"rayservice.yaml": serve_config.dump(
                      kuberay_document(config, options, registry))}, next_steps=steps)
