from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPACES = REPO / "search_spaces"


@pytest.fixture
def repo() -> Path:
    return REPO
