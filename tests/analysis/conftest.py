"""Ledgers drawn from synthetic worlds with a known truth (sweep_engine.analysis.synthetic).

The fixed world below is one draw of the default prior; tests compare the analysis with that world's truth,
never with numbers copied from an earlier run. `fresh_seed` gives a new seed on every run (printed, and
replayable with SWEEP_ENGINE_TEST_SEED=<seed>), for the tests whose point is that the analysis holds on worlds
it was not tuned on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep_engine.analysis.cells import best_cells
from sweep_engine.analysis.resample import CellReplicates, replicate_cells
from sweep_engine.analysis.synthetic import LAPTOP_GRID, Grid, World, draw_world, make_ledger

WORLD_SEED = 11


@pytest.fixture(scope="session")
def world() -> World:
    return draw_world(np.random.default_rng(WORLD_SEED))


@pytest.fixture(scope="session")
def grid() -> Grid:
    return LAPTOP_GRID


@pytest.fixture(scope="session")
def ledger(world: World, grid: Grid) -> pd.DataFrame:
    return make_ledger(world, grid, np.random.default_rng(0))


@pytest.fixture(scope="session")
def cells(ledger: pd.DataFrame) -> pd.DataFrame:
    return best_cells(ledger)


@pytest.fixture(scope="session")
def reps(cells: pd.DataFrame, ledger: pd.DataFrame) -> CellReplicates:
    return replicate_cells(cells, ledger, bootstrap=100, seed=0)


@pytest.fixture(scope="session")
def ledger_dirs(tmp_path_factory: pytest.TempPathFactory, ledger: pd.DataFrame) -> list[Path]:
    """results/german/trials.parquet (with the pre-training rows) and results/chinese/trials.csv: both
    formats are accepted."""
    root = tmp_path_factory.mktemp("results")
    de, zh = root / "german", root / "chinese"
    de.mkdir()
    zh.mkdir()
    ledger[ledger["language"].isin(["de", "en"])].to_parquet(de / "trials.parquet")
    ledger[ledger["language"] == "zh"].to_csv(zh / "trials.csv", index=False)
    return [de, zh]


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per run unless SWEEP_ENGINE_TEST_SEED is set; printed so that a failure can be replayed."""
    seed = int(os.environ.get("SWEEP_ENGINE_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"\nsynthetic worlds seed: {seed} (replay: SWEEP_ENGINE_TEST_SEED={seed})")
    return seed
