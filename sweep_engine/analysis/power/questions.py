"""The three questions a transfer sweep asks, answered by one analysis of one world's ledger.

Each answer is scored against the world's truth; "resolved" means the analysis says it with the confidence its
report would state, and says it the right way round:

1. `d_t`: D_T > 0 at a (language, size, D_F) cell: the 95% interval of D_T lies above 0 (every world of the
   prior transfers, so an interval below 0 is a wrong answer, counted apart, unless the fine-tuned run was cut
   by its budget: then D_T is a lower bound and says nothing below 0).
2. `order`: at each size, at the smallest D_F, the languages ranked by D_F / D_E come in the true order and
   every adjacent pair is resolved (one ahead in >= 97.5% of the paired replicates; summary.transfer_ordering,
   the report's own verdict).
3. `law`: the transfer law is identified (transfer_law's rule) and alpha and beta each lie within `width` of
   the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from sweep_engine.analysis.summary import transfer_ordering
from sweep_engine.analysis.synthetic import World
from sweep_engine.analysis.transfer import TransferAnalysis

QUESTIONS = ("d_t", "order", "law")
WIDTH = 0.2  # alpha and beta within +-0.2 of the truth (the analysis issue's criterion)


@dataclass
class Outcome:
    """One world's answers on one grid.

    Attributes:
        d_t: (language, size, D_F) -> 1 resolved, 0 not, -1 resolved the wrong way (interval below 0).
        order: size -> resolved in the true order.
        law: language -> (identified, alpha within width, beta within width).
        noise_unknown: the ledger let the analysis estimate no run-to-run noise (one seed, and fewer than 5
            converged scratch D_F per size), so its intervals hold document noise only.
    """

    d_t: dict[tuple[str, str, float], int] = field(default_factory=dict)
    order: dict[str, bool] = field(default_factory=dict)
    law: dict[str, tuple[bool, bool, bool]] = field(default_factory=dict)
    noise_unknown: bool = False  # the analysis could not estimate run-to-run noise (resample.run_noise)


def d_t_answers(
    ta: TransferAnalysis, cells: set[tuple[str, str, float]]
) -> dict[tuple[str, str, float], int]:
    """Per asked cell: is D_T > 0 resolved (see the module docstring)."""
    out: dict[tuple[str, str, float], int] = {}
    for lang, lt in ta.languages.items():
        for row in lt.table.itertuples():
            key = (lang, str(row.size), float(row.d_f))
            if key in cells:
                lo, hi = float(row.d_t_lo), float(row.d_t_hi)
                # A fine-tuned run cut by its budget gives a lower bound on D_E: above 0 it still resolves
                # D_T > 0, below 0 it says nothing (the report prints it as a bound).
                wrong = hi < 0 and not bool(row.ft_still_falling)
                out[key] = 1 if lo > 0 else -1 if wrong else 0
    for key in cells - out.keys():
        out[key] = 0  # no fine-tuned cell or no curve: nothing resolved
    return out


def true_order(world: World, languages: list[str], n: float, d_f: float) -> list[str]:
    """Languages by true D_F / D_E, smallest (most transfer) first."""
    return sorted(languages, key=lambda g: float(d_f / (d_f + world.d_t(g, n, d_f))))


def order_answers(ta: TransferAnalysis, world: World, sizes: dict[str, float], d_f: float) -> dict[str, bool]:
    """Per asked size: the ordering at `d_f` resolved in the true order (the report's ordering logic)."""
    langs = [g for g in ta.languages if not ta.languages[g].table.empty]
    if len(langs) < 2:
        return {}
    # The report orders at the smallest D_F all languages ran; a grid with a D_F added below asks the same
    # question as before, at the base grid's smallest D_F.
    kept = {g: replace(lt, table=lt.table[lt.table["d_f"] >= d_f]) for g, lt in ta.languages.items()}
    found = {o.n_params: o for o in transfer_ordering(kept)}
    out = {}
    for size, n in sizes.items():
        o = found.get(float(n))
        truth = true_order(world, list(ta.languages), n, d_f)
        out[size] = bool(
            o is not None
            and o.d_f == d_f
            and o.order == truth
            and len(o.pairs) == len(truth) - 1
            and all(p.resolved for p in o.pairs)
        )
    return out


def law_answers(
    ta: TransferAnalysis, world: World, width: float = WIDTH
) -> dict[str, tuple[bool, bool, bool]]:
    """Per language: (identified, alpha within `width`, beta within `width`); within counts only when
    identified, since the report prints no constants otherwise."""
    out = {}
    for lang, lt in ta.languages.items():
        law, truth = lt.law, world.languages[lang]
        if law is None or not law.identified:
            out[lang] = (False, False, False)
            continue
        a_ok = math.isfinite(law.params["alpha"]) and abs(law.params["alpha"] - truth.alpha) <= width
        b_ok = math.isfinite(law.params["beta"]) and abs(law.params["beta"] - truth.beta) <= width
        out[lang] = (True, bool(a_ok), bool(b_ok))
    return out
