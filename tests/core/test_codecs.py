"""Body codecs: a contract registers the formats it reads besides JSON; the server decides
which URIs a body may name. (Through HTTP: tests/server/test_payloads.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from sheaf_core import discover, hookimpl
from sheaf_core.codecs import BodyCodec, Decoded, PayloadSettings, is_json, media_type_of
from sheaf_core.contracts.arrays import MAX_INLINE_BYTES, EncodedArray
from sheaf_core.contracts.time_series import TimeSeriesRequest, TimeSeriesResponse
from sheaf_core.errors import InvalidRequest, UnsupportedPayload


class CsvHistory(BodyCodec):
    """A third party's codec: a history as one line of comma-separated numbers."""

    media_types: ClassVar[tuple[str, ...]] = ("text/csv",)

    def read(self, body: bytes, payloads: PayloadSettings) -> Decoded:
        values = [float(x) for x in body.decode().split(",")]
        return Decoded(TimeSeriesRequest(history=values, horizon=1))


class CsvSeriesRequest(TimeSeriesRequest):
    model_type: str = "csv_series"  # type: ignore[assignment]


class CsvSeriesResponse(TimeSeriesResponse):
    model_type: str = "csv_series"  # type: ignore[assignment]


def registering(*codecs: object) -> object:
    class Plugin:
        __name__ = "csv"

        @hookimpl
        def sheaf_register_contracts(self, register):  # type: ignore[no-untyped-def]
            register("csv_series", CsvSeriesRequest, CsvSeriesResponse, codecs=codecs)

    return Plugin()


def test_a_plugin_registers_codecs_with_its_contract() -> None:
    entry = discover([registering(CsvHistory())]).contract("csv_series")
    assert isinstance(entry.codec("text/csv"), CsvHistory)
    assert entry.codec("application/json") is None  # JSON needs no codec
    with pytest.raises(UnsupportedPayload, match="application/json, text/csv"):
        entry.codec("application/x-netcdf")


def test_a_codec_that_is_not_a_body_codec_fails_the_plugin_naming_it() -> None:
    registry = discover([registering("text/csv")])
    plugin = next(p for p in registry.plugins if p.name == "csv")
    assert "codec 'text/csv' must be a BodyCodec" in (plugin.error or "")
    assert "csv_series" not in registry.contracts


def test_weather_reads_netcdf_zarr_and_uris_besides_json() -> None:
    entry = discover().contract("weather")
    assert {"application/json", "application/x-netcdf", "application/netcdf",
            "application/x-zarr+zip"} <= set(entry.codecs)
    assert entry.codec("text/plain") is entry.codecs["application/json"]


def test_content_types_are_read_as_media_types() -> None:
    assert media_type_of("Application/X-NetCDF; charset=binary") == "application/x-netcdf"
    assert media_type_of(None) == ""
    for json_like in ("", "application/json", "text/plain",
                      "application/x-www-form-urlencoded", "application/vnd.api+json"):
        assert is_json(json_like)
    assert not is_json("application/x-netcdf")


def test_no_uri_is_allowed_until_the_operator_lists_prefixes() -> None:
    with pytest.raises(InvalidRequest, match=r"server\.payloads\.allowed_uri_prefixes") as info:
        PayloadSettings().check_uri("input_uri", "s3://bucket/x.nc")
    assert info.value.problems[0].field == "input_uri"


def test_uris_must_lie_under_an_allowed_prefix(tmp_path: Path) -> None:
    settings = PayloadSettings(allowed_uri_prefixes=[str(tmp_path), "s3://forecasts/"])
    assert settings.check_uri("f", str(tmp_path / "a" / "b.nc")) == str(tmp_path / "a/b.nc")
    assert settings.check_uri("f", "s3://forecasts/2026/x.zarr") == "s3://forecasts/2026/x.zarr"
    (tmp_path / "link").symlink_to("/etc")
    for refused in (f"{tmp_path}/../x.nc", f"{tmp_path}-other/x.nc", f"{tmp_path}/link/x.nc",
                    "s3://forecasts-evil/x.nc", "s3://forecasts/../x.nc", "/etc/hosts",
                    "gs://forecasts/x.nc"):
        with pytest.raises(InvalidRequest):
            settings.check_uri("f", refused)


def test_arrays_from_numpy_are_not_limited_like_inline_ones() -> None:
    """A state read from a file may hold fields larger than JSON's inline limit."""
    big = np.zeros((MAX_INLINE_BYTES // 4 + 1,), dtype=np.float32)
    array = EncodedArray.from_numpy(big)
    assert array.to_numpy() is not None and array.shape == [big.size]
    assert not array.to_numpy().flags.writeable
    with pytest.raises(ValueError, match="inline arrays are limited"):
        EncodedArray.model_validate(array.model_dump())
    small = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert EncodedArray.from_numpy(small) == EncodedArray.model_validate(
        EncodedArray.from_numpy(small).model_dump())
