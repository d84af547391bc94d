"""A test backend for batch jobs, registered as an in-process plugin (shipped to Ray workers
by value): the baseline, plus a poison value that raises inside predict, a per-row cost
(history[0] milliseconds when `skew` is on), a log of the processes that loaded it and one
of the histories predict was given (a job's rows, and the model's warm-up requests)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from sheaf_core import TimeSeriesRequest, TimeSeriesResponse, hookimpl
from sheaf_core.builtin.baseline import BaselineForecaster

POISON = 666.0


class BatchTestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skew: bool = False
    load_log: str | None = None
    predict_log: str | None = None


class BatchTestBackend(BaselineForecaster):
    Settings = BatchTestSettings

    def load(self) -> None:
        if self.settings.load_log:
            with open(self.settings.load_log, "a") as f:
                f.write(f"{os.getpid()}\n")
        super().load()

    def _season(self, request: TimeSeriesRequest) -> int:
        return 1

    def predict(self, requests: Sequence[TimeSeriesRequest]) -> list[TimeSeriesResponse]:
        if self.settings.predict_log:
            with open(self.settings.predict_log, "a") as f:
                f.writelines(json.dumps(r.history) + "\n" for r in requests)
        if self.settings.skew:
            time.sleep(sum(max(r.target_series()[0] or 0, 0) for r in requests) / 1000)
        if any(POISON in r.target_series() for r in requests):
            raise RuntimeError("the model choked on this series")
        return super().predict(requests)


class BatchTestPlugin:
    __name__ = "batch-tests"

    @hookimpl
    def sheaf_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("batch-test", BatchTestBackend)
