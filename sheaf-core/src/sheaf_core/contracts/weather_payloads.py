"""The `weather` contract's bodies besides inline JSON, registered with it as codecs.

- `application/x-netcdf`: the request as a NetCDF-4 file (the layout of
  `weather_xarray`); the forecast comes back as NetCDF.
- `application/x-zarr+zip`: the same as a zipped Zarr store; the forecast comes back so.
- JSON naming files instead of carrying arrays: ``{"input_uri": "s3://…/state.nc",
  "output_uri": "s3://…/forecast.zarr", "n_steps": 8}``. The state is read from the URI
  (NetCDF or Zarr, local path or any fsspec URL); with `output_uri` the forecast is written
  there and the answer is a short JSON note (`WeatherFilesWritten`), else the usual JSON
  response. URIs must be allowed by `server.payloads`.

Reading needs `sheaf-core[weather]` on the server (`[weather,s3]` for s3://).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from sheaf_core.codecs import JSON_MEDIA_TYPE, BodyCodec, Decoded, PayloadSettings
from sheaf_core.contracts.base import BaseResponse
from sheaf_core.contracts.weather import MAX_STEPS, WeatherRequest, WeatherResponse
from sheaf_core.contracts.weather_xarray import (
    from_netcdf,
    from_zarr,
    from_zarr_zip,
    request_from_dataset,
    response_to_dataset,
    to_netcdf,
    to_zarr_zip,
)
from sheaf_core.errors import FieldProblem, InvalidRequest, PayloadUnavailable, UnsupportedPayload

if TYPE_CHECKING:
    import xarray as xr

NETCDF_MEDIA_TYPE = "application/x-netcdf"
ZARR_ZIP_MEDIA_TYPE = "application/x-zarr+zip"
FileFormat = Literal["netcdf", "zarr"]
_SUFFIXES: dict[str, FileFormat] = {".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf",
                                    ".cdf": "netcdf", ".h5": "netcdf", ".zarr": "zarr"}


class WeatherFiles(BaseModel):
    """A weather request whose state lives in a file, and where its forecast should go."""

    model_config = ConfigDict(extra="forbid")

    input_uri: str = Field(min_length=1, description="NetCDF file or Zarr store holding "
                           "the request in the layout of docs/weather.md.")
    input_format: FileFormat | None = Field(default=None, description="Default: from the "
                                            "suffix (.nc, .nc4, .zarr, ...).")
    output_uri: str | None = Field(default=None, description="Write the forecast here and "
                                   "answer a short note; default: answer it as JSON.")
    output_format: FileFormat | None = None
    n_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS, description="Overrides "
                                "the file's n_steps attribute.")
    init_time: datetime | None = None
    request_id: str | None = Field(default=None, max_length=128)
    model_name: str | None = None


class WeatherFilesWritten(BaseResponse):
    """The answer to a `WeatherFiles` request with an `output_uri`: where the forecast is."""

    model_type: Literal["weather"] = "weather"
    output_uri: str
    output_format: FileFormat
    init_time: datetime
    step_hours: float
    valid_times: list[datetime]


class _DatasetBody(BodyCodec):
    """A body that is a whole file of the Dataset layout, answered as one of the same kind.
    Subclasses name the format and its bytes <-> Dataset functions in `weather_xarray`."""

    what: ClassVar[str]
    loads: Callable[[bytes], xr.Dataset]
    dumps: Callable[[xr.Dataset], bytes]

    def read(self, body: bytes, payloads: PayloadSettings) -> Decoded:
        _require_weather_extra()
        dataset = _parse("body", self.what, lambda: self.loads(body))
        return Decoded(dataset_request(dataset, "body"), self._reply, self.media_types[0])

    def _reply(self, response: BaseResponse) -> bytes:
        return self.dumps(response_to_dataset(_forecast(response)))


class NetcdfBody(_DatasetBody):
    media_types = (NETCDF_MEDIA_TYPE, "application/netcdf", "application/x-netcdf4")
    summary = "the request as a NetCDF-4 file; answered with the forecast as NetCDF"
    what, loads, dumps = "NetCDF-4", staticmethod(from_netcdf), staticmethod(to_netcdf)


class ZarrZipBody(_DatasetBody):
    media_types = (ZARR_ZIP_MEDIA_TYPE,)
    summary = "the request as a zipped Zarr store; answered with the forecast so"
    what = "zipped Zarr"
    loads, dumps = staticmethod(from_zarr_zip), staticmethod(to_zarr_zip)


class WeatherJson(BodyCodec):
    """Inline JSON as usual; a JSON object with `input_uri` names files instead."""

    media_types = (JSON_MEDIA_TYPE,)
    summary = "inline arrays (WeatherRequest), or files named by URI (WeatherFiles)"
    json_schema = WeatherFiles

    def read(self, body: bytes, payloads: PayloadSettings) -> Decoded:
        if b'"input_uri"' in body:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict) and "input_uri" in document:
                return self._files(WeatherFiles.model_validate(document), payloads)
        return Decoded(WeatherRequest.model_validate_json(body))

    def _files(self, files: WeatherFiles, payloads: PayloadSettings) -> Decoded:
        source = payloads.check_uri("input_uri", files.input_uri)
        source_format = files.input_format or _format_of(files.input_uri, "input_format")
        target: str | None = None
        if files.output_uri is not None:
            target = payloads.check_uri("output_uri", files.output_uri)
            target_format = files.output_format or _format_of(files.output_uri,
                                                              "output_format")
        _require_weather_extra()
        dataset = _read_uri(source, source_format, payloads.storage_options)
        overrides = {key: value for key in ("n_steps", "init_time", "request_id",
                                            "model_name")
                     if (value := getattr(files, key)) is not None}
        request = dataset_request(dataset, "input_uri", **overrides)
        if target is None:
            return Decoded(request)
        output_uri = files.output_uri or target

        def reply(response: BaseResponse) -> bytes:
            forecast = _forecast(response)
            _write_uri(forecast, target, target_format, payloads.storage_options)
            note = WeatherFilesWritten(
                request_id=forecast.request_id, model_name=forecast.model_name,
                output_uri=output_uri, output_format=target_format,
                init_time=forecast.init_time, step_hours=forecast.step_hours,
                valid_times=[step.valid_time for step in forecast.steps])
            return note.model_dump_json().encode()

        return Decoded(request, reply, JSON_MEDIA_TYPE)


def codecs() -> list[BodyCodec]:
    """What the `weather` contract registers."""
    return [WeatherJson(), NetcdfBody(), ZarrZipBody()]


def dataset_request(dataset: xr.Dataset, field: str, **fields: Any) -> WeatherRequest:
    """The request a Dataset holds; a Dataset missing a coordinate of the layout is a 422
    naming `field` (shape and name problems are the contract's own 422s)."""
    missing = [name for name in ("lat", "lon") if name not in dataset.coords]
    if missing:
        raise InvalidRequest(FieldProblem(field, f"the dataset has no {', '.join(missing)} "
                                          "coordinate (expected: lat and lon coordinates, the "
                                          "states as variables over time)"))
    if not any("time" in variable.dims for variable in dataset.data_vars.values()):
        raise InvalidRequest(FieldProblem(field, "the dataset has no variable over `time` "
                                          "(the states: variables over (time, lat, lon) or "
                                          "(time, level, lat, lon))"))
    return request_from_dataset(dataset, **fields)


def _forecast(response: BaseResponse) -> WeatherResponse:
    assert isinstance(response, WeatherResponse), type(response)
    return response


def _require_weather_extra() -> None:
    try:
        import fsspec  # noqa: F401
        import h5netcdf  # noqa: F401
        import xarray  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as exc:
        raise UnsupportedPayload(f"this server cannot read weather files ({exc}); install "
                                 "'sheaf-core[weather]' where the model runs") from None


def _parse(field: str, what: str, read: Callable[[], xr.Dataset]) -> xr.Dataset:
    try:
        return read()
    except (InvalidRequest, PayloadUnavailable):
        raise
    except Exception as exc:
        raise InvalidRequest(FieldProblem(field, f"cannot be read as {what}: "
                                          f"{type(exc).__name__}: {exc}")) from None


def _format_of(uri: str, field: str) -> FileFormat:
    suffix = os.path.splitext(uri.rstrip("/"))[1].lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise InvalidRequest(FieldProblem(field, f"cannot tell the format of {uri!r} from its "
                                      f"suffix; set {field} to netcdf or zarr"))


def _read_uri(uri: str, file_format: FileFormat,
              storage_options: dict[str, Any]) -> xr.Dataset:
    """The Dataset at `uri`: a missing file is the caller's 422, storage that fails is a
    502, a file that is not what it claims is a 422."""
    import fsspec

    try:
        if file_format == "netcdf":
            with fsspec.open(uri, "rb", **storage_options) as handle:
                data = handle.read()
        else:
            mapper = fsspec.get_mapper(uri, **storage_options)
            if not (mapper.fs.exists(mapper.root + "/zarr.json") or
                    mapper.fs.exists(mapper.root + "/.zgroup")):
                raise FileNotFoundError(uri)
    except FileNotFoundError:
        raise InvalidRequest(FieldProblem("input_uri", f"{uri!r} does not exist")) from None
    except Exception as exc:
        raise PayloadUnavailable(f"input_uri: reading {uri!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if file_format == "netcdf":
        return _parse("input_uri", "NetCDF-4", lambda: from_netcdf(data))
    return _parse("input_uri", "Zarr", lambda: from_zarr(mapper))


def _write_uri(forecast: WeatherResponse, uri: str, file_format: FileFormat,
               storage_options: dict[str, Any]) -> None:
    import fsspec

    dataset = response_to_dataset(forecast)
    try:
        if file_format == "netcdf":
            data = to_netcdf(dataset)
            if "://" not in uri:
                os.makedirs(os.path.dirname(uri), exist_ok=True)
            with fsspec.open(uri, "wb", **storage_options) as handle:
                handle.write(data)
        else:
            dataset.to_zarr(fsspec.get_mapper(uri, **storage_options), mode="w",
                            consolidated=False)
    except Exception as exc:
        raise PayloadUnavailable(f"output_uri: writing the forecast to {uri!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
