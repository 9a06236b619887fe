"""What successive halving saved in a finished sweep: its pruned LR arms re-run to their own end, side by side.

A halving sweep (search.halving) stops each cell's losing LR arms early (stop reason `pruned`) and runs its
later seeds on the winner only. What the full grid would have cost is not a guess here: the benchmark copies the
sweep's storage, forgets the pruned arms (their ledger rows and workdirs), and relaunches the same space with
halving off and the first seed only, through the real engine (Ray Tune, the training loop, MLflow). Every
winner is found done (same trial keys); every pruned arm trains to its own overfitting point. Then, per cell's
first seed:

- training tokens and trial seconds with halving (winners + pruned arms) and without (winners + full losers);
- the later seeds the full grid would also have run on the losers (one per later seed, costed at that loser's
  full run), against none with halving;
- whether the full grid picks the same winner, and, where not, the chosen configuration's loss difference.

    .venv/bin/python benchmarks/halving_savings.py search_spaces/german.yaml [--storage results] [--keep DIR]

Tokens are load-independent; seconds are as measured on this machine, both runs under whatever load it had.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from sweep_engine.config import load_space
from sweep_engine.ledger import read_ledger

CELL = ["language", "size", "d_f", "init"]


def _copy_without_pruned(storage: Path, name: str, into: Path) -> pd.DataFrame:
    """Copy the storage root; drop the sweep's pruned rows and their workdirs (so that they train anew)."""
    shutil.copytree(storage, into, symlinks=True)
    ledger_path = into / name / "trials.parquet"
    raw = pd.read_parquet(ledger_path)  # rewritten as stored, less the pruned rows
    pruned = raw["stop_reason"] == "pruned"
    for key in raw.loc[pruned, "trial_key"]:
        shutil.rmtree(into / "checkpoints" / str(key), ignore_errors=True)
    raw[~pruned].to_parquet(ledger_path, index=False)
    return read_ledger(storage / name / "trials.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("space", type=Path, help="the halving space that ran (its results are read)")
    parser.add_argument("--storage", type=Path, help="its storage root (default: the space's)")
    parser.add_argument("--keep", type=Path, help="run the full grid here and keep it (default: a temp dir)")
    args = parser.parse_args()
    space = load_space(args.space)
    storage = Path(args.storage or space.storage).resolve()
    work = args.keep or Path(tempfile.mkdtemp(prefix="halving-savings-"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"--keep {work}: must be empty or absent")
    if work.exists():
        work.rmdir()  # copytree makes it
    with_halving = _copy_without_pruned(storage, space.name, work)
    first_seed = with_halving.groupby(CELL)["seed"].transform("min") == with_halving["seed"]
    run = [
        sys.executable, "-m", "sweep_engine.cli", "launch", str(args.space), f"storage={work}",
        "search.halving=null", "transfer.seeds_by_d_f={}", f"transfer.seeds=[{int(with_halving['seed'].min())}]",
    ]  # fmt: skip
    subprocess.run(run, check=True)
    full = read_ledger(work / space.name / "trials.parquet")
    full = full[(full["stage"] == "transfer") & (full["seed"] == with_halving["seed"].min())]
    halved = with_halving[(with_halving["stage"] == "transfer") & first_seed]

    def totals(rows: pd.DataFrame) -> tuple[float, float]:
        return float(rows["tokens_seen"].sum()), float(rows["wall_s"].sum())

    h_tok, h_s = totals(halved)
    f_tok, f_s = totals(full)
    losers = full[full["trial_key"].isin(halved.loc[halved["stop_reason"] == "pruned", "trial_key"])]
    later = with_halving[(with_halving["stage"] == "transfer") & ~first_seed]
    later_per_cell = later.groupby(CELL).size()
    extra = losers.merge(later_per_cell.rename("later").reset_index(), on=CELL, how="left").fillna(
        {"later": 0}
    )
    l_tok = float((extra["tokens_seen"] * extra["later"]).sum())
    l_s = float((extra["wall_s"] * extra["later"]).sum())
    print(
        f"sweep {space.name}: {len(halved)} first-seed arms, {len(losers)} pruned; {len(later)} later-seed runs"
    )
    print(f"first seed, with halving:    {h_tok:,.0f} tokens, {h_s:,.0f} trial-s")
    print(f"first seed, full grid:       {f_tok:,.0f} tokens, {f_s:,.0f} trial-s")
    print(f"later seeds on the losers too (full grid only): +{l_tok:,.0f} tokens, +{l_s:,.0f} trial-s")
    all_h = h_tok + float(later["tokens_seen"].sum())
    all_f = f_tok + float(later["tokens_seen"].sum()) + l_tok
    all_hs = h_s + float(later["wall_s"].sum())
    all_fs = f_s + float(later["wall_s"].sum()) + l_s
    print(
        f"transfer stage: halving / full grid = {all_h / all_f:.2f} in tokens, {all_hs / all_fs:.2f} in trial-s"
    )
    picks = []
    for cell, rows in full.groupby(CELL):
        best = rows.loc[rows["best_val_loss"].idxmin()]
        mine = halved[(halved[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]
        kept = mine[mine["stop_reason"] != "pruned"]
        chosen = kept.loc[kept["best_val_loss"].idxmin()] if len(kept) else best
        picks.append(
            {
                **dict(zip(CELL, cell, strict=True)),
                "same": chosen["lr"] == best["lr"],
                "val_diff": float(chosen["best_val_loss"] - best["best_val_loss"]),
                "test_diff": float(chosen["test_loss"] - best["test_loss"]),
            }
        )
    p = pd.DataFrame(picks)
    differ = p[~p["same"]]
    print(
        f"winner: the same LR in {int(p['same'].sum())} of {len(p)} cells (lowest validation loss of the full grid)"
    )
    if len(differ):
        print(
            f"  where it differs ({len(differ)}): halving's pick is worse by {differ['val_diff'].median():+.3f} "
            f"nats on validation, {differ['test_diff'].median():+.3f} on test (median; "
            f"range {differ['test_diff'].min():+.3f}..{differ['test_diff'].max():+.3f})"
        )
        print(differ.to_string(index=False))
    print(f"full grid kept in {work}" if args.keep else f"(full grid in {work}; delete when done)")


if __name__ == "__main__":
    main()
