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
    from sweep_engine.analysis.pipeline import Analysis

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
    """Per language, one panel per size: scratch points and their monotone curve, fine-tuned points, D_T as
    arrows from D_F to D_E (dotted: D_E outside the scratch range, a bound)."""
    figs = []
    for lang, lt in a.transfer.languages.items():
        c = a.cells[a.cells["language"] == lang]
        sizes = sorted(c["n_params"].unique())
        fig, axes = _panels(len(sizes))
        dcol, lcol = ("d_f", "loss") if lt.basis == "tokens" else ("d_f_chars", "bpc")
        for ax, n in zip(axes, sizes, strict=False):
            sc = c[(c["n_params"] == n) & (c["init"] == "scratch")].sort_values(dcol)
            ft = c[(c["n_params"] == n) & (c["init"] == "finetune")].sort_values(dcol)
            cut = sc["still_falling"].astype(bool)
            ax.plot(sc.loc[~cut, dcol], sc.loc[~cut, lcol], "o", mfc="none", color="C0", label="scratch")
            ax.plot(
                sc.loc[cut, dcol], sc.loc[cut, lcol], "x", color="C0", label="scratch (budget-cut, left out)"
            )
            ax.plot(ft[dcol], ft[lcol], "o-", color="C1", label="fine-tuned")
            curve = lt.curves.get(float(n))
            if curve is not None and curve.usable:
                ax.plot(
                    np.exp(curve.grid_x),
                    np.exp(curve.grid_y[:, 0]),
                    "--",
                    color="C0",
                    lw=1,
                    label="scratch curve",
                )
            rows = lt.table[lt.table["n_params"] == n]
            for _, r in rows.iterrows():
                d_f, d_e = (r["d_f"], r["d_e"]) if lt.basis == "tokens" else (r["d_f_chars"], r["d_e_chars"])
                y = r["loss"] if lt.basis == "tokens" else r["bpc"]
                if np.isfinite(d_e) and d_e > 0:
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
                ylabel=f"test loss ({LOSS_UNIT[lt.basis]})",
            )
        axes[0].legend(fontsize=7)
        title = f"{lang}: scratch vs fine-tuned loss; arrows D_F -> D_E (dotted: outside the scratch range)"
        figs.append(
            _save(
                fig, out, f"transfer_{lang}", title, f"loss in {LOSS_UNIT[lt.basis]}, D in {D_UNIT[lt.basis]}"
            )
        )
    return figs


def gaps(a: Analysis, out: Path) -> list[Figure]:
    """The evidence: fine-tuned minus scratch loss (bits per character) against D_F, 95% paired intervals."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        t = a.transfer.languages[lang].table
        sizes = sorted(t["n_params"].unique()) if not t.empty else []
        for i, (col, n) in enumerate(zip(_colors(len(sizes)), sizes, strict=False)):
            r = t[t["n_params"] == n].sort_values("d_f")
            shift = 1.0 + 0.04 * (
                i - (len(sizes) - 1) / 2
            )  # side by side, so the bars do not hide each other
            err = np.vstack([r["gap_bpc"] - r["gap_bpc_lo"], r["gap_bpc_hi"] - r["gap_bpc"]])
            ax.errorbar(r["d_f"] * shift, r["gap_bpc"], yerr=np.nan_to_num(err), fmt="o-", color=col, ms=4,
                        capsize=2, label=_fmt_n(n))  # fmt: skip
        ax.axhline(0.0, color="0.5", lw=1)
        ax.set(xscale="log", title=lang, xlabel="D_F (tokens)", ylabel="fine-tuned - scratch (bits per char)")
        ax.legend(fontsize=7)
    title = (
        "The evidence: fine-tuned minus scratch test loss, 95% paired intervals (below 0 = transfer helps)"
    )
    return [_save(fig, out, "gaps", title, "loss gap in bits per character, D_F in tokens")]


def fraction(a: Analysis, out: Path) -> list[Figure]:
    """D_F / D_E against D_F, one line per size, one panel per language."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        t = a.transfer.languages[lang].table
        sizes = sorted(t["n_params"].unique()) if not t.empty else []
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = t[(t["n_params"] == n) & np.isfinite(t["fraction"]) & (t["fraction"] > 0)].sort_values("d_f")
            inside = r[~r["extrapolated"]]
            err = np.vstack(
                [inside["fraction"] - inside["fraction_lo"], inside["fraction_hi"] - inside["fraction"]]
            )
            ax.errorbar(inside["d_f"], inside["fraction"], yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o",
                        color=col, ms=4, capsize=2, label=_fmt_n(n))  # fmt: skip
            ax.plot(r["d_f"], r["fraction"], "-", color=col, lw=0.8)
            ex = r[r["extrapolated"]]
            ax.plot(ex["d_f"], ex["fraction"], "o", mfc="none", color=col)
        ax.set(xscale="log", yscale="log", title=lang, xlabel="D_F (tokens)", ylabel="D_F / D_E")
        ax.legend(fontsize=7)
    return [
        _save(
            fig,
            out,
            "fraction",
            "D_F / D_E with 95% intervals (open = D_E outside the scratch range, a bound)",
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
                    r["loss"],
                    style,
                    color=col,
                    ms=4,
                    label=f"D_F={d:.0e}" if init == "finetune" else None,
                )
        ax.set(
            xscale="log",
            title=lang,
            xlabel="N (non-embedding parameters)",
            ylabel="test loss (nats per token)",
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
            ax.plot(r["flops"], r["loss"], "o", color=col, alpha=0.4, ms=4, label=init)
            fr = r[r["on_frontier"]].sort_values("flops")
            ax.step(fr["flops"], fr["loss"], where="post", color=col, lw=1.5)
        ax.set(
            xscale="log",
            title=lang,
            xlabel="C = 6 N tokens at the best step (FLOPs; pre-training excluded)",
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


def scratch_curves(a: Analysis, out: Path) -> list[Figure]:
    """The per-size monotone scratch curves through the measurements, with the replicates' 95% band."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        lt = a.transfer.languages[lang]
        curves = sorted(lt.curves.items())
        for col, (n, c) in zip(_colors(len(curves)), curves, strict=False):
            ax.plot(c.d, c.loss[:, 0], "o", color=col, ms=4)
            for d, _ in c.excluded:
                ax.axvline(d, color=col, ls=":", lw=0.8)
            if not c.usable:
                continue
            x = np.exp(c.grid_x)
            if c.replicates > 2:
                lo, hi = np.percentile(np.exp(c.grid_y[:, 1:]), [2.5, 97.5], axis=1)
                ax.fill_between(x, lo, hi, color=col, alpha=0.2)
            ax.plot(x, np.exp(c.grid_y[:, 0]), color=col, lw=1, label=_fmt_n(n))
        ax.set(
            xscale="log",
            title=f"{lang} ({lt.basis})",
            xlabel=f"D ({D_UNIT[lt.basis]})",
            ylabel=f"test loss ({LOSS_UNIT[lt.basis]})",
        )
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "scratch_curves",
            "Scratch curves: monotone interpolants through the measurements, 95% bootstrap bands "
            "(dotted: budget-cut runs left out)",
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
            ax.plot(r["d_f"], r["loss"], "o", color=col, ms=4)
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
    """D_T against D_F (characters) with 95% intervals (D_E inside the scratch range only), and the fitted
    law per size where the rule calls it identified."""
    langs = list(a.transfer.languages)
    fig, axes = _panels(len(langs))
    for ax, lang in zip(axes, langs, strict=False):
        lt = a.transfer.languages[lang]
        t = lt.table
        law = lt.law
        sizes = sorted(t["n_params"].unique()) if not t.empty else []
        for col, n in zip(_colors(len(sizes)), sizes, strict=False):
            r = t[(t["n_params"] == n) & ~t["extrapolated"] & (t["d_t_chars"] > 0)].sort_values("d_f_chars")
            lo = np.clip(r["d_t_chars"] - r["d_t_chars_lo"], 0, None)
            hi = np.clip(r["d_t_chars_hi"] - r["d_t_chars"], 0, None)
            lo = np.where(r["d_t_chars_lo"] > 0, lo, r["d_t_chars"] * 0.999)  # a log axis cannot show <= 0
            ax.errorbar(r["d_f_chars"], r["d_t_chars"], yerr=np.nan_to_num(np.vstack([lo, hi])), fmt="o",
                        color=col, ms=4, capsize=2, label=_fmt_n(n))  # fmt: skip
            if law is not None and law.identified and len(t):
                grid = np.geomspace(t["d_f_chars"].min(), t["d_f_chars"].max(), 60)
                p = law.params
                ax.plot(grid, p["k_chars"] * grid ** p["alpha"] * n ** p["beta"], color=col, lw=1)
        if law is not None and law.identified:
            p = law.params
            ax.set_title(
                f"{lang}: k={p['k_chars']:.3g} alpha={p['alpha']:.2f} beta={p['beta']:.2f}", fontsize=9
            )
        else:
            ax.set_title(f"{lang}: law not identified (points: measured D_T > 0)", fontsize=8)
        ax.set(xscale="log", yscale="log", xlabel="D_F (characters)", ylabel="D_T (characters)")
        ax.legend(fontsize=6)
    return [
        _save(
            fig,
            out,
            "transfer_law",
            "Transfer law D_T = k D_F^alpha N^beta (fitted on losses, every cell); points: D_T with 95% intervals",
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
                ax.plot(r["d_f_chars"], r["bpc"], style, color=f"C{i}", ms=4, label=f"{lang} {init}")
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
    colours = {"parameter-limited": "C3", "data-limited (flat in N)": "C0"}
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
            "Regimes by the measured slope in log N (hollow = under-trained)",
            "D_F in tokens, N in non-embedding parameters",
        )
    ]


FIGURES: list[Callable[[Analysis, Path], list[Figure]]] = [
    gaps,
    transfer_curves,
    fraction,
    transfer_law,
    loss_vs_n,
    bpc,
    compute,
    scratch_curves,
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
