"""Named GPT-2 shapes and their parameter counts, without importing torch (validate and plan stay fast).

N is the non-embedding parameter count (Kaplan 2020): token and position embeddings are excluded, and the LM
head is tied to the token embedding, so it adds nothing. Per block: attention 4 d^2 + 4 d, MLP 8 d^2 + 5 d,
two layer norms 4 d, i.e. 12 d^2 + 13 d; plus the final layer norm, 2 d.
"""

from __future__ import annotations

from sweep_engine.spec import ModelShape


def _shape(name: str, n_layer: int, d_model: int) -> ModelShape:
    return ModelShape(name=name, n_layer=n_layer, d_model=d_model)


# Laptop scale: 0.1M .. 2.7M non-embedding parameters, trainable on one CPU thread in minutes.
LAPTOP_SIZES = {
    s.name: s
    for s in (
        _shape("xs", 2, 64),
        _shape("s", 3, 96),
        _shape("m", 4, 128),
        _shape("l", 6, 192),
    )
}

# The seed study's sizes (Kim 2021), named by their non-embedding count. d_model is a multiple of 64 so that
# n_head = d_model / 64, d_model / n_layer stays in Kaplan's flat range (50..110), and 12 n_layer d_model^2
# lands within 5% of the published count. GPT-2 small (12 x 768) is here for reference: its famous "124M"
# includes 39M embedding parameters; its N is 85M.
PAPER_SIZES = {
    s.name: s
    for s in (
        _shape("3.3M", 4, 256),  # 3.15M
        _shape("16M", 5, 512),  # 15.7M
        _shape("39M", 8, 640),  # 39.3M
        _shape("51M", 10, 640),  # 49.2M
        _shape("70M", 10, 768),  # 70.8M
        _shape("124M", 10, 1024),  # 125.8M
        _shape("gpt2-small", 12, 768),  # 84.9M
    )
}

SIZES: dict[str, ModelShape] = {**LAPTOP_SIZES, **PAPER_SIZES}


def n_head(d_model: int) -> int:
    """Heads of 64 dimensions, at least two (the study's tiny models would otherwise have one)."""
    return max(2, d_model // 64)


def estimate_n(shape: ModelShape) -> int:
    """Kaplan's estimate, 12 n_layer d_model^2."""
    return 12 * shape.n_layer * shape.d_model**2


def non_embedding_params(shape: ModelShape) -> int:
    """The exact non-embedding count of the GPT-2 model built from `shape` (see the module docstring)."""
    d = shape.d_model
    return shape.n_layer * (12 * d * d + 13 * d) + 2 * d
