"""Synthetic worlds with a known truth, and the ledger a sweep would record in them.

A world fixes the from-scratch loss surface, each language's transfer law and the noise of a real sweep; a
grid fixes what the sweep runs (sizes, D_F, LR arms, seeds, documents). `make_ledger` draws the ledger that grid
would produce in that world, with per-document validation and test losses, so the real analysis can be run on
it and its answers compared with the truth (`truth_table`). The analysis' own tests, `benchmarks/
synthetic_truth.py` and `sweep-engine plan --power` all use this module.

The scratch loss is not a pure power law: it has a pre-power phase at small D (Lin et al. 2024),

    L_s(N, D) = E + A / N^a + B_N / (D_l + D^b),   D_l = D_knee^b,   B_N = B (N / N_ref)^-c,

so it is flat below D_knee and a power law well above it. A language's fine-tuned loss is the scratch loss at
D_F + D_T with D_T = k D_F^alpha N^beta (Hernandez et al. 2021), D in tokens. A run's measured loss is the
cell's true loss times exp(run noise) (seeds), times a per-cell penalty for the worse LR arm; each document's
loss adds a per-document difficulty (shared by every run) and a document-by-run term.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from sweep_engine.analysis.summary import transfer_ordering


@dataclass(frozen=True)
class LanguageTruth:
    """One language's transfer law D_T = k D_F^alpha N^beta (D in tokens) and its script."""

    k: float
    alpha: float
    beta: float
    chars_per_token: float


@dataclass(frozen=True)
class World:
    """The truth of one synthetic world (see the module docstring for the formulas)."""

    e: float
    a: float
    a_exp: float
    b: float
    b_exp: float
    d_knee: float
    size_exp: float  # c: B_N = B (N / n_ref)^-c
    n_ref: float
    languages: dict[str, LanguageTruth]
    run_noise: float = 0.005  # SD of a run's log loss (seed to seed): 0.5% of the loss
    doc_noise: float = 0.05  # SD of one document's log loss from run to run (document x run)
    doc_spread: float = 0.3  # SD of the documents' log difficulty (the same for every run)
    lr_penalty: float = 0.04  # the worse LR arm of a cell is up to this fraction worse

    def scratch(self, n: Any, d: Any) -> np.ndarray:
        """True from-scratch loss (nats per token) at size n and D tokens."""
        n, d = np.asarray(n, float), np.asarray(d, float)
        d_l = self.d_knee**self.b_exp
        b_n = self.b * (n / self.n_ref) ** -self.size_exp
        return self.e + self.a / n**self.a_exp + b_n / (d_l + d**self.b_exp)

    def d_t(self, lang: str, n: Any, d_f: Any) -> np.ndarray:
        """True effective data transferred (tokens)."""
        t = self.languages[lang]
        return t.k * np.asarray(d_f, float) ** t.alpha * np.asarray(n, float) ** t.beta

    def finetune(self, lang: str, n: Any, d_f: Any) -> np.ndarray:
        """True fine-tuned loss: the scratch loss at D_F + D_T."""
        return self.scratch(n, np.asarray(d_f, float) + self.d_t(lang, n, d_f))


@dataclass(frozen=True)
class Grid:
    """What a sweep runs: its sizes, D_F values, LR arms, seeds and evaluation documents.

    Attributes:
        sizes: size name -> N (non-embedding parameters).
        d_f: training-set sizes in tokens.
        lrs: LR arms per cell (the world makes one arm of each cell worse).
        schedules: schedule arms per LR (their names); a cell runs every LR x schedule.
        seeds: seeds per configuration; `seeds_smallest` at the smallest D_F (None = the same), and
            `seeds_by_d_f` at the D_F it lists ((D_F, seeds) pairs; a space's transfer.seeds_by_d_f).
        val_docs, test_docs: held-out documents (the same ids in every language).
        doc_chars: mean characters per document.
        budget_d_f: cells with D_F >= this stop on the token cap while their loss still falls (None = none):
            their loss is 2-8% above the converged value, as an under-trained run's is.
        languages: the languages the sweep runs (None: every language of the world).
        record_val_docs: keep per-document validation losses in the ledger too. The analysis selects on the
            validation loss itself and resamples only the reported (test) split, so `plan --power` leaves
            them out: writing and parsing them was most of a paper-scale ledger's cost.
    """

    sizes: dict[str, float]
    d_f: tuple[float, ...]
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    schedules: tuple[str, ...] = ("cosine",)
    seeds: int = 2
    seeds_smallest: int | None = 3
    seeds_by_d_f: tuple[tuple[float, int], ...] = ()
    val_docs: int = 200
    test_docs: int = 200
    doc_chars: float = 120.0
    budget_d_f: float | None = None
    languages: tuple[str, ...] | None = None
    record_val_docs: bool = True

    def seeds_at(self, d_f: float) -> int:
        """Seeds per configuration at this D_F."""
        listed = dict(self.seeds_by_d_f)
        if d_f in listed:
            return listed[d_f]
        return self.seeds_smallest if (d_f == min(self.d_f) and self.seeds_smallest) else self.seeds

    def languages_of(self, world: World) -> list[str]:
        """The world's languages this grid runs, in the world's order."""
        return [g for g in world.languages if self.languages is None or g in self.languages]


LAPTOP_GRID = Grid(
    sizes={"xs": 1.0e5, "s": 3.4e5, "m": 7.9e5, "l": 2.7e6},
    d_f=tuple(float(d) for d in np.geomspace(250, 250_000, 6).round()),
)


def draw_world(
    rng: np.random.Generator,
    *,
    n_ref: float = 3e5,
    d_ref: float = 250.0,
    languages: tuple[str, str] = ("de", "zh"),
) -> World:
    """A world drawn from the default prior, scaled to a grid whose middle size is `n_ref` and smallest D_F
    is `d_ref`. The first language transfers 2.5-5x more than the second (larger k).

    The prior: E 1.5-2.5 nats; the size term 0.5-1.5 nats at n_ref; the data term 3-5 nats at d_ref with a
    knee (end of the pre-power phase) between d_ref / 4 and 4 d_ref; exponents a 0.2-0.4, b 0.25-0.5;
    transfer alpha 0.1-0.6, beta 0-0.6, and D_T / D_F at (d_ref, n_ref) log-uniform between 0.3 and 6 for the
    first language.
    """
    u = rng.uniform
    a_exp, b_exp = u(0.2, 0.4), u(0.25, 0.5)
    d_knee = d_ref * math.exp(u(math.log(0.25), math.log(4.0)))
    b = u(3.0, 5.0) * (d_knee**b_exp + d_ref**b_exp)
    alpha, beta = u(0.1, 0.6), u(0.0, 0.6)
    ratio = math.exp(u(math.log(0.3), math.log(6.0)))  # D_T / D_F at (d_ref, n_ref), first language
    k1 = ratio * d_ref / (d_ref**alpha * n_ref**beta)
    k2 = k1 / u(2.5, 5.0)
    first, second = languages
    return World(
        e=u(1.5, 2.5),
        a=u(0.5, 1.5) * n_ref**a_exp,
        a_exp=a_exp,
        b=b,
        b_exp=b_exp,
        d_knee=d_knee,
        size_exp=u(0.0, 0.1),
        n_ref=n_ref,
        languages={
            first: LanguageTruth(k1, alpha, beta, chars_per_token=u(1.6, 2.2)),
            second: LanguageTruth(k2, alpha, beta, chars_per_token=u(0.3, 0.6)),
        },
    )


def truth_table(world: World, grid: Grid) -> pd.DataFrame:
    """The true cells: per (language, N, D_F) the scratch and fine-tuned loss, D_T, D_E and the gap."""
    rows = []
    for lang in grid.languages_of(world):
        for size, n in grid.sizes.items():
            for d_f in grid.d_f:
                l_s, l_ft = float(world.scratch(n, d_f)), float(world.finetune(lang, n, d_f))
                d_t = float(world.d_t(lang, n, d_f))
                rows.append(
                    {
                        "language": lang,
                        "size": size,
                        "n_params": float(n),
                        "d_f": float(d_f),
                        "loss_scratch": l_s,
                        "loss_finetune": l_ft,
                        "gap": l_ft - l_s,
                        "d_t": d_t,
                        "d_e": d_f + d_t,
                        "fraction": d_f / (d_f + d_t),
                    }
                )
    return pd.DataFrame(rows)


@dataclass
class _Docs:
    """One held-out split of one language: document ids, tokens, characters and log difficulty."""

    keys: np.ndarray
    tokens: np.ndarray
    chars: np.ndarray
    log_difficulty: np.ndarray = field(repr=False)

    def doc_losses(self, loss: float, noise: float, rng: np.random.Generator) -> np.ndarray:
        """Per-document loss sums (nats) of one run whose true mean loss per token is `loss`."""
        z = self.log_difficulty + rng.normal(0.0, noise, size=self.keys.size) - noise**2 / 2
        return self.tokens * loss * np.exp(z)

    def as_json(self, loss_sums: np.ndarray) -> dict[str, list[Any]]:
        return {
            "keys": self.keys.tolist(),
            "tokens": self.tokens.tolist(),
            "chars": self.chars.tolist(),
            "loss": np.round(loss_sums, 6).tolist(),
        }


def _docs(keys: np.ndarray, chars: np.ndarray, cpt: float, spread: float, rng: np.random.Generator) -> _Docs:
    tokens = np.maximum(1, np.round(chars / cpt)).astype(np.int64)
    log_diff = rng.normal(0.0, spread, size=keys.size)
    # Token-weighted mean difficulty 1: the split's mean loss is the run's loss (a shift would cancel anyway).
    if keys.size:
        log_diff -= math.log(float(np.sum(tokens * np.exp(log_diff)) / tokens.sum()))
    return _Docs(keys=keys, tokens=tokens, chars=chars.astype(np.int64), log_difficulty=log_diff)


def make_ledger(world: World, grid: Grid, rng: np.random.Generator) -> pd.DataFrame:
    """The ledger (docs/ledger.md columns) the grid's sweep would record in this world.

    Every FINISHED transfer run carries per-document validation and test losses (`doc_losses`); the best
    configuration of a cell is to be chosen on validation and reported on test, as the analysis does. Each
    cell and run draws its noise from a stream of its own, seeded from `rng` and its name, so the ledgers of
    two grids in one world share the noise of every run they share.
    """
    n_val, n_test = grid.val_docs, grid.test_docs
    root = int(rng.integers(2**63))

    def stream(*key: object) -> np.random.Generator:
        # Each cell and run draws from a stream named by what it is, so two grids that share a run (a grid and
        # the same grid with one more seed, D_F or size) share its noise too: common random numbers.
        return np.random.default_rng([root, zlib.crc32("|".join(map(str, key)).encode())])

    # The same documents (ids and characters) in every language: a parallel corpus.
    val_chars = np.maximum(5, stream("val").lognormal(math.log(grid.doc_chars), 0.5, n_val)).round()
    test_chars = np.maximum(5, stream("test").lognormal(math.log(grid.doc_chars), 0.5, n_test)).round()
    rows: list[dict[str, Any]] = []
    arms = [(lr, sched) for lr in grid.lrs for sched in grid.schedules]  # LR x schedule
    for lang in grid.languages_of(world):
        cpt = world.languages[lang].chars_per_token
        val = _docs(np.arange(n_val), val_chars, cpt, world.doc_spread, stream(lang, "val"))
        test = _docs(
            np.arange(n_val, n_val + n_test), test_chars, cpt, world.doc_spread, stream(lang, "test")
        )
        for size, n in grid.sizes.items():
            for d_f in grid.d_f:
                budget = grid.budget_d_f is not None and d_f >= grid.budget_d_f
                seeds = grid.seeds_at(d_f)
                for init in ("scratch", "finetune"):
                    true = float(world.scratch(n, d_f) if init == "scratch" else world.finetune(lang, n, d_f))
                    cell = stream(lang, size, f"{d_f:g}", init)
                    worse = int(cell.integers(len(arms)))
                    penalty = cell.uniform(0.0, world.lr_penalty)
                    shortfall = cell.uniform(0.02, 0.08) if budget else 0.0
                    for i, arm in enumerate(arms):
                        for seed in range(seeds):
                            run = stream(lang, size, f"{d_f:g}", init, i, seed)
                            mean = true * (1 + (penalty if i == worse else 0.0)) * (1 + shortfall)
                            mean *= math.exp(run.normal(0.0, world.run_noise))
                            v, t = (s.doc_losses(mean, world.doc_noise, run) for s in (val, test))
                            rows.append(
                                _row(
                                    lang,
                                    size,
                                    n,
                                    d_f,
                                    init,
                                    arm,
                                    seed,
                                    cpt,
                                    val,
                                    test,
                                    v,
                                    t,
                                    budget,
                                    world,
                                    grid.record_val_docs,
                                )  # fmt: skip
                            )
    rows += _pretrain_rows(world, grid)
    return pd.DataFrame(rows)


def _pretrain_rows(world: World, grid: Grid) -> list[dict[str, Any]]:
    """The English models the fine-tuned runs start from (one per size), for the report's pre-training figure."""
    rows = []
    for size, n in grid.sizes.items():
        loss = float(world.scratch(n, 2e6))
        rows.append(
            {
                "trial_key": f"pre-{size}",
                "sweep_key": "synthetic",
                "sweep": "synthetic-en",
                "stage": "pretrain",
                "language": "en",
                "init": "scratch",
                "size": size,
                "n_params": int(n),
                "d_f": 2_000_000,
                "status": "FINISHED",
                "best_val_loss": loss,
                "tokens_at_best": 2_000_000,
                "tokens_seen": 2_000_000,
                "stop_reason": "plateau",
                "curve": _curve(loss, 2_000_000, still_falling=False),
            }
        )
    return rows


def _row(
    lang: str,
    size: str,
    n: float,
    d_f: float,
    init: str,
    arm: tuple[float, str],
    seed: int,
    cpt: float,
    val: _Docs,
    test: _Docs,
    val_sums: np.ndarray,
    test_sums: np.ndarray,
    budget: bool,
    world: World,
    record_val_docs: bool = True,
) -> dict[str, Any]:
    lr, schedule = arm
    val_loss = float(val_sums.sum() / val.tokens.sum())
    has_test = test.keys.size > 0  # a grid without a test split reports on validation, as the analysis does
    test_loss = float(test_sums.sum() / test.tokens.sum()) if has_test else math.nan
    tokens_seen = int(max(64 * d_f, 65_536))
    at_best = tokens_seen if budget else int(0.6 * tokens_seen)
    tpc_val = float(val.tokens.sum() / val.chars.sum())
    tpc_test = float(test.tokens.sum() / test.chars.sum()) if has_test else math.nan
    return {
        "trial_key": f"{lang}-{size}-{d_f:g}-{init}-{lr:g}-{schedule}-{seed}",
        "sweep_key": "synthetic",
        "sweep": f"synthetic-{lang}",
        "stage": "transfer",
        "language": lang,
        "init": init,
        "init_from": f"pre-{size}" if init == "finetune" else "",
        "size": size,
        "n_params": int(n),
        "d_f": int(d_f),
        "d_f_chars": int(round(d_f * cpt)),
        "lr": lr,
        "schedule_kind": schedule,
        "warmup_steps": 5,
        "decay_floor": 0.1,
        "seed": seed,
        "status": "FINISHED",
        "failure_reason": "",
        "best_val_loss": val_loss,
        "val_tokens_per_char": tpc_val,
        "best_val_bpc": val_loss * tpc_val / math.log(2),
        "test_loss": test_loss,
        "test_tokens_per_char": tpc_test,
        "test_bpc": test_loss * tpc_test / math.log(2),
        "tokens_at_best": at_best,
        "tokens_seen": tokens_seen,
        "steps": tokens_seen // 2048,
        "flops": 6.0 * n * tokens_seen,
        "stop_reason": "budget" if budget else "overfit",
        "zero_shot_loss": float(world.scratch(n, 1.0)) + 1.0 if init == "finetune" else math.nan,
        # Forgetting: the English loss after fine-tuning grows with the target data seen.
        "extra_val_loss_en": 4.0 + 0.1 * math.log10(d_f) if init == "finetune" else math.nan,
        "zero_shot_extra_val_loss_en": 4.0 if init == "finetune" else math.nan,
        "curve": _curve(val_loss, tokens_seen, still_falling=budget),
        "doc_losses": json.dumps(
            {"val": val.as_json(val_sums), "test": test.as_json(test_sums)}
            if record_val_docs
            else {"test": test.as_json(test_sums)}
        ),
    }


def _curve(best: float, tokens: int, still_falling: bool) -> str:
    """A validation curve ending at `best`: flat then rising (overfit), or still falling at the cap."""
    frac = np.linspace(0.125, 1.0, 8)
    if still_falling:
        loss = best * (1 + 0.3 * (1 - frac))
    else:
        loss = best * (1 + 0.3 * np.clip(0.6 - frac, 0, None) + 0.02 * np.clip(frac - 0.6, 0, None))
    return json.dumps(
        [
            {"tokens": int(f * tokens), "step": i, "val_loss": float(v)}
            for i, (f, v) in enumerate(zip(frac, loss, strict=True))
        ]
    )


def with_noise(
    world: World,
    *,
    run_noise: float | None = None,
    doc_noise: float | None = None,
    doc_spread: float | None = None,
    lr_penalty: float | None = None,
) -> World:
    """The same world with other noise settings (None keeps the world's)."""
    return replace(
        world,
        run_noise=world.run_noise if run_noise is None else run_noise,
        doc_noise=world.doc_noise if doc_noise is None else doc_noise,
        doc_spread=world.doc_spread if doc_spread is None else doc_spread,
        lr_penalty=world.lr_penalty if lr_penalty is None else lr_penalty,
    )


# ------------------------------------------------------------------------------------------------ scoring


@dataclass
class Score:
    """How the analysis of one world's ledger compares with the world's truth (the issue's criteria).

    Counts are over fine-tuned cells. `contradictions`: D_T's sign against a measured gap of more than 3 SDs
    (replicate SD). `covered`: the 95% D_T interval holds the true D_T, over cells whose true D_E lies inside
    the scratch runs' D range. `close`: D_T within 1.5x of the truth, over cells whose true D_T >= D_F.
    `ranked`: sizes where the larger-k language has the smaller D_F / D_E at the smallest D_F;
    `misranked_resolved`: sizes where the other language is ahead AND the paired replicates call that resolved
    (the analysis must never be confidently wrong; an unresolved near-tie is reported as such). Per language,
    `law`: "close" (alpha and beta within 0.2 of the truth), "covered" (the truth inside intervals no wider
    than 0.8), "wrong", or "not identified".
    """

    contradictions: int = 0
    clear_gaps: int = 0
    covered: int = 0
    coverable: int = 0
    close: int = 0
    closable: int = 0
    ranked: int = 0
    rankable: int = 0
    misranked_resolved: int = 0
    law: dict[str, str] = field(default_factory=dict)


def score(transfer: Any, world: World, grid: Grid, tolerance: float = 0.2) -> Score:
    """Score a transfer analysis (analysis.transfer.TransferAnalysis) of `make_ledger(world, grid)`."""
    truth = truth_table(world, grid).set_index(["language", "n_params", "d_f"])
    s = Score()
    fractions: dict[tuple[str, float], float] = {}
    smallest = min(grid.d_f)
    for lang, lt in transfer.languages.items():
        for row in lt.table.itertuples():
            true = truth.loc[(lang, float(row.n_params), float(row.d_f))]
            if abs(row.gap_z) > 3:
                s.clear_gaps += 1
                s.contradictions += int(np.sign(row.d_t) == np.sign(row.gap_bpc))
            lo_d, hi_d = row.scratch_range if row.scratch_range else (math.nan, math.nan)
            if lo_d <= true["d_e"] <= hi_d:
                s.coverable += 1
                s.covered += int(row.d_t_lo <= true["d_t"] <= row.d_t_hi)
            if true["d_t"] >= row.d_f:
                s.closable += 1
                s.close += int(row.d_t > 0 and abs(math.log(row.d_t / true["d_t"])) <= math.log(1.5))
            if row.d_f == smallest:
                fractions[(lang, float(row.n_params))] = row.fraction
        t = world.languages[lang]
        law = lt.law
        if law is None or not law.identified:
            s.law[lang] = "not identified"
            continue
        near = all(abs(law.params[p] - getattr(t, p)) <= tolerance for p in ("alpha", "beta"))
        honest = all(
            law.ci[p][0] <= getattr(t, p) <= law.ci[p][1] and law.ci[p][1] - law.ci[p][0] <= 0.8
            for p in ("alpha", "beta")
        )
        s.law[lang] = "close" if near else "covered" if honest else "wrong"
    strong, weak = sorted(world.languages, key=lambda g: -world.languages[g].k)[:2]
    pairs = {
        o.n_params: p
        for o in transfer_ordering(transfer.languages)
        for p in o.pairs
        if {p.first, p.second} == {strong, weak}
    }
    for n in grid.sizes.values():
        a, b = fractions.get((strong, float(n))), fractions.get((weak, float(n)))
        if a is not None and b is not None:
            s.rankable += 1
            s.ranked += int(a < b)
            pair = pairs.get(float(n))
            s.misranked_resolved += int(pair is not None and pair.first == weak and pair.resolved)
    return s
