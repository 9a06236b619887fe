"""GPT-2 shapes, the exact non-embedding parameter count N, and FLOPs.

Every model is a Hugging Face `GPT2LMHeadModel` (so a checkpoint is a plain `save_pretrained` directory) with
n_head = max(2, d_model // 64), d_ff = 4 d_model, no dropout (the study stops early instead of regularising),
and the LM head tied to the token embedding.

N follows Kaplan et al. 2020: non-embedding parameters, i.e. everything except the token and position
embeddings (the tied head shares the token embedding, so it is not counted at all). Per block that is
12 d^2 + 13 d (attention 4 d^2 + 4 d, MLP 8 d^2 + 5 d, two layer norms 4 d), plus 2 d for the final layer norm;
the familiar estimate is 12 n_layer d_model^2.

The size table (SIZES, n_head, estimate_n) lives in the torch-free sweep_engine.shapes, so that validating and
planning a space never imports torch; it is re-exported here. Paper-scale names are the study's N (Kim 2021), each
a shape whose 12 L d^2 lies within 5% of the name; GPT-2 small (12 x 768) is "gpt2-small": its well-known "124M"
counts 39M embedding parameters, its N is 85M.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers import logging as hf_logging

from sweep_engine.errors import ConfigError
from sweep_engine.shapes import SIZES, estimate_n, n_head
from sweep_engine.spec import ModelShape, TokenizerSpec, same_tokenizer
from sweep_engine.training.checkpoint import SPEC_FILE

__all__ = [
    "SIZES",
    "build_model",
    "count_non_embedding",
    "estimate_n",
    "flops_per_token",
    "gpt2_config",
    "load_pretrained",
    "n_head",
    "resolve_shape",
]

# Transformers warns about things that are deliberate here (e.g. unused generation config); keep runs quiet.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def flops_per_token(n_params: int) -> float:
    """Training FLOPs per token, 6 N (forward 2 N, backward 4 N; Kaplan et al. 2020)."""
    return 6.0 * n_params


def resolve_shape(name_or_dict: str | Mapping[str, Any] | ModelShape) -> ModelShape:
    """Turn a size name, a {n_layer, d_model[, name]} mapping or a ModelShape into a checked ModelShape.

    Args:
        name_or_dict: A key of SIZES, a mapping with `n_layer` and `d_model` (and optionally `name`, default
            "<n_layer>x<d_model>"), or a ModelShape.

    Returns:
        The shape.

    Raises:
        ConfigError: For an unknown name, missing or extra keys, or a shape whose heads do not divide d_model.
    """
    if isinstance(name_or_dict, ModelShape):
        shape = name_or_dict
    elif isinstance(name_or_dict, str):
        if name_or_dict not in SIZES:
            raise ConfigError(f"model size must be one of {sorted(SIZES)}, but got {name_or_dict!r}")
        shape = SIZES[name_or_dict]
    else:
        d = dict(name_or_dict)
        unknown = set(d) - {"name", "n_layer", "d_model"}
        if unknown or "n_layer" not in d or "d_model" not in d:
            raise ConfigError(
                f"a model shape needs keys n_layer and d_model (and optionally name), but got {sorted(d)}"
            )
        n_layer, d_model = int(d["n_layer"]), int(d["d_model"])
        shape = ModelShape(str(d.get("name", f"{n_layer}x{d_model}")), n_layer, d_model)
    if shape.n_layer < 1 or shape.d_model < 2 or shape.d_model % n_head(shape.d_model):
        raise ConfigError(
            f"`n_layer >= 1` and `d_model % max(2, d_model // 64) == 0` must hold, but got "
            f"(n_layer={shape.n_layer}, d_model={shape.d_model})"
        )
    return shape


def gpt2_config(shape: ModelShape, vocab_size: int, context: int) -> GPT2Config:
    """The GPT2Config of a shape: no dropout, d_ff = 4 d_model, tied head, fused GELU, no KV cache."""
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=context,
        n_embd=shape.d_model,
        n_layer=shape.n_layer,
        n_head=n_head(shape.d_model),
        n_inner=4 * shape.d_model,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
        tie_word_embeddings=True,
        # GPT-2's tanh-approximated GELU as one fused kernel: the same function as GPT-2's "gelu_new" (to ~1e-7)
        # without its chain of elementwise ops, which cost ~15% of a small model's step on the CPU.
        activation_function="gelu_pytorch_tanh",
    )


def build_model(shape: ModelShape, vocab_size: int, context: int) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of this shape (GPT-2's init; seed torch first for a reproducible model).

    Args:
        shape: The shape (see `resolve_shape`).
        vocab_size: Tokenizer vocabulary size.
        context: Maximum sequence length (position embeddings).

    Returns:
        The model, in training mode, on the CPU, using PyTorch's scaled-dot-product attention.
    """
    shape = resolve_shape(shape)
    if vocab_size < 1 or context < 1:
        raise ConfigError(
            f"`vocab_size >= 1` and `context >= 1` must hold, but got (vocab_size={vocab_size}, context={context})"
        )
    # sdpa is the fastest attention on both CPU and GPU for these sizes (measured: ~5% over eager on CPU).
    model = GPT2LMHeadModel._from_config(gpt2_config(shape, vocab_size, context), attn_implementation="sdpa")
    model.train()
    return model


def _is_embedding(name: str) -> bool:
    return name.endswith(("wte.weight", "wpe.weight", "lm_head.weight"))


def count_non_embedding(model: nn.Module) -> int:
    """N: parameters excluding the token and position embeddings and the (tied) LM head.

    `named_parameters()` yields a tied tensor once, so the shared head/embedding matrix is never counted twice;
    an untied head counts as an embedding too (it is the output embedding, of vocabulary size).
    """
    return sum(p.numel() for name, p in model.named_parameters() if not _is_embedding(name))


def load_pretrained(
    init_dir: Path,
    shape: ModelShape,
    vocab_size: int,
    context: int,
    tokenizer: TokenizerSpec | dict[str, Any] | None = None,
) -> tuple[GPT2LMHeadModel, list[str]]:
    """Load the English model a fine-tuning run starts from, fitted to this run's tokenizer.

    When the run's tokenizer differs from the checkpoint's (another vocabulary size, or, where the checkpoint
    carries the spec that trained it, another tokenizer spec), the token embeddings (and so the tied head) mean
    nothing for the new ids: they are re-initialised (GPT-2's init), the rest of the network is kept, and a
    note says so.

    Args:
        init_dir: A `save_pretrained` directory (e.g. a pre-training trial's workdir/best).
        shape: The shape this run expects; the checkpoint must have the same n_layer and d_model.
        vocab_size: This run's vocabulary size.
        context: This run's context; at most the checkpoint's n_positions.
        tokenizer: This run's TokenizerSpec, compared with the checkpoint's when it has one.

    Returns:
        The model (training mode) and notes for the result (empty when nothing was changed).

    Raises:
        ConfigError: For a missing directory, another shape, or a context longer than the checkpoint's.
    """
    init_dir = Path(init_dir)
    if not (init_dir / "config.json").exists():
        raise ConfigError(
            f"init_dir must be a save_pretrained directory holding config.json, but got {init_dir}"
        )
    model = GPT2LMHeadModel.from_pretrained(init_dir, attn_implementation="sdpa")
    cfg = model.config
    if (cfg.n_layer, cfg.n_embd) != (shape.n_layer, shape.d_model):
        raise ConfigError(
            f"the checkpoint's shape must match the run's, but got checkpoint (n_layer={cfg.n_layer}, "
            f"d_model={cfg.n_embd}) and run (n_layer={shape.n_layer}, d_model={shape.d_model}) in {init_dir}"
        )
    if context > cfg.n_positions:
        raise ConfigError(
            f"`context <= n_positions` of the checkpoint must hold, but got (context={context}, "
            f"n_positions={cfg.n_positions}) in {init_dir}"
        )
    reason = None
    if cfg.vocab_size != vocab_size:
        reason = f"checkpoint vocab_size {cfg.vocab_size} != run vocab_size {vocab_size}"
    elif tokenizer is not None and (init_dir / SPEC_FILE).exists():
        theirs = json.loads((init_dir / SPEC_FILE).read_text()).get("data", {}).get("tokenizer")
        if theirs is not None and not same_tokenizer(theirs, tokenizer):
            reason = "the checkpoint was trained with another tokenizer spec"
    notes = []
    if reason is not None:
        with torch.no_grad():
            if cfg.vocab_size != vocab_size:
                model.resize_token_embeddings(vocab_size, mean_resizing=False)
            embedding = model.get_input_embeddings()
            assert isinstance(embedding, nn.Embedding)
            embedding.weight.normal_(0.0, cfg.initializer_range)
        notes.append(f"reinit_embeddings: {reason}; token embeddings and tied head re-initialised")
    model.train()
    return model, notes
