from __future__ import annotations

from pathlib import Path

import pytest

from sweep_engine.config import Space
from tests.tiny_sweep import space_dict, write_space


@pytest.fixture
def space(tmp_path: Path) -> Space:
    return write_space(tmp_path / "tiny.yaml", space_dict(tmp_path / "results"))
