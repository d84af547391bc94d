"""Backend kwargs every diffusers backend takes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DiffusersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, description="Hub id (black-forest-labs/FLUX.1-schnell) "
                          "or a local directory saved with save_pretrained.")
    revision: str | None = Field(default=None, description="Hub branch, tag or commit.")
    device: str = Field(default="auto", description="torch device: auto (cuda when "
                        "available, else cpu), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bfloat16 on a GPU, float32 on CPU.")
    cpu_offload: Literal["none", "model", "sequential"] = Field(
        default="none", description="Keep weights in CPU memory and move them to the GPU as "
        "needed: 'model' (whole sub-models; some speed lost) or 'sequential' (layer by "
        "layer; least memory, slow). Needs a CUDA device.")
    torch_threads: int | None = Field(default=None, ge=1, le=256,
                                      description="torch.set_num_threads (process-wide).")
    max_images_per_call: int = Field(
        default=8, ge=1, le=64, description="Most images generated in one pipeline call; a "
        "larger batch is split (bounds activation memory).")
