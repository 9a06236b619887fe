"""The search-space schema: a YAML file in, a validated `Space` out, every error reported at once.

Errors name the file, the dotted path of the field, the rule, and the value given, one line each, e.g.
`german.yaml: transfer.d_f[2]: must be a positive integer, got -5`. Command-line overrides (`key=value`) are
validated by the same schema, so their errors read the same. Loading writes nothing and starts nothing.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweep_engine.errors import ConfigError
from sweep_engine.shapes import SIZES
from sweep_engine.spec import CORPUS_KINDS, CorpusKind, ModelShape
from sweep_engine.tracking import default_uri

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
LANGUAGE_CODE = re.compile(r"^[a-z]{2}$")  # ISO 639-1


class Strict(BaseModel):
    """Unknown keys are errors at every depth; a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(Strict):
    """Exactly one source: `builtin` (the parallel Bible), `path` (local .txt/.jsonl/.json/.parquet) or `hf`.
    `revision` pins a Hugging Face dataset to a commit (its cache key and trial keys then name it)."""

    builtin: Literal["bible"] | None = None
    translations: list[str] = []
    part: Literal["ot", "nt", "all"] = "all"
    path: str | None = None
    hf: str | None = None
    hf_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    max_chars: PosInt | None = None
    simplified: bool = False
    revision: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CorpusConfig:
        given = [k for k in CORPUS_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of {', '.join(CORPUS_KINDS)} must be given, got {given or 'none'}")
        if self.revision is not None and self.hf is None:
            raise ValueError(
                f"revision pins a Hugging Face dataset: it needs hf, got revision {self.revision!r}"
            )
        return self

    @property
    def kind(self) -> CorpusKind:
        """The source named: builtin, path or hf (CorpusSpec.kind)."""
        return next(k for k in CORPUS_KINDS if getattr(self, k) is not None)


class SizeConfig(Strict):
    name: str
    n_layer: PosInt
    d_model: Annotated[int, Field(gt=0, multiple_of=64)]


SizeEntry = str | SizeConfig


class ScheduleConfig(Strict):
    """Linear warm-up over `warmup_steps`, then decay to `decay_floor` x peak at the token cap. With a cap that
    follows D_F, `warmup_max_fraction` keeps the warm-up of a short run to that fraction of its steps."""

    kind: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: NonNegInt = 0
    decay_floor: Fraction = 0.1
    warmup_max_fraction: Annotated[float, Field(gt=0, le=1)] | None = None


class StoppingConfig(Strict):
    """Evaluate every `eval_interval_tokens`; stop after `patience` evaluations without an improvement of at
    least `min_delta`, at the token cap (also the LR schedule's horizon), or on divergence.

    The cap is `token_cap`, or, with `token_cap_epochs`, that many epochs of the cell's D_F, at least
    `token_cap_min` and at most `token_cap` (a budget that follows the data: a fixed cap is either far too long
    for D_F 8K or far too short for D_F 500M). `overfit_epochs` is the assumption `validate` checks caps
    against (budgets.py): a cell is expected to reach its overfitting point within that many epochs."""

    eval_interval_tokens: PosInt
    token_cap: PosInt
    patience: PosInt = 3
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    diverge_factor: Annotated[float, Field(gt=1)] = 1.5
    # Evaluate at least every this many epochs of the D_F tokens (never more often than once a step): a run on
    # 1,000 tokens overfits within a few dozen epochs, long before a fixed interval sized for the largest D_F.
    eval_interval_epochs: PosFloat | None = None
    token_cap_epochs: PosFloat | None = None
    token_cap_min: PosInt | None = None
    overfit_epochs: PosFloat = 16.0

    @model_validator(mode="after")
    def _cap_range(self) -> StoppingConfig:
        if self.token_cap_min is not None and self.token_cap_min > self.token_cap:
            raise ValueError(
                f"token_cap_min must be <= token_cap, got (token_cap_min={self.token_cap_min}, "
                f"token_cap={self.token_cap})"
            )
        if self.token_cap_min is not None and self.token_cap_epochs is None:
            raise ValueError("token_cap_min bounds a cap that follows D_F: it needs token_cap_epochs")
        return self


class ValidationConfig(Strict):
    """The fixed held-out sets: `size` validation documents (verses for the Bible, the same ids in every
    language) or tokens, and `test_size` test documents (or tokens) beside them. Validation picks the best step
    and configuration; the analysis reports test losses. test_size 0 (the default, which keeps the trial keys
    of spaces written before test splits existed) reports validation losses and says so."""

    size: PosInt = 2000
    unit: Literal["docs", "tokens"] = "docs"
    split_seed: NonNegInt = 0
    test_size: NonNegInt = 0


class TokenizerConfig(Strict):
    """`bpe`: a byte-level BPE trained on `corpus` (default: the pre-training corpus), shared by every language
    as in the seed study. `per_language`: one BPE per language, trained on that language's corpus (fine-tuning
    then re-initialises the embeddings). `files`: GPT-2 style vocab.json + merges.txt."""

    kind: Literal["bpe", "per_language", "files"] = "bpe"
    vocab_size: Annotated[int, Field(ge=257, le=1_000_000)] = 4096  # 256 bytes + end-of-text
    corpus: CorpusConfig | None = None
    vocab_file: str | None = None
    merges_file: str | None = None

    @model_validator(mode="after")
    def _files_given(self) -> TokenizerConfig:
        if self.kind == "files" and not (self.vocab_file and self.merges_file):
            raise ValueError("kind 'files' needs both vocab_file and merges_file")
        return self


class TrainingConfig(Strict):
    """What every run of a stage shares."""

    batch_tokens: PosInt
    micro_batch_tokens: PosInt | None = None
    context: PosInt
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    stopping: StoppingConfig
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _batch_fits_context(self) -> TrainingConfig:
        for name in ("batch_tokens", "micro_batch_tokens"):
            value = getattr(self, name)
            if value is not None and value % self.context:
                raise ValueError(f"{name} must be a multiple of context ({self.context}), got {value}")
        if self.micro_batch_tokens and self.batch_tokens % self.micro_batch_tokens:
            raise ValueError(
                f"batch_tokens must be a multiple of micro_batch_tokens, got "
                f"(batch_tokens={self.batch_tokens}, micro_batch_tokens={self.micro_batch_tokens})"
            )
        return self


class ResourcesConfig(Strict):
    """Per worker: CPUs, GPUs (fractions share a GPU), a GPU type (`accelerator_type`: Ray's name, e.g. "A100",
    "H100", "A10G"; trials then run only on such nodes) and custom Ray resources (e.g. {p4d: 1}, a node type
    the cluster file declares)."""

    cpus_per_trial: PosFloat = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0)] = 0.0  # per worker; fractions share a GPU
    workers_per_trial: PosInt = 1  # > 1: DDP through Ray Train
    max_concurrent_trials: PosInt | None = None  # default: what the cluster holds
    max_retries: NonNegInt = 2  # for transient failures (a lost worker or node)
    accelerator_type: Annotated[str, Field(min_length=1)] | None = None
    custom_resources: dict[str, PosFloat] = {}

    @model_validator(mode="after")
    def _whole_gpus_when_above_one(self) -> ResourcesConfig:
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise ValueError(f"gpus_per_trial above 1 must be a whole number, got {self.gpus_per_trial}")
        return self


class PretrainConfig(TrainingConfig):
    """`lr`: one peak LR, or one per size ({size name: LR}; smaller models take larger LRs, e.g. Kaplan et al.
    2020, eq. D.1)."""

    language: str = "en"
    corpus: CorpusConfig
    sizes: Annotated[list[SizeEntry], Field(min_length=1)]
    lr: PosFloat | dict[str, PosFloat]
    schedule: ScheduleConfig = ScheduleConfig(warmup_steps=500)
    seed: NonNegInt = 0
    resources: ResourcesConfig | None = None  # default: the space's; kept by `pretrain_from`


class LanguageConfig(Strict):
    corpus: CorpusConfig


class TransferConfig(TrainingConfig):
    languages: Annotated[dict[str, LanguageConfig], Field(min_length=1)]
    sizes: list[str] | None = None  # a subset of the pre-training sizes, by name; default all
    d_f: Annotated[list[PosInt], Field(min_length=1)]
    init: Annotated[list[Literal["scratch", "finetune"]], Field(min_length=1)] = ["scratch", "finetune"]
    lr: Annotated[list[PosFloat], Field(min_length=1)]
    schedules: Annotated[list[ScheduleConfig], Field(min_length=1)] = [ScheduleConfig(warmup_steps=300)]
    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = [0]
    # More (or other) seeds at some D_F: {250: [0, 1, 2]}. Where the gap to scratch is smallest against the
    # run-to-run noise, a third seed narrows its interval most.
    seeds_by_d_f: dict[PosInt, Annotated[list[NonNegInt], Field(min_length=1)]] = {}
    # e.g. {en: ...}: English loss after fine-tuning (forgetting). `pretrain` names the pre-training corpus: its
    # validation set is then a subset of the pre-training's held-out documents (checked), never training text.
    extra_val: dict[str, CorpusConfig | Literal["pretrain"]] = {}

    @field_validator("d_f", "lr", "init", "seeds")
    @classmethod
    def _unique(cls, values: list[Any]) -> list[Any]:
        dupes = sorted({v for v in values if values.count(v) > 1}, key=str)
        if dupes:
            raise ValueError(f"values must be unique, got duplicates {dupes}")
        return values

    @model_validator(mode="after")
    def _seeds_at_listed_d_f(self) -> TransferConfig:
        unknown = sorted(set(self.seeds_by_d_f) - set(self.d_f))
        if unknown:
            raise ValueError(f"seeds_by_d_f keys must be values of d_f {self.d_f}, got {unknown}")
        for d_f, seeds in self.seeds_by_d_f.items():
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds_by_d_f[{d_f}] must be unique, got {seeds}")
        return self

    def seeds_at(self, d_f: int) -> list[int]:
        """The seeds of the cells at this D_F."""
        return self.seeds_by_d_f.get(d_f, self.seeds)


class ExecutionConfig(Strict):
    """How trials are carried out, without changing what they compute (not part of any trial key): when state.pt
    is written (at an evaluation, once any cadence set is due), where it is written first, and torch.compile
    ("auto": on CUDA only; "off"; or a backend name such as "inductor")."""

    checkpoint_every_evals: PosInt | None = 1
    checkpoint_every_s: PosFloat | None = None
    checkpoint_every_tokens: PosInt | None = None
    checkpoint_local_dir: str | None = None
    compile: Annotated[str, Field(min_length=1)] = "auto"


class TrackingConfig(Strict):
    uri: str | None = None  # default: sqlite:///<storage>/mlflow.db
    experiment: str | None = None  # default: the space's name


class HalvingConfig(Strict):
    """Successive halving between a cell's LR/schedule arms (sweep/halving.py): compare the arms of the cell's
    first seed after `first_rung`, first_rung x eta, ... evaluations, keep the best 1/eta, stop the rest; the
    cell's other seeds then run the winning arm only."""

    eta: Annotated[int, Field(ge=2)] = 2
    first_rung: PosInt = 2


class SearchConfig(Strict):
    """How a cell's LR/schedule is searched: the full grid (optionally halving its arms), or an Optuna sampler
    with a budget per cell over a log-uniform LR range and the listed schedules."""

    kind: Literal["grid", "optuna"] = "grid"
    trials_per_cell: PosInt | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    lr_range: tuple[PosFloat, PosFloat] | None = None
    halving: HalvingConfig | None = None

    @model_validator(mode="after")
    def _optuna_needs_budget(self) -> SearchConfig:
        if self.kind == "optuna" and (self.trials_per_cell is None or self.lr_range is None):
            raise ValueError("kind 'optuna' needs trials_per_cell and lr_range")
        if self.kind == "optuna" and self.halving is not None:
            raise ValueError("halving applies to kind 'grid' (an Optuna search chooses its own arms)")
        if self.lr_range and self.lr_range[0] >= self.lr_range[1]:
            raise ValueError(f"lr_range must be [low, high] with low < high, got {list(self.lr_range)}")
        return self


class AnalysisConfig(Strict):
    """What `analyze` fits for this space (analysis/pipeline.py, AnalysisOptions): `laws` kaplan / chinchilla
    = the joint forms the regimes choose between, transfer = the transfer law, power / rectified = a pure law
    beside each scratch curve, overtrain = Gadre et al.'s L(C, M); `holdout_largest` = the hold-out check;
    `bootstrap` replicates and their `seed`."""

    laws: list[Literal["chinchilla", "kaplan", "power", "rectified", "overtrain", "transfer"]] = [
        "kaplan",
        "chinchilla",
        "transfer",
    ]
    bootstrap: NonNegInt = 200
    holdout_largest: bool = True
    seed: NonNegInt = 0


class Space(Strict):
    """One search-space file. `pretrain_from` names another space file (relative to this one) whose
    pre-training stage and tokenizer this space reuses, so several languages share one English pre-training."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    storage: str = "results"
    tracking: TrackingConfig = TrackingConfig()
    resources: ResourcesConfig = ResourcesConfig()
    execution: ExecutionConfig = ExecutionConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    pretrain_from: str | None = None
    pretrain: PretrainConfig | None = None
    transfer: TransferConfig | None = None
    search: SearchConfig = SearchConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    source: Path | None = Field(default=None, exclude=True)  # the file it was loaded from (set by load_space)

    @model_validator(mode="after")
    def _stages_consistent(self) -> Space:
        problems = []
        if self.pretrain is None and self.transfer is None:
            problems.append("at least one of pretrain, transfer (or pretrain_from) must be given")
        if self.pretrain:
            problems += _check_sizes(self.pretrain.sizes)
            problems += _check_pretrain(self.pretrain)
            if not LANGUAGE_CODE.match(self.pretrain.language):
                problems.append(
                    f"pretrain.language: must be an ISO 639-1 code, got {self.pretrain.language!r}"
                )
        if self.transfer:
            problems += _check_transfer(self.transfer, self.pretrain)
            if self.transfer.seeds_by_d_f and self.search.kind == "optuna":
                problems.append("transfer.seeds_by_d_f: applies to search kind 'grid', not 'optuna'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # Where things live: one results root holds every sweep, so checkpoints and caches are shared by content.
    @property
    def storage_dir(self) -> Path:
        return Path(self.storage)

    @property
    def results_dir(self) -> Path:
        return self.storage_dir / self.name

    @property
    def cache_dir(self) -> Path:
        return self.storage_dir / "cache"

    @property
    def checkpoints_dir(self) -> Path:
        return self.storage_dir / "checkpoints"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or default_uri(self.storage_dir)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name


def _check_sizes(sizes: list[SizeEntry]) -> list[str]:
    problems, names = [], []
    for i, size in enumerate(sizes):
        if isinstance(size, str):
            if size not in SIZES:
                problems.append(
                    f"pretrain.sizes[{i}]: must be a named size ({', '.join(SIZES)}), got {size!r}"
                )
            names.append(size)
        else:
            names.append(size.name)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"pretrain.sizes: names must be unique, got duplicates {dupes}")
    return problems


def _check_pretrain(pretrain: PretrainConfig) -> list[str]:
    problems = []
    if isinstance(pretrain.lr, dict):
        names = [size_name(s) for s in pretrain.sizes]
        if sorted(pretrain.lr) != sorted(names):
            problems.append(
                f"pretrain.lr: a mapping must give one LR for every size and no other, expected {names}, "
                f"got {sorted(pretrain.lr)}"
            )
    if pretrain.stopping.token_cap_epochs is not None:
        problems.append(
            "pretrain.stopping.token_cap_epochs: pre-training has no D_F (it reads its whole corpus); "
            "give its token_cap alone"
        )
    return problems


def pretrain_lr(pretrain: PretrainConfig, size: SizeEntry) -> float:
    """The peak LR of one pre-training size."""
    return pretrain.lr[size_name(size)] if isinstance(pretrain.lr, dict) else pretrain.lr


def _check_transfer(transfer: TransferConfig, pretrain: PretrainConfig | None) -> list[str]:
    problems = [
        f"transfer.languages.{code}: key must be an ISO 639-1 code (two lowercase letters), got {code!r}"
        for code in transfer.languages
        if not LANGUAGE_CODE.match(code)
    ]
    if pretrain is None:
        problems.append("transfer: needs a pretrain stage (pretrain or pretrain_from) for its model sizes")
        return problems
    known = [size_name(s) for s in pretrain.sizes]
    for i, name in enumerate(transfer.sizes or []):
        if name not in known:
            problems.append(f"transfer.sizes[{i}]: must be one of the pretrain sizes {known}, got {name!r}")
    if "finetune" in transfer.init and transfer.context != pretrain.context:
        problems.append(
            f"transfer.context: fine-tuning needs the pre-training context ({pretrain.context}), "
            f"got {transfer.context}"
        )
    tv, pv = transfer.validation, pretrain.validation
    for name, corpus in transfer.extra_val.items():
        if corpus != "pretrain":
            continue
        # The forgetting set must be held out of pre-training: the same corpus split by the same rule, with a
        # validation prefix no larger than pre-training's (validation keys are a prefix of one permutation).
        if name != pretrain.language:
            problems.append(
                f"transfer.extra_val.{name}: 'pretrain' names the {pretrain.language!r} pre-training corpus, so "
                f"its key must be {pretrain.language!r}"
            )
        if (tv.unit, tv.split_seed) != (pv.unit, pv.split_seed) or tv.size > pv.size:
            problems.append(
                f"transfer.extra_val.{name}: the pre-training held-out split is reused only with the same "
                f"validation unit and split_seed and a size no larger than pre-training's, got transfer "
                f"(unit={tv.unit}, split_seed={tv.split_seed}, size={tv.size}) and pretrain "
                f"(unit={pv.unit}, split_seed={pv.split_seed}, size={pv.size})"
            )
    return problems


def size_name(size: SizeEntry) -> str:
    return size if isinstance(size, str) else size.name


def resolve_size(size: SizeEntry) -> ModelShape:
    if isinstance(size, str):
        return SIZES[size]
    return ModelShape(name=size.name, n_layer=size.n_layer, d_model=size.d_model)


# --------------------------------------------------------------------------------------------- loading


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> Space:
    """Read, validate and resolve one search-space file, with command-line overrides applied.

    Args:
        path: The space file.
        overrides: `dotted.key=value` settings (Hydra / OmegaConf style, the value read as YAML), applied after
            `pretrain_from` and validated with the rest, e.g. `transfer.lr=[1e-3]`.

    Raises:
        ConfigError: the file is missing, empty, not YAML, an override is malformed, or the result breaks any
            rule; the message lists every problem, one per line, as `<file>: <dotted.path>: <rule>`.
    """
    path = Path(path)
    raw = _read_yaml(path)
    problems: list[str] = []
    base = raw.get("pretrain_from")
    if base is not None:
        raw = _merge_pretrain_from(raw, path, problems)
    raw = apply_overrides(raw, overrides, problems)
    try:
        space = Space.model_validate(raw)
    except ValidationError as exc:
        problems += format_validation_error(exc)
        raise ConfigError(_lines(path, problems)) from None
    if problems:
        raise ConfigError(_lines(path, problems))
    return resolve_paths(space, path.parent).model_copy(update={"source": path})


def _absolute(value: str, base: Path) -> str:
    """`value` (with `~` expanded) made absolute against `base`; an absolute path is kept as written."""
    expanded = Path(os.path.expanduser(value))
    return value if expanded.is_absolute() else os.path.normpath(base.absolute() / expanded)


def resolve_paths(space: Space, base: Path) -> Space:
    """Every relative path of a space read against `base`, the directory of its file: `storage`, each corpus
    `path` and the tokenizer's files. So a space means the same files from any working directory (a
    `ray job submit` driver runs in a directory of Ray's choosing), and a trial's spec names a file by its
    absolute path, which is what enters its key (two spaces with `path: de.jsonl` in two directories name two
    corpora)."""
    data = space.model_dump()
    data["storage"] = _absolute(data["storage"], base)
    corpora = [data["tokenizer"].get("corpus")]
    for stage in ("pretrain", "transfer"):
        if data.get(stage):
            corpora.append(data[stage].get("corpus"))
    if data.get("transfer"):
        corpora += [lang["corpus"] for lang in data["transfer"]["languages"].values()]
        corpora += list(data["transfer"]["extra_val"].values())
    for corpus in corpora:
        if isinstance(corpus, dict) and corpus.get("path"):  # not "pretrain" (extra_val's name for it)
            corpus["path"] = _absolute(corpus["path"], base)
    for key in ("vocab_file", "merges_file"):
        if data["tokenizer"].get(key):
            data["tokenizer"][key] = _absolute(data["tokenizer"][key], base)
    return Space.model_validate(data)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], problems: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `dotted.key=value` set; malformed overrides are added to `problems`.

    A key names a path of mappings (a number picks a list item). Missing mappings on the way are created and
    the last key may be new, so that a misspelt key reaches the schema, which names it as an unknown key.
    """
    out = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(
                f"{override!r}: an override must be KEY=VALUE with a dotted KEY, e.g. transfer.lr=[1e-3]"
            )
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            problems.append(f"{key}: an override's value must be YAML, got {text!r}")
            continue
        problem = _set(out, parts, value)
        if problem:
            problems.append(f"{key}: {problem}")
    return out


def _set(node: Any, parts: list[str], value: Any) -> str | None:
    """Set node[parts[0]][parts[1]]... = value; the problem when the path runs into a value that is not a
    mapping or list."""
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            index: int | str = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and not isinstance(node.get(part), (dict, list)):
                if part in node and node[part] is not None:
                    return f"must name a key inside a mapping, but {'.'.join(parts[: depth + 1])} is a value"
                node[part] = {}
        else:
            return f"must name a key inside a mapping, but {'.'.join(parts[:depth]) or parts[0]} is not one"
        if last:
            node[index] = value
            return None
        node = node[index]
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML file")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"{path}: file is empty")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: file is empty (only comments)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def _merge_pretrain_from(raw: dict[str, Any], path: Path, problems: list[str]) -> dict[str, Any]:
    """Take the pre-training stage (and, unless given here, the tokenizer) from another space file."""
    ref = raw["pretrain_from"]
    if not isinstance(ref, str):
        problems.append(f"pretrain_from: must be a path to a space file, got {ref!r}")
        return raw
    if "pretrain" in raw:
        problems.append("pretrain_from: cannot be given together with pretrain")
        return raw
    try:
        base = load_space(path.parent / ref)
    except ConfigError as exc:
        problems += [f"pretrain_from: {line}" for line in str(exc).splitlines()]
        return raw
    if base.pretrain is None:
        problems.append(f"pretrain_from: {ref} has no pretrain stage")
        return raw
    merged = dict(raw)
    merged["pretrain"] = base.pretrain.model_dump(exclude_defaults=False)
    # Pre-training runs where the space that defines it says (a 124M model on 26B tokens wants whole GPUs,
    # not the fraction a fine-tuning run gets).
    merged["pretrain"]["resources"] = (base.pretrain.resources or base.resources).model_dump()
    merged.setdefault("tokenizer", base.tokenizer.model_dump(exclude_defaults=False))
    return merged


def _lines(path: Path, problems: list[str]) -> str:
    """One line per problem, each naming the file: what `sweep_engine.exits` prints as `error:` lines."""
    return "\n".join(f"{path}: {p}" for p in problems)


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error: `dotted.path[i]: rule, got value`."""
    lines = []
    for err in exc.errors():
        loc = _dotted(err["loc"])
        rule = _rule(err)
        if err["type"] == "value_error":
            # Our own rules (validators) already state the values they saw.
            parts = [p.strip() for p in rule.split("; ")]
            lines += [f"{loc}: {p}" if loc else p for p in parts]
        elif err["type"] == "missing":
            lines.append(f"{loc}: {rule}")
        else:
            lines.append(f"{loc}: {rule}, got {_show(err.get('input'))}")
    return list(dict.fromkeys(lines))  # a union reports once per member; say it once


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        # pydantic adds the union member's type name to the path; it means nothing to a user.
        if isinstance(part, str) and part in ("str", "SizeConfig", "tuple[float, float]"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# Fields typed float: a bad value there is "must be positive", not "must be a positive integer".
_FLOAT_FIELDS = {"lr", "cpus_per_trial", "gpus_per_trial", "lr_range", "min_delta", "diverge_factor"}


def _rule(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "greater_than":
        field = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "")
        is_int = isinstance(err.get("input"), int) and field not in _FLOAT_FIELDS
        if ctx.get("gt") == 0:
            return "must be a positive integer" if is_int else "must be positive"
        return f"must be > {ctx.get('gt')}"
    messages = {
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "multiple_of": f"must be a multiple of {ctx.get('multiple_of')}",
        "missing": "is required",
        "extra_forbidden": "unknown key",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "tuple_type": "must be a list",
        "too_short": f"must have at least {ctx.get('min_length')} item(s)",
        "too_long": f"must have at most {ctx.get('max_length')} item(s)",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
    }
    if kind in messages:
        return messages[kind]
    return str(err["msg"]).removeprefix("Value error, ")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
