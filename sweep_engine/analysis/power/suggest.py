"""The single changes to a grid that might answer its weakest question, each with what it costs.

Each change is written as `key=value` overrides of the space files (so it is exactly what `launch` would run
with them), re-planned through the same expansion, and costed by plan.py's model (6 N D to the token cap; a new
size also pays its English pre-training, counted once however many languages share it):

- one more seed at every configuration (`transfer.seeds`, and each D_F of `transfer.seeds_by_d_f`);
- one more seed at the smallest D_F only (`transfer.seeds_by_d_f`);
- one more D_F below the smallest, one geometric step down (the ratio of the two smallest), never below one
  context window plus one token (a smaller D_F cannot fill a window; data/batches.py refuses it);
- one more size: the next named size above the largest of the same family (laptop up to `l`, else paper; the
  reference shape gpt2-small left out), else below the smallest, else a shape with half the smallest one's
  layers; where the space gives one pre-training LR per size, the new one lies on the line LR = a + b ln N
  through them (Kaplan et al. 2020, eq. D.1's form);
- a test set twice as large (`transfer.validation.test_size`): evaluated once per run with the best weights,
  2 N FLOPs per test token (plan.py does not count evaluation; this is the only cost of the change).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import numpy as np
import yaml

from sweep_engine.analysis.power.grid import PlannedGrid, plan_grid
from sweep_engine.analysis.synthetic import Grid
from sweep_engine.config import resolve_size, size_name
from sweep_engine.errors import UserError
from sweep_engine.shapes import LAPTOP_SIZES, PAPER_SIZES, non_embedding_params
from sweep_engine.space import transfer_sizes
from sweep_engine.spec import ModelShape


@dataclass(frozen=True)
class Change:
    """One change to the grid.

    Attributes:
        name: seed | seed_smallest | d_f_below | size | test_set.
        what: the change in words.
        how: the overrides or command that makes it, quoted for a shell.
        grid: the changed grid (None: not possible here, see `why_not`).
        extra_flops: what it adds, in FLOPs.
    """

    name: str
    what: str
    how: str
    grid: Grid | None
    extra_flops: float
    why_not: str = ""


def _yaml(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


def _replan(planned: PlannedGrid, extra: list[str]) -> PlannedGrid:
    return plan_grid(list(planned.paths), [*planned.overrides, *extra])


def _overrides_text(extra: list[str]) -> str:
    """The overrides as a shell would take them (YAML lists hold spaces)."""
    return shlex.join(extra)


def one_more_seed(planned: PlannedGrid) -> Change:
    tr = planned.spaces[0].transfer
    assert tr is not None
    seeds = list(tr.seeds)
    extra = [f"transfer.seeds={_yaml([*seeds, max(seeds) + 1])}"]
    # A D_F with its own seeds (seeds_by_d_f) would keep them under transfer.seeds alone: it gets one more too.
    if tr.seeds_by_d_f:
        by_d_f = {d: [*s, max(s) + 1] for d, s in tr.seeds_by_d_f.items()}
        extra.append(f"transfer.seeds_by_d_f={_yaml(by_d_f)}")
    own = "".join(f"; {len(s)} -> {len(s) + 1} at D_F {d:,}" for d, s in sorted(tr.seeds_by_d_f.items()))
    new = _replan(planned, extra)
    return Change(
        "seed", f"one more seed at every configuration ({len(seeds)} -> {len(seeds) + 1}{own})",
        _overrides_text(extra), new.grid, new.total_flops - planned.total_flops,
    )  # fmt: skip


def one_more_seed_smallest(planned: PlannedGrid) -> Change:
    tr = planned.spaces[0].transfer
    assert tr is not None
    smallest = min(tr.d_f)
    seeds = tr.seeds_at(smallest)
    by_d_f = {**tr.seeds_by_d_f, smallest: [*seeds, max(seeds) + 1]}
    extra = [f"transfer.seeds_by_d_f={_yaml(by_d_f)}"]
    new = _replan(planned, extra)
    return Change(
        "seed_smallest",
        f"one more seed at D_F {smallest:,} only ({len(seeds)} -> {len(seeds) + 1} there)",
        _overrides_text(extra), new.grid, new.total_flops - planned.total_flops,
    )  # fmt: skip


def one_more_d_f_below(planned: PlannedGrid) -> Change:
    d = sorted(int(x) for x in planned.grid.d_f)
    step = d[1] / d[0] if len(d) > 1 else 4.0
    new_d = max(int(round(d[0] / step)), planned.context + 1)
    what = f"one more D_F below the smallest: {new_d:,} tokens"
    if new_d >= d[0]:
        why = (
            f"the smallest D_F ({d[0]:,}) is already within one context window ({planned.context} + 1 tokens)"
        )
        return Change("d_f_below", "one more D_F below the smallest", "", None, 0.0, why)
    extra = [f"transfer.d_f={_yaml([new_d, *d])}"]
    new = _replan(planned, extra)
    return Change("d_f_below", what, _overrides_text(extra), new.grid, new.total_flops - planned.total_flops)


def _next_size(planned: PlannedGrid) -> tuple[str, object]:
    """(name, space-file entry) of the size to add (see the module docstring)."""
    space = planned.spaces[0]
    shapes = transfer_sizes(space)
    names = {s.name for s in shapes}
    largest = max(non_embedding_params(s) for s in shapes)
    laptop = largest <= max(non_embedding_params(s) for s in LAPTOP_SIZES.values())
    family = LAPTOP_SIZES if laptop else PAPER_SIZES
    ranked = sorted((s for s in family.values() if s.name != "gpt2-small"), key=non_embedding_params)
    smallest_shape = min(shapes, key=non_embedding_params)
    above = [s for s in ranked if s.name not in names and non_embedding_params(s) > largest]
    below = [
        s
        for s in ranked
        if s.name not in names and non_embedding_params(s) < non_embedding_params(smallest_shape)
    ]
    if above:
        return above[0].name, above[0].name
    if below:
        return below[-1].name, below[-1].name
    n_layer = max(1, smallest_shape.n_layer // 2)
    name = f"{smallest_shape.name}-half"
    return name, {"name": name, "n_layer": n_layer, "d_model": smallest_shape.d_model}


def one_more_size(planned: PlannedGrid) -> Change:
    space = planned.spaces[0]
    assert space.pretrain is not None and space.transfer is not None
    name, entry = _next_size(planned)
    sizes = [*[_entry(s) for s in space.pretrain.sizes], entry]
    extra = [f"pretrain.sizes={_yaml(sizes)}"]
    if isinstance(space.pretrain.lr, dict):
        extra.append(f"pretrain.lr={_yaml({**space.pretrain.lr, name: _lr_for(space.pretrain.lr, entry)})}")
    if space.transfer.sizes is not None:
        extra.append(f"transfer.sizes={_yaml([*space.transfer.sizes, name])}")
    try:
        new = _replan(planned, extra)
    except UserError as exc:
        return Change("size", f"one more size ({name})", "", None, 0.0, str(exc).splitlines()[0])
    n = new.grid.sizes[name]
    return Change(
        "size", f"one more size: {name} (N = {n:,.0f}), with its English pre-training",
        _overrides_text(extra), new.grid, new.total_flops - planned.total_flops,
    )  # fmt: skip


def _lr_for(lrs: dict[str, float], entry: object) -> float:
    """The new size's pre-training LR when the space gives one per size: the line LR = a + b ln N through the
    given ones (Kaplan et al. 2020, eq. D.1's form, which the paper spaces' LRs follow), at the new N."""
    n = {name: non_embedding_params(resolve_size(name)) for name in lrs}
    x = np.log([n[k] for k in lrs])
    y = np.array(list(lrs.values()))
    b, a = np.polyfit(x, y, 1) if len(lrs) > 1 else (0.0, float(y[0]))
    shape = ModelShape(**entry) if isinstance(entry, dict) else resolve_size(entry)  # type: ignore[arg-type]
    new_n = non_embedding_params(shape)
    return float(f"{max(a + b * math.log(new_n), float(y.min()) / 10):.3g}")


def _entry(size: object) -> object:
    """A pre-training size as the space file writes it (a name, or {name, n_layer, d_model})."""
    if isinstance(size, str):
        return size
    dump = getattr(size, "model_dump", None)
    return dump() if dump else size_name(size)  # type: ignore[arg-type]


def larger_test_set(planned: PlannedGrid) -> Change:
    tr = planned.spaces[0].transfer
    assert tr is not None
    old = tr.validation.test_size
    if old == 0:
        return Change("test_set", "a larger test set", "", None, 0.0, "the spaces have no test split")
    extra = [f"transfer.validation.test_size={2 * old}"]
    new = _replan(planned, extra)
    # Evaluated once per transfer run with its best weights: 2 N FLOPs per added test token.
    added = new.test_tokens - planned.test_tokens
    n = list(planned.grid.sizes.values())
    per_size_runs = planned.transfer_trials / max(len(n), 1)
    cost = sum(2.0 * x * added * per_size_runs for x in n)
    unit = tr.validation.unit
    return Change(
        "test_set", f"a test set twice as large ({old:,} -> {2 * old:,} {unit})",
        _overrides_text(extra), new.grid, cost,
    )  # fmt: skip


CHANGES = (one_more_seed, one_more_seed_smallest, one_more_d_f_below, one_more_size, larger_test_set)


def candidate_changes(planned: PlannedGrid) -> list[Change]:
    """Every single change of the module docstring, planned and costed."""
    return [make(planned) for make in CHANGES]


def per_flop(gain: float, flops: float) -> float:
    """Probability points gained per 1e15 FLOPs (the ranking key); -inf for no gain."""
    if not math.isfinite(gain) or gain <= 0 or flops <= 0:
        return -math.inf
    return gain / (flops / 1e15)
