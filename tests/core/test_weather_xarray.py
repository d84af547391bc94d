"""The weather contract as xarray Datasets and NetCDF bytes: requests and responses survive
the round trip exactly."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from test_weather_contract import INIT, LAT, LEVELS, LON, arr, body

from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import Grid, WeatherRequest, WeatherResponse
from sheaf_core.contracts.weather_xarray import (
    from_netcdf,
    request_from_dataset,
    request_to_dataset,
    response_from_dataset,
    response_to_dataset,
    to_netcdf,
)


def test_a_request_survives_dataset_and_netcdf_exactly() -> None:
    request = WeatherRequest.model_validate(body())
    dataset = request_to_dataset(request)
    assert dict(dataset.sizes) == {"time": 2, "level": 2, "lat": LAT, "lon": LON, "step": 2}
    assert dataset["t"].dims == ("time", "level", "lat", "lon")
    assert dataset["lsm"].dims == ("lat", "lon") and dataset["toa"].dims == ("step", "lat", "lon")
    again = request_from_dataset(from_netcdf(to_netcdf(dataset)))
    assert again.model_dump() == request.model_dump()


def test_n_steps_and_init_time_default_from_the_dataset() -> None:
    dataset = request_to_dataset(WeatherRequest.model_validate(body()))
    del dataset.attrs["init_time"]
    again = request_from_dataset(dataset, n_steps=2)
    assert again.init_time == INIT  # the last state's time


def test_a_response_survives_dataset_and_netcdf_exactly() -> None:
    grid = Grid(lat=list(np.linspace(-60, 60, LAT)), lon=list(np.arange(LON) * 45.0))
    steps = [{"step": k, "valid_time": INIT + timedelta(hours=6 * k),
              "surface": {"t2m": arr(LAT, LON, seed=k)},
              "atmospheric": {"z": arr(len(LEVELS), LAT, LON, seed=10 + k)}} for k in (1, 2)]
    response = WeatherResponse(init_time=INIT, step_hours=6, grid=grid, levels=LEVELS,
                               steps=steps, request_id="wx-9", model_name="weather")
    again = response_from_dataset(from_netcdf(to_netcdf(response_to_dataset(response))))
    assert again.model_dump() == response.model_dump()
    z = again.steps[1].atmospheric["z"].to_numpy()
    assert np.array_equal(z, EncodedArray.model_validate(arr(2, LAT, LON, seed=12)).to_numpy())
    assert isinstance(again.steps[0].valid_time, datetime)


def test_a_file_whose_dimensions_come_in_another_order_reads_the_same() -> None:
    request = WeatherRequest.model_validate(body())
    shuffled = request_to_dataset(request).transpose("lon", "lat", ...)
    assert request_from_dataset(shuffled).model_dump() == request.model_dump()
