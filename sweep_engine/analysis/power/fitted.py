"""A prior from finished sweeps: fit their ledgers, then draw worlds around the fits (`plan --power --prior`).

- Scratch surface: the World's form L = E + A/N^a + B_N/(D_l + D^b), B_N = B (N / n_ref)^-c, fitted by least
  squares on log loss to every converged scratch cell (cells.best_cells, test split; cells the budget cut while
  still falling are left out, as the analysis leaves them out of its curves). A World has one scratch surface
  for all languages, so each language's losses are first scaled to the same geometric mean: the languages keep
  their own slopes' average, and differ by their transfer laws.
- Transfer law per language: the analysis' own (pipeline.analyze_ledger). When the rule calls it identified,
  each world draws one of its bootstrap replicates (k, alpha, beta), so the worlds spread as its intervals do;
  otherwise the language's law comes from the default prior (prior.TransferPrior) and the report says so.
- Run-to-run noise: resample.run_noise on the ledger (pooled over repeated seeds, or the scatter around smooth
  curves); the default 0.5% when neither exists. Per-document noise: synthetic.World's default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from sweep_engine.analysis.ledger_io import read_ledgers
from sweep_engine.analysis.pipeline import AnalysisOptions, analyze_ledger
from sweep_engine.analysis.power.prior import CHARS_PER_TOKEN, OTHER_CHARS_PER_TOKEN, TransferPrior, grid_refs
from sweep_engine.analysis.resample import run_noise
from sweep_engine.analysis.synthetic import Grid, LanguageTruth, World
from sweep_engine.errors import UserError

PRIOR_BOOTSTRAP = 200  # replicates of the analysis of the finished sweep (the report's default)


@dataclass(frozen=True)
class ScratchFit:
    """The fitted scratch surface (World's parameters) and its log RMSD over the cells it was fitted to."""

    params: dict[str, float]
    rmsd_log: float
    points: int


def fit_scratch(cells: pd.DataFrame) -> ScratchFit:
    """Least squares on log loss of the converged scratch cells (see the module docstring).

    Raises:
        UserError: fewer than 4 usable scratch cells.
    """
    s = cells[(cells["init"] == "scratch") & ~cells["still_falling"].astype(bool) & (cells["loss"] > 0)]
    if len(s) < 4:
        raise UserError(f"--prior: the ledger has {len(s)} converged scratch cells; fitting a prior needs 4")
    log_loss = np.log(s["loss"].to_numpy(float))
    lang = s["language"].astype(str).to_numpy()
    for g in np.unique(lang):
        log_loss[lang == g] += log_loss.mean() - log_loss[lang == g].mean()
    n, d = s["n_params"].to_numpy(float), s["d_f"].to_numpy(float)
    n_ref, d_ref = float(np.exp(np.log(n).mean())), float(d.min())
    ln, ld = np.log(n / n_ref), np.log(d)
    floor = float(np.exp(log_loss.min()))

    def predict(t: np.ndarray) -> np.ndarray:
        e, a_ref, a, b_ref, b, log_knee, c = np.exp(t[0]), np.exp(t[1]), t[2], np.exp(t[3]), t[4], t[5], t[6]
        knee_b = np.exp(b * log_knee)
        data = b_ref * np.exp(-c * ln) * (knee_b + d_ref**b) / (knee_b + np.exp(b * ld))
        return np.log(e + a_ref * np.exp(-a * ln) + data)

    lo_knee, hi_knee = math.log(d.min() / 100), math.log(d.max() * 10)
    lower = np.array(
        [math.log(floor * 0.01), math.log(floor * 1e-4), 0.0, math.log(floor * 1e-3), 0.05, lo_knee, -0.5]
    )
    upper = np.array([math.log(floor), math.log(floor * 10), 1.5, math.log(floor * 100), 1.5, hi_knee, 0.5])
    best = None
    for e_frac in (0.3, 0.7):
        for b0 in (0.3, 0.6):
            for knee in (d.min() / 4, d.min(), 4 * d.min()):
                x0 = np.array(
                    [
                        math.log(floor * e_frac * 0.99),
                        math.log(floor * 0.1),
                        0.3,
                        math.log(floor * 0.5),
                        b0,
                        math.log(knee),
                        0.05,
                    ]  # fmt: skip
                )
                x0 = np.clip(x0, lower + 1e-6, upper - 1e-6)
                res = least_squares(lambda t: predict(t) - log_loss, x0, bounds=(lower, upper))
                if best is None or res.cost < best.cost:
                    best = res
    assert best is not None
    t = best.x
    b_exp, knee = float(t[4]), float(math.exp(t[5]))
    params = {
        "e": float(math.exp(t[0])),
        "a": float(math.exp(t[1]) * n_ref ** t[2]),
        "a_exp": float(t[2]),
        "b": float(math.exp(t[3]) * (knee**b_exp + d_ref**b_exp)),
        "b_exp": b_exp,
        "d_knee": knee,
        "size_exp": float(t[6]),
        "n_ref": n_ref,
    }
    return ScratchFit(params, float(np.sqrt(np.mean(best.fun**2))), len(s))


@dataclass(frozen=True)
class FittedPrior:
    """Worlds drawn around the fits of finished sweeps (see the module docstring)."""

    scratch: ScratchFit
    laws: dict[str, np.ndarray]  # language -> [replicates, 3] (k tokens, alpha, beta), identified laws only
    chars_per_token: dict[str, float]
    run_noise: float
    run_noise_source: str
    sources: tuple[str, ...]
    unidentified: dict[str, str] = field(default_factory=dict)  # language -> why its law is not used
    transfer: TransferPrior = field(default_factory=TransferPrior)

    def draw(self, rng: np.random.Generator, grid: Grid) -> World:
        n_ref, d_ref = grid_refs(grid)
        langs = list(grid.languages or self.chars_per_token)
        missing = [g for g in langs if g not in self.laws]
        default = self.transfer.laws(rng, missing, n_ref, d_ref) if missing else {}
        languages = {}
        for g in langs:
            if g in self.laws:
                k, alpha, beta = self.laws[g][int(rng.integers(len(self.laws[g])))]
                cpt = self.chars_per_token.get(g, CHARS_PER_TOKEN.get(g, OTHER_CHARS_PER_TOKEN))
                languages[g] = LanguageTruth(float(k), float(alpha), float(beta), cpt)
            else:
                cpt = self.chars_per_token.get(g, default[g].chars_per_token)
                languages[g] = replace(default[g], chars_per_token=cpt)
        return World(**self.scratch.params, languages=languages, run_noise=self.run_noise)

    def describe(self) -> list[str]:
        p = self.scratch.params
        lines = [
            f"fitted to {', '.join(self.sources)}",
            f"scratch: E {p['e']:.3g} + {p['a']:.3g}/N^{p['a_exp']:.2f} + B/(D_l + D^{p['b_exp']:.2f}), knee "
            f"{p['d_knee']:.3g} tokens ({self.scratch.points} cells, log RMSD {self.scratch.rmsd_log:.3f})",
        ]
        for g, boot in sorted(self.laws.items()):
            a, b = boot[:, 1], boot[:, 2]
            lines.append(
                f"{g}: its law's {len(boot)} bootstrap replicates: alpha {np.median(a):.2f} "
                f"[{np.percentile(a, 2.5):.2f}, {np.percentile(a, 97.5):.2f}], beta {np.median(b):.2f} "
                f"[{np.percentile(b, 2.5):.2f}, {np.percentile(b, 97.5):.2f}]"
            )
        for g, why in sorted(self.unidentified.items()):
            lines.append(f"{g}: law from the default prior ({why})")
        lines.append(f"run-to-run noise {self.run_noise:.2%} of the loss ({self.run_noise_source})")
        return lines


def fit_prior(paths: Sequence[Path]) -> FittedPrior:
    """Fit the ledgers at `paths` (results directories or ledger files) into a prior.

    Raises:
        UserError: a path holds no readable ledger, or too little to fit (messages start with `--prior`).
    """
    try:
        ledger = read_ledgers([Path(p) for p in paths])
        options = AnalysisOptions(bootstrap=PRIOR_BOOTSTRAP, seed=0)
        analysis = analyze_ledger(ledger, options, sources=[Path(p) for p in paths])
    except UserError as exc:
        raise UserError(f"--prior: {exc}; it must name a finished sweep (docs/ledger.md)") from None
    cells = analysis.cells
    scratch = fit_scratch(cells)
    noise, source = run_noise(ledger, cells)
    if not (math.isfinite(noise) and noise > 0):
        noise, source = World.run_noise, f"default: {source}"
    laws, why = {}, {}
    for g, lt in analysis.transfer.languages.items():
        law = lt.law
        if law is not None and law.identified and len(law.boot):
            laws[g] = law.boot[:, [0, 2, 3]].astype(float)
        else:
            why[g] = law.status if law is not None else "no fine-tuned cells"
    ft = cells[cells["init"] == "finetune"]
    cpt = {str(g): float(np.median(x["d_f_chars"] / x["d_f"])) for g, x in ft.groupby("language")}
    return FittedPrior(
        scratch=scratch,
        laws=laws,
        chars_per_token={g: v for g, v in cpt.items() if math.isfinite(v) and v > 0},
        run_noise=float(noise),
        run_noise_source=source,
        sources=tuple(str(p) for p in paths),
        unidentified=why,
    )
