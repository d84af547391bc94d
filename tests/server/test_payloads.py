"""Bodies other than JSON, through the one request path: a weather state sent as NetCDF or
zipped Zarr is answered in that format; one named by URI (a local path, or s3:// on a real
S3 API) is read where it lies, and the forecast written where the caller says. The model is
a tiny GraphCastNet saved by the test, loaded by the real graphcast backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import s3fs
import xarray as xr
from hosts import Host, wait_until_ready
from server_support import sse_events

from sheaf_backend_graphcast.testing import sample_request, save_tiny_graphcast
from sheaf_core import ModelSpec
from sheaf_core.codecs import PayloadSettings
from sheaf_core.contracts.weather import WeatherRequest, WeatherResponse
from sheaf_core.contracts.weather_payloads import NETCDF_MEDIA_TYPE, ZARR_ZIP_MEDIA_TYPE
from sheaf_core.contracts.weather_xarray import (
    from_netcdf,
    from_zarr_zip,
    request_to_dataset,
    response_from_dataset,
    to_netcdf,
    to_zarr_zip,
)
from sheaf_server import ModelServer
from sheaf_server.settings import ServerSettings, SheafConfig

INIT = datetime(2026, 1, 1, 6)
BUCKET = "s3://jobs/weather"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return save_tiny_graphcast(tmp_path_factory.mktemp("graphcast"))


def weather_model(tiny: dict[str, Any]) -> ModelSpec:
    return ModelSpec(name="weather", backend="graphcast", backend_kwargs=tiny)


def weather_request(n_steps: int = 2) -> WeatherRequest:
    return WeatherRequest.model_validate(sample_request(INIT, n_steps, seed=3))


def payloads(files: Path, s3: dict[str, Any]) -> PayloadSettings:
    return PayloadSettings(allowed_uri_prefixes=[str(files), f"{BUCKET}/",
                                                 "s3://no-such-bucket/"],
                           storage_options=s3)


def assert_same_forecast(answer: WeatherResponse, reference: WeatherResponse) -> None:
    assert [s.valid_time for s in answer.steps] == [s.valid_time for s in reference.steps]
    for got, wanted in zip(answer.steps, reference.steps, strict=True):
        for kind in ("surface", "atmospheric"):
            assert getattr(got, kind).keys() == getattr(wanted, kind).keys()
            for name, array in getattr(got, kind).items():
                np.testing.assert_allclose(array.to_numpy(),
                                           getattr(wanted, kind)[name].to_numpy(),
                                           rtol=1e-6, atol=1e-6, err_msg=f"{kind}.{name}")


# -- on both hosts: every form answers the forecast JSON does ---------------------------------

def test_netcdf_zarr_and_uris_answer_the_same_forecast_as_json(
        host: Host, tiny: dict[str, Any], s3: dict[str, Any], tmp_path: Path) -> None:
    request = weather_request()
    fs = s3fs.S3FileSystem(**s3)
    request_to_dataset(request).to_zarr(fs.get_mapper(f"{BUCKET}/{host.name}/state.zarr"),
                                        mode="w", consolidated=False)
    with host.serve(weather_model(tiny), payloads=payloads(tmp_path, s3)) as client:
        reply = client.post("/weather/predict", content=request.model_dump_json(),
                            headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text[:300]
        reference = WeatherResponse.model_validate_json(reply.content)

        # NetCDF in, NetCDF out, under the caller's request id
        reply = client.post("/weather/predict", content=to_netcdf(request_to_dataset(request)),
                            headers={"content-type": NETCDF_MEDIA_TYPE, "x-request-id": "nc-1"})
        assert reply.status_code == 200, reply.text[:300]
        assert reply.headers["content-type"] == NETCDF_MEDIA_TYPE
        answer = response_from_dataset(from_netcdf(reply.content))
        assert_same_forecast(answer, reference)
        assert (answer.request_id, answer.model_name) == ("nc-1", "weather")
        assert reply.headers["x-request-id"] == "nc-1"

        # a zipped Zarr store in, one out
        reply = client.post("/weather/predict", content=to_zarr_zip(request_to_dataset(request)),
                            headers={"content-type": ZARR_ZIP_MEDIA_TYPE})
        assert reply.status_code == 200, reply.text[:300]
        assert reply.headers["content-type"] == ZARR_ZIP_MEDIA_TYPE
        assert_same_forecast(response_from_dataset(from_zarr_zip(reply.content)), reference)

        # the state read from S3 (Zarr), the forecast written to a local NetCDF file
        target = tmp_path / "forecasts" / "f.nc"
        reply = client.post("/weather/predict", json={
            "input_uri": f"{BUCKET}/{host.name}/state.zarr", "output_uri": str(target),
            "request_id": "uri-1"})
        assert reply.status_code == 200, reply.text[:300]
        note = reply.json()
        assert note["output_uri"] == str(target) and note["output_format"] == "netcdf"
        assert note["request_id"] == "uri-1"
        assert note["valid_times"] == [s.valid_time.isoformat() for s in reference.steps]
        with xr.open_dataset(target, engine="h5netcdf") as written:
            assert_same_forecast(response_from_dataset(written.load()), reference)

        # a format the contract has no codec for
        reply = client.post("/weather/predict", content=b"\x89PNG",
                            headers={"content-type": "image/png"})
        assert reply.status_code == 415
        assert NETCDF_MEDIA_TYPE in reply.json()["message"]


# -- tier 1: what goes wrong, and what the caller is told ----------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def server(tiny: dict[str, Any], s3: dict[str, Any], files: Path) -> Iterator[httpx.Client]:
    config = SheafConfig(models=[weather_model(tiny),
                                 ModelSpec(name="forecaster", backend="baseline")],
                         server=ServerSettings(payloads=payloads(files, s3)))
    with ModelServer(config, port=0, log_level="warning") as running, \
            httpx.Client(base_url=running.url or "", timeout=60) as client:
        wait_until_ready(client)
        yield client


def problems(reply: httpx.Response) -> dict[str, str]:
    assert reply.status_code == 422, reply.text[:300]
    return {d["field"]: d["message"] for d in reply.json()["details"]}


def test_uris_outside_the_allowed_prefixes_are_a_422_naming_the_setting(
        server: httpx.Client, files: Path) -> None:
    for uri in ("/etc/hosts.nc", f"{files}/../elsewhere.nc", "s3://other-bucket/x.nc",
                f"{BUCKET}/../x.nc"):
        found = problems(server.post("/weather/predict", json={"input_uri": uri}))
        assert "server.payloads.allowed_uri_prefixes" in found["input_uri"] or \
            "'..'" in found["input_uri"], (uri, found)
    found = problems(server.post("/weather/predict", json={
        "input_uri": f"{files}/state.nc", "output_uri": "/tmp/escape.nc"}))
    assert "output_uri" in found


def test_a_server_without_allowed_prefixes_reads_no_uri(tiny: dict[str, Any]) -> None:
    config = SheafConfig(models=[weather_model(tiny)])
    with ModelServer(config, port=0, log_level="warning") as running, \
            httpx.Client(base_url=running.url or "", timeout=60) as client:
        wait_until_ready(client)
        found = problems(client.post("/weather/predict", json={"input_uri": "/data/x.nc"}))
    assert "server.payloads.allowed_uri_prefixes" in found["input_uri"]


def test_a_missing_file_or_unknown_format_is_a_422_naming_the_field(
        server: httpx.Client, files: Path) -> None:
    found = problems(server.post("/weather/predict", json={"input_uri": f"{files}/none.nc"}))
    assert "does not exist" in found["input_uri"]
    found = problems(server.post("/weather/predict", json={"input_uri": f"{files}/x.grib"}))
    assert "input_format" in found


def test_a_body_that_is_not_what_its_content_type_says_is_a_422(server: httpx.Client) -> None:
    for media_type in (NETCDF_MEDIA_TYPE, ZARR_ZIP_MEDIA_TYPE):
        found = problems(server.post("/weather/predict", content=b"not a file",
                                     headers={"content-type": media_type}))
        assert "cannot be read" in found["body"]


def test_a_file_without_the_layout_or_with_wrong_shapes_is_a_422_naming_the_place(
        server: httpx.Client) -> None:
    dataset = request_to_dataset(weather_request())
    found = problems(server.post("/weather/predict",
                                 content=to_netcdf(dataset.drop_vars("lat")),
                                 headers={"content-type": NETCDF_MEDIA_TYPE}))
    assert "lat" in found["body"]
    found = problems(server.post("/weather/predict",
                                 content=to_netcdf(dataset.drop_vars("lsm")),
                                 headers={"content-type": NETCDF_MEDIA_TYPE}))
    assert "forcings.lsm" in found
    found = problems(server.post("/weather/predict",
                                 content=to_netcdf(dataset.isel(lat=slice(0, 8))),
                                 headers={"content-type": NETCDF_MEDIA_TYPE}))
    assert "grid" in found  # the model was built for another grid


def test_a_model_type_without_codecs_answers_415_listing_what_it_reads(
        server: httpx.Client) -> None:
    reply = server.post("/forecaster/predict", content=b"CDF\x01",
                        headers={"content-type": NETCDF_MEDIA_TYPE})
    assert reply.status_code == 415
    assert "application/json" in reply.json()["message"]
    # JSON sent with the form type curl uses by default still reads as JSON
    reply = server.post("/forecaster/predict", content=b'{"history": [1, 2, 3], "horizon": 2}',
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200, reply.text


def test_storage_that_fails_is_a_502_with_the_request_id_and_the_next_request_is_served(
        server: httpx.Client, files: Path) -> None:
    (files / "state.nc").write_bytes(to_netcdf(request_to_dataset(weather_request())))
    reply = server.post("/weather/predict", json={
        "input_uri": f"{files}/state.nc", "output_uri": "s3://no-such-bucket/f.zarr"},
        headers={"x-request-id": "store-1"})
    assert reply.status_code == 502, reply.text[:300]
    body = reply.json()
    assert body["error"] == "storage_unavailable" and body["request_id"] == "store-1"
    assert "output_uri" in body["message"]
    reply = server.post("/weather/predict", json={"input_uri": f"{files}/state.nc",
                                                  "n_steps": 1})
    assert reply.status_code == 200 and len(reply.json()["steps"]) == 1


def test_a_uri_request_overrides_the_file_and_may_write_zarr_to_s3(
        server: httpx.Client, files: Path, s3: dict[str, Any]) -> None:
    """n_steps from the body wins over the file's; per-step forcings for a longer horizon
    are cut to the steps asked for."""
    (files / "long.nc").write_bytes(to_netcdf(request_to_dataset(weather_request(n_steps=4))))
    reply = server.post("/weather/predict", json={
        "input_uri": f"{files}/long.nc", "n_steps": 2,
        "output_uri": f"{BUCKET}/out/forecast.zarr"})
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["output_format"] == "zarr"
    fs = s3fs.S3FileSystem(**s3)
    with xr.open_zarr(fs.get_mapper(f"{BUCKET}/out/forecast.zarr"),
                      consolidated=False) as written:
        assert list(written["step"].values) == [1, 2]


def test_a_streamed_netcdf_request_sends_json_events(server: httpx.Client) -> None:
    content = to_netcdf(request_to_dataset(weather_request(n_steps=2)))
    with server.stream("POST", "/weather/stream", content=content,
                       headers={"content-type": NETCDF_MEDIA_TYPE}) as reply:
        events = list(sse_events(reply))
    assert [kind for kind, _ in events] == ["progress", "progress", "result"]
    assert len(events[-1][1]["steps"]) == 2


def test_openapi_lists_the_body_formats(server: httpx.Client) -> None:
    operation = server.get("/openapi.json").json()["paths"]["/weather/predict"]["post"]
    assert {"application/json", NETCDF_MEDIA_TYPE, ZARR_ZIP_MEDIA_TYPE} <= set(
        operation["requestBody"]["content"])
    assert NETCDF_MEDIA_TYPE in operation["responses"]["200"]["content"]
    refs = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in refs] == ["WeatherRequest", "WeatherFiles"]
