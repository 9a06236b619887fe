from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sweep_engine.errors import ConfigError
from sweep_engine.spec import ModelShape
from sweep_engine.training.model import (
    SIZES,
    build_model,
    count_non_embedding,
    estimate_n,
    flops_per_token,
    load_pretrained,
    n_head,
    resolve_shape,
)


def _hand_count(n_layer: int, d: int) -> int:
    # Per GPT-2 block: c_attn d*3d + 3d, attn c_proj d*d + d, c_fc d*4d + 4d, mlp c_proj 4d*d + d, two layer
    # norms 2 * 2d  ->  12 d^2 + 13 d.  Plus the final layer norm, 2 d.
    return n_layer * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize("name", sorted(SIZES))
def test_n_matches_the_hand_formula(name: str) -> None:
    shape = SIZES[name]
    with torch.device("meta"):  # no memory, no init: the paper sizes count in milliseconds
        model = build_model(shape, vocab_size=50257, context=1024)
    assert count_non_embedding(model) == _hand_count(shape.n_layer, shape.d_model)
    assert estimate_n(shape) == 12 * shape.n_layer * shape.d_model**2


def test_paper_sizes_match_their_names() -> None:
    for name in ("3.3M", "16M", "39M", "51M", "70M", "124M"):
        nominal = float(name.rstrip("M")) * 1e6
        assert abs(estimate_n(SIZES[name]) - nominal) / nominal < 0.05, name


def test_laptop_sizes_span_0_1_to_3_million() -> None:
    ns = [estimate_n(SIZES[name]) for name in ("xs", "s", "m", "l")]
    assert ns == sorted(ns) and ns[0] > 0.09e6 and ns[-1] < 3e6


def test_built_model_follows_the_shape_rules() -> None:
    model = build_model(SIZES["s"], vocab_size=100, context=32)
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_inner) == (3, 96, 2, 384)
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: counted once, and not in N
    total = sum(p.numel() for p in model.parameters())
    assert total == count_non_embedding(model) + 100 * 96 + 32 * 96


def test_head_count_rule() -> None:
    assert [n_head(d) for d in (64, 96, 128, 192, 768, 1024)] == [2, 2, 2, 3, 12, 16]


def test_flops_per_token_is_6n() -> None:
    assert flops_per_token(1000) == 6000.0


def test_resolve_shape_accepts_names_dicts_and_shapes() -> None:
    assert resolve_shape("m") == SIZES["m"]
    assert resolve_shape({"n_layer": 2, "d_model": 128}) == ModelShape("2x128", 2, 128)
    assert resolve_shape({"name": "t", "n_layer": 2, "d_model": 128}).name == "t"
    assert resolve_shape(SIZES["xs"]) is SIZES["xs"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("huge", "must be one of"),
        ({"n_layer": 2}, "needs keys n_layer and d_model"),
        ({"n_layer": 2, "d_model": 64, "heads": 4}, "needs keys"),
        ({"n_layer": 2, "d_model": 200}, re.escape("(n_layer=2, d_model=200)")),  # 3 heads do not divide 200
        ({"n_layer": 0, "d_model": 64}, "n_layer >= 1"),
    ],
)
def test_resolve_shape_rejects_bad_shapes(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_shape(value)  # type: ignore[arg-type]


def test_load_pretrained_keeps_a_matching_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model(SIZES["xs"], vocab_size=50, context=16)
    src.save_pretrained(tmp_path)
    model, notes = load_pretrained(tmp_path, SIZES["xs"], vocab_size=50, context=16)
    assert notes == []
    for a, b in zip(src.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_pretrained_reinitialises_embeddings_for_another_vocab(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model(SIZES["xs"], vocab_size=50, context=16)
    src.save_pretrained(tmp_path)
    model, notes = load_pretrained(tmp_path, SIZES["xs"], vocab_size=70, context=16)
    assert len(notes) == 1 and notes[0].startswith("reinit_embeddings")
    assert model.transformer.wte.weight.shape == (70, 64)
    assert model.lm_head.weight is model.transformer.wte.weight
    key = "transformer.h.0.attn.c_attn.weight"  # the blocks are kept
    assert torch.equal(model.state_dict()[key], src.state_dict()[key])
    assert not torch.equal(model.transformer.wte.weight[:50], src.transformer.wte.weight)


def test_load_pretrained_reinitialises_for_another_tokenizer_spec(tmp_path: Path) -> None:
    build_model(SIZES["xs"], vocab_size=50, context=16).save_pretrained(tmp_path)
    (tmp_path / "trial_spec.json").write_text('{"data": {"tokenizer": {"kind": "bpe", "vocab_size": 50}}}')
    same = {"kind": "bpe", "vocab_size": 50}
    assert load_pretrained(tmp_path, SIZES["xs"], 50, 16, same)[1] == []
    other = {"kind": "files", "vocab_size": 50}
    assert "another tokenizer" in load_pretrained(tmp_path, SIZES["xs"], 50, 16, other)[1][0]


def test_load_pretrained_rejects_another_shape_or_a_missing_dir(tmp_path: Path) -> None:
    build_model(SIZES["xs"], vocab_size=50, context=16).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="shape must match"):
        load_pretrained(tmp_path, SIZES["s"], vocab_size=50, context=16)
    with pytest.raises(ConfigError, match="context=32, n_positions=16"):
        load_pretrained(tmp_path, SIZES["xs"], vocab_size=50, context=32)
    with pytest.raises(ConfigError, match="config.json"):
        load_pretrained(tmp_path / "nothing", SIZES["xs"], vocab_size=50, context=16)
