"""The `weather` contract as xarray Datasets, and as NetCDF bytes.

Real atmospheric states are large (a 0.25° state is about a gigabyte) and live in NetCDF or
Zarr, so a request or response can also travel as a Dataset. The layout:

  request:  coords lat, lon, level (hPa), time (the states, oldest first);
            surface variables (time, lat, lon); atmospheric ones (time, level, lat, lon);
            static forcings (lat, lon); per-step forcings (step, lat, lon);
            attrs: n_steps (and optionally init_time; default the last state's time).
  response: coords lat, lon, level, time (valid times), step;
            the forecast variables as above, over the forecast's times;
            attrs: init_time, step_hours.

Needs xarray and h5netcdf: `pip install 'sheaf-core[weather]'`.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import ForecastStep, WeatherRequest, WeatherResponse

if TYPE_CHECKING:
    import xarray as xr

SPATIAL = ("lat", "lon")


def request_to_dataset(request: WeatherRequest) -> xr.Dataset:
    import numpy as np
    import xarray as xr

    first = request.states[0]
    times = [_naive(s.time) if s.time else None for s in request.states]
    data: dict[str, Any] = {}
    for name in first.surface:
        data[name] = (("time", *SPATIAL), np.stack(
            [s.surface[name].to_numpy() for s in request.states]))
    for name in first.atmospheric:
        data[name] = (("time", "level", *SPATIAL), np.stack(
            [s.atmospheric[name].to_numpy() for s in request.states]))
    for name, array in request.forcings.items():
        values = array.to_numpy()
        data[name] = ((("step",) if values.ndim == 3 else ()) + SPATIAL, values)
    coords: dict[str, Any] = {"lat": request.grid.lat, "lon": request.grid.lon,
                              "level": request.levels}
    if all(t is not None for t in times):
        coords["time"] = np.array(times, dtype="datetime64[ns]")
    return xr.Dataset(data, coords=coords, attrs={
        "n_steps": request.n_steps, "init_time": _naive(request.init_time).isoformat()})


def request_from_dataset(dataset: xr.Dataset, **fields: Any) -> WeatherRequest:
    """A `WeatherRequest` from a Dataset in the layout above; `fields` (e.g. n_steps)
    override its attributes. Shapes and names are then checked as for JSON."""
    times = [_to_datetime(t) for t in dataset["time"].values] if "time" in dataset.coords \
        else []
    states: list[dict[str, Any]] = [
        {"time": t, "surface": {}, "atmospheric": {}} for t in times] or [
        {"surface": {}, "atmospheric": {}} for _ in range(dataset.sizes.get("time", 1))]
    forcings: dict[str, EncodedArray] = {}
    for name, variable in dataset.data_vars.items():
        dims = variable.dims
        if "time" not in dims:
            forcings[str(name)] = EncodedArray.from_numpy(variable.values)
            continue
        kind = "atmospheric" if "level" in dims else "surface"
        order = ("time", "level", *SPATIAL) if kind == "atmospheric" else ("time", *SPATIAL)
        values = variable.transpose(*order).values
        for state, plane in zip(states, values, strict=True):
            state[kind][str(name)] = EncodedArray.from_numpy(plane)
    attrs = dict(dataset.attrs)
    init_time = attrs.get("init_time") or (times[-1] if times else None)
    body: dict[str, Any] = {
        "init_time": init_time, "n_steps": int(attrs.get("n_steps", 1)),
        "grid": {"lat": [float(x) for x in dataset["lat"].values],
                 "lon": [float(x) for x in dataset["lon"].values]},
        "levels": [float(x) for x in dataset["level"].values] if "level" in dataset.coords
        else [],
        "states": states, "forcings": forcings, **fields}
    return WeatherRequest.model_validate(body)


def response_to_dataset(response: WeatherResponse) -> xr.Dataset:
    import numpy as np
    import xarray as xr

    data: dict[str, Any] = {}
    if response.steps:
        first = response.steps[0]
        for name in first.surface:
            data[name] = (("time", *SPATIAL), np.stack(
                [s.surface[name].to_numpy() for s in response.steps]))
        for name in first.atmospheric:
            data[name] = (("time", "level", *SPATIAL), np.stack(
                [s.atmospheric[name].to_numpy() for s in response.steps]))
    coords = {"lat": response.grid.lat, "lon": response.grid.lon, "level": response.levels,
              "time": np.array([_naive(s.valid_time) for s in response.steps],
                               dtype="datetime64[ns]"),
              "step": ("time", [s.step for s in response.steps])}
    attrs = {"init_time": _naive(response.init_time).isoformat(),
             "step_hours": response.step_hours}
    for key in ("request_id", "model_name"):
        if getattr(response, key):
            attrs[key] = getattr(response, key)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def response_from_dataset(dataset: xr.Dataset) -> WeatherResponse:
    steps = []
    for i, (time, step) in enumerate(zip(dataset["time"].values, dataset["step"].values,
                                         strict=True)):
        surface, atmospheric = {}, {}
        for name, variable in dataset.data_vars.items():
            plane = variable.isel(time=i).values
            target = atmospheric if "level" in variable.dims else surface
            target[str(name)] = EncodedArray.from_numpy(plane)
        steps.append(ForecastStep(step=int(step), valid_time=_to_datetime(time),
                                  surface=surface, atmospheric=atmospheric))
    return WeatherResponse(
        init_time=dataset.attrs["init_time"], step_hours=float(dataset.attrs["step_hours"]),
        grid={"lat": [float(x) for x in dataset["lat"].values],
              "lon": [float(x) for x in dataset["lon"].values]},
        levels=[float(x) for x in dataset["level"].values], steps=steps,
        request_id=dataset.attrs.get("request_id"), model_name=dataset.attrs.get("model_name"))


def to_netcdf(dataset: xr.Dataset) -> bytes:
    """NetCDF-4 bytes (h5netcdf)."""
    return bytes(dataset.to_netcdf(engine="h5netcdf"))


def from_netcdf(data: bytes) -> xr.Dataset:
    """A Dataset, loaded into memory, from NetCDF-4 bytes."""
    import xarray as xr

    with xr.open_dataset(io.BytesIO(data), engine="h5netcdf") as dataset:
        return dataset.load()


def _naive(moment: datetime) -> datetime:
    """UTC without tzinfo: numpy's datetime64 has no time zones."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _to_datetime(value: Any) -> datetime:
    import numpy as np

    seconds = (np.datetime64(value, "ns") - np.datetime64(0, "ns")) / np.timedelta64(1, "s")
    return datetime.fromtimestamp(float(seconds), UTC).replace(tzinfo=None)
