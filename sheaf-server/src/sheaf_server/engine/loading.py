"""Loading a model beside others in one process: one load at a time, then a warm-up
prediction, so a model is served only once it has answered.

Why one at a time: model libraries keep process-global state while they load. diffusers'
and transformers' lazy modules are not safe to import from two threads at once (a second
FLUX or SDXL load failed with ``cannot import name 'FluxPipeline' from 'diffusers'``), and
``from_pretrained`` initialises weights on the meta device through process-wide patches, so
two concurrent loads could leave a Chronos model holding meta tensors — loaded, "ready", and
failing every prediction. So every load in a process (the models of an engine, a hot swap,
a batch worker's model) takes one process-wide lock, held through the model's first
prediction too, which triggers the imports libraries defer to first use. The cost: a
server's start-up is the sum of its loads instead of the longest (docs/reliability.md).

Why a warm-up: a load that returns is not proof that the model works (`sheaf_core.warmup`):
a model that cannot answer its own sample requests is reported failed instead of served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sheaf_core.backend import Backend
from sheaf_core.contracts.base import BaseResponse
from sheaf_core.warmup import warm_up
from sheaf_server.engine.features import FeatureStoreReader

#: Held by every model load in this process (see the module docstring).
LOAD_LOCK = threading.Lock()
#: What a model waiting for its turn to load says in /ready.
WAITING = "loading weights (waiting for another model's load: one at a time)"


def load_model(backend: Backend[Any, Any], features: FeatureStoreReader | None,
               response_type: type[BaseResponse], *, warmup: bool = True,
               stage: Callable[[str], None] = lambda _: None) -> None:
    """Worker thread: open the feature store (if any), load the weights, then warm up —
    all under `LOAD_LOCK`. Raises whatever the load raised, or `WarmupFailed`. `stage` is
    told each step as it starts (what GET /ready shows while the model loads)."""
    stage(WAITING)
    with LOAD_LOCK:
        stage("loading weights")
        if features is not None:
            features.open()
        backend.load()
        if warmup:
            stage("warming up: a first prediction on the backend's sample requests")
            warm_up(backend, response_type)
