"""`sheaf_server.testing.ServingConformance` — what a plugin author runs to see their
backend behind the engine and real HTTP answer as it does in process — on the embedded
baseline and on a tiny Chronos-Bolt."""

from __future__ import annotations

from pathlib import Path

import pytest

from sheaf_backend_chronos.testing import save_tiny_bolt
from sheaf_core import TimeSeriesRequest
from sheaf_server.testing import ServingConformance


class TestBaselineServed(ServingConformance):
    backend_name = "baseline"

    @pytest.fixture
    def sample_requests(self) -> list[TimeSeriesRequest]:
        return [TimeSeriesRequest(history=[1, 2, 3, 1, 2, 3, 1, 2], horizon=4),
                TimeSeriesRequest(history=[5, 6, 7, 8, 9] * 5, horizon=12, frequency="1d",
                                  output_mode="quantiles", quantile_levels=[0.05, 0.5, 0.95])]


class TestBoltServed(ServingConformance):
    backend_name = "chronos"
    rtol = atol = 2e-3

    @pytest.fixture(scope="class")
    def backend_kwargs(self, tmp_path_factory: pytest.TempPathFactory) -> dict:
        directory: Path = save_tiny_bolt(tmp_path_factory.mktemp("bolt-served"))
        return {"model_id": str(directory)}

    @pytest.fixture
    def sample_requests(self) -> list[TimeSeriesRequest]:
        return [TimeSeriesRequest(history=[float(i % 7) for i in range(40)], horizon=6),
                TimeSeriesRequest(history=[1.0, 3.0, 2.0, 5.0] * 8, horizon=3,
                                  output_mode="quantiles", quantile_levels=[0.1, 0.5, 0.9])]

    @pytest.fixture
    def invalid_requests(self) -> list[tuple[TimeSeriesRequest, str]]:
        return [(TimeSeriesRequest(history=[1, 2], horizon=1, output_mode="quantiles",
                                   quantile_levels=[0.001, 0.5]), "quantile_levels")]
