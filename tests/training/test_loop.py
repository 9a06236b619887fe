"""Real training on tiny models on the CPU, with synthetic data from a small Markov chain (learnable: its
entropy rate is well below log(vocab))."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from sweep_engine.errors import ConfigError, DataError
from sweep_engine.spec import (
    CorpusSpec,
    DataSpec,
    DocIndex,
    ExecutionSpec,
    ListReporter,
    ScheduleSpec,
    StoppingSpec,
    TokenizerSpec,
    TrialData,
    TrialResult,
    TrialSpec,
    request_prune,
)
from sweep_engine.training.evaluate import eval_loss
from sweep_engine.training.loop import batch_geometry, load_result, measure_throughput, run_trial
from sweep_engine.training.model import SIZES, build_model

VOCAB = 64
CTX = 16


@functools.cache
def markov_tokens(n: int = 40_000, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    """A first-order Markov chain whose rows are sparse-ish (Dirichlet 0.1): something to learn."""
    rng = np.random.default_rng(seed)
    cum = rng.dirichlet(np.full(vocab, 0.1), size=vocab).cumsum(axis=1)
    u = rng.random(n)
    out = np.empty(n, dtype=np.int32)
    state = 0
    for i in range(n):
        state = min(int(np.searchsorted(cum[state], u[i])), vocab - 1)
        out[i] = state
    return out


def make_docs(n_tokens: int, doc_len: int = 37, first_key: int = 0) -> DocIndex:
    """Documents of `doc_len` tokens laid end to end (the last one shorter), as held-out sets have."""
    of_target = (np.arange(1, n_tokens) // doc_len).astype(np.int32)
    n_docs = int(of_target.max()) + 1
    return DocIndex(
        keys=np.arange(first_key, first_key + n_docs), of_target=of_target, chars=np.full(n_docs, 2 * doc_len)
    )


def make_data(d_f: int = 20_000, vocab: int = VOCAB) -> TrialData:
    toks = markov_tokens()
    val, test = toks[30_000:32_001], toks[35_000:36_500]
    return TrialData(
        train=toks[:d_f],
        val=val,  # 2001 tokens: 125 full windows of 16 plus nothing left; see eval test for tails
        vocab_size=vocab,
        train_chars=2 * d_f,
        val_chars=4002,
        extra_val={"en": toks[33_000:34_000]},
        test=test,  # 1500 tokens: 93 windows of 16 and a tail of 11
        test_chars=3000,
        val_docs=make_docs(len(val)),
        test_docs=make_docs(len(test), first_key=1000),
    )


def make_spec(**changes: Any) -> TrialSpec:
    corpus = CorpusSpec(kind="path", language="zh", path="synthetic.txt")
    base = TrialSpec(
        sweep="test",
        stage="transfer",
        language="zh",
        init="scratch",
        model=SIZES["xs"],
        data=DataSpec(
            corpus=corpus,
            tokenizer=TokenizerSpec(kind="bpe", vocab_size=VOCAB, corpus=corpus),
            d_f=20_000,
            val_size=2001,
            val_unit="tokens",
        ),
        context=CTX,
        batch_tokens=256,
        lr=3e-3,
        schedule=ScheduleSpec(kind="cosine", warmup_steps=5),
        stopping=StoppingSpec(eval_interval_tokens=2048, token_cap=16_384, patience=3),
    )
    return dataclasses.replace(base, **changes)


def stopping(**changes: Any) -> StoppingSpec:
    return dataclasses.replace(
        StoppingSpec(eval_interval_tokens=2048, token_cap=16_384, patience=3), **changes
    )


def curve_losses(result: TrialResult) -> list[tuple[int, float, float | None]]:
    return [(p.tokens, p.val_loss, p.train_loss) for p in result.curve]


# ---- stopping --------------------------------------------------------------------------------------------------


def test_budget_run_records_everything(tmp_path: Path) -> None:
    reporter = ListReporter()
    result = run_trial(make_spec(), reporter, workdir=tmp_path, data=make_data())
    assert result.stop_reason == "budget"
    assert result.tokens_seen == 16_384 and result.steps == 64
    assert [p.tokens for p in result.curve] == list(range(2048, 16_385, 2048))
    assert result.curve[-1].val_loss < result.curve[0].val_loss < math.log(VOCAB)  # it learns
    assert result.n_params == 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64 and result.n_params_estimate == 98_304
    assert result.flops == 6.0 * result.n_params * 16_384
    assert result.d_f == 20_000 and result.d_f_chars == 40_000
    assert result.val_tokens_per_char == pytest.approx(2001 / 4002)
    assert result.best_val_loss == min(p.val_loss for p in result.curve)
    best_point = next(p for p in result.curve if p.val_loss == result.best_val_loss)
    assert result.tokens_at_best == best_point.tokens
    assert set(result.best_extra_val_loss) == {"en"}  # scored once at the end, with the best step's weights
    assert result.zero_shot_loss is None and result.tokens_per_s > 0 and result.wall_s > 0
    # the reporter saw every evaluation, with the state just written (none at the last: the result follows)
    assert len(reporter.reports) == len(result.curve)
    assert reporter.checkpoints == [str(tmp_path)] * (len(result.curve) - 1) + [None]
    keys = {
        "tokens",
        "step",
        "val_loss",
        "best_val_loss",
        "train_loss",
        "lr",
        "tokens_per_s",
        "eval_s",
        "train_s",
        "evals",
    }
    assert set(reporter.reports[-1]) == keys
    # where the time went: training, evaluation, checkpoints; no MFU on a CPU (no peak to compare with)
    assert result.train_s > 0 and result.eval_s > 0 and result.checkpoint_s > 0 and result.mfu is None
    assert result.tokens_per_s == pytest.approx(16_384 / result.train_s)
    # files: result.json (the state is dropped once the result is final), best/ loadable by transformers alone
    assert load_result(tmp_path) == result
    assert not (tmp_path / "state.pt").exists()
    best = GPT2LMHeadModel.from_pretrained(tmp_path / "best")
    assert eval_loss(best, make_data().val, CTX, torch.device("cpu")) == pytest.approx(
        result.best_val_loss, abs=1e-6
    )
    assert eval_loss(best, make_data().extra_val["en"], CTX, torch.device("cpu")) == pytest.approx(
        result.best_extra_val_loss["en"], abs=1e-6
    )


def test_test_split_and_per_document_losses_come_from_the_best_step(tmp_path: Path) -> None:
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=100_000, eval_interval_tokens=1024))
    data = make_data(d_f=600)
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=data)
    assert result.stop_reason == "overfit" and result.tokens_at_best < result.tokens_seen
    best = GPT2LMHeadModel.from_pretrained(tmp_path / "best")  # the best step's weights, not the last step's
    assert data.test is not None and data.test_docs is not None and data.val_docs is not None
    assert result.test_loss == pytest.approx(eval_loss(best, data.test, CTX, torch.device("cpu")), abs=1e-6)
    assert result.test_tokens_per_char == pytest.approx(1500 / 3000)
    val, test = result.doc_losses["val"], result.doc_losses["test"]
    assert val["keys"] == list(range(len(data.val_docs.keys))) and test["keys"][0] == 1000
    assert sum(val["tokens"]) == len(data.val) - 1 and sum(test["tokens"]) == len(data.test) - 1
    assert sum(val["loss"]) / sum(val["tokens"]) == pytest.approx(result.best_val_loss, abs=1e-6)
    assert sum(test["loss"]) / sum(test["tokens"]) == pytest.approx(result.test_loss, abs=1e-6)
    assert load_result(tmp_path) == result  # result.json carries them


def test_a_prune_request_stops_the_run_after_its_next_evaluation(tmp_path: Path) -> None:
    request_prune(tmp_path, "a losing arm")
    result = run_trial(make_spec(), ListReporter(), workdir=tmp_path, data=make_data())
    assert result.stop_reason == "pruned" and len(result.curve) == 1
    assert load_result(tmp_path) == result and not (tmp_path / "PRUNE").exists()


def test_tiny_training_set_overfits(tmp_path: Path) -> None:
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=200_000, eval_interval_tokens=1024))
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=make_data(d_f=600))
    assert result.stop_reason == "overfit"
    assert result.best_val_loss < result.curve[-1].val_loss
    assert result.tokens_seen < 200_000 and result.tokens_at_best < result.tokens_seen


def test_absurd_learning_rate_diverges_without_raising(tmp_path: Path) -> None:
    result = run_trial(make_spec(lr=1e3), ListReporter(), workdir=tmp_path, data=make_data())
    assert result.stop_reason == "diverged"
    assert load_result(tmp_path) is not None


def test_plateau_when_nothing_changes(tmp_path: Path) -> None:
    # min_delta larger than any possible gain: no evaluation counts as an improvement, and the last one is
    # not above best + min_delta, so the run has plateaued (it did not overfit).
    spec = make_spec(stopping=stopping(min_delta=100.0, patience=2, token_cap=100_000))
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=make_data())
    assert result.stop_reason == "plateau" and len(result.curve) == 3  # 1 improvement (from inf), 2 waits


# ---- reproducibility and resume --------------------------------------------------------------------------------


def test_same_spec_and_seed_give_the_same_curve(tmp_path: Path) -> None:
    a = run_trial(make_spec(), ListReporter(), workdir=tmp_path / "a", data=make_data())
    b = run_trial(make_spec(), ListReporter(), workdir=tmp_path / "b", data=make_data())
    c = run_trial(make_spec(seed=1), ListReporter(), workdir=tmp_path / "c", data=make_data())
    assert curve_losses(a) == curve_losses(b)
    assert curve_losses(a) != curve_losses(c)


class Killed(Exception):
    """Stands in for the driver dying mid-run."""


class KillAfter(ListReporter):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        if len(self.reports) == self.n:
            raise Killed


@pytest.mark.parametrize("checkpoint_every", [1, 2])
def test_resume_reproduces_the_uninterrupted_curve(tmp_path: Path, checkpoint_every: int) -> None:
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=12_288, eval_interval_tokens=1024, patience=100))
    data = make_data(d_f=3000)
    whole = run_trial(spec, ListReporter(), workdir=tmp_path / "a", data=data)
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(5), workdir=tmp_path / "b", data=data, checkpoint_every=checkpoint_every)
    assert (tmp_path / "b" / "state.pt").exists() and load_result(tmp_path / "b") is None
    assert not (tmp_path / "b" / "best").exists()  # best/ is written once, when the run stops
    rest = ListReporter()
    resumed = run_trial(spec, rest, workdir=tmp_path / "b", data=data, checkpoint_every=checkpoint_every)
    assert curve_losses(resumed) == curve_losses(whole)  # exactly, not approximately
    assert resumed.best_val_loss == whole.best_val_loss and resumed.stop_reason == whole.stop_reason
    # The best weights of the first session come back from state.pt: the test split sees the same model.
    assert resumed.test_loss == whole.test_loss and resumed.doc_losses == whole.doc_losses
    # with a state every 2 evaluations, the 5th is redone after the resume
    assert rest.reports[0]["step"] == (6 if checkpoint_every == 1 else 5) * 4


def test_the_best_weights_live_in_the_state_and_reach_best_only_at_the_end(tmp_path: Path) -> None:
    # An early best (a high LR overfits 600 tokens fast), then a kill well after it: the resumed run must
    # still score the test split with, and save, the first session's best weights.
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=100_000, eval_interval_tokens=1024))
    data = make_data(d_f=600)
    whole = run_trial(spec, ListReporter(), workdir=tmp_path / "a", data=data)
    best_eval = next(i for i, p in enumerate(whole.curve) if p.val_loss == whole.best_val_loss) + 1
    assert best_eval + 1 < len(whole.curve)
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(best_eval + 1), workdir=tmp_path / "b", data=data)
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    assert set(state["best_weights"]) == set(state["model"])
    assert not (tmp_path / "b" / "best").exists()
    resumed = run_trial(spec, ListReporter(), workdir=tmp_path / "b", data=data)
    assert resumed.test_loss == whole.test_loss and resumed.doc_losses == whole.doc_losses
    saved = GPT2LMHeadModel.from_pretrained(tmp_path / "b" / "best").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state["best_weights"].items() if k in saved)


def test_a_state_written_before_it_kept_the_best_weights_falls_back_to_best(tmp_path: Path) -> None:
    from sweep_engine.training.checkpoint import save_best

    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=100_000, eval_interval_tokens=1024))
    data = make_data(d_f=600)
    whole = run_trial(spec, ListReporter(), workdir=tmp_path / "a", data=data)
    best_eval = next(i for i, p in enumerate(whole.curve) if p.val_loss == whole.best_val_loss) + 1
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(best_eval + 1), workdir=tmp_path / "b", data=data)
    # Rewrite the state as an older version wrote it: no best weights inside, best/ beside it.
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    model = build_model(SIZES["xs"], VOCAB, CTX)
    model.load_state_dict(state.pop("best_weights"))
    save_best(model, tmp_path / "b", spec.to_dict())
    torch.save(state, tmp_path / "b" / "state.pt")
    resumed = run_trial(spec, ListReporter(), workdir=tmp_path / "b", data=data)
    assert resumed.test_loss == whole.test_loss


def test_checkpoint_cadence_by_tokens_and_through_a_local_directory(tmp_path: Path) -> None:
    # Every 4096 tokens (2 evaluations of 2048), written to a local directory and moved to the workdir.
    local = tmp_path / "local"
    execution = ExecutionSpec(checkpoint_every_evals=None, checkpoint_every_tokens=4096,
                              checkpoint_local_dir=str(local))  # fmt: skip
    reporter = ListReporter()
    result = run_trial(make_spec(execution=execution), reporter, workdir=tmp_path / "w", data=make_data())
    saved_at = [r["tokens"] for r, c in zip(reporter.reports, reporter.checkpoints, strict=True) if c]
    assert saved_at == [4096, 8192, 12_288]  # not at 16,384: the run stopped there and wrote its result
    assert list(local.iterdir()) == [] and not (tmp_path / "w" / "state.pt").exists()
    assert load_result(tmp_path / "w") == result
    # By time: a cadence no run this short reaches writes no state at all.
    slow = ExecutionSpec(checkpoint_every_evals=None, checkpoint_every_s=3600.0)
    quiet = ListReporter()
    run_trial(make_spec(execution=slow), quiet, workdir=tmp_path / "t", data=make_data())
    assert quiet.checkpoints == [None] * len(quiet.reports)


def test_a_moved_state_resumes_like_a_direct_one(tmp_path: Path) -> None:
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=12_288, eval_interval_tokens=1024, patience=100),
                     execution=ExecutionSpec(checkpoint_local_dir=str(tmp_path / "local")))  # fmt: skip
    data = make_data(d_f=3000)
    whole = run_trial(spec, ListReporter(), workdir=tmp_path / "a", data=data)
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(5), workdir=tmp_path / "b", data=data)
    resumed = run_trial(spec, ListReporter(), workdir=tmp_path / "b", data=data)
    assert curve_losses(resumed) == curve_losses(whole)


@pytest.mark.slow
def test_resume_with_compile_reproduces_the_compiled_curve(tmp_path: Path) -> None:
    spec = make_spec(lr=1e-2, stopping=stopping(token_cap=8192, eval_interval_tokens=1024, patience=100),
                     execution=ExecutionSpec(compile="aot_eager"), micro_batch_tokens=128)  # fmt: skip
    data = make_data(d_f=3000)
    whole = run_trial(spec, ListReporter(), workdir=tmp_path / "a", data=data)
    eager = run_trial(dataclasses.replace(spec, execution=ExecutionSpec()), ListReporter(),
                      workdir=tmp_path / "e", data=data)  # fmt: skip
    np.testing.assert_allclose(
        [p.val_loss for p in whole.curve], [p.val_loss for p in eager.curve], atol=1e-5
    )
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(3), workdir=tmp_path / "b", data=data)
    resumed = run_trial(spec, ListReporter(), workdir=tmp_path / "b", data=data)
    assert curve_losses(resumed) == curve_losses(whole)
    assert resumed.test_loss == whole.test_loss


def test_finished_trial_is_returned_without_training(tmp_path: Path) -> None:
    first = run_trial(make_spec(), ListReporter(), workdir=tmp_path, data=make_data())
    again = ListReporter()
    assert run_trial(make_spec(), again, workdir=tmp_path, data=None) == first  # data=None: nothing is loaded
    assert again.reports == []


def test_state_of_another_trial_is_refused(tmp_path: Path) -> None:
    spec = make_spec(stopping=stopping(patience=100))
    with pytest.raises(Killed):
        run_trial(spec, KillAfter(1), workdir=tmp_path, data=make_data())
    with pytest.raises(ConfigError, match="belongs to trial"):
        run_trial(make_spec(lr=1e-3), ListReporter(), workdir=tmp_path, data=make_data())


# ---- fine-tuning -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def english_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("english")
    spec = make_spec(stage="pretrain", language="en", stopping=stopping(token_cap=8192))
    run_trial(spec, ListReporter(), workdir=workdir, data=make_data())
    return workdir / "best"


def test_finetune_records_zero_shot_losses_of_the_loaded_model(tmp_path: Path, english_model: Path) -> None:
    data = make_data()
    start = GPT2LMHeadModel.from_pretrained(english_model)
    expected = eval_loss(start, data.val, CTX, torch.device("cpu"))
    expected_en = eval_loss(start, data.extra_val["en"], CTX, torch.device("cpu"))
    spec = make_spec(init="finetune", stopping=stopping(token_cap=4096))
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=data, init_dir=english_model)
    assert result.zero_shot_loss == pytest.approx(expected, abs=1e-9)
    assert result.zero_shot_extra_val_loss == {"en": pytest.approx(expected_en, abs=1e-9)}
    assert result.notes == []
    # it starts from the English model: far below a scratch model's first evaluation
    scratch = run_trial(
        make_spec(stopping=stopping(token_cap=4096)), ListReporter(), workdir=tmp_path / "s", data=data
    )
    assert result.curve[0].val_loss < scratch.curve[0].val_loss


def test_finetune_with_another_vocabulary_reinitialises_embeddings(
    tmp_path: Path, english_model: Path
) -> None:
    data = make_data(vocab=VOCAB + 16)
    spec = make_spec(init="finetune", stopping=stopping(token_cap=2048))
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=data, init_dir=english_model)
    assert len(result.notes) == 1 and result.notes[0].startswith("reinit_embeddings")


def test_finetune_needs_an_existing_init_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_dir"):
        run_trial(make_spec(init="finetune"), ListReporter(), workdir=tmp_path, data=make_data())
    with pytest.raises(ConfigError, match="init_dir"):
        run_trial(
            make_spec(init="finetune"),
            ListReporter(),
            workdir=tmp_path,
            data=make_data(),
            init_dir=tmp_path / "x",
        )


# ---- batch geometry --------------------------------------------------------------------------------------------


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    whole = run_trial(make_spec(), ListReporter(), workdir=tmp_path / "a", data=make_data())
    accum = run_trial(
        make_spec(micro_batch_tokens=64), ListReporter(), workdir=tmp_path / "b", data=make_data()
    )
    np.testing.assert_allclose(
        [p.val_loss for p in accum.curve], [p.val_loss for p in whole.curve], rtol=0, atol=1e-4
    )


def test_batch_geometry() -> None:
    assert batch_geometry(make_spec(), 1) == (16, 16, 1)
    assert batch_geometry(make_spec(micro_batch_tokens=64), 2) == (16, 4, 2)
    for changes, world in [
        ({"batch_tokens": 250}, 1),
        ({"micro_batch_tokens": 96}, 1),  # 6 windows do not divide 16
        ({"micro_batch_tokens": 20}, 1),  # not a multiple of context
        ({"batch_tokens": 48}, 2),  # 3 windows over 2 ranks
    ]:
        with pytest.raises(ConfigError, match=r"batch_tokens=\d+, context=16, world_size"):
            batch_geometry(make_spec(**changes), world)


def test_config_errors_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_cap=100, batch_tokens=256"):
        run_trial(
            make_spec(stopping=stopping(token_cap=100)), ListReporter(), workdir=tmp_path, data=make_data()
        )
    with pytest.raises(ConfigError, match="cache_dir"):
        run_trial(make_spec(), ListReporter(), workdir=tmp_path, data=None)
    assert not tmp_path.joinpath("state.pt").exists()


def test_an_out_of_memory_step_is_retried_once_with_half_the_micro_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No allocation fails on demand on a CPU: the step function stands in for a device that cannot hold the
    whole batch (16 windows) at once, the way CUDA raises it."""
    import sweep_engine.training.loop as loop_module

    real_step = loop_module.train_step
    seen: list[int] = []

    def step(
        model: Any, optimizer: Any, windows: torch.Tensor, lr: float, *, accum: int, autocast: Any
    ) -> Any:
        seen.append(accum)
        if windows.shape[0] // accum > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(model, optimizer, windows, lr, accum=accum, autocast=autocast)

    monkeypatch.setattr(loop_module, "train_step", step)
    result = run_trial(make_spec(), ListReporter(), workdir=tmp_path / "a", data=make_data())
    assert seen[:3] == [1, 2, 2] and set(seen[1:]) == {2}  # one failure, then accumulation over 2 halves
    assert result.notes == ["oom_retry: micro-batch lowered to 8 windows of 16 tokens"]
    monkeypatch.setattr(loop_module, "train_step", real_step)
    halves = run_trial(
        make_spec(micro_batch_tokens=128), ListReporter(), workdir=tmp_path / "b", data=make_data()
    )
    np.testing.assert_allclose(
        [p.val_loss for p in result.curve], [p.val_loss for p in halves.curve], atol=1e-6
    )

    def always(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(loop_module, "train_step", always)
    with pytest.raises(torch.OutOfMemoryError):  # the retry fails too: the trial fails, reason `oom`
        run_trial(make_spec(), ListReporter(), workdir=tmp_path / "c", data=make_data())


def test_a_gpu_trial_without_a_gpu_is_a_config_error(tmp_path: Path) -> None:
    from sweep_engine.spec import ResourceSpec
    from sweep_engine.sweep.faults import failure_reason

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = make_spec(resources=ResourceSpec(gpus=1.0))
    with pytest.raises(ConfigError, match="gpus_per_trial=1 must run on a CUDA device") as info:
        run_trial(spec, ListReporter(), workdir=tmp_path, data=make_data())
    assert failure_reason(info.value) == "config" and not any(tmp_path.iterdir())


def test_pre_training_evaluates_every_so_many_epochs_of_its_corpus(tmp_path: Path) -> None:
    # 4,000 training tokens, an interval of 0.5 epochs = 2,000 tokens -> every 7 steps of 256 (1,792 tokens).
    spec = make_spec(stage="pretrain", data=dataclasses.replace(make_spec().data, d_f=None),
                     stopping=stopping(eval_interval_tokens=8192, eval_interval_epochs=0.5, token_cap=8192))  # fmt: skip
    result = run_trial(spec, ListReporter(), workdir=tmp_path, data=make_data(d_f=4000))
    assert [p.step for p in result.curve] == [7, 14, 21, 28, 32]  # and one at the cap


def test_recorded_id_ranges_are_trusted_instead_of_a_scan(tmp_path: Path) -> None:
    data = make_data()
    data.id_range = {"train": (0, VOCAB)}  # as a token file of another vocabulary would record it
    with pytest.raises(DataError, match=r"token set 'train' .* in \[0, 64\]"):
        run_trial(make_spec(), ListReporter(), workdir=tmp_path, data=data)


def test_token_ids_outside_the_vocabulary_are_a_data_error(tmp_path: Path) -> None:
    data = make_data(vocab=VOCAB - 1)  # the chain emits id 63
    with pytest.raises(DataError, match=r"vocab_size=63"):
        run_trial(make_spec(), ListReporter(), workdir=tmp_path, data=data)


# ---- data parallel ---------------------------------------------------------------------------------------------

DDP_TOLERANCE = 1e-5  # absolute, on every validation and training loss of the curve (measured: 5e-7)


def _ddp_worker(rank: int, world: int, port: int, workdir: str, out: str, changes: dict[str, Any]) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        reporter = ListReporter()
        result = run_trial(make_spec(**changes), reporter, workdir=Path(workdir), data=make_data())
        payload = {
            "curve": curve_losses(result),
            "reports": len(reporter.reports),
            "ckpt": reporter.checkpoints,
            "test_loss": result.test_loss,
            "doc_losses": result.doc_losses,
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(payload))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Plain DDP; DDP with gradient accumulation (4 windows per micro-batch: 2 micro-batches per rank, the first under
# no_sync) and torch.compile (aot_eager: dynamo's graph capture and DDP graph splitting, without inductor's
# minute of C++ compilation on this CPU; benchmarks/gpu_check.sh compiles with inductor on a GPU).
DDP_CASES = {
    "plain": {},
    "accum-compiled": {"micro_batch_tokens": 64, "execution": ExecutionSpec(compile="aot_eager")},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DDP_CASES))
def test_two_process_ddp_matches_one_process(tmp_path: Path, case: str) -> None:
    changes = DDP_CASES[case]
    plain = {k: v for k, v in changes.items() if k != "execution"}  # one process, eager: the reference
    single = run_trial(make_spec(**plain), ListReporter(), workdir=tmp_path / "single", data=make_data())
    out = tempfile.mkdtemp(dir=tmp_path)
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out, changes), nprocs=2, join=True
    )
    ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["curve"] == ranks[1]["curve"]  # all ranks compute the same numbers
    assert ranks[0]["reports"] == ranks[1]["reports"] == len(single.curve)  # every rank reports
    assert set(ranks[1]["ckpt"]) == {None} and None not in ranks[0]["ckpt"][:-1]  # only rank 0 checkpoints
    got = np.array([[v, t] for _, v, t in ranks[0]["curve"]])
    want = np.array([[v, t] for _, v, t in curve_losses(single)])
    np.testing.assert_allclose(got, want, rtol=0, atol=DDP_TOLERANCE)
    assert ranks[0]["test_loss"] == pytest.approx(single.test_loss, abs=DDP_TOLERANCE)
    for split in ("val", "test"):  # per-document sums are all-reduced like the mean
        np.testing.assert_allclose(
            ranks[0]["doc_losses"][split]["loss"], single.doc_losses[split]["loss"], rtol=0, atol=1e-3
        )
    assert load_result(tmp_path / "ddp") is not None
    assert sorted(os.listdir(tmp_path / "ddp")) == ["best", "result.json"]


def test_measure_throughput_is_positive_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    assert measure_throughput(SIZES["xs"], VOCAB, CTX, seconds=0.05, threads=1) > 0
    assert torch.get_num_threads() == threads
