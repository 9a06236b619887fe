"""The default prior over worlds: what is believed about transfer before a sweep has run (docs/power.md).

A world is a `synthetic.World`. Its from-scratch surface comes from `synthetic.draw_world`, scaled to the grid
(n_ref = the geometric mean of the grid's sizes, d_ref = its smallest D_F). Its transfer law and noise come from
here, each number with its source:

- alpha, beta: Hernandez et al. 2021 fitted D_T = k D_F^alpha N^beta for English text -> Python with
  alpha = 0.18, beta = 0.38. Drawn from normals around those values (SD 0.08 and 0.12), truncated to keep the
  seed study's qualitative claims, alpha < 1 and beta > 0. One (alpha, beta) per world, shared by its languages,
  so that the languages differ by k as the seed study describes them.
- k: set through D_T / D_F at the grid's smallest D_F and middle size, log-uniform in [0.1, 0.5] for German.
  The engine's own laptop study measured D_T of 13-110 tokens at D_F = 250 (README, docs/demo): 0.05-0.45.
- German > Spanish > Chinese (Kim 2021's ordering): each language's k is the one before it divided by a factor
  log-uniform in [1.5, 3] (our assumption; the seed study states the order, not the ratios).
- noise: run-to-run SD of the log loss 0.5% (the engine's default, `synthetic.World.run_noise`); per-document
  noise, document difficulty and the worse LR arm's penalty as in `synthetic.World`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from sweep_engine.analysis.synthetic import Grid, LanguageTruth, World, draw_world

SEED_ORDER = ("de", "es", "zh")  # Kim 2021: German, then Spanish, then Chinese
# Characters per token under the laptop study's English BPE (README: D_F 250 tokens = 469 / 442 / 85 characters).
CHARS_PER_TOKEN = {"de": 1.88, "es": 1.77, "zh": 0.34}
OTHER_CHARS_PER_TOKEN = 1.5  # a language the table lacks (assumed; it only sets document lengths in tokens)


class Prior(Protocol):
    """Anything that draws worlds for a grid and says where its numbers come from."""

    def draw(self, rng: np.random.Generator, grid: Grid) -> World: ...

    def describe(self) -> list[str]: ...


def grid_refs(grid: Grid) -> tuple[float, float]:
    """(n_ref, d_ref): the geometric mean of the sizes and the smallest D_F."""
    n = np.array(list(grid.sizes.values()), dtype=float)
    return float(np.exp(np.log(n).mean())), float(min(grid.d_f))


def truncated_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """One draw of N(mean, sd) conditioned on [lo, hi] (rejection; the bounds hold most of the mass)."""
    for _ in range(1000):
        x = rng.normal(mean, sd)
        if lo <= x <= hi:
            return float(x)
    return float(np.clip(mean, lo, hi))


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


@dataclass(frozen=True)
class TransferPrior:
    """The prior over each language's transfer law (see the module docstring for every number's source)."""

    alpha: tuple[float, float] = (0.18, 0.08)  # mean, SD
    alpha_bounds: tuple[float, float] = (0.0, 1.0)  # alpha < 1
    beta: tuple[float, float] = (0.38, 0.12)
    beta_bounds: tuple[float, float] = (0.0, 1.0)  # beta > 0
    ratio: tuple[float, float] = (0.1, 0.5)  # D_T / D_F of the first language, smallest D_F, middle N
    step: tuple[float, float] = (1.5, 3.0)  # k of a language over the next one's in `order`
    order: tuple[str, ...] = SEED_ORDER

    def ratios(self, rng: np.random.Generator, languages: list[str]) -> dict[str, float]:
        """D_T / D_F at the reference cell for each language: a chain down `order`; others log-uniform over
        the chain's whole span (no ordering is claimed for them)."""
        out: dict[str, float] = {}
        r = log_uniform(rng, *self.ratio)
        for lang in self.order:
            out[lang] = r
            r /= log_uniform(rng, *self.step)
        lowest = self.ratio[0] / self.step[1] ** (len(self.order) - 1)
        for lang in languages:
            if lang not in out:
                out[lang] = log_uniform(rng, lowest, self.ratio[1])
        return {lang: out[lang] for lang in languages}

    def laws(
        self, rng: np.random.Generator, languages: list[str], n_ref: float, d_ref: float
    ) -> dict[str, LanguageTruth]:
        """One world's laws for these languages."""
        alpha = truncated_normal(rng, *self.alpha, *self.alpha_bounds)
        beta = truncated_normal(rng, *self.beta, *self.beta_bounds)
        return {
            lang: LanguageTruth(
                k=r * d_ref / (d_ref**alpha * n_ref**beta),
                alpha=alpha,
                beta=beta,
                chars_per_token=CHARS_PER_TOKEN.get(lang, OTHER_CHARS_PER_TOKEN),
            )
            for lang, r in self.ratios(rng, languages).items()
        }

    def describe(self) -> list[str]:
        chain = " > ".join(self.order)
        return [
            f"alpha ~ N({self.alpha[0]}, {self.alpha[1]}) in {list(self.alpha_bounds)}, beta ~ N({self.beta[0]}, "
            f"{self.beta[1]}) in {list(self.beta_bounds)} (Hernandez et al. 2021: 0.18, 0.38), shared by the languages",
            f"D_T/D_F at the smallest D_F and middle size: {self.ratio[0]}-{self.ratio[1]} for {self.order[0]} "
            f"(laptop study: 0.05-0.45 at 250 tokens); {chain}, each k {self.step[0]}-{self.step[1]}x the next",
        ]


@dataclass(frozen=True)
class DefaultPrior:
    """Scratch surfaces from `synthetic.draw_world` scaled to the grid, laws from `TransferPrior`, the engine's
    noise levels."""

    transfer: TransferPrior = field(default_factory=TransferPrior)
    run_noise: float = World.run_noise
    doc_noise: float = World.doc_noise

    def draw(self, rng: np.random.Generator, grid: Grid) -> World:
        n_ref, d_ref = grid_refs(grid)
        base = draw_world(rng, n_ref=n_ref, d_ref=d_ref)  # its own two-language law is replaced below
        langs = list(grid.languages or base.languages)
        return replace(
            base,
            languages=self.transfer.laws(rng, langs, n_ref, d_ref),
            run_noise=self.run_noise,
            doc_noise=self.doc_noise,
        )

    def describe(self) -> list[str]:
        return [
            "default prior (docs/power.md)",
            "scratch: synthetic.draw_world scaled to the grid (pre-power phase ending within 4x of the smallest D_F)",
            *self.transfer.describe(),
            f"noise: run-to-run {self.run_noise:.1%} of the loss (engine default), per-document {self.doc_noise:g} "
            f"in log loss (synthetic.World)",
        ]
