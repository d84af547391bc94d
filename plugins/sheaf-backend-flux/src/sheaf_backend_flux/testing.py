"""A tiny randomly initialised FLUX pipeline, saved like a hub checkpoint.

For tests, offline smoke checks and benchmarks: it loads through the same
`FluxPipeline.from_pretrained` path as a real checkpoint, with no download. ~1 MB; 64x64
images in two steps take tens of milliseconds on a CPU. Like a real FLUX, its VAE
downsamples by 8, so sizes must be multiples of 16.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_flux(directory: str | Path, *, seed: int = 0,
                   guidance_embeds: bool = False) -> Path:
    """Save the pipeline; `guidance_embeds=True` makes a dev-style (guidance-distilled)
    checkpoint, False a schnell-style one. Returns the directory."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    from sheaf_diffusers.testing import (
        HIDDEN,
        clip_text_model,
        clip_tokenizer,
        t5_encoder,
        t5_tokenizer,
    )

    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN, axes_dims_rope=(4, 6, 6),
        guidance_embeds=guidance_embeds).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035).eval()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip_text_model(len(clip_tok), seed=seed),
        tokenizer=clip_tok,
        text_encoder_2=t5_encoder(len(t5_tok), seed=seed),
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    directory = Path(directory)
    pipe.save_pretrained(directory)
    return directory
