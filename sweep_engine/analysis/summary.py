"""The report's plain-words summary and its headline: the evidence first, then which language gains most.

Everything here is generated from the analysis' numbers (no hand-written claims). Per size, at the smallest
D_F every language ran, the headline gives in this order:
1. the evidence: the fine-tuned minus scratch loss gap on the same test documents, in nats per token and bits
   per character, with its paired 95% interval (negative = fine-tuning helps);
2. D_F / D_E (unitless, so fair across scripts; smaller = more transfer) and D_T in tokens and characters,
   with intervals; an out-of-range D_E is given as a bound;
3. the ordering by D_F / D_E against the seed study's German > Spanish > Chinese (Kim 2021), naming each pair
   of languages as resolved (the paired replicates put one ahead in >= 97.5% of draws) or not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sweep_engine.analysis.pipeline import Analysis
    from sweep_engine.analysis.transfer import LanguageTransfer

SEED_ORDER = ("de", "es", "zh")  # Kim 2021: transfer is largest for German, then Spanish, then Chinese
LANGUAGE_NAMES = {"de": "German", "es": "Spanish", "zh": "Chinese", "en": "English", "fr": "French"}
MAX_LISTED = 6  # exceptions listed by name in a sentence; the rest are counted
RESOLVED_SHARE = 0.975  # a pair is resolved when one language is ahead in this share of paired replicates


@dataclass
class Entry:
    """One language at one (size, D_F): the gap, D_F / D_E and D_T with 95% intervals and the flags."""

    language: str
    gap: float  # nats per token (NaN when the inits' tokenizers differ)
    gap_lo: float
    gap_hi: float
    gap_bpc: float  # bits per character
    gap_bpc_lo: float
    gap_bpc_hi: float
    fraction: float  # D_F / D_E
    fraction_lo: float
    fraction_hi: float
    d_t: float  # tokens
    d_t_lo: float
    d_t_hi: float
    d_t_chars: float
    d_t_chars_lo: float
    d_t_chars_hi: float
    position: str  # inside / above / below the scratch range
    bound: str

    @property
    def ranked(self) -> bool:
        return math.isfinite(self.fraction) or self.position == "above"


@dataclass
class Pair:
    """Two languages at one size: the share of paired replicates in which `first` transfers more."""

    first: str
    second: str
    share: float

    @property
    def resolved(self) -> bool:
        return self.share >= RESOLVED_SHARE


@dataclass
class SizeOrdering:
    """The languages at one size ranked by D_F / D_E (smallest first) at the smallest common D_F."""

    size: str
    n_params: float
    d_f: float  # tokens
    entries: list[Entry] = field(default_factory=list)  # ranked first; languages without a D_E last
    pairs: list[Pair] = field(default_factory=list)  # neighbours in the ranking

    @property
    def order(self) -> list[str]:
        return [e.language for e in self.entries if e.ranked]

    @property
    def matches_seed(self) -> bool | None:
        """Whether the seed study's languages present here come in its order (None: fewer than two)."""
        seen = [lang for lang in self.order if lang in SEED_ORDER]
        if len(seen) < 2:
            return None
        return seen == [lang for lang in SEED_ORDER if lang in seen]

    @property
    def unresolved(self) -> list[tuple[str, str]]:
        return [(p.first, p.second) for p in self.pairs if not p.resolved]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "n_params": self.n_params,
            "d_f": self.d_f,
            "order": self.order,
            "matches_seed": self.matches_seed,
            "pairs": [{**asdict(p), "resolved": p.resolved} for p in self.pairs],
            "entries": [asdict(e) for e in self.entries],
        }


def transfer_ordering(languages: dict[str, LanguageTransfer]) -> list[SizeOrdering]:
    """Per size (smallest N first), the languages ranked by D_F / D_E at the smallest D_F they all share."""
    tables = [lt.table for lt in languages.values() if not lt.table.empty]
    if not tables:
        return []
    t = pd.concat(tables, ignore_index=True)
    out = []
    for n, g in t.groupby("n_params", sort=True):
        common = set.intersection(*[set(x["d_f"]) for _, x in g.groupby("language")])
        d_f = min(common) if common else float(g["d_f"].min())  # all languages at one D_F when possible
        rows = g[g["d_f"] == d_f]
        entries = [Entry(**{f: _value(r, f) for f in Entry.__dataclass_fields__}) for _, r in rows.iterrows()]
        entries.sort(
            key=lambda e: (not e.ranked, e.fraction if math.isfinite(e.fraction) else 0.0, e.language)
        )
        ranked = [e for e in entries if e.ranked]
        pairs = [
            Pair(
                a.language, b.language, _share_ahead(languages, a.language, b.language, float(n), float(d_f))
            )
            for a, b in zip(ranked, ranked[1:], strict=False)
        ]
        size = rows["size"].dropna()
        out.append(
            SizeOrdering(
                size=str(size.iloc[0]) if len(size) else _fmt_n(float(n)),
                n_params=float(n),
                d_f=float(d_f),
                entries=entries,
                pairs=pairs,
            )
        )
    return out


def _value(r: pd.Series, name: str) -> Any:
    v = r.get(name, math.nan)
    if name in ("language", "position", "bound"):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return float(v)


def _share_ahead(languages: dict[str, LanguageTransfer], a: str, b: str, n: float, d_f: float) -> float:
    """Share of paired replicates where `a` has the smaller D_F / D_E than `b` (ties count half)."""
    ra, rb = languages[a].reps.get((n, d_f)), languages[b].reps.get((n, d_f))
    if ra is None or rb is None or ra["fraction"].size < 2:
        return math.nan
    fa, fb = ra["fraction"][1:], rb["fraction"][1:]
    ok = ~(np.isnan(fa) | np.isnan(fb))
    if not ok.any():
        return math.nan
    return float(np.mean(np.where(fa[ok] == fb[ok], 0.5, fa[ok] < fb[ok])))


def sci(v: float) -> str:
    """A count as people write it in one line: 3.1e4 (two significant digits), ∞, or n/a."""
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else ("∞" if v > 0 else "-∞")
    if v == 0:
        return "0"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _ci(lo: float, hi: float, f: Any = sci) -> str:
    return f" [{f(lo)}, {f(hi)}]" if math.isfinite(lo) or math.isfinite(hi) else ""


def _signed(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.3f}"


def gap_text(e: Entry) -> str:
    """The evidence for one language: the paired gap in nats per token and bits per character."""
    nats = f"{_signed(e.gap)} nats/token{_ci(e.gap_lo, e.gap_hi, _signed)}, " if math.isfinite(e.gap) else ""
    return f"{e.language} {nats}{_signed(e.gap_bpc)} bits/char{_ci(e.gap_bpc_lo, e.gap_bpc_hi, _signed)}"


def transfer_text(e: Entry) -> str:
    """D_F / D_E and D_T for one language; an out-of-range D_E is a bound, never a point."""
    if e.position == "above":
        return f"{e.language} D_F/D_E < {e.fraction_hi:.2g} ({e.bound})"
    if e.position == "below":
        return f"{e.language} D_F/D_E > {e.fraction_lo:.2g} ({e.bound})"
    if not math.isfinite(e.fraction):
        return f"{e.language} no D_E"
    return (
        f"{e.language} D_F/D_E {e.fraction:.2g}{_ci(e.fraction_lo, e.fraction_hi, lambda v: f'{v:.2g}')}, "
        f"D_T {sci(e.d_t)} tokens{_ci(e.d_t_lo, e.d_t_hi)} = {sci(e.d_t_chars)} chars"
        f"{_ci(e.d_t_chars_lo, e.d_t_chars_hi)}"
    )


def headline(orderings: list[SizeOrdering]) -> dict[str, Any]:
    """The answer in a few lines: the gaps, D_F / D_E and D_T, the ordering and its resolved pairs.

    Returns:
        {"line", "evidence": [per size], "transfer": [per size], "verdict", "matches_seed", "sizes"}.
    """
    if not orderings:
        return {
            "line": "no fine-tuned cells: no transfer to report",
            "evidence": [],
            "transfer": [],
            "verdict": "",
            "matches_seed": None,
            "sizes": [],
        }
    evidence = [
        f"{o.size} at D_F={o.d_f:,.0f}: " + "; ".join(gap_text(e) for e in o.entries) for o in orderings
    ]
    transfer = [
        f"{o.size}: "
        + " > ".join(transfer_text(e) for e in o.entries if e.ranked)
        + "".join(f"; {e.language}: no D_E" for e in o.entries if not e.ranked)
        for o in orderings
    ]
    line = (
        "fine-tuned minus scratch loss on the test documents at the smallest D_F (95% paired interval; "
        "negative = fine-tuning helps): " + " | ".join(evidence)
    )
    return {
        "line": line,
        "evidence": evidence,
        "transfer": transfer,
        "verdict": seed_verdict(orderings),
        "matches_seed": _all_match(orderings),
        "sizes": [o.to_dict() for o in orderings],
    }


def _all_match(orderings: list[SizeOrdering]) -> bool | None:
    verdicts = [o.matches_seed for o in orderings if o.matches_seed is not None]
    return all(verdicts) if verdicts else None


def seed_verdict(orderings: list[SizeOrdering]) -> str:
    """Whether the seed study's de > es > zh holds by D_F / D_E, at which sizes, and which pairs are resolved."""
    seed = " > ".join(SEED_ORDER)
    judged = [o for o in orderings if o.matches_seed is not None]
    if not judged:
        return (
            f"The seed study's ordering {seed} cannot be checked: fewer than two of its languages have a D_E."
        )
    present = sorted({lang for o in judged for lang in o.order if lang in SEED_ORDER}, key=SEED_ORDER.index)
    if len(present) < len(SEED_ORDER):
        seed += f" (of its languages, this sweep has {', '.join(present)})"

    def order_text(o: SizeOrdering) -> str:
        parts = [o.order[0]] if o.order else []
        for p in o.pairs:
            parts.append(f"{'>' if p.resolved else '≳'} {p.second}")
        return " ".join(parts)

    holds = [o for o in judged if o.matches_seed]
    fails = [o for o in judged if not o.matches_seed]
    sizes = ", ".join(f"{o.size} ({order_text(o)})" for o in judged)
    if not fails:
        text = f"By D_F/D_E, the seed study's ordering {seed} holds in the point estimates at every size: {sizes}."
    elif not holds:
        text = f"By D_F/D_E, the seed study's ordering {seed} holds at no size: {sizes}."
    else:
        text = (
            f"By D_F/D_E, the seed study's ordering {seed} holds at {', '.join(o.size for o in holds)} only: "
            f"{sizes}."
        )
    resolved = [f"{p.first} > {p.second} at {o.size}" for o in judged for p in o.pairs if p.resolved]
    loose = [f"{p.first} vs {p.second} at {o.size}" for o in judged for p in o.pairs if not p.resolved]
    text += f" Resolved (> ; one language ahead in >= {RESOLVED_SHARE:.1%} of paired replicates): "
    text += ", ".join(resolved) if resolved else "none"
    text += "; not resolved (≳): " + (", ".join(loose) if loose else "none") + "."
    return text


def plain_summary(a: Analysis, orderings: list[SizeOrdering] | None = None) -> list[str]:
    """A few sentences, generated from the numbers, for the top of the report (Markdown-safe)."""
    orderings = transfer_ordering(a.transfer.languages) if orderings is None else orderings
    out: list[str] = []
    if orderings:
        head = headline(orderings)
        out.append(
            "The evidence, per size at the smallest D_F: fine-tuned minus scratch loss on the same test "
            "documents (95% paired interval; negative = fine-tuning helps): "
            + "; ".join(head["evidence"])
            + "."
        )
        out.append(
            "Transfer in a unit fair across scripts, D_F/D_E (smaller = more help from English), with D_T in "
            "tokens and characters: " + "; ".join(head["transfer"]) + "."
        )
        out.append(head["verdict"])
    else:
        out.append("No fine-tuned cell has a scratch counterpart: nothing to say about transfer yet.")
    out.append(_agreement_sentence(a))
    out.append(_finetune_vs_scratch(a))
    out += _law_sentences(a)
    out += _regime_sentences(a.regimes.table)
    out.append(_flag_sentence(a))
    out.append(a.transfer.method)
    return [s for s in out if s]


def _name(lang: str) -> str:
    return LANGUAGE_NAMES.get(lang, lang)


def _all_tables(a: Analysis) -> pd.DataFrame:
    tables = [lt.table for lt in a.transfer.languages.values() if not lt.table.empty]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _agreement_sentence(a: Analysis) -> str:
    """Where the paired gap is clear (its interval excludes 0), whether D_T's interval excludes 0 too."""
    t = _all_tables(a)
    if t.empty:
        return ""
    clear = t[(t["gap_bpc_hi"] < 0) | (t["gap_bpc_lo"] > 0)]
    if clear.empty:
        return "No cell's paired gap is clear of 0."
    agree = clear[
        ((clear["gap_bpc_hi"] < 0) & (clear["d_t_lo"] > 0))
        | ((clear["gap_bpc_lo"] > 0) & (clear["d_t_hi"] < 0))
    ]
    return (
        f"Of {len(clear)} cells whose paired gap is clear of 0, {len(agree)} have a D_T interval that excludes 0 "
        "on the same side."
    )


def _finetune_vs_scratch(a: Analysis) -> str:
    """Per D_F: in how many (language, size) pairs fine-tuning is clearly better, clearly worse, or tied."""
    t = _all_tables(a)
    if t.empty:
        return "Fine-tuning and training from scratch cannot be compared: the sweep ran only one of them."
    parts = []
    for d, g in t.groupby("d_f", sort=True):
        better, worse = int((g["gap_bpc_hi"] < 0).sum()), int((g["gap_bpc_lo"] > 0).sum())
        parts.append(f"{d:,.0f}: {better} better, {worse} worse, {len(g) - better - worse} within noise")
    return (
        "Fine-tuned against scratch per D_F in tokens ((language, size) pairs, by the paired 95% interval of "
        "the gap in bits per character): " + "; ".join(parts) + "."
    )


def _law_sentences(a: Analysis) -> list[str]:
    out = []
    for lang, lt in a.transfer.languages.items():
        law = lt.law
        if law is None:
            continue
        if not law.identified:
            out.append(
                f"{_name(lang)}: the transfer law D_T = k D_F^alpha N^beta is not identified by this sweep "
                f"({'; '.join(law.reasons)}); no constants are reported."
            )
            continue
        p, ci = law.params, law.ci
        out.append(
            f"{_name(lang)}: transfer law (fitted in the loss domain on {law.n_cells} cells) alpha = "
            f"{p['alpha']:.2f} [{ci['alpha'][0]:.2f}, {ci['alpha'][1]:.2f}], beta = {p['beta']:.2f} "
            f"[{ci['beta'][0]:.2f}, {ci['beta'][1]:.2f}], k = {p['k_chars']:.3g} with D in characters "
            f"({p['k']:.3g} in tokens); the seed study's alpha < 1 {law.claims['alpha < 1']}, "
            f"beta > 0 {law.claims['beta > 0']}."
        )
    return out


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
        f"the token cap) and {budget} were budget-limited (the token cap ended them while the loss still fell; "
        "kept out of the scratch curves and the transfer law)"
    )
    if diverged:
        text += f"; {diverged} diverged"
    if other:
        text += f"; {other} unknown"
    parts = []
    for init, g in t.groupby("init", sort=True):
        slopes = g["slope_label"].astype(str)
        flat, param = (
            int(slopes.str.startswith("data-limited").sum()),
            int((slopes == "parameter-limited").sum()),
        )
        joint = g["joint_label"].astype(str)
        agree = int(((slopes == "parameter-limited") & (joint == "parameter-limited")).sum()
                    + (slopes.str.startswith("data") & (joint == "data-limited")).sum())  # fmt: skip
        judged = int(((slopes != "unknown") & ~joint.str.startswith("unknown")).sum())
        parts.append(
            f"{init}: {param} parameter-limited, {flat} data-limited by the measured slope in log N"
            + (f" (the joint fit agrees on {agree} of {judged})" if judged else "")
        )
    return [text + ".", "; ".join(parts) + "."]


def _flag_sentence(a: Analysis) -> str:
    t = _all_tables(a)
    if t.empty:
        return ""
    out = t[t["extrapolated"]]
    if out.empty:
        return "Every fine-tuned loss lies inside its size's scratch range: every D_E is interpolated."
    named = ", ".join(
        f"{r.language} {r.size} at D_F {r.d_f:,.0f} ({r.position})" for r in out.head(MAX_LISTED).itertuples()
    )
    more = f" and {len(out) - MAX_LISTED} more" if len(out) > MAX_LISTED else ""
    return (
        f"{len(out)} D_E fall outside their scratch range and are reported as bounds: {named}{more} (above: "
        "fine-tuned below every scratch run, D_E beyond the largest; below: above every scratch run)."
    )


def _fmt_n(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"
