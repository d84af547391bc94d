"""A tiny randomly initialised SDXL img2img pipeline, saved like a hub checkpoint.

For tests, offline smoke checks and benchmarks: it loads through the same
`StableDiffusionXLImg2ImgPipeline.from_pretrained` path as a real checkpoint, with no
download (and the inpainting pipeline is made from it with `from_pipe`, as for a real one).
Like a real SDXL its VAE downsamples by 8; 64x64 images take milliseconds a step on a CPU.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_sdxl(directory: str | Path, *, seed: int = 0) -> Path:
    """Save the pipeline; returns the directory."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )

    from sheaf_diffusers.testing import HIDDEN, clip_text_model, clip_tokenizer

    tokenizer = clip_tokenizer()
    time_embed_dim = 8
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=1,
        cross_attention_dim=2 * HIDDEN,  # both text encoders' hidden states, side by side
        addition_embed_type="text_time", addition_time_embed_dim=time_embed_dim,
        # six size/crop numbers, each embedded, plus the second encoder's pooled projection
        projection_class_embeddings_input_dim=6 * time_embed_dim + HIDDEN).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=0.13025).eval()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae, unet=unet, scheduler=scheduler,
        text_encoder=clip_text_model(len(tokenizer), seed=seed), tokenizer=tokenizer,
        text_encoder_2=clip_text_model(len(tokenizer), with_projection=True, seed=seed + 1),
        tokenizer_2=clip_tokenizer(), requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True)
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory
