"""The `sdxl` backend: SDXL image-to-image — img2img, or inpainting for a request with a
mask — from one set of weights.

The img2img pipeline is loaded through its own `from_pretrained`; the inpainting pipeline is
made from it with `from_pipe`, which shares every module, so both modes cost one model's
memory. Requests that share input size, mode (mask or not), steps, strength and guidance
(`batch_keys`, which the engine adds to the model's `bucket_by`) run in one pipeline call,
each image with its own seeded generator, so an image is the same alone or batched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from sheaf_core.backend import Backend, ProgressEvent
from sheaf_core.contracts.image_to_image import (
    ImageToImageRequest,
    ImageToImageResponse,
    denoising_steps,
)
from sheaf_core.contracts.images import GeneratedImage
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
from sheaf_diffusers.warmup import plain_image_b64, smallest_side


class SdxlBackend(Backend[ImageToImageRequest, ImageToImageResponse]):
    """See the module docstring."""

    model_type = "image_to_image"
    Settings = DiffusersSettings
    supports_streaming = True
    batch_keys: ClassVar[tuple[str, ...]] = (
        "image_size", "inpainting", "num_inference_steps", "strength", "guidance_scale")
    settings: DiffusersSettings

    def preflight(self) -> list[FieldProblem]:
        return weights_problems(self.settings)

    def load(self) -> None:
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

        self.img2img, self.device = load_pipeline(StableDiffusionXLImg2ImgPipeline,
                                                  self.settings)
        # from_pipe casts the modules it shares to its own dtype, float32 unless told: keep
        # the loaded one (on CUDA, bf16) for both pipelines.
        self.inpaint = StableDiffusionXLInpaintPipeline.from_pipe(self.img2img,
                                                                  dtype=self.img2img.dtype)
        stop_at_deadline(self.img2img.unet)  # once per denoising step; shared by inpaint
        self.inpaint.set_progress_bar_config(disable=True)
        self.size_multiple: int = self.img2img.vae_scale_factor
        super().load()

    def warmup_requests(self) -> list[ImageToImageRequest]:
        """Both pipelines once — img2img, and inpainting with a mask — at the smallest
        size, one denoising step."""
        side = smallest_side(self.size_multiple)
        image = plain_image_b64(side)
        return [ImageToImageRequest(prompt="a warm-up picture", image_b64=image, strength=1.0,
                                    num_inference_steps=1, seed=0, mask_b64=mask)
                for mask in (None, plain_image_b64(side, "L", 255))]

    def validate_request(self, request: ImageToImageRequest) -> None:
        width, height = request.image_size
        if width % self.size_multiple or height % self.size_multiple:
            raise InvalidRequest(FieldProblem(
                "image_b64", f"is {width}x{height}; this model needs each side a multiple "
                f"of {self.size_multiple} pixels"))

    def predict(self, requests: Sequence[ImageToImageRequest]) -> list[ImageToImageResponse]:
        return self._generate(requests)

    def stream(self, request: ImageToImageRequest) -> Iterator[ProgressEvent |
                                                               ImageToImageResponse]:
        """A progress event per denoising step, then the response; closing the iterator
        stops generation at the next step."""
        total = denoising_steps(request.num_inference_steps, request.strength)
        return stepwise(lambda on_step: self._generate([request], on_step)[0], total=total,
                        preview=latent_preview if request.stream_preview else None)

    def _generate(self, requests: Sequence[ImageToImageRequest],
                  on_step: StepCallback | None = None) -> list[ImageToImageResponse]:
        def call(jobs: list[ImageJob]) -> list[Any]:
            shared = requests[jobs[0].request]  # equal on batch_keys to the others
            mine = [requests[job.request] for job in jobs]
            kwargs: dict[str, Any] = {}
            if shared.inpainting:
                width, height = shared.image_size
                kwargs = {"mask_image": [r.decoded_mask for r in mine],
                          "width": width, "height": height}
            pipe = self.inpaint if shared.inpainting else self.img2img
            output = pipe(
                prompt=[r.prompt for r in mine],
                negative_prompt=[r.negative_prompt for r in mine],
                image=[r.decoded_image for r in mine],
                strength=shared.strength, num_inference_steps=shared.num_inference_steps,
                guidance_scale=shared.guidance_scale, generator=generators(jobs),
                output_type="pil", callback_on_step_end=on_step, **kwargs)
            return list(output.images)

        images = generate_images(requests, self.batch_keys, self.settings.max_images_per_call,
                                 call)
        return [_response(request, image) for request, (image,) in zip(requests, images,
                                                                         strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.settings.model_id, "device": self.device,
                "dtype": str(self.img2img.dtype).removeprefix("torch."),
                "size_multiple": self.size_multiple, "modes": ["img2img", "inpaint"]}


def _response(request: ImageToImageRequest, image: GeneratedImage) -> ImageToImageResponse:
    width, height = request.image_size
    return ImageToImageResponse(
        model_type=request.model_type, image_b64=image.image_b64, seed=image.seed,
        width=width, height=height, output_format=request.output_format,
        mode="inpaint" if request.inpainting else "img2img")
