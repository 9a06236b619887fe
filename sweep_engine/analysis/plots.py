"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display).

Each function draws one figure from the analysis and returns a `Figure` record: file, title, and the units
of its axes, which the report prints under it. Where the ledger has nothing to draw (no pre-training rows)
the figure says so instead of being left out, so a report always holds the same set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

if TYPE_CHECKING:
    from sweep_engine.analysis.report import Analysis

LOSS_UNIT = {"tokens": "nats per token", "chars": "bits per character"}
D_UNIT = {"tokens": "tokens", "chars": "characters"}


@dataclass
class Figure:
    name: str  # file stem under figures/
    title: str
    units: str
    path: Path


def _fmt_n(n: float) -> str:
    return f"N={n / 1e6:.3g}M" if n >= 1e6 else f"N={n / 1e3:.3g}K"


def _colors(k: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def _panels(k: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.4)) -> tuple[MplFigure, list[Axes]]:
    k = max(k, 1)
    cols = min(ncols, k)
    rows = math.ceil(k / cols)
    fig = MplFigure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(k)]
    return fig, axes


def _no_data(ax: Axes) -> None:
    """A panel with nothing to draw (e.g. no scratch runs at this size) says so; on a log axis it would raise."""
    bounds = np.asarray(ax.dataLim.bounds)
    x0, y0 = ax.dataLim.x0, ax.dataLim.y0
    log_bad = (ax.get_xscale() == "log" and not x0 > 0) or (ax.get_yscale() == "log" and not y0 > 0)
    if not ax.has_data() or not np.isfinite(bounds).all() or log_bad:
        for art in [*ax.lines, *ax.collections]:
            art.remove()
        ax.set_xscale("linear")
        ax.set_yscale("linear")
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()


def _save(fig: MplFigure, out: Path, name: str, title: str, units: str) -> Figure:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    for ax in fig.axes:
        _no_data(ax)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return Figure(name=name, title=title, units=units, path=path)


def _empty(out: Path, name: str, title: str, why: str) -> Figure:
    fig, (ax,) = _panels(1)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return _save(fig, out, name, title, "none (no data)")


def transfer_curves(a: Analysis, out: Path) -> list[Figure]:
    """Per language, one panel per size: scratch and fine-tuned loss against D_F, D_T drawn as arrows."""
    figs = []
    for lang, lt in a.transfer.languages.items():
        c = a.cells[a.cells["language"] == lang]
        sizes = sorted(c["n_params"].unique())
        fig, axes = _panels(len(sizes))
        dcol, lcol = ("d_f", "best_val_loss") if lt.basis == "tokens" else ("d_f_chars", "best_val_bpc")
        for ax, n in zip(axes, sizes, strict=False):
            sc = c[(c["n_params"] == n) & (c["init"] == "scratch")].sort_values(dcol)
            ft = c[(c["n_params"] == n) & (c["init"] == "finetune")].sort_values(dcol)
            ax.plot(sc[dcol], sc[lcol], "o", mfc="none", color="C0", label="scratch")
            ax.plot(ft[dcol], ft[lcol], "o-", color="C1", label="fine-tuned")
            curve = lt.curves.get(float(n))
            if curve is not None and len(sc):
                grid = np.geomspace(
                    min(sc[dcol].min(), ft[dcol].min() if len(ft) else np.inf), sc[dcol].max() * 3, 100
                )
                ax.plot(grid, curve.loss_at(grid), "--", color="C0", lw=1, label=f"scratch {curve.kind}")
            rows = lt.table[lt.table["n_params"] == n]
            for _, r in rows.iterrows():
                d_f, d_e = (r["d_f"], r["d_e"]) if lt.basis == "tokens" else (r["d_f_chars"], r["d_e_chars"])
                y = r["loss"] if lt.basis == "tokens" else r["bpc"]
                if np.isfinite(d_e):
                    style = "dotted" if r["extrapolated"] else "solid"
                    ax.annotate(
                        "",
                        xy=(d_e, y),
                        xytext=(d_f, y),
                        arrowprops={"arrowstyle": "->", "color": "C2", "ls": style},
                    )
            ax.set(
                xscale="log",
                title=_fmt_n(n),
                xlabel=f"D_F ({D_UNIT[lt.basis]})",
                ylabel=f"loss ({LOSS_UNIT[lt.basis]})",
            )
        axes[0].legend(fontsize=7)
        title = f"{lang}: scratch vs fine-tuned loss; arrows = D_T (dotted: extrapolated D_E)"
        figs.append(
            _save(
                fig, out, f"transfer_{lang}", title, f"loss in {LOSS_UNIT[lt.basis]}, D in {D_UNIT[lt.basis]}"
            )
        )
    return figs


def fraction(a: Analysis, out: Path) -> list[Figure]:
    """D_F / D_E against D_F, one line per size, one panel per language."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        t = a.transfer.languages[lang].table
        sizes = sorted(t["n_params"].unique()) if not t.empty else []
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = t[(t["n_params"] == n) & np.isfinite(t["fraction"])].sort_values("d_f")
            ax.plot(r["d_f"], r["fraction"], "-", color=col, label=_fmt_n(n))
            ex = r[r["extrapolated"]]
            ax.plot(r.loc[~r["extrapolated"], "d_f"], r.loc[~r["extrapolated"], "fraction"], "o", color=col)
            ax.plot(ex["d_f"], ex["fraction"], "o", mfc="none", color=col)
        ax.set(xscale="log", yscale="log", title=lang, xlabel="D_F (tokens)", ylabel="D_F / D_E")
        ax.legend(fontsize=7)
    return [
        _save(
            fig,
            out,
            "fraction",
            "Fraction of effective data from fine-tuning (open = extrapolated D_E)",
            "D_F in tokens; D_F / D_E unitless",
        )
    ]


def loss_vs_n(a: Analysis, out: Path) -> list[Figure]:
    """Loss against N at fixed D_F, both inits (solid fine-tuned, dashed scratch)."""
    langs = sorted(a.cells["language"].unique())
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        c = a.cells[a.cells["language"] == lang]
        dfs = sorted(c["d_f"].unique())
        for col, d in zip(_colors(len(dfs)), dfs, strict=False):
            for init, style in (("finetune", "o-"), ("scratch", "s--")):
                r = c[(c["d_f"] == d) & (c["init"] == init)].sort_values("n_params")
                ax.plot(
                    r["n_params"],
                    r["best_val_loss"],
                    style,
                    color=col,
                    ms=4,
                    label=f"D_F={d:.0e}" if init == "finetune" else None,
                )
        ax.set(
            xscale="log", title=lang, xlabel="N (non-embedding parameters)", ylabel="loss (nats per token)"
        )
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "loss_vs_n",
            "Loss against N at fixed D_F (solid: fine-tuned, dashed: scratch)",
            "loss in nats per token, N in non-embedding parameters, D_F in tokens",
        )
    ]


def compute(a: Analysis, out: Path) -> list[Figure]:
    """Loss against training compute for both inits, with each init's frontier."""
    t = a.regimes.table
    langs = sorted(t["language"].unique()) if not t.empty else []
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        for init, col in (("scratch", "C0"), ("finetune", "C1")):
            r = t[(t["language"] == lang) & (t["init"] == init)]
            ax.plot(r["flops"], r["best_val_loss"], "o", color=col, alpha=0.4, ms=4, label=init)
            fr = r[r["on_frontier"]].sort_values("flops")
            ax.step(fr["flops"], fr["best_val_loss"], where="post", color=col, lw=1.5)
        ax.set(
            xscale="log",
            title=lang,
            xlabel="C = 6 N tokens_seen (FLOPs; pre-training excluded)",
            ylabel="loss (nats per token)",
        )
        ax.legend(fontsize=7)
    return [
        _save(
            fig,
            out,
            "compute",
            "Loss against compute, with the compute frontier per init",
            "loss in nats per token, C in FLOPs",
        )
    ]


def pretrain(a: Analysis, out: Path) -> list[Figure]:
    """English pre-training validation curves per size."""
    p = a.pretrain
    curves = []
    for _, r in p.iterrows():
        try:
            pts = json.loads(r["curve"]) if isinstance(r.get("curve"), str) else []
        except ValueError:
            pts = []
        if pts:
            curves.append((float(r["n_params"]), pts))
    if not curves:
        return [
            _empty(
                out, "pretrain", "Pre-training curves", "no pre-training rows with curves in the ledger(s)"
            )
        ]
    fig, (ax,) = _panels(1, size=(6, 4))
    curves.sort(key=lambda x: x[0])
    for col, (n, pts) in zip(_colors(len(curves)), curves, strict=False):
        ax.plot([q["tokens"] for q in pts], [q["val_loss"] for q in pts], color=col, label=_fmt_n(n))
    ax.set(xscale="log", xlabel="tokens seen", ylabel="validation loss (nats per token)")
    ax.legend(fontsize=7)
    return [
        _save(
            fig,
            out,
            "pretrain",
            "English pre-training curves",
            "validation loss in nats per token, tokens seen in tokens",
        )
    ]


def scratch_fits(a: Analysis, out: Path) -> list[Figure]:
    """The per-size scratch power laws with their bootstrap bands."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        lt = a.transfer.languages[lang]
        curves = sorted(lt.curves.items())
        for col, (n, c) in zip(_colors(len(curves)), curves, strict=False):
            ax.plot(c.d, c.loss, "o", color=col, ms=4)
            grid = np.geomspace(c.d.min() / 3, c.d.max() * 3, 100)
            if c.fit is not None:
                lo, hi = c.fit.band(x=grid)
                ax.fill_between(grid, lo, hi, color=col, alpha=0.2)
                p = c.fit.params
                label = f"{_fmt_n(n)}: E={p['E']:.2f} beta={p['beta']:.2f}"
            else:
                label = f"{_fmt_n(n)}: interpolated"
            ax.plot(grid, c.loss_at(grid), color=col, lw=1, label=label)
        ax.set(
            xscale="log",
            title=f"{lang} ({lt.basis})",
            xlabel=f"D ({D_UNIT[lt.basis]})",
            ylabel=f"loss ({LOSS_UNIT[lt.basis]})",
        )
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "scratch_fits",
            "Scratch curves L = E + B / D^beta per size, 95% bootstrap bands",
            "per panel, the language's basis (in its title): tokens = loss in nats per token and D in tokens, "
            "chars = loss in bits per character and D in characters",
        )
    ]


def joint_fits(a: Analysis, out: Path) -> list[Figure]:
    """The joint fits per (language, init) against the cells, with bands."""
    keys = sorted(a.regimes.joint)
    if not keys:
        return [_empty(out, "joint_fits", "Joint fits", "too few cells for a joint fit")]
    fig, axes = _panels(len(keys))
    for ax, (lang, init) in zip(axes, keys, strict=False):
        fit = a.regimes.joint[(lang, init)]
        c = a.cells[(a.cells["language"] == lang) & (a.cells["init"] == init)]
        sizes = sorted(c["n_params"].unique())
        grid = np.geomspace(c["d_f"].min() / 2, c["d_f"].max() * 2, 80)
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = c[c["n_params"] == n]
            ax.plot(r["d_f"], r["best_val_loss"], "o", color=col, ms=4)
            lo, hi = fit.band(n=np.full_like(grid, n), d=grid)
            ax.fill_between(grid, lo, hi, color=col, alpha=0.2)
            ax.plot(grid, fit.predict(n=np.full_like(grid, n), d=grid), color=col, lw=1, label=_fmt_n(n))
        ax.set(
            xscale="log",
            title=f"{lang} {init}: {fit.law} (rmsd log {fit.rmsd_log:.3f})",
            xlabel="D (tokens)",
            ylabel="loss (nats per token)",
        )
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "joint_fits",
            "Joint fits L(N, D) (Kaplan or Chinchilla form) with 95% bootstrap bands",
            "loss in nats per token, D in tokens",
        )
    ]


def transfer_law(a: Analysis, out: Path) -> list[Figure]:
    """D_T against D_F (characters) with the fitted law per size and its band."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        lt = a.transfer.languages[lang]
        t = lt.table
        fit = lt.laws.get("chars")
        sizes = sorted(t["n_params"].unique()) if not t.empty else []
        used = lt.law_points.get("chars")
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = t[(t["n_params"] == n) & (t["d_t_chars"] > 0)]
            fitted = r.index.isin(used.index) if used is not None else np.zeros(len(r), dtype=bool)
            ax.plot(
                r.loc[fitted, "d_f_chars"], r.loc[fitted, "d_t_chars"], "o", color=col, ms=4, label=_fmt_n(n)
            )
            ax.plot(
                r.loc[~fitted, "d_f_chars"], r.loc[~fitted, "d_t_chars"], "o", mfc="none", color=col, ms=4
            )
            if fit is not None and len(r):
                grid = np.geomspace(t["d_f_chars"].min(), t["d_f_chars"].max(), 60)
                lo, hi = fit.band(d_f=grid, n=np.full_like(grid, n))
                ax.fill_between(grid, lo, hi, color=col, alpha=0.15)
                ax.plot(grid, fit.predict(d_f=grid, n=np.full_like(grid, n)), color=col, lw=1)
        if fit is not None:
            p = fit.params
            ax.set_title(f"{lang}: k={p['k']:.3g} alpha={p['alpha']:.2f} beta={p['beta']:.2f}", fontsize=9)
        else:
            ax.set_title(f"{lang}: no fit ({lt.law_notes.get('chars', '')})", fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="D_F (characters)", ylabel="D_T (characters)")
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "transfer_law",
            "Transfer law D_T = k D_F^alpha N^beta, 95% bootstrap bands (hollow: not fitted)",
            "D_F and D_T in characters",
        )
    ]


def bpc(a: Analysis, out: Path) -> list[Figure]:
    """Bits per character against D_F in characters: the languages on one scale, one panel per size."""
    sizes = sorted(a.cells["n_params"].unique())
    fig, axes = _panels(len(sizes))
    langs = sorted(a.cells["language"].unique())
    for ax, n in zip(axes, sizes, strict=False):
        for i, lang in enumerate(langs):
            for init, style in (("finetune", "o-"), ("scratch", "s--")):
                r = a.cells[
                    (a.cells["n_params"] == n) & (a.cells["language"] == lang) & (a.cells["init"] == init)
                ]
                r = r.sort_values("d_f_chars")
                ax.plot(r["d_f_chars"], r["best_val_bpc"], style, color=f"C{i}", ms=4, label=f"{lang} {init}")
        ax.set(xscale="log", title=_fmt_n(n), xlabel="D_F (characters)", ylabel="loss (bits per character)")
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "bpc",
            "Loss in bits per character: languages on one scale",
            "bits per character, D_F in characters",
        )
    ]


def forgetting(a: Analysis, out: Path) -> list[Figure]:
    """English validation loss of fine-tuned runs against D_F (when extra_val_loss_en exists)."""
    if "extra_val_loss_en" not in a.cells.columns or a.cells["extra_val_loss_en"].isna().all():
        # Said, not left out: a report always holds the same figures.
        why = (
            "no English extra validation loss (extra_val_loss_en) in the ledger(s): set transfer.extra_val.en"
        )
        return [_empty(out, "forgetting", "Forgetting", why)]
    ft = a.cells[a.cells["init"] == "finetune"]
    langs = sorted(ft["language"].unique())
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        c = ft[ft["language"] == lang]
        sizes = sorted(c["n_params"].unique())
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = c[c["n_params"] == n].sort_values("d_f")
            ax.plot(r["d_f"], r["extra_val_loss_en"], "o-", color=col, ms=4, label=_fmt_n(n))
            if "zero_shot_extra_val_loss_en" in r and r["zero_shot_extra_val_loss_en"].notna().any():
                ax.axhline(float(r["zero_shot_extra_val_loss_en"].mean()), color=col, ls=":", lw=1)
        ax.set(xscale="log", title=lang, xlabel="D_F (tokens)", ylabel="English val loss (nats per token)")
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "forgetting",
            "Forgetting: English validation loss of fine-tuned models after fine-tuning (dotted: before)",
            "English validation loss in nats per token, D_F in target-language tokens",
        )
    ]


def regimes_map(a: Analysis, out: Path) -> list[Figure]:
    """Each cell placed at (D_F, N): colour = limiting term, hollow = under-trained."""
    t = a.regimes.table
    keys = sorted({(r.language, r.init) for r in t.itertuples()}) if not t.empty else []
    fig, axes = _panels(len(keys))
    colours = {"parameter-limited": "C3", "data-limited": "C0"}
    for ax, (lang, init) in zip(axes, keys, strict=False):
        r = t[(t["language"] == lang) & (t["init"] == init)]
        for label, col in colours.items():
            s = r[r["limited_by"] == label]
            under = s["convergence"].str.startswith("under")
            ax.plot(s.loc[~under, "d_f"], s.loc[~under, "n_params"], "o", color=col, label=label)
            ax.plot(s.loc[under, "d_f"], s.loc[under, "n_params"], "o", mfc="none", color=col)
        ax.set(
            xscale="log",
            yscale="log",
            title=f"{lang} {init}",
            xlabel="D_F (tokens)",
            ylabel="N (non-embedding parameters)",
        )
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "regimes",
            "Regimes: limiting term of the joint fit (hollow = under-trained)",
            "D_F in tokens, N in non-embedding parameters",
        )
    ]


FIGURES: list[Callable[[Analysis, Path], list[Figure]]] = [
    transfer_curves,
    fraction,
    transfer_law,
    loss_vs_n,
    bpc,
    compute,
    scratch_fits,
    joint_fits,
    regimes_map,
    pretrain,
    forgetting,
]


def draw_all(a: Analysis, out: Path) -> list[Figure]:
    """Every figure of the report, written under `out`."""
    figs: list[Figure] = []
    for draw in FIGURES:
        try:
            figs += draw(a, out)
        except (ValueError, KeyError, IndexError) as exc:
            # A figure that cannot be drawn from this ledger must not cost the rest of the report.
            name = draw.__name__
            figs.append(
                _empty(out, name, name.replace("_", " "), f"could not draw: {type(exc).__name__}: {exc}")
            )
    return figs
