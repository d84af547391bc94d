"""Tiny randomly initialised text encoders and tokenizers, built without any download, for
the diffusers backends' tiny pipelines (`sheaf_backend_flux.testing`,
`sheaf_backend_sdxl.testing`).

The tokenizers cover every character with single-character tokens (no merges to learn, so
building them is deterministic); the encoders are a few thousand parameters.
"""

from __future__ import annotations

from typing import Any

HIDDEN = 32


def clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer whose vocabulary is every byte character, alone and as a
    word end, with no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer() -> Any:
    """A unigram T5 tokenizer over single characters (printable ASCII)."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [("\u2581" + c, -2.0) for c in chars] + [(c, -3.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def clip_text_model(vocab_size: int, *, with_projection: bool = False, seed: int = 0,
                    hidden: int = HIDDEN) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, vocab_size=vocab_size,
                            max_position_embeddings=77, projection_dim=hidden,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def t5_encoder(vocab_size: int, *, seed: int = 0, d_model: int = HIDDEN) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                      vocab_size=vocab_size, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()
