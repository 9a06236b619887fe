from __future__ import annotations

import math

import pytest

from sweep_engine.errors import ConfigError
from sweep_engine.spec import ScheduleSpec
from sweep_engine.training.schedule import check_schedule, lr_at


def test_warmup_rises_linearly_to_the_peak() -> None:
    s = ScheduleSpec(kind="cosine", warmup_steps=4)
    assert [lr_at(i, 1.0, s, 100) for i in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_reaches_the_floor_at_the_token_cap(kind: str) -> None:
    s = ScheduleSpec(kind=kind, warmup_steps=10, decay_floor=0.1)  # type: ignore[arg-type]
    lrs = [lr_at(i, 2.0, s, 110) for i in range(10, 111)]
    assert lrs[0] == pytest.approx(2.0) and lrs[-1] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lr_at(500, 2.0, s, 110) == pytest.approx(0.2)  # past the horizon: stays at the floor


def test_halfway_values() -> None:
    cos = ScheduleSpec(kind="cosine", decay_floor=0.0)
    lin = ScheduleSpec(kind="linear", decay_floor=0.5)
    assert lr_at(50, 1.0, cos, 100) == pytest.approx(0.5)
    assert lr_at(25, 1.0, cos, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(50, 1.0, lin, 100) == pytest.approx(0.75)


def test_constant_after_warmup() -> None:
    s = ScheduleSpec(kind="constant", warmup_steps=2, decay_floor=0.1)
    assert [lr_at(i, 1.0, s, 10) for i in (0, 2, 9, 50)] == pytest.approx([1 / 3, 1.0, 1.0, 1.0])


def test_invalid_schedules_are_config_errors() -> None:
    bad = ScheduleSpec(kind="step", warmup_steps=-1, decay_floor=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        check_schedule(bad)
    assert "'step'" in str(err.value) and "-1" in str(err.value) and "1.5" in str(err.value)
    check_schedule(ScheduleSpec())
