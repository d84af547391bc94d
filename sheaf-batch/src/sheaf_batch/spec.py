"""`BatchSpec` — what a job reads, writes and how it runs — and the job file that pairs it
with a `ModelSpec` (the same schema as a model of sheaf.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sheaf_core.errors import ConfigError
from sheaf_core.spec import ModelSpec


class BatchSpec(BaseModel):
    """One offline job over a source of requests."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="JSONL (.jsonl, .ndjson, .json) or Parquet (.parquet) "
                        "of requests: a local path or an fsspec URL such as s3://bucket/key.")
    sink: str = Field(description="Where responses go (.jsonl or .parquet), one per valid "
                      "input row, in input order.")
    errors: str | None = Field(default=None, description="Rows the backend failed on (line, "
                               "error); default: SINK.errors.jsonl.")
    rejects: str | None = Field(default=None, description="Rows that failed validation (line, "
                                "fields); default: SINK.rejects.jsonl.")
    on_invalid: Literal["fail", "skip"] = Field(
        default="fail", description="fail: report every invalid row and write no output "
        "(the first one stops the model on every worker); skip: write them to `rejects` and "
        "run the rest. Either way each row is parsed once, on its worker.")
    batch_size: int | None = Field(default=None, ge=1, le=65_536, description="Rows per "
                                   "backend call; default the model's "
                                   "batching.max_batch_size.")
    chunk_rows: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="Rows per unit of work: what a worker reads, runs and "
        "checkpoints at once (a Parquet row group is always one). auto: about two chunks "
        "per worker, from the source's estimated rows (1,024 to 65,536); a resumed job keeps "
        "the size its checkpoints were cut with.")
    compute: Literal["tasks", "actors"] = Field(
        default="tasks", description="tasks: stateless Ray tasks, one backend per worker "
        "process; actors: a pool of `num_actors` actors, one backend each.")
    num_actors: int = Field(default=1, ge=1)
    concurrency: int | None = Field(default=None, ge=1, description="tasks: at most this "
                                    "many at once (default: as many as the CPUs allow).")
    num_cpus: float | None = Field(default=None, ge=0, description="Per task or actor; "
                                   "default the model's resources.num_cpus.")
    num_gpus: float | None = Field(default=None, ge=0, description="Per task or actor; "
                                   "default the model's resources.num_gpus.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for every path, e.g. "
        "{client_kwargs: {endpoint_url: http://minio:9000}} for an S3-compatible store.")
    work_dir: str | None = Field(default=None, description="Checkpoints (finished chunks); "
                                 "default: SINK.parts. Kept until the job completes.")

    @model_validator(mode="after")
    def _known_formats(self) -> BatchSpec:
        source_format(self.source)
        if not self.sink.endswith((".jsonl", ".ndjson", ".parquet")):
            raise ValueError(f"sink: {self.sink!r} must be a .jsonl or .parquet file")
        return self

    def for_model(self, spec: ModelSpec) -> BatchSpec:
        """This job with what it leaves unset taken from the model's spec: the batch size
        from `batching.max_batch_size`, CPUs and GPUs per worker from `resources` — one
        description of a model for the servers and the batch runner."""
        return self.model_copy(update={
            "batch_size": self.batch_size or spec.batching.max_batch_size,
            "num_cpus": spec.resources.num_cpus if self.num_cpus is None else self.num_cpus,
            "num_gpus": spec.resources.num_gpus if self.num_gpus is None else self.num_gpus})

    @property
    def errors_path(self) -> str:
        return self.errors or f"{self.sink}.errors.jsonl"

    @property
    def rejects_path(self) -> str:
        return self.rejects or f"{self.sink}.rejects.jsonl"

    @property
    def work_path(self) -> str:
        return self.work_dir or f"{self.sink}.parts"


def source_format(path: str) -> Literal["jsonl", "parquet"]:
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    raise ValueError(f"source: {path!r} is neither JSONL (.jsonl, .ndjson, .json) nor "
                     "Parquet (.parquet)")


class JobFile(BaseModel):
    """A job file: `model:` (a ModelSpec, as in sheaf.yaml) and `job:` (a BatchSpec)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec
    job: BatchSpec

    @model_validator(mode="before")
    @classmethod
    def _no_serving_settings(cls, data: Any) -> Any:
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "ray" in model:
            raise ValueError("model.ray: Ray Serve deployment settings do not apply to a batch "
                             "job; remove them (job.num_cpus, job.num_gpus, job.concurrency "
                             "size its workers; by default from the model's resources)")
        return data


def load_job(path: str | Path) -> JobFile:
    """Read a job file; ConfigError names the section and field at fault."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read job file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        return JobFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError(f"{path} is invalid:\n" + "\n".join(lines)) from None
