"""Streaming a diffusers pipeline: progress per denoising step, then the result, with the
pipeline stopped at its next step when the consumer stops listening.

A pipeline call cannot yield, so it runs in a thread of its own; its
`callback_on_step_end` reports each step through a queue, which the generator yields from.
Closing the generator (the engine does when a client disconnects) sets a flag the next
step's callback sees: it raises, the pipeline unwinds, and the thread ends.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from sheaf_core.backend import ProgressEvent
from sheaf_core.contracts.images import encode_image

if TYPE_CHECKING:
    from PIL.Image import Image

R = TypeVar("R")
#: diffusers' `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`.
StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class Stopped(Exception):
    """Raised inside the pipeline to stop it: nobody is listening any more."""


def stepwise(run: Callable[[StepCallback], R], total: int,
             preview: Callable[[Any], Image] | None = None) -> Iterator[ProgressEvent | R]:
    """Yield a `ProgressEvent` per denoising step of `run(callback)` (which passes the
    callback to its pipeline calls as `callback_on_step_end`), then what `run` returns.
    `preview`: the step's latents → a small picture, sent with each event."""
    updates: queue.Queue[ProgressEvent | None] = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}
    done = 0

    def on_step(_pipe: Any, _index: int, _timestep: Any,
                kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal done
        if stop.is_set():
            raise Stopped("the consumer of this stream went away")
        done += 1
        picture = None
        if preview is not None and "latents" in kwargs:
            picture = encode_image(preview(kwargs["latents"]), "png")
        updates.put(ProgressEvent(step=done, total=total, preview_b64=picture))
        return kwargs

    def work() -> None:
        try:
            outcome["value"] = run(on_step)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            updates.put(None)

    # The pipeline's thread sees the stream's deadline (`sheaf_core.deadlines`) too.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,),
                              name="sheaf-diffusers-stream", daemon=True)
    thread.start()
    try:
        while (event := updates.get()) is not None:
            yield event
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["value"]
    finally:
        stop.set()
        thread.join()


def latent_preview(latents: Any) -> Image:
    """A rough picture of the first image's latents `(batch, channels, h, w)`: its first
    three channels scaled to 0-255 each — no VAE decode, so it costs next to nothing and is
    1/8 of the image's size (the shapes and colours of the composition, not the image)."""
    from PIL import Image as pil

    first = latents[0, :3].detach().float().cpu()
    if first.shape[0] < 3:
        first = first[:1].repeat(3, 1, 1)
    low = first.amin(dim=(1, 2), keepdim=True)
    high = first.amax(dim=(1, 2), keepdim=True)
    scaled = ((first - low) / (high - low).clamp(min=1e-6) * 255).round().byte()
    return pil.fromarray(scaled.permute(1, 2, 0).numpy(), "RGB")
