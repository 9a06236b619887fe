"""The report's plain-words summary and its headline: which language gains most from English pre-training.

Everything here is generated from the analysis' numbers (no hand-written claims): the D_T ordering of the
languages per size at the smallest D_F, with 95% bootstrap intervals, whether it matches the seed study's
German > Spanish > Chinese (Kim 2021), whether fine-tuning beats training from scratch at each D_F, how many cells
converged or were budget-limited, data- or parameter-limited, and every flag (extrapolated D_E, D_E below the
scratch asymptote, interpolated scratch curves).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from sweep_engine.analysis.report import Analysis
    from sweep_engine.analysis.transfer import LanguageTransfer

SEED_ORDER = ("de", "es", "zh")  # Kim 2021: transfer is largest for German, then Spanish, then Chinese
LANGUAGE_NAMES = {"de": "German", "es": "Spanish", "zh": "Chinese", "en": "English", "fr": "French"}
MAX_LISTED = 6  # exceptions listed by name in a sentence; the rest are counted


@dataclass
class Entry:
    """One language's D_T at one (size, D_F), in tokens, with its 95% bootstrap interval and flags."""

    language: str
    d_t: float
    d_t_lo: float
    d_t_hi: float
    fraction: float  # D_F / D_E
    extrapolated: bool
    below_asymptote: bool

    @property
    def rank_value(self) -> float:
        """D_T for ranking; a fine-tuned loss below the scratch asymptote is more than any finite D_E buys."""
        return math.inf if self.below_asymptote else self.d_t


@dataclass
class SizeOrdering:
    """The languages at one size ranked by D_T (largest first) at that size's smallest D_F."""

    size: str
    n_params: float
    d_f: float  # tokens
    entries: list[Entry] = field(default_factory=list)  # ranked; languages without a D_T last

    @property
    def order(self) -> list[str]:
        return [e.language for e in self.entries if _ranked(e)]

    @property
    def matches_seed(self) -> bool | None:
        """Whether the seed study's languages present here come in its order (None: fewer than two)."""
        seen = [lang for lang in self.order if lang in SEED_ORDER]
        if len(seen) < 2:
            return None
        return seen == [lang for lang in SEED_ORDER if lang in seen]

    @property
    def overlapping(self) -> list[tuple[str, str]]:
        """Neighbours in the ranking whose D_T intervals overlap: their order is not resolved."""
        ranked = [e for e in self.entries if _ranked(e)]
        return [
            (a.language, b.language)
            for a, b in zip(ranked, ranked[1:], strict=False)
            if math.isfinite(a.d_t_lo) and math.isfinite(b.d_t_hi) and a.d_t_lo <= b.d_t_hi
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "n_params": self.n_params,
            "d_f": self.d_f,
            "order": self.order,
            "matches_seed": self.matches_seed,
            "overlapping": [list(p) for p in self.overlapping],
            "entries": [asdict(e) for e in self.entries],
        }


def _ranked(e: Entry) -> bool:
    return e.below_asymptote or math.isfinite(e.d_t)


def transfer_ordering(languages: dict[str, LanguageTransfer]) -> list[SizeOrdering]:
    """Per size (smallest N first), the languages ranked by D_T at the smallest D_F they all share.

    Args:
        languages: the transfer analysis' per-language results.

    Returns:
        One SizeOrdering per size that has fine-tuned cells.
    """
    tables = [lt.table for lt in languages.values() if not lt.table.empty]
    if not tables:
        return []
    t = pd.concat(tables, ignore_index=True)
    out = []
    for n, g in t.groupby("n_params", sort=True):
        per_lang = [set(x["d_f"]) for _, x in g.groupby("language")]
        common = set.intersection(*per_lang)
        d_f = min(common) if common else float(g["d_f"].min())  # all languages at one D_F when possible
        rows = g[g["d_f"] == d_f]
        entries = [
            Entry(
                language=str(r["language"]),
                d_t=float(r["d_t"]),
                d_t_lo=float(r.get("d_t_lo", math.nan)),
                d_t_hi=float(r.get("d_t_hi", math.nan)),
                fraction=float(r["fraction"]),
                extrapolated=bool(r["extrapolated"]),
                below_asymptote=bool(r["below_asymptote"]),
            )
            for _, r in rows.iterrows()
        ]
        entries.sort(key=lambda e: (not _ranked(e), -e.rank_value if _ranked(e) else 0.0, e.language))
        size = rows["size"].dropna()
        out.append(
            SizeOrdering(
                size=str(size.iloc[0]) if len(size) else _fmt_n(float(n)),
                n_params=float(n),
                d_f=float(d_f),
                entries=entries,
            )
        )
    return out


def sci(v: float) -> str:
    """A count as people write it in one line: 3.1e4 (two significant digits), ∞, or n/a."""
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else ("∞" if v > 0 else "-∞")
    if v == 0:
        return "0"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _entry_text(e: Entry) -> str:
    value = "∞ (below the scratch asymptote)" if e.below_asymptote else sci(e.d_t)
    return f"{e.language} {value}{_interval(e)}{'*' if e.extrapolated and not e.below_asymptote else ''}"


def headline(orderings: list[SizeOrdering]) -> dict[str, Any]:
    """The one-line answer and the verdict on the seed study's ordering.

    Returns:
        {"line": ..., "verdict": ..., "matches_seed": True/False/None, "sizes": [SizeOrdering.to_dict()]}.
    """
    if not orderings:
        return {"line": "no fine-tuned cells: no D_T", "verdict": "", "matches_seed": None, "sizes": []}
    same_d_f = len({o.d_f for o in orderings}) == 1
    parts = []
    for o in orderings:
        ranked = " > ".join(_entry_text(e) for e in o.entries if _ranked(e))
        missing = [e.language for e in o.entries if not _ranked(e)]
        text = ranked + (f" (no D_T: {', '.join(missing)})" if missing else "")
        where = o.size if same_d_f else f"{o.size} at D_F={o.d_f:,.0f}"
        parts.append(f"{where}: {text}")
    head = f"D_T at D_F={orderings[0].d_f:,.0f} tokens" if same_d_f else "D_T at each size's smallest D_F"
    line = f"{head} (tokens, 95% bootstrap interval): " + "; ".join(parts)
    if any(e.extrapolated and not e.below_asymptote for o in orderings for e in o.entries):
        line += "  (* D_E extrapolated beyond the scratch runs' D range)"
    return {
        "line": line,
        "verdict": seed_verdict(orderings),
        "matches_seed": _all_match(orderings),
        "sizes": [o.to_dict() for o in orderings],
    }


def _all_match(orderings: list[SizeOrdering]) -> bool | None:
    verdicts = [o.matches_seed for o in orderings if o.matches_seed is not None]
    return all(verdicts) if verdicts else None


def seed_verdict(orderings: list[SizeOrdering]) -> str:
    """Whether the seed study's de > es > zh holds, at which sizes, and how firmly (interval overlaps)."""
    seed = " > ".join(SEED_ORDER)
    judged = [o for o in orderings if o.matches_seed is not None]
    if not judged:
        return (
            f"The seed study's ordering {seed} cannot be checked: fewer than two of its languages have a D_T."
        )
    present = sorted({lang for o in judged for lang in o.order if lang in SEED_ORDER}, key=SEED_ORDER.index)
    if len(present) < len(SEED_ORDER):  # say which part of the seed's ordering this sweep can check
        seed += f" (of its languages, this sweep has {', '.join(present)})"
    holds = [o for o in judged if o.matches_seed]
    fails = [o for o in judged if not o.matches_seed]

    def order_text(o: SizeOrdering) -> str:
        return " > ".join(_entry_text(e) for e in o.entries if _ranked(e))

    if not fails:
        text = f"This matches the seed study's ordering {seed} at every size ({', '.join(o.size for o in judged)})."
    elif not holds:
        text = f"This does not match the seed study's ordering {seed} at any size: " + "; ".join(
            f"at {o.size} {order_text(o)}" for o in fails
        )
        text += "."
    else:
        text = (
            f"The seed study's ordering {seed} holds only at {', '.join(o.size for o in holds)}; "
            + "; ".join(f"at {o.size} the order is {order_text(o)}" for o in fails)
            + "."
        )
    loose = [f"{a} vs {b} at {o.size}" for o in judged for a, b in o.overlapping]
    if loose:
        text += f" Overlapping intervals (order not resolved by this sweep): {', '.join(loose)}."
    return text


def plain_summary(a: Analysis, orderings: list[SizeOrdering] | None = None) -> list[str]:
    """A few sentences, generated from the numbers, for the top of the report.

    Args:
        a: the analysis.
        orderings: transfer_ordering(a.transfer.languages), when already computed.

    Returns:
        Paragraphs in plain words (Markdown-safe: no tables, no HTML).
    """
    orderings = transfer_ordering(a.transfer.languages) if orderings is None else orderings
    out: list[str] = []
    if orderings:
        out.append(_gains_sentence(orderings))
        out.append(seed_verdict(orderings))
    else:
        out.append("No fine-tuned cell has a D_T: nothing to say about transfer yet.")
    out.append(_finetune_vs_scratch(a.cells))
    out += _regime_sentences(a.regimes.table)
    out.append(_flag_sentence(a))
    return [s for s in out if s]


def _name(lang: str) -> str:
    return LANGUAGE_NAMES.get(lang, lang)


def _gains_sentence(orderings: list[SizeOrdering]) -> str:
    parts = []
    for o in orderings:
        ranked = [e for e in o.entries if _ranked(e)]
        if not ranked:
            parts.append(f"at {o.size} (N = {_fmt_n(o.n_params)}) no language has a D_T")
            continue
        top = ranked[0]
        rest = ", ".join(f"{_name(e.language)} {sci(e.d_t)} (D_F/D_E {e.fraction:.2g})" for e in ranked[1:])
        where = f"at {o.size} (N = {_fmt_n(o.n_params)}, D_F = {o.d_f:,.0f} tokens)"
        if not top.below_asymptote and top.d_t <= 0:
            # A negative D_T is fine-tuning doing worse than training from scratch: no language "gains".
            parts.append(
                f"{where} no language gains: every D_T <= 0 (fine-tuning no better than scratch); the least "
                f"harmed is {_name(top.language)} with D_T = {sci(top.d_t)} tokens{_interval(top)}, D_F/D_E = "
                f"{top.fraction:.2g}" + (f"; then {rest}" if rest else "")
            )
            continue
        value = "more than any scratch run reaches" if top.below_asymptote else f"{sci(top.d_t)} tokens"
        parts.append(
            f"{where} {_name(top.language)} gains most: D_T = {value}{_interval(top)}, D_F/D_E = "
            f"{top.fraction:.2g}" + (f"; then {rest}" if rest else "")
        )
    return (
        "Which language gains most from English pre-training (effective data transferred D_T in tokens, 95% "
        "bootstrap interval; D_F/D_E smaller = more help): " + "; ".join(parts) + "."
    )


def _interval(e: Entry) -> str:
    return f" [{sci(e.d_t_lo)}, {sci(e.d_t_hi)}]" if math.isfinite(e.d_t_lo) else ""


def _finetune_vs_scratch(cells: pd.DataFrame) -> str:
    """Per D_F: in how many (language, size) pairs the fine-tuned loss is below the scratch loss."""
    keys = ["language", "n_params", "d_f"]
    both = cells.pivot_table(index=keys, columns="init", values="best_val_loss", aggfunc="first")
    if not {"scratch", "finetune"} <= set(both.columns):
        return "Fine-tuning and training from scratch cannot be compared: the sweep ran only one of them."
    both = both.dropna(subset=["scratch", "finetune"]).reset_index()
    if both.empty:
        return "No (language, size, D_F) has both a fine-tuned and a scratch run."
    both["wins"] = both["finetune"] < both["scratch"]
    sizes = cells.dropna(subset=["size"]).groupby("n_params")["size"].first() if "size" in cells else {}
    per_d = [f"{d:,.0f}: {int(g['wins'].sum())}/{len(g)}" for d, g in both.groupby("d_f", sort=True)]
    text = (
        "Fine-tuning reaches a lower validation loss than training from scratch, per D_F in tokens "
        f"((language, size) pairs where it does): {', '.join(per_d)}"
    )
    losses = both[~both["wins"]]
    if losses.empty:
        return text + "; it wins everywhere."
    named = [
        f"{r.language} {sizes.get(r.n_params, _fmt_n(r.n_params))} at D_F {r.d_f:,.0f} "
        f"({r.finetune:.4g} vs {r.scratch:.4g} nats/token)"
        for r in losses.head(MAX_LISTED).itertuples()
    ]
    more = f" and {len(losses) - MAX_LISTED} more" if len(losses) > MAX_LISTED else ""
    return text + f". Not at: {', '.join(named)}{more}."


def _regime_sentences(t: pd.DataFrame) -> list[str]:
    if t.empty:
        return []
    conv = t["convergence"].astype(str)
    converged = int(conv.str.startswith("converged").sum())
    budget = int(conv.str.startswith("under-trained").sum())
    diverged = int((conv == "diverged").sum())
    other = len(t) - converged - budget - diverged
    text = (
        f"Of {len(t)} cells, {converged} converged (stopped at their overfitting point or plateau, or flat at "
        f"the token cap) and {budget} were budget-limited (the token cap ended them while the loss still fell)"
    )
    if diverged:
        text += f"; {diverged} diverged"
    if other:
        text += f"; {other} unknown"
    sentences = [text + "."]
    parts = []
    for init, g in t.groupby("init", sort=True):
        labels = g["limited_by"].astype(str)
        p, d = int((labels == "parameter-limited").sum()), int((labels == "data-limited").sum())
        unknown = len(g) - p - d
        part = f"{init}: {p} parameter-limited, {d} data-limited"
        if unknown:
            part += f", {unknown} without a joint fit"
        slopes = g["slope_label"].astype(str)
        flat = int(slopes.str.startswith("data-limited").sum())
        measured = int((slopes != "unknown").sum())
        if measured:
            part += f" (measured slope in log N: {flat} of {measured} flat)"
        parts.append(part)
    sentences.append("By the joint fit's larger term, " + "; ".join(parts) + ".")
    return sentences


def _flag_sentence(a: Analysis) -> str:
    tables = [lt.table for lt in a.transfer.languages.values() if not lt.table.empty]
    if not tables:
        return ""
    t = pd.concat(tables, ignore_index=True)
    ex = t[t["extrapolated"] & ~t["below_asymptote"]]
    below = t[t["below_asymptote"]]
    parts = []
    if len(ex):
        named = ", ".join(
            f"{r.language} {r.size} at D_F {r.d_f:,.0f}" for r in ex.head(MAX_LISTED).itertuples()
        )
        more = f" and {len(ex) - MAX_LISTED} more" if len(ex) > MAX_LISTED else ""
        parts.append(
            f"D_E is extrapolated beyond the scratch runs' D range in {len(ex)} of {len(t)} fine-tuned cells "
            f"({named}{more}): those D_T rest on the scratch power law outside its data"
        )
    else:
        parts.append(f"No D_E is extrapolated ({len(t)} fine-tuned cells)")
    if len(below):
        parts.append(
            f"{len(below)} fine-tuned cells reach a loss at or below their scratch curve's asymptote (D_E undefined)"
        )
    interp = [
        f"{lang} {_fmt_n(n)}"
        for lang, lt in a.transfer.languages.items()
        for n, c in sorted(lt.curves.items())
        if c.fit is None
    ]
    if interp:
        parts.append(
            f"scratch curves interpolated (fewer than 4 scratch points, no interval) for {', '.join(interp)}"
        )
    nosc = int(t["no_scratch"].sum())
    if nosc:
        parts.append(f"{nosc} fine-tuned cells have no scratch runs at their size")
    return "; ".join(parts) + "."


def _fmt_n(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"
