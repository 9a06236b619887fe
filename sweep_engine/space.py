"""Expand a validated `Space` into TrialSpecs, in a fixed order, with content-derived keys.

Stage "pretrain": one English model per size. Stage "transfer": language x size x D_F x init x lr x schedule x
seed. A fine-tuning trial names its pre-training trial by key (`init_from`), so the same English model is found
by every language and every relaunch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from sweep_engine.config import (
    CorpusConfig,
    PretrainConfig,
    ScheduleConfig,
    SearchConfig,
    Space,
    StoppingConfig,
    TrainingConfig,
    TransferConfig,
    pretrain_lr,
    resolve_size,
    size_name,
)
from sweep_engine.spec import (
    CorpusSpec,
    DataSpec,
    ExecutionSpec,
    ModelShape,
    ResourceSpec,
    ScheduleSpec,
    StoppingSpec,
    TokenizerSpec,
    TrialSpec,
    content_hash,
)


def corpus_spec(corpus: CorpusConfig, language: str) -> CorpusSpec:
    """The spec of a space file's corpus entry; its kind is the key that names the source (builtin, path, hf).

    A builtin corpus with no translation named reads the language's default one (sweep_engine.data.corpora).
    """
    return CorpusSpec(
        kind=corpus.kind,
        language=language,
        translations=tuple(corpus.translations),
        part=corpus.part,
        path=corpus.path,
        name=corpus.hf,
        config=corpus.hf_config,
        split=corpus.split,
        text_field=corpus.text_field,
        max_chars=corpus.max_chars,
        simplified=corpus.simplified,
        revision=corpus.revision,
    )


def tokenizer_spec(space: Space, language: str, language_corpus: CorpusSpec) -> TokenizerSpec:
    """The shared English BPE (seed study), one BPE per language, or GPT-2 files."""
    tok = space.tokenizer
    if tok.kind == "files":
        return TokenizerSpec(kind="files", vocab_file=tok.vocab_file, merges_file=tok.merges_file)
    if tok.kind == "per_language":
        return TokenizerSpec(kind="bpe", vocab_size=tok.vocab_size, corpus=language_corpus)
    assert space.pretrain is not None  # validated: a shared BPE is trained on the pre-training corpus
    corpus = tok.corpus or space.pretrain.corpus
    return TokenizerSpec(
        kind="bpe", vocab_size=tok.vocab_size, corpus=corpus_spec(corpus, space.pretrain.language)
    )


def _schedule(s: ScheduleConfig, token_cap: int = 0, batch_tokens: int = 1) -> ScheduleSpec:
    """The schedule of one trial: with `warmup_max_fraction`, the warm-up is at most that fraction of the steps
    to its cap (rounded up), so a short run (a small D_F's cap) warms up and still decays."""
    warmup = s.warmup_steps
    if s.warmup_max_fraction is not None:
        warmup = min(warmup, math.ceil(s.warmup_max_fraction * max(1, token_cap // batch_tokens)))
    return ScheduleSpec(kind=s.kind, warmup_steps=warmup, decay_floor=s.decay_floor)


def token_cap(s: StoppingConfig, d_f: int | None, batch_tokens: int) -> int:
    """The cell's token cap: `token_cap`, or `token_cap_epochs` x D_F within [token_cap_min (default one batch),
    token_cap]."""
    if s.token_cap_epochs is None or d_f is None:
        return s.token_cap
    floor = s.token_cap_min if s.token_cap_min is not None else batch_tokens
    return min(s.token_cap, max(floor, math.ceil(s.token_cap_epochs * d_f)))


def _stopping(s: StoppingConfig, d_f: int | None = None, batch_tokens: int = 0) -> StoppingSpec:
    interval = s.eval_interval_tokens
    if s.eval_interval_epochs is not None and d_f is not None:
        interval = min(interval, max(batch_tokens, round(s.eval_interval_epochs * d_f)))
    return StoppingSpec(
        eval_interval_tokens=interval,
        token_cap=token_cap(s, d_f, batch_tokens),
        patience=s.patience,
        min_delta=s.min_delta,
        diverge_factor=s.diverge_factor,
        # D_F unknown until the corpus is read (pre-training): the loop resolves the epochs.
        eval_interval_epochs=s.eval_interval_epochs if d_f is None else None,
    )


def _resources(space: Space, stage: str = "transfer") -> ResourceSpec:
    r = space.resources
    if stage == "pretrain" and space.pretrain and space.pretrain.resources:
        r = space.pretrain.resources
    return ResourceSpec(
        cpus=r.cpus_per_trial,
        gpus=r.gpus_per_trial,
        workers=r.workers_per_trial,
        accelerator_type=r.accelerator_type,
        custom=tuple(sorted(r.custom_resources.items())),
    )


def _execution(space: Space) -> ExecutionSpec:
    e = space.execution
    return ExecutionSpec(
        checkpoint_every_evals=e.checkpoint_every_evals,
        checkpoint_every_s=e.checkpoint_every_s,
        checkpoint_every_tokens=e.checkpoint_every_tokens,
        checkpoint_local_dir=e.checkpoint_local_dir,
        compile=e.compile,
    )


def _data(stage: TrainingConfig, corpus: CorpusSpec, tokenizer: TokenizerSpec, d_f: int | None) -> DataSpec:
    v = stage.validation
    return DataSpec(
        corpus=corpus,
        tokenizer=tokenizer,
        d_f=d_f,
        val_size=v.size,
        val_unit=v.unit,
        split_seed=v.split_seed,
        test_size=v.test_size,
    )


def pretrain_trials(space: Space) -> list[TrialSpec]:
    """One pre-training trial per size. Its key does not depend on which space asked for it."""
    pre: PretrainConfig | None = space.pretrain
    if pre is None:
        return []
    corpus = corpus_spec(pre.corpus, pre.language)
    data = _data(pre, corpus, tokenizer_spec(space, pre.language, corpus), d_f=None)
    return [
        TrialSpec(
            sweep=space.name,
            stage="pretrain",
            language=pre.language,
            init="scratch",
            model=resolve_size(size),
            data=data,
            context=pre.context,
            batch_tokens=pre.batch_tokens,
            micro_batch_tokens=pre.micro_batch_tokens,
            lr=pretrain_lr(pre, size),
            weight_decay=pre.weight_decay,
            schedule=_schedule(pre.schedule, pre.stopping.token_cap, pre.batch_tokens),
            stopping=_stopping(pre.stopping),
            seed=pre.seed,
            resources=_resources(space, "pretrain"),
            execution=_execution(space),
        )
        for size in pre.sizes
    ]


@dataclass(frozen=True)
class Cell:
    """The unit the study reports: (language, size, D_F, init). Its trials sweep LR, schedule and seed."""

    language: str
    size: str
    d_f: int
    init: str


def transfer_sizes(space: Space) -> list[ModelShape]:
    assert space.pretrain is not None and space.transfer is not None
    wanted = space.transfer.sizes
    return [resolve_size(s) for s in space.pretrain.sizes if wanted is None or size_name(s) in wanted]


def transfer_trials(space: Space, lrs: list[float] | None = None) -> list[TrialSpec]:
    """The transfer grid: language x size x D_F x init x lr x schedule x seed, in that order.

    Args:
        space: a validated space.
        lrs: override the LR axis (the Optuna search builds one trial at a time through `cell_trial`).
    """
    tr: TransferConfig | None = space.transfer
    if tr is None:
        return []
    pretrain_keys = {t.model.name: t.key() for t in pretrain_trials(space)}
    trials = []
    for lang, size, d_f, init, lr, sched in itertools.product(
        tr.languages, transfer_sizes(space), tr.d_f, tr.init, lrs or tr.lr, tr.schedules
    ):
        schedule = _schedule(sched, token_cap(tr.stopping, d_f, tr.batch_tokens), tr.batch_tokens)
        for seed in tr.seeds_at(d_f):
            trials.append(_transfer_trial(space, lang, size, d_f, init, lr, schedule, seed, pretrain_keys))
    return trials


def cell_schedule(space: Space, index: int, d_f: int) -> ScheduleSpec:
    """`transfer.schedules[index]` as the trials of a cell with this D_F run it (its warm-up bounded by the cap)."""
    tr = space.transfer
    assert tr is not None
    return _schedule(tr.schedules[index], token_cap(tr.stopping, d_f, tr.batch_tokens), tr.batch_tokens)


def cell_trial(space: Space, cell: Cell, lr: float, schedule: ScheduleSpec, seed: int) -> TrialSpec:
    """One trial of a cell with a sampled LR and schedule (the Optuna search path)."""
    shape = next(s for s in transfer_sizes(space) if s.name == cell.size)
    pretrain_keys = {t.model.name: t.key() for t in pretrain_trials(space)}
    return _transfer_trial(
        space, cell.language, shape, cell.d_f, cell.init, lr, schedule, seed, pretrain_keys
    )


def cells(space: Space) -> list[Cell]:
    if space.transfer is None:
        return []
    tr = space.transfer
    return [
        Cell(lang, size.name, d_f, init)
        for lang, size, d_f, init in itertools.product(tr.languages, transfer_sizes(space), tr.d_f, tr.init)
    ]


def _transfer_trial(
    space: Space,
    lang: str,
    shape: ModelShape,
    d_f: int,
    init: str,
    lr: float,
    schedule: ScheduleSpec,
    seed: int,
    pretrain_keys: dict[str, str],
) -> TrialSpec:
    tr = space.transfer
    assert tr is not None
    corpus = corpus_spec(tr.languages[lang].corpus, lang)
    data = _data(tr, corpus, tokenizer_spec(space, lang, corpus), d_f)
    extra = tuple((name, extra_val_corpus(space, name, c)) for name, c in tr.extra_val.items())
    data = DataSpec(**{**data.__dict__, "extra_val": extra})
    return TrialSpec(
        sweep=space.name,
        stage="transfer",
        language=lang,
        init=init,  # type: ignore[arg-type]
        model=shape,
        data=data,
        context=tr.context,
        batch_tokens=tr.batch_tokens,
        micro_batch_tokens=tr.micro_batch_tokens,
        lr=lr,
        weight_decay=tr.weight_decay,
        schedule=schedule,
        stopping=_stopping(tr.stopping, d_f, tr.batch_tokens),
        seed=seed,
        init_from=pretrain_keys[shape.name] if init == "finetune" else None,
        resources=_resources(space),
        execution=_execution(space),
    )


def extra_val_corpus(space: Space, name: str, corpus: CorpusConfig | str) -> CorpusSpec:
    """An extra validation set's corpus; "pretrain": the pre-training corpus (its held-out documents)."""
    if corpus == "pretrain":
        assert space.pretrain is not None  # validated
        return corpus_spec(space.pretrain.corpus, space.pretrain.language)
    assert isinstance(corpus, CorpusConfig)
    return corpus_spec(corpus, name)


def expand(space: Space) -> list[TrialSpec]:
    """Every trial of the space in a fixed order: pre-training first, then the transfer grid.

    With `search.kind: optuna` the transfer trials are sampled during the sweep; this returns the grid of
    `transfer.lr` x `transfer.schedules`, which that search does not use.
    """
    return pretrain_trials(space) + transfer_trials(space)


def sweep_key(space: Space) -> str:
    """Names the sweep by what it runs: the ordered trial keys (and the search settings)."""
    return content_hash(
        {
            "name": space.name,
            "trials": [t.key() for t in expand(space)],
            "search": search_key_dict(space.search),
        }
    )


# The search settings a sweep key (and an Optuna study's name) hashes, by the trial-key rule (spec.key_dict):
# the fields SearchConfig had when the first keys were written, and any field added since only when it is set.
SEARCH_KEY_FIELDS_V1 = frozenset({"kind", "trials_per_cell", "sampler", "lr_range"})


def search_key_dict(search: SearchConfig, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The search settings that name a sweep (`exclude`: fields that must not, e.g. the Optuna budget)."""
    defaults = search.model_construct()  # every field at its default
    return {
        name: value
        for name, value in search.model_dump().items()
        if name not in exclude and (name in SEARCH_KEY_FIELDS_V1 or value != getattr(defaults, name))
    }


def count_trials(space: Space) -> dict[str, int]:
    """Trials per stage; for the transfer stage the product of the grid axes (or cells x Optuna budget)."""
    n_pre = len(space.pretrain.sizes) if space.pretrain else 0
    if space.transfer is None:
        return {"pretrain": n_pre, "transfer": 0}
    tr = space.transfer
    per_d_f = len(tr.languages) * len(transfer_sizes(space)) * len(tr.init)  # cells at one D_F
    arms = len(tr.lr) * len(tr.schedules)
    if space.search.kind == "optuna":
        n = sum(per_d_f * (space.search.trials_per_cell or 0) for _ in tr.d_f)
    elif space.search.halving is not None:
        # Every arm on the cell's first seed, then the winning arm alone on the other seeds.
        n = sum(per_d_f * (arms + len(tr.seeds_at(d)) - 1) for d in tr.d_f)
    else:
        n = sum(per_d_f * arms * len(tr.seeds_at(d)) for d in tr.d_f)
    return {"pretrain": n_pre, "transfer": n}
