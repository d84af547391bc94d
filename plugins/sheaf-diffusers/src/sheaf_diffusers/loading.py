"""Loading a diffusers pipeline where the settings say, through its own `from_pretrained`."""

from __future__ import annotations

from typing import Any

from sheaf_core.errors import FieldProblem
from sheaf_core.weights import model_dir_problem, raise_problems
from sheaf_diffusers.settings import DiffusersSettings


def weights_problems(settings: DiffusersSettings) -> list[FieldProblem]:
    """`Backend.preflight` of every diffusers backend: the weights directory or hub id."""
    problem = model_dir_problem(settings.model_id, "model_id")
    return [problem] if problem else []


def load_pipeline(pipeline_class: Any, settings: DiffusersSettings) -> tuple[Any, str]:
    """`pipeline_class.from_pretrained(settings.model_id)` on the resolved device and dtype,
    with CPU offload if asked; progress bars off (a server logs, it does not draw bars).
    Returns the pipeline and the device it generates on."""
    import torch

    raise_problems(weights_problems(settings))
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if settings.cpu_offload != "none" and not device.startswith("cuda"):
        raise ValueError(f"backend_kwargs.cpu_offload={settings.cpu_offload!r} needs a CUDA "
                         f"device, but the device is {device!r}; set cpu_offload: none")
    pipe = pipeline_class.from_pretrained(settings.model_id, revision=settings.revision,
                                          dtype=dtype)
    if settings.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif settings.cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"backend_kwargs.device={setting!r} but torch sees no CUDA device; "
                         "use device: cpu or auto")
    return setting


def resolve_dtype(setting: str, device: str) -> Any:
    import torch

    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)
