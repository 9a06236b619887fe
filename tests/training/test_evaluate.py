"""Validation loss over a whole fixed token set (training/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweep_engine.errors import DataError
from sweep_engine.training.evaluate import eval_loss, eval_loss_by_doc
from sweep_engine.training.model import SIZES, build_model

CTX = 16


def test_eval_loss_covers_the_whole_set_including_the_tail() -> None:
    torch.manual_seed(0)
    model = build_model(SIZES["xs"], 64, CTX)
    tokens = np.random.default_rng(0).integers(0, 64, 1000)  # 999 targets: 62 windows of 16 and a tail of 7
    losses = []
    with torch.no_grad():
        for start in range(0, 999, CTX):
            window = torch.from_numpy(tokens[start : start + CTX + 1].astype(np.int64))[None]
            logits = model(input_ids=window[:, :-1]).logits[0]
            losses.append(torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="none"))
    assert torch.cat(losses).numel() == 999
    expected = torch.cat(losses).double().mean().item()
    assert eval_loss(model, tokens, CTX, torch.device("cpu")) == pytest.approx(expected, abs=1e-6)
    assert model.training  # left as it was found


def test_eval_loss_needs_two_tokens() -> None:
    with pytest.raises(DataError, match="at least 2"):
        eval_loss(build_model(SIZES["xs"], 64, CTX), np.array([3]), CTX, torch.device("cpu"))


def test_per_document_sums_add_up_to_the_mean_and_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = build_model(SIZES["xs"], 64, CTX)
    tokens = np.random.default_rng(1).integers(0, 64, size=5 * CTX + 7).astype(np.int32)  # a tail of 6
    of_target = (np.arange(1, len(tokens)) // 11).astype(np.int32)  # documents of 11 tokens
    n_docs = int(of_target.max()) + 1
    mean, by_doc = eval_loss_by_doc(
        model, tokens, CTX, torch.device("cpu"), doc_of_target=of_target, n_docs=n_docs
    )
    assert by_doc is not None and by_doc.shape == (n_docs,)
    assert by_doc.sum() / (len(tokens) - 1) == pytest.approx(mean, rel=1e-9)
    assert mean == pytest.approx(eval_loss(model, tokens, CTX, torch.device("cpu")), rel=1e-12)
    # Document 3 directly: the token losses of its predicted positions, window by window.
    with torch.no_grad():
        per_token = []
        for start in range(0, len(tokens) - 1, CTX):
            w = torch.from_numpy(tokens[start : start + CTX + 1].astype(np.int64))[None]
            logits = model(input_ids=w[:, :-1]).logits
            per_token.append(torch.nn.functional.cross_entropy(logits[0], w[0, 1:], reduction="none"))
        losses = torch.cat(per_token).double().numpy()
    assert by_doc[3] == pytest.approx(losses[of_target == 3].sum(), rel=1e-6)


def test_per_document_index_must_fit_the_array() -> None:
    model = build_model(SIZES["xs"], 64, CTX)
    with pytest.raises(DataError, match="one document per predicted token"):
        eval_loss_by_doc(
            model, np.arange(10) % 64, CTX, torch.device("cpu"), doc_of_target=np.zeros(3, np.int32), n_docs=1
        )


def test_batched_evaluation_equals_one_window_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of windows and chunked logits change how the work is cut, not the numbers: the mean and every
    per-document sum match one window per forward with whole logits, to float32 rounding (a matmul's summation order depends on its shape: measured differences ~2e-9 relative)."""
    torch.manual_seed(0)
    model = build_model(SIZES["xs"], 64, CTX)
    tokens = np.random.default_rng(2).integers(0, 64, size=23 * CTX + 9).astype(np.uint16)  # a tail of 8
    of_target = (np.arange(1, len(tokens)) // 29).astype(np.int32)
    n_docs = int(of_target.max()) + 1

    def run(batch: int) -> tuple[float, np.ndarray]:
        mean, by_doc = eval_loss_by_doc(model, tokens, CTX, torch.device("cpu"), doc_of_target=of_target,
                                        n_docs=n_docs, batch_windows=batch)  # fmt: skip
        assert by_doc is not None
        return mean, by_doc

    one_mean, one_docs = run(1)
    monkeypatch.setattr("sweep_engine.training.evaluate.logit_chunk_rows", lambda vocab: 5)  # odd chunks
    for batch in (3, 7, 64):
        mean, docs = run(batch)
        assert mean == pytest.approx(one_mean, rel=1e-6)
        np.testing.assert_allclose(docs, one_docs, rtol=1e-6)


def test_the_default_batch_is_sized_to_memory() -> None:
    from sweep_engine.shapes import SIZES as SHAPES
    from sweep_engine.training.memory import eval_windows

    cpu = torch.device("cpu")
    # The paper's largest model at context 1024: several windows per forward within 1 GiB, not one.
    assert 2 <= eval_windows(SHAPES["124M"], 1024, cpu, budget=64 * 2**30) <= 16
    assert eval_windows(SHAPES["124M"], 1024, cpu, budget=2**20) == 1  # never below one
    assert eval_windows(SHAPES["xs"], 16, cpu, budget=64 * 2**30) == 256  # capped
