"""Failure reasons and the fault-injection hook (sweep/faults.py)."""

from __future__ import annotations

import pytest

from sweep_engine.config import Space
from sweep_engine.errors import ConfigError
from sweep_engine.space import transfer_trials
from sweep_engine.sweep.faults import InjectedFault, failure_reason, parse_faults


def test_failure_reasons() -> None:
    assert failure_reason(ConfigError("x")) == "config"
    assert failure_reason(MemoryError()) == "oom"
    assert failure_reason(RuntimeError("CUDA out of memory. Tried to allocate")) == "oom"
    assert failure_reason(FloatingPointError("nan")) == "diverged"
    assert failure_reason(InjectedFault("x")) == "crash"
    try:
        try:
            raise ConfigError("bad")
        except ConfigError as inner:
            raise RuntimeError("Training failed") from inner
    except RuntimeError as wrapped:
        assert failure_reason(wrapped) == "config"
    assert (
        failure_reason(RuntimeError("TrainingFailedError: ... sweep_engine.errors.DataError: gone"))
        == "config"
    )


def test_fault_spec_parsing_and_selection(space: Space) -> None:
    spec = transfer_trials(space)[0]
    faults = parse_faults(f"{spec.key()[:8]}:once, language={spec.language}&d_f=1000&lr=0.003:always")
    assert [f.matches(spec) for f in faults] == [True, True]
    assert not parse_faults("language=xx:once")[0].matches(spec)
    for bad in ("nomode", "x:sometimes", "colour=red:once"):
        with pytest.raises(ConfigError):
            parse_faults(bad)
