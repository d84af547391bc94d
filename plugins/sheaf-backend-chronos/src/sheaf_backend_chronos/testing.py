"""Tiny randomly initialised Chronos models, saved like hub checkpoints.

For tests, offline smoke checks and benchmarks: they load through the same
`BaseChronosPipeline.from_pretrained` path as a real checkpoint, with no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def save_tiny_bolt(directory: str | Path, *, seed: int = 0, d_model: int = 32, d_kv: int = 8,
                   d_ff: int = 64, num_layers: int = 1, num_heads: int = 2,
                   context_length: int = 128, prediction_length: int = 16,
                   patch_size: int = 8) -> Path:
    """Save a Chronos-Bolt model; defaults are ~35k parameters. Returns the directory."""
    import torch
    from chronos.chronos_bolt import ChronosBoltModelForForecasting
    from transformers import T5Config

    torch.manual_seed(seed)
    config = T5Config(
        d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
        num_decoder_layers=num_layers, num_heads=num_heads, feed_forward_proj="relu",
        vocab_size=2, decoder_start_token_id=0, pad_token_id=0,
        chronos_pipeline_class="ChronosBoltPipeline",
        chronos_config={"context_length": context_length,
                        "prediction_length": prediction_length,
                        "input_patch_size": patch_size, "input_patch_stride": patch_size,
                        "quantiles": QUANTILES, "use_reg_token": True},
    )
    return _save(ChronosBoltModelForForecasting(config), directory)


def save_bolt_tiny_shape(directory: str | Path, *, seed: int = 0) -> Path:
    """Random weights in amazon/chronos-bolt-tiny's architecture (~8.6M parameters)."""
    return save_tiny_bolt(directory, seed=seed, d_model=256, d_kv=64, d_ff=1024, num_layers=4,
                          num_heads=4, context_length=2048, prediction_length=64,
                          patch_size=16)


def save_tiny_chronos(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny original (tokenised, sampling) Chronos T5 model: 64 tokens, context 64,
    prediction length 16, 20 samples by default."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    n_tokens = 64
    config = T5Config(
        d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
        vocab_size=n_tokens, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        chronos_pipeline_class="ChronosPipeline",
        chronos_config={
            "tokenizer_class": "MeanScaleUniformBins",
            "tokenizer_kwargs": {"low_limit": -15.0, "high_limit": 15.0},
            "context_length": 64, "prediction_length": 16, "n_tokens": n_tokens,
            "n_special_tokens": 2, "pad_token_id": 0, "eos_token_id": 1,
            "use_eos_token": True, "model_type": "seq2seq", "num_samples": 20,
            "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        },
    )
    return _save(T5ForConditionalGeneration(config), directory)


def save_tiny_chronos2(directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny Chronos-2 model (context 128, output patch 8, up to 4 output patches)."""
    import torch
    from chronos.chronos2.config import Chronos2CoreConfig
    from chronos.chronos2.model import Chronos2Model

    torch.manual_seed(seed)
    config = Chronos2CoreConfig(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
        chronos_pipeline_class="Chronos2Pipeline",
        chronos_config={"context_length": 128, "input_patch_size": 8, "input_patch_stride": 8,
                        "output_patch_size": 8, "quantiles": QUANTILES,
                        "use_reg_token": True, "use_arcsinh": True, "max_output_patches": 4},
    )
    return _save(Chronos2Model(config), directory)


def _save(model: Any, directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(path)
    return path
