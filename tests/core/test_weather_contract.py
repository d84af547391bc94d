"""The weather contract: grids, levels and states checked with 422s naming the place at
fault; arrays as base64 that round-trip exactly."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sheaf_core.contracts.arrays import EncodedArray
from sheaf_core.contracts.weather import WeatherRequest

LAT, LON, LEVELS = 4, 8, [500.0, 850.0]
INIT = datetime(2026, 1, 1, 6)


def arr(*shape: int, seed: int = 0) -> dict[str, Any]:
    values = np.random.default_rng(seed).normal(size=shape).astype("float32")
    return EncodedArray.from_numpy(values).model_dump()


def state(time: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    body = {"surface": {"t2m": arr(LAT, LON)},
            "atmospheric": {"t": arr(len(LEVELS), LAT, LON), "z": arr(len(LEVELS), LAT, LON)}}
    if time is not None:
        body["time"] = time.isoformat()
    return {**body, **overrides}


def body(**overrides: Any) -> dict[str, Any]:
    return {"init_time": INIT.isoformat(), "n_steps": 2,
            "grid": {"lat": list(np.linspace(-67.5, 67.5, LAT)),
                     "lon": list(np.arange(LON) * 45.0)},
            "levels": LEVELS, "states": [state(INIT - timedelta(hours=6)), state(INIT)],
            "forcings": {"lsm": arr(LAT, LON), "toa": arr(2, LAT, LON)}, **overrides}


def places(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"] if "[" not in str(p)) for e in exc.errors()}


def test_a_valid_request_round_trips_its_arrays_exactly() -> None:
    request = WeatherRequest.model_validate(body())
    again = WeatherRequest.model_validate_json(request.model_dump_json())
    original = np.random.default_rng(0).normal(size=(LAT, LON)).astype("float32")
    assert np.array_equal(again.states[0].surface["t2m"].to_numpy(), original)
    assert again.valid_times(timedelta(hours=6)) == [INIT + timedelta(hours=6),
                                                     INIT + timedelta(hours=12)]


@pytest.mark.parametrize("patch, place", [
    ({"states": [state(INIT, surface={"t2m": arr(LAT, LON + 1)})]}, "states.0.surface.t2m"),
    ({"states": [state(INIT, atmospheric={"t": arr(3, LAT, LON)})]}, "states.0.atmospheric.t"),
    ({"states": [state(), state(surface={"sp": arr(LAT, LON)})]}, "states.1.surface"),
    ({"states": [state(INIT + timedelta(hours=6))]}, "states.0.time"),
    ({"states": []}, "states"),
    ({"levels": [500.0, 500.0]}, "levels"),
    ({"levels": []}, "levels"),
    ({"forcings": {"toa": arr(3, LAT, LON)}}, "forcings.toa"),
    ({"grid": {"lat": [0.0, 95.0], "lon": [0.0, 1.0]}}, "grid.lat"),
    ({"n_steps": 0}, "n_steps"),
])
def test_problems_name_their_place(patch: dict[str, Any], place: str) -> None:
    with pytest.raises(ValidationError) as info:
        WeatherRequest.model_validate(body(**patch))
    assert place in places(info.value), info.value


def test_array_bytes_must_match_the_shape() -> None:
    good = arr(2, 3)
    with pytest.raises(ValidationError, match="needs 24"):
        EncodedArray.model_validate({**good, "shape": [2, 3], "data_b64": arr(2, 2)["data_b64"]})
    with pytest.raises(ValidationError, match="not valid base64"):
        EncodedArray.model_validate({**good, "data_b64": "***"})
