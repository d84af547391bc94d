"""sheaf-core's own plugin: the time_series, text_to_image, image_to_image and weather
contracts, the baseline forecaster and the weighted ensemble combiner.

Registered through the ``sheaf`` entry point group exactly like a third-party plugin.
"""

from __future__ import annotations

from sheaf_core.hookspecs import hookimpl
from sheaf_core.registry import BackendRegistrar, CombinerRegistrar, ContractRegistrar


@hookimpl
def sheaf_register_contracts(register: ContractRegistrar) -> None:
    from sheaf_core.contracts.image_to_image import ImageToImageRequest, ImageToImageResponse
    from sheaf_core.contracts.text_to_image import TextToImageRequest, TextToImageResponse
    from sheaf_core.contracts.time_series import TimeSeriesRequest, TimeSeriesResponse
    from sheaf_core.contracts.weather import WeatherRequest, WeatherResponse
    from sheaf_core.contracts.weather_payloads import codecs

    register("time_series", TimeSeriesRequest, TimeSeriesResponse)
    register("text_to_image", TextToImageRequest, TextToImageResponse)
    register("image_to_image", ImageToImageRequest, ImageToImageResponse)
    register("weather", WeatherRequest, WeatherResponse, codecs=codecs())


@hookimpl
def sheaf_register_backends(register: BackendRegistrar) -> None:
    from sheaf_core.builtin.baseline import BaselineForecaster

    register("baseline", BaselineForecaster)


@hookimpl
def sheaf_register_combiners(register: CombinerRegistrar) -> None:
    from sheaf_core.builtin.ensemble import WeightedQuantileEnsemble

    register("weighted_ensemble", WeightedQuantileEnsemble)
