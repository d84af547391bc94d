"""What both peer servers compute for one batch, written once: the saved Chronos-Bolt model
loaded through chronos' own `from_pretrained`, histories left-padded into one tensor, one
`predict` call, the three quantiles and the median sliced from the model's grid — the work
sheaf's Chronos backend does for the bench's request, without sheaf."""

from __future__ import annotations

from typing import Any

import torch
from chronos import BaseChronosPipeline

LEVELS = ("0.1", "0.5", "0.9")


class BoltModel:
    def __init__(self, model_dir: str) -> None:
        torch.set_num_threads(1)  # as sheaf's backend (torch_threads: 1)
        self.pipeline = BaseChronosPipeline.from_pretrained(model_dir, device_map="cpu")
        grid = [round(q, 4) for q in self.pipeline.quantiles]
        self.index = {level: grid.index(float(level)) for level in LEVELS}

    def predict(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        horizon = max(int(b["horizon"]) for b in bodies)
        longest = max(len(b["history"]) for b in bodies)
        context = torch.full((len(bodies), longest), float("nan"))
        for i, body in enumerate(bodies):
            history = torch.tensor(body["history"], dtype=torch.float32)
            context[i, longest - len(history):] = history
        with torch.inference_mode():
            values = self.pipeline.predict(context, prediction_length=horizon).float().numpy()
        answers = []
        for i, body in enumerate(bodies):
            grid = values[i, :, : int(body["horizon"])]
            quantiles = {level: grid[j].tolist() for level, j in self.index.items()}
            answers.append({"horizon": body["horizon"], "mean": quantiles["0.5"],
                            "quantiles": quantiles})
        return answers
