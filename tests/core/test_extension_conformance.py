"""sheaf-core's own contracts and combiner pass the suites a plugin author's pass
(`sheaf_core.testing.ContractConformance`, `CombinerConformance`), and every hook a plugin
can implement has a conformance suite, a test that runs it, and documentation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from picture_support import png_b64
from test_weather_contract import body as weather_body

from sheaf_core import hookspecs
from sheaf_core.contracts.time_series import TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.testing import CombinerConformance, ContractConformance

ROOT = Path(__file__).parents[2]


class TestTimeSeriesContract(ContractConformance):
    model_type = "time_series"

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        return [{"history": [1.0, 2.0, 3.0], "horizon": 2},
                {"history": [[1.0, 2.0], [3.0, 4.0]], "horizon": 1, "request_id": "r"}]


class TestTextToImageContract(ContractConformance):
    model_type = "text_to_image"

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        return [{"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "seed": 1}]


class TestImageToImageContract(ContractConformance):
    model_type = "image_to_image"

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        return [{"prompt": "in winter", "image_b64": png_b64(64, 64)}]


class TestWeatherContract(ContractConformance):
    model_type = "weather"

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        return [weather_body()]


def _forecast(mean: list[float], low: list[float], high: list[float]) -> TimeSeriesResponse:
    return TimeSeriesResponse(horizon=len(mean), mean=mean, quantiles={"0.1": low, "0.9": high})


class TestWeightedEnsemble(CombinerConformance):
    combiner_name = "weighted_ensemble"
    combiner_kwargs = {"weights": {"a": 3.0, "b": 1.0}}

    @pytest.fixture
    def request_and_inputs(self) -> tuple[TimeSeriesRequest, dict[str, TimeSeriesResponse]]:
        request = TimeSeriesRequest(history=[1.0, 2.0, 3.0], horizon=2)
        return request, {"a": _forecast([1.0, 2.0], [0.5, 1.5], [1.5, 2.5]),
                         "b": _forecast([3.0, 4.0], [2.5, 3.5], [3.5, 4.5])}

    @pytest.fixture
    def invalid_requests(self) -> list[tuple[TimeSeriesRequest, str]]:
        return [(TimeSeriesRequest(history=[1.0, 2.0], horizon=2, output_mode="samples"),
                 "output_mode")]


SUITES = {"sheaf_register_backends": "BackendConformance",
          "sheaf_register_contracts": "ContractConformance",
          "sheaf_register_combiners": "CombinerConformance"}


@pytest.mark.parametrize("hook", [name for name, _ in inspect.getmembers(hookspecs)
                                  if name.startswith("sheaf_register_")])
def test_every_hook_has_a_suite_a_test_running_it_and_docs(hook: str) -> None:
    assert hook in SUITES, f"{hook}: add a conformance suite to sheaf_core.testing"
    suite = SUITES[hook]
    tests = "".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py")
                    if path.name != Path(__file__).name)
    assert f"({suite})" in tests + Path(__file__).read_text(), f"no test runs {suite}"
    plugins_doc = (ROOT / "docs" / "plugins.md").read_text()
    assert hook in plugins_doc, f"docs/plugins.md does not document {hook}"
    assert suite in plugins_doc, f"docs/plugins.md does not mention {suite}"


def test_streaming_capability_is_derived_from_the_class() -> None:
    from sheaf_core.builtin.baseline import BaselineForecaster

    class Streams(BaselineForecaster):
        def stream(self, request: Any) -> Any:
            yield from super().stream(request)

    class Inherits(Streams):
        pass

    class SaysNo(Streams):
        supports_streaming = False

    assert not BaselineForecaster.supports_streaming
    assert Streams.supports_streaming and Inherits.supports_streaming
    assert not SaysNo.supports_streaming
