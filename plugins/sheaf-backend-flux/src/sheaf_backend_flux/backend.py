"""The `flux` backend: FLUX.1 schnell- and dev-style checkpoints via diffusers' FluxPipeline.

Batching: requests that share size, steps and guidance (`batch_keys`, which the engine adds
to the model's `bucket_by`) are generated in one pipeline call, every image with its own
seeded generator, so an image is the same alone or batched (`sheaf_diffusers.generation`).
`negative_prompt` is accepted for compatibility and ignored: FLUX is guidance-distilled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field

from sheaf_core.backend import Backend, ProgressEvent
from sheaf_core.contracts.images import GeneratedImage
from sheaf_core.contracts.text_to_image import TextToImageRequest, TextToImageResponse
from sheaf_core.deadlines import stop_at_deadline
from sheaf_core.errors import FieldProblem, InvalidRequest
from sheaf_diffusers import (
    DiffusersSettings,
    ImageJob,
    generate_images,
    generators,
    load_pipeline,
    weights_problems,
)
from sheaf_diffusers.streaming import StepCallback, latent_preview, stepwise
from sheaf_diffusers.warmup import smallest_side


class FluxSettings(DiffusersSettings):
    max_sequence_length: int = Field(default=512, ge=1, le=512, description="T5 prompt "
                                     "tokens (schnell was trained with 256, dev with 512).")


class FluxBackend(Backend[TextToImageRequest, TextToImageResponse]):
    """See the module docstring."""

    model_type = "text_to_image"
    Settings = FluxSettings
    supports_streaming = True
    batch_keys: ClassVar[tuple[str, ...]] = (
        "height", "width", "num_inference_steps", "guidance_scale")
    settings: FluxSettings

    def preflight(self) -> list[FieldProblem]:
        return weights_problems(self.settings)

    def load(self) -> None:
        from diffusers import FluxPipeline

        self.pipe, self.device = load_pipeline(FluxPipeline, self.settings)
        stop_at_deadline(self.pipe.transformer)  # once per denoising step
        # The VAE downsamples by vae_scale_factor and the transformer packs 2x2 patches.
        self.size_multiple: int = self.pipe.vae_scale_factor * 2
        super().load()

    def warmup_requests(self) -> list[TextToImageRequest]:
        """One image at the smallest size, one step."""
        side = smallest_side(self.size_multiple)
        return [TextToImageRequest(prompt="a warm-up picture", height=side, width=side,
                                   num_inference_steps=1, seed=0)]

    def validate_request(self, request: TextToImageRequest) -> None:
        problems = [FieldProblem(field, f"is {value}; this model needs a multiple of "
                                 f"{self.size_multiple}")
                    for field, value in (("height", request.height), ("width", request.width))
                    if value % self.size_multiple]
        if problems:
            raise InvalidRequest(problems)

    def predict(self, requests: Sequence[TextToImageRequest]) -> list[TextToImageResponse]:
        return self._generate(requests)

    def stream(self, request: TextToImageRequest) -> Iterator[ProgressEvent |
                                                              TextToImageResponse]:
        """A progress event per denoising step (of every pipeline call the request needs),
        then the response; closing the iterator stops generation at the next step."""
        calls = -(-request.num_images // self.settings.max_images_per_call)
        return stepwise(lambda on_step: self._generate([request], on_step)[0],
                        total=request.num_inference_steps * calls,
                        preview=self._preview(request) if request.stream_preview else None)

    def _preview(self, request: TextToImageRequest) -> Callable[[Any], Any]:
        """FLUX's latents are packed 2x2 patches: unpack them, then the rough picture."""
        def preview(latents: Any) -> Any:
            unpacked = self.pipe._unpack_latents(latents[:1], request.height, request.width,
                                                 self.pipe.vae_scale_factor)
            return latent_preview(unpacked)
        return preview

    def _generate(self, requests: Sequence[TextToImageRequest],
                  on_step: StepCallback | None = None) -> list[TextToImageResponse]:
        def call(jobs: list[ImageJob]) -> list[Any]:
            shared = requests[jobs[0].request]  # equal on batch_keys to the others
            output = self.pipe(
                prompt=[requests[job.request].prompt for job in jobs],
                height=shared.height, width=shared.width,
                num_inference_steps=shared.num_inference_steps,
                guidance_scale=shared.guidance_scale, generator=generators(jobs),
                max_sequence_length=self.settings.max_sequence_length,
                output_type="pil", callback_on_step_end=on_step)
            return list(output.images)

        images = generate_images(requests, self.batch_keys, self.settings.max_images_per_call,
                                 call)
        return [_response(request, mine) for request, mine in zip(requests, images, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.settings.model_id, "device": self.device,
                "dtype": str(self.pipe.dtype).removeprefix("torch."),
                "size_multiple": self.size_multiple,
                "guidance_embeds": bool(self.pipe.transformer.config.guidance_embeds)}


def _response(request: TextToImageRequest, images: list[GeneratedImage]) -> TextToImageResponse:
    first, *rest = images
    return TextToImageResponse(
        model_type=request.model_type, image_b64=first.image_b64, seed=first.seed,
        width=request.width, height=request.height, output_format=request.output_format,
        additional_images=rest)
