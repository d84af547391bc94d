"""A tiny randomly initialised GraphCastNet, saved as a `.mdlus` checkpoint with the backend
kwargs that describe it.

For tests, offline smoke checks and benchmarks: it loads through PhysicsNeMo's
`Module.from_checkpoint` like a real one. 32x64 grid (5.6°), a level-2 icosahedral
multimesh, ~20k parameters, a few milliseconds a step on a CPU. Forecast variables: t2m and
msl at the surface, t and z at 500 and 850 hPa; forcings: a static land-sea mask and a
per-step top-of-atmosphere radiation field.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

GRID = (32, 64)
LEVELS = [500.0, 850.0]
SURFACE = ["t2m", "msl"]
ATMOSPHERIC = ["t", "z"]
FORCINGS = ["lsm", "toa"]
#: Rough climatology of each field, so that test states look like weather in scale.
NORMALIZATION = {
    "t2m": {"mean": 288.0, "std": 15.0}, "msl": {"mean": 101325.0, "std": 1000.0},
    "t@500": {"mean": 253.0, "std": 10.0}, "t@850": {"mean": 275.0, "std": 12.0},
    "z@500": {"mean": 55000.0, "std": 2500.0}, "z@850": {"mean": 14000.0, "std": 1200.0},
    "lsm": {"mean": 0.3, "std": 0.45}, "toa": {"mean": 1.2e6, "std": 1.0e6},
}
INCREMENTS = {"t2m": {"std": 1.5}, "msl": {"std": 150.0}, "t@500": {"std": 1.0},
              "t@850": {"std": 1.2}, "z@500": {"std": 120.0}, "z@850": {"std": 80.0}}


def state_variables() -> list[dict[str, Any]]:
    return [{"name": n} for n in SURFACE] + [{"name": n, "level": lv} for n in ATMOSPHERIC
                                              for lv in LEVELS]


def save_tiny_graphcast(directory: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Save the checkpoint under `directory`; return the backend kwargs that serve it."""
    import torch
    from physicsnemo.models.graphcast.graph_cast_net import GraphCastNet

    channels = state_variables()
    torch.manual_seed(seed)
    model = GraphCastNet(
        mesh_level=2, multimesh=True, input_res=GRID,
        input_dim_grid_nodes=2 * len(channels) + len(FORCINGS), input_dim_mesh_nodes=3,
        input_dim_edges=4, output_dim_grid_nodes=len(channels), processor_layers=3,
        hidden_layers=1, hidden_dim=16, processor_type="MessagePassing", aggregation="sum",
        norm_type="LayerNorm", do_concat_trick=False, graph_backend="pyg")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "graphcast-tiny.mdlus"
    model.save(str(checkpoint))
    return {"checkpoint": str(checkpoint), "state_variables": channels,
            "forcings": FORCINGS, "input_states": 2, "normalization": NORMALIZATION,
            "residual": True, "increment_normalization": INCREMENTS, "step_hours": 6}


def sample_request(init_time: datetime, n_steps: int = 1, *, seed: int = 0,
                   grid: tuple[int, int] = GRID, step_hours: float = 6) -> dict[str, Any]:
    """A `weather` request body for the tiny model: two states (`init_time` - step and
    `init_time`) of random fields at the climatology's scale, the land-sea mask and one
    radiation field per step."""
    import numpy as np

    from sheaf_core.contracts.arrays import EncodedArray

    rng = np.random.default_rng(seed)
    lat, lon = grid

    def field(key: str, *shape: int) -> Any:
        stats = NORMALIZATION[key]
        return stats["mean"] + 0.5 * stats["std"] * rng.normal(size=shape)

    def encoded(values: Any) -> dict[str, Any]:
        return EncodedArray.from_numpy(values).model_dump()

    def state(time: datetime) -> dict[str, Any]:
        return {"time": time.isoformat(),
                "surface": {name: encoded(field(name, lat, lon)) for name in SURFACE},
                "atmospheric": {name: encoded(np.stack([field(f"{name}@{lv:g}", lat, lon)
                                                        for lv in LEVELS]))
                                for name in ATMOSPHERIC}}

    return {"init_time": init_time.isoformat(), "n_steps": n_steps,
            "grid": {"lat": [float(x) for x in np.linspace(-87.1875, 87.1875, lat)],
                     "lon": [float(x) for x in np.arange(lon) * 360 / lon]},
            "levels": LEVELS,
            "states": [state(init_time - timedelta(hours=step_hours)), state(init_time)],
            "forcings": {"lsm": encoded(field("lsm", lat, lon)),
                         "toa": encoded(field("toa", n_steps, lat, lon))}}
