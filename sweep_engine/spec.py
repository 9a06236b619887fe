"""The resolved, plain-data description of one trial, and what a trial returns.

`config.py` validates a search-space file; `space.expand()` turns it into a list of `TrialSpec`s. Everything
downstream (data, training loop, sweep, tracking, ledger) speaks only these frozen dataclasses, so the middle
of the engine never sees YAML or pydantic. A spec's `key()` is a hash of its canonical JSON: the same spec
always names the same checkpoint directory, ledger row and MLflow run (no timestamps anywhere). Which fields
enter that hash follows one written rule (`key_dict`, and docs/architecture.md, "What changes a trial key").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

# The status of a trial's run, in the ledger, in MLflow and in the driver (MLflow's own words for them).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
TERMINAL = (FINISHED, FAILED, KILLED)

Stage = Literal["pretrain", "transfer"]
Init = Literal["scratch", "finetune"]
# pruned: the sweep stopped a losing LR/schedule arm early (sweep/halving.py); its result is what it had then.
StopReason = Literal["overfit", "budget", "diverged", "plateau", "pruned"]
FailureReason = Literal["oom", "diverged", "config", "crash"]


CorpusKind = Literal["builtin", "path", "hf"]
CORPUS_KINDS: tuple[CorpusKind, ...] = ("builtin", "path", "hf")
# The words trial keys and data caches were first written with; they keep them, so that renaming the kinds to
# the space file's words (`builtin`, `path`, `hf`) moved no key and rebuilt no cache. A kind added later is
# written as itself.
CORPUS_KIND_IN_KEYS = {"builtin": "bible", "path": "text"}


def kind_in_keys(kind: str) -> str:
    """How a corpus kind is written in trial keys and cache names."""
    return CORPUS_KIND_IN_KEYS.get(kind, kind)


@dataclass(frozen=True)
class CorpusSpec:
    """Where a language's text comes from; `kind` is the space file's key that named the source.

    kind "builtin": the built-in verse-aligned parallel Bible (see sweep_engine.data.corpora).
    kind "path": a local .txt (one document per blank-line-separated paragraph), .jsonl, .json (an array of
    objects, or one object per line) or .parquet file.
    kind "hf": a Hugging Face dataset name loaded through `datasets` (streamed), at `revision` when given.
    """

    kind: CorpusKind
    language: str  # ISO 639-1 code: en, zh, es, de, ...
    translations: tuple[str, ...] = ()  # builtin: translation ids, e.g. ("web", "kjv", "bbe")
    part: Literal["ot", "nt", "all"] = "all"  # builtin: Old Testament, New Testament or both
    path: str | None = None  # path: local file
    name: str | None = None  # hf: dataset name
    config: str | None = None  # hf: dataset config
    split: str = "train"  # hf: split
    text_field: str = "text"  # jsonl / parquet / hf: column holding the text
    max_chars: int | None = None  # read at most this many characters (large corpora)
    simplified: bool = False  # zh: convert Traditional to Simplified characters
    revision: str | None = None  # hf: the dataset's commit (or tag) to read; None = its default branch


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer a trial uses. kind "bpe" trains a byte-level BPE on `corpus`; "files" loads GPT-2 style
    vocab.json / merges.txt."""

    kind: Literal["bpe", "files"]
    vocab_size: int = 4096
    corpus: CorpusSpec | None = None  # bpe: the corpus it is trained on
    vocab_file: str | None = None
    merges_file: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """The data of one trial: training text, tokenizer, exact training-set size, validation sets."""

    corpus: CorpusSpec
    tokenizer: TokenizerSpec
    d_f: int | None  # exact number of unique training tokens; None = the whole corpus (pre-training)
    val_size: int  # validation set size, in `val_unit`
    val_unit: Literal["docs", "tokens"] = "docs"  # docs = verses for the Bible (same ids in every language)
    split_seed: int = 0  # seeds the document order that fixes validation set and nested subsets
    extra_val: tuple[tuple[str, CorpusSpec], ...] = ()  # named extra validation sets, e.g. (("en", ...),)
    # Held-out test documents (in `val_unit`), disjoint from validation and the same ids in every language:
    # validation chooses the best step and configuration, test gives the losses the analysis reports. 0 = none.
    test_size: int = 0


@dataclass(frozen=True)
class ModelShape:
    """A GPT-2 shape. n_head = max(2, d_model // 64), d_ff = 4 d_model; vocab and context come from the data."""

    name: str
    n_layer: int
    d_model: int


@dataclass(frozen=True)
class ScheduleSpec:
    """Linear warm-up, then decay to `decay_floor` x peak LR at the end of the token budget."""

    kind: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    decay_floor: float = 0.1


@dataclass(frozen=True)
class StoppingSpec:
    """When a run ends: at the overfitting point, at the token cap, or on divergence."""

    eval_interval_tokens: int
    token_cap: int  # also the horizon of the LR schedule
    patience: int = 3  # evaluations without an improvement of at least min_delta
    min_delta: float = 0.0
    diverge_factor: float = 1.5  # loss above this multiple of the first evaluation = diverged
    # Pre-training (D_F unknown until the corpus is read): evaluate at least every this many epochs of the
    # training sequence, resolved by the loop. Transfer trials fold their epochs into eval_interval_tokens.
    eval_interval_epochs: float | None = None


@dataclass(frozen=True)
class ResourceSpec:
    cpus: float = 1.0
    gpus: float = 0.0
    workers: int = 1  # > 1: Ray Train TorchTrainer with DDP
    accelerator_type: str | None = None  # Ray's accelerator type of the GPU to run on ("A100", "H100", ...)
    custom: tuple[tuple[str, float], ...] = ()  # custom Ray resources per worker, e.g. (("p4d", 1.0),)


@dataclass(frozen=True)
class ExecutionSpec:
    """How a run is carried out without changing what it computes (never part of a trial key).

    A state.pt is written at an evaluation when any set cadence is due: every `checkpoint_every_evals`
    evaluations, `checkpoint_every_s` seconds or `checkpoint_every_tokens` training tokens since the last one.
    With `checkpoint_local_dir`, it is written there first and moved to the workdir (shared storage) by a
    background thread while training goes on. `compile`: "auto" (torch.compile on CUDA), "off", or a
    torch.compile backend ("inductor", "aot_eager", ...) to use on any device.
    """

    checkpoint_every_evals: int | None = 1
    checkpoint_every_s: float | None = None
    checkpoint_every_tokens: int | None = None
    checkpoint_local_dir: str | None = None
    compile: str = "auto"


@dataclass(frozen=True)
class TrialSpec:
    """One training run, fully resolved."""

    sweep: str  # the space's name
    stage: Stage
    language: str
    init: Init
    model: ModelShape
    data: DataSpec
    context: int
    batch_tokens: int  # tokens per optimizer step (all workers, all micro-batches)
    lr: float
    schedule: ScheduleSpec
    stopping: StoppingSpec
    seed: int = 0
    weight_decay: float = 0.1
    micro_batch_tokens: int | None = None  # None = whole batch at once; else gradient accumulation
    init_from: str | None = None  # finetune: trial_key of the pre-training trial of the same size
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrialSpec:
        return _trial_spec_from_dict(d)

    def key(self) -> str:
        """Hash of everything that changes the result (`key_dict`). The sweep's name and the resources are left
        out: the same run asked for by two spaces (the shared English pre-training) is one run, wherever it is
        placed."""
        return content_hash(key_dict(self))


def content_hash(obj: Any, length: int = 12) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace); the first `length` hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ------------------------------------------------------------------------------------------------ trial keys

# The rule: a spec's key is the hash of its key dict, which holds
#   - every field of KEY_FIELDS_V1, the fields each spec had when the first keys were written (2c1c91b), and
#   - any other field only when its value differs from the field's default,
# recursively, minus NOT_IN_KEY. So adding a field with a default that keeps today's behaviour leaves every key
# (every finished result, checkpoint and MLflow run) where it was, and the runs that set it are new runs.
KEY_FIELDS_V1: dict[str, frozenset[str]] = {
    "TrialSpec": frozenset(
        [
            "sweep",
            "stage",
            "language",
            "init",
            "model",
            "data",
            "context",
            "batch_tokens",
            "lr",
            "schedule",
            "stopping",
            "seed",
            "weight_decay",
            "micro_batch_tokens",
            "init_from",
            "resources",
        ]
    ),
    "CorpusSpec": frozenset(
        [
            "kind",
            "language",
            "translations",
            "part",
            "path",
            "name",
            "config",
            "split",
            "text_field",
            "max_chars",
            "simplified",
        ]
    ),
    "TokenizerSpec": frozenset(["kind", "vocab_size", "corpus", "vocab_file", "merges_file"]),
    "DataSpec": frozenset(["corpus", "tokenizer", "d_f", "val_size", "val_unit", "split_seed", "extra_val"]),
    "ModelShape": frozenset(["name", "n_layer", "d_model"]),
    "ScheduleSpec": frozenset(["kind", "warmup_steps", "decay_floor"]),
    "StoppingSpec": frozenset(
        ["eval_interval_tokens", "token_cap", "patience", "min_delta", "diverge_factor"]
    ),
    "ResourceSpec": frozenset(["cpus", "gpus", "workers"]),
}
# Where and how a run is carried out, not what it computes.
NOT_IN_KEY = {"TrialSpec": frozenset({"sweep", "resources", "execution"})}


def key_dict(obj: Any) -> Any:
    """The part of a spec (or of any value inside one) that its key hashes; see the rule above.

    Tuples become lists (as in JSON), and a corpus kind is written in the words keys were first written with.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        v1, skip = KEY_FIELDS_V1.get(name, frozenset()), NOT_IN_KEY.get(name, frozenset())
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in skip or (f.name not in v1 and _is_default(f, value)):
                continue
            out[f.name] = key_dict(value)
        if isinstance(obj, CorpusSpec):
            out["kind"] = kind_in_keys(obj.kind)
        return out
    if isinstance(obj, (list, tuple)):
        return [key_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: key_dict(v) for k, v in obj.items()}
    return obj


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(value == f.default_factory())
    return False  # a field without a default is always part of what a run computes


def same_tokenizer(a: TokenizerSpec | dict[str, Any], b: TokenizerSpec | dict[str, Any]) -> bool:
    """Whether two tokenizer specs (or their dicts, e.g. from an older checkpoint's trial_spec.json) name the
    same tokenizer, by the trial-key rule: a field added since, at its default, is no difference."""

    def spec(t: TokenizerSpec | dict[str, Any]) -> TokenizerSpec:
        return t if isinstance(t, TokenizerSpec) else _tokenizer(t)

    return bool(key_dict(spec(a)) == key_dict(spec(b)))


# Corpus kinds as written before they took the space file's words (a trial_spec.json of an older checkpoint).
_KIND_FROM_OLD_WORDS = {old: new for new, old in CORPUS_KIND_IN_KEYS.items()}


def _corpus(d: dict[str, Any]) -> CorpusSpec:
    kind = _KIND_FROM_OLD_WORDS.get(d["kind"], d["kind"])
    return CorpusSpec(**{**d, "kind": kind, "translations": tuple(d.get("translations", ()))})


def _tokenizer(d: dict[str, Any]) -> TokenizerSpec:
    return TokenizerSpec(**{**d, "corpus": _corpus(d["corpus"]) if d.get("corpus") else None})


def _trial_spec_from_dict(d: dict[str, Any]) -> TrialSpec:
    data = dict(d["data"])
    data["tokenizer"] = _tokenizer(data["tokenizer"])
    data["corpus"] = _corpus(data["corpus"])
    data["extra_val"] = tuple((name, _corpus(c)) for name, c in data.get("extra_val", ()))
    return TrialSpec(
        **{
            **d,
            "model": ModelShape(**d["model"]),
            "data": DataSpec(**data),
            "schedule": ScheduleSpec(**d["schedule"]),
            "stopping": StoppingSpec(**d["stopping"]),
            "resources": _resources(d.get("resources", {})),
            "execution": ExecutionSpec(**d.get("execution", {})),
        }
    )


def _resources(d: dict[str, Any]) -> ResourceSpec:
    custom = tuple((str(k), float(v)) for k, v in d.get("custom", ()))
    return ResourceSpec(**{**d, "custom": custom})


@dataclass
class DocIndex:
    """The documents of a held-out token array, so that a run can record its loss on each of them.

    Attributes:
        keys: [J] each document's hold-out key (a verse id: the same document in every language).
        of_target: [n - 1] the document of each predicted position 1..n-1 of the array.
        chars: [J] characters per document (separators included).
    """

    keys: np.ndarray
    of_target: np.ndarray
    chars: np.ndarray

    @property
    def tokens(self) -> np.ndarray:
        """[J] predicted tokens per document."""
        return np.bincount(self.of_target, minlength=len(self.keys))

    def to_json(self, loss_sums: Sequence[float] | np.ndarray) -> dict[str, list[Any]]:
        """The ledger's per-document record of one split: keys, tokens, characters and summed loss (nats)."""
        return {
            "keys": [int(k) for k in self.keys],
            "tokens": [int(t) for t in self.tokens],
            "chars": [int(c) for c in self.chars],
            "loss": [round(float(v), 6) for v in loss_sums],
        }


@dataclass
class TrialData:
    """Token arrays one trial trains and evaluates on (built by sweep_engine.data.load_trial_data, which maps
    them from token files: nothing is read until a batch or an evaluation gathers it)."""

    train: np.ndarray  # exactly d_f token ids (uint16 or int32), in the nested-subset order
    val: np.ndarray  # the fixed validation set of the trial's language
    vocab_size: int
    train_chars: int = 0  # characters behind `train` (for D in characters)
    val_chars: int = 0  # characters behind `val` (for bits per character)
    extra_val: dict[str, np.ndarray] = field(default_factory=dict)
    extra_val_chars: dict[str, int] = field(default_factory=dict)
    test: np.ndarray | None = None  # the held-out test set (DataSpec.test_size > 0)
    test_chars: int = 0
    val_docs: DocIndex | None = None  # per-document index of `val` (None: record no per-document losses)
    test_docs: DocIndex | None = None
    # (smallest, largest) id of each set ("train", "val", "test", extra names), recorded when its file was
    # written; a set without one is scanned (small in-memory arrays in tests).
    id_range: dict[str, tuple[int, int]] = field(default_factory=dict)
    tokenizer_file: str | None = None  # the tokenizer (tokenizers' JSON), saved beside every best model


@dataclass
class EvalPoint:
    """One evaluation on the validation curve."""

    tokens: int  # training tokens seen so far
    step: int
    val_loss: float
    train_loss: float | None = None
    lr: float | None = None
    extra_val_loss: dict[str, float] = field(default_factory=dict)


@dataclass
class TrialResult:
    """Everything one finished run records (its columns of the ledger: docs/ledger.md)."""

    n_params: int  # exact non-embedding parameters
    n_params_estimate: int  # 12 n_layer d_model^2
    d_f: int  # unique training tokens
    d_f_chars: int
    best_val_loss: float
    tokens_at_best: int
    tokens_seen: int
    steps: int
    flops: float  # 6 N tokens_seen
    stop_reason: StopReason
    wall_s: float
    tokens_per_s: float
    val_tokens_per_char: float  # tokens per character of the validation text
    curve: list[EvalPoint]
    zero_shot_loss: float | None = None  # finetune: before the first step
    best_extra_val_loss: dict[str, float] = field(default_factory=dict)  # at the best step
    zero_shot_extra_val_loss: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "reinit_embeddings: ..." when vocabularies differ
    test_loss: float | None = None  # loss on the test split with the best step's weights (nats per token)
    test_tokens_per_char: float = 0.0
    # At the best step, per held-out document: {"val": DocIndex.to_json(...), "test": ...} (docs/ledger.md).
    doc_losses: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    train_s: float = 0.0  # seconds of training steps, over all sessions
    eval_s: float = 0.0  # seconds of evaluation (zero-shot, every interval, the final best-weights sets)
    checkpoint_s: float = 0.0  # seconds the training loop waited on state.pt and best/ writes
    mfu: float | None = None  # model-FLOPs utilisation of the training steps (GPUs with a known peak)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrialResult:
        """Rebuild a TrialResult from `to_dict()` output (e.g. a trial's result.json)."""
        return TrialResult(**{**d, "curve": [EvalPoint(**p) for p in d["curve"]]})


RESULT_FILE = "result.json"  # in a trial's workdir: present = the trial finished
PRUNE_FILE = "PRUNE"  # in a running trial's workdir: the sweep asks it to stop after its next evaluation


def request_prune(workdir: str | Path, why: str) -> None:
    """Ask a running trial to stop as `pruned` (the training loop reads this after each evaluation)."""
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / PRUNE_FILE).write_text(why + "\n")


def prune_requested(workdir: str | Path) -> bool:
    return (Path(workdir) / PRUNE_FILE).exists()


def read_result(workdir: str | Path) -> TrialResult | None:
    """The finished result in workdir/result.json, or None when the trial has not finished.

    Kept here, away from torch, so that the sweep driver can read results without importing it.
    """
    path = Path(workdir) / RESULT_FILE
    if not path.exists():
        return None
    return TrialResult.from_dict(json.loads(path.read_text()))


class Reporter(Protocol):
    """How the training loop talks to the outside world (Ray Tune, MLflow, or a list in a test).

    `report` is called after every evaluation with the metrics so far; `checkpoint_dir`, when given, is a
    directory holding the resumable state just written (the sweep layer may hand it to Ray).
    """

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None: ...


class ListReporter:
    """A Reporter that keeps every report in memory (tests, plain runs)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, float]] = []
        self.checkpoints: list[str | None] = []

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        self.checkpoints.append(checkpoint_dir)
