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

Needs xarray, h5netcdf and zarr: `pip install 'sheaf-core[weather]'`.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import ForecastStep, State, WeatherRequest, WeatherResponse

if TYPE_CHECKING:
    import xarray as xr

SPATIAL = ("lat", "lon")


def request_to_dataset(request: WeatherRequest) -> xr.Dataset:
    import xarray as xr

    data = _stacked(request.states)
    for name, array in request.forcings.items():
        values = array.to_numpy()
        data[name] = ((("step",) if values.ndim == 3 else ()) + SPATIAL, values)
    coords: dict[str, Any] = {"lat": request.grid.lat, "lon": request.grid.lon,
                              "level": request.levels}
    if all(s.time is not None for s in request.states):
        coords["time"] = _times([s.time for s in request.states])  # type: ignore[misc]
    attrs: dict[str, Any] = {"n_steps": request.n_steps,
                             "init_time": _naive(request.init_time).isoformat()}
    attrs.update({key: getattr(request, key) for key in ("request_id", "model_name")
                  if getattr(request, key)})
    return xr.Dataset(data, coords=coords, attrs=attrs)


def request_from_dataset(dataset: xr.Dataset, **fields: Any) -> WeatherRequest:
    """A `WeatherRequest` from a Dataset in the layout above; `fields` (e.g. n_steps)
    override its attributes. Per-step forcings covering more steps than asked for are cut
    to the first n_steps (a file may hold a longer horizon). Shapes and names are then
    checked as for JSON."""
    n_steps = int(fields.get("n_steps", dataset.attrs.get("n_steps", 1)))
    if dataset.sizes.get("step", 0) > n_steps:
        dataset = dataset.isel(step=slice(0, n_steps))
    times = [_to_datetime(t) for t in dataset["time"].values] if "time" in dataset.coords \
        else []
    states: list[dict[str, Any]] = [{"surface": surface, "atmospheric": atmospheric}
              for surface, atmospheric in _unstacked(dataset)]
    for state, time in zip(states, times, strict=False):
        state["time"] = time
    forcings = {str(name): EncodedArray.from_numpy(variable.transpose(
                    *(("step",) if "step" in variable.dims else ()), *SPATIAL).values)
                for name, variable in dataset.data_vars.items() if "time" not in variable.dims}
    init_time = dataset.attrs.get("init_time") or (times[-1] if times else None)
    body: dict[str, Any] = {
        "init_time": init_time, "n_steps": n_steps, **_grid_and_levels(dataset),
        "states": states, "forcings": forcings,
        **{key: dataset.attrs[key] for key in ("request_id", "model_name")
           if key in dataset.attrs}, **fields}
    return WeatherRequest.model_validate(body)


def response_to_dataset(response: WeatherResponse) -> xr.Dataset:
    import xarray as xr

    coords = {"lat": response.grid.lat, "lon": response.grid.lon, "level": response.levels,
              "time": _times([s.valid_time for s in response.steps]),
              "step": ("time", [s.step for s in response.steps])}
    attrs: dict[str, Any] = {"init_time": _naive(response.init_time).isoformat(),
                             "step_hours": response.step_hours}
    for key in ("request_id", "model_name"):
        if getattr(response, key):
            attrs[key] = getattr(response, key)
    return xr.Dataset(_stacked(response.steps), coords=coords, attrs=attrs)


def response_from_dataset(dataset: xr.Dataset) -> WeatherResponse:
    steps = [ForecastStep(step=int(step), valid_time=_to_datetime(time), surface=surface,
                          atmospheric=atmospheric)
             for time, step, (surface, atmospheric) in zip(
                 dataset["time"].values, dataset["step"].values, _unstacked(dataset),
                 strict=True)]
    return WeatherResponse(
        init_time=dataset.attrs["init_time"], step_hours=float(dataset.attrs["step_hours"]),
        **_grid_and_levels(dataset), steps=steps, request_id=dataset.attrs.get("request_id"),
        model_name=dataset.attrs.get("model_name"))


def _stacked(snapshots: Sequence[State] | Sequence[ForecastStep]) -> dict[str, Any]:
    """The variables of states (or forecast steps), each stacked along `time`."""
    import numpy as np

    data: dict[str, Any] = {}
    if snapshots:
        for kind, dims in (("surface", ("time", *SPATIAL)),
                           ("atmospheric", ("time", "level", *SPATIAL))):
            for name in getattr(snapshots[0], kind):
                data[name] = (dims, np.stack([getattr(s, kind)[name].to_numpy()
                                              for s in snapshots]))
    return data


def _unstacked(dataset: xr.Dataset) -> list[tuple[dict[str, EncodedArray],
                                                 dict[str, EncodedArray]]]:
    """The inverse of `_stacked`: per time, (surface, atmospheric) variables, each put in
    the contract's dimension order whatever the file's."""
    snapshots: list[tuple[dict[str, EncodedArray], dict[str, EncodedArray]]] = [
        ({}, {}) for _ in range(dataset.sizes.get("time", 0))]
    for name, variable in dataset.data_vars.items():
        if "time" not in variable.dims:
            continue
        atmospheric = "level" in variable.dims
        order = ("time", "level", *SPATIAL) if atmospheric else ("time", *SPATIAL)
        for snapshot, plane in zip(snapshots, variable.transpose(*order).values, strict=True):
            snapshot[1 if atmospheric else 0][str(name)] = EncodedArray.from_numpy(plane)
    return snapshots


def _grid_and_levels(dataset: xr.Dataset) -> dict[str, Any]:
    levels: Any = dataset["level"].values if "level" in dataset.coords else []
    return {"grid": {"lat": [float(x) for x in dataset["lat"].values],
                     "lon": [float(x) for x in dataset["lon"].values]},
            "levels": [float(x) for x in levels]}


def _times(moments: Sequence[datetime]) -> Any:
    import numpy as np

    return np.array([_naive(m) for m in moments], dtype="datetime64[ns]")


def to_zarr_zip(dataset: xr.Dataset) -> bytes:
    """A zipped Zarr store, as bytes (`application/x-zarr+zip`)."""
    with tempfile.TemporaryDirectory(prefix="sheaf-zarr-") as tmp:
        store = Path(tmp, "dataset.zarr")
        dataset.to_zarr(store, consolidated=False)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(store.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(store).as_posix())
        return buffer.getvalue()


def from_zarr_zip(data: bytes) -> xr.Dataset:
    """A Dataset, loaded into memory, from a zipped Zarr store's bytes."""
    import zarr

    with tempfile.TemporaryDirectory(prefix="sheaf-zarr-") as tmp:
        archive = Path(tmp, "dataset.zip")
        archive.write_bytes(data)
        store = zarr.storage.ZipStore(archive, mode="r")
        try:
            return from_zarr(store)
        finally:
            store.close()


def from_zarr(store: Any) -> xr.Dataset:
    """A Dataset, loaded into memory, from a Zarr store (a path, an fsspec mapper, ...)."""
    import xarray as xr

    with xr.open_zarr(store, consolidated=False) as dataset:
        return dataset.load()


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
