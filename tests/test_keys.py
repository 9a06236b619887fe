"""Trial keys name checkpoints, ledger rows and MLflow runs, so a key must never change by accident.

The pins below were computed by the code of commit 2c1c91b (before keys had a written rule) from the spaces it
shipped, kept as they were in tests/fixtures/spaces_v1 (the shipped spaces have changed since: test splits, a
new laptop grid, and their keys with them); every launch made from those files depends on the pins.
docs/architecture.md ("What changes a trial key") states the rule they follow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweep_engine.config import SearchConfig, Space, load_space
from sweep_engine.space import cells, expand, pretrain_trials, sweep_key, transfer_trials
from sweep_engine.spec import content_hash

SPACES = Path(__file__).resolve().parent / "fixtures" / "spaces_v1"

# space file: (trials, hash of all keys in order, first pre-training key, first transfer key, sweep key)
PINNED = {
    "english.yaml": (3, "b213fe43138e", "6ae2dadd2d08", None, "a47c8adf6382"),
    "chinese.yaml": (63, "61619b738dc3", "6ae2dadd2d08", "ed2d16f85e88", "ed88326ded7a"),
    "spanish.yaml": (63, "e4ea2caf43ed", "6ae2dadd2d08", "1849508d09f4", "b49a878e4b69"),
    "german.yaml": (63, "65df2b70fadc", "6ae2dadd2d08", "b10958277442", "d22cd1fbbaee"),
    "quick/english.yaml": (2, "f355d351c7b8", "0a57008763fc", None, "6be5d6744104"),
    "quick/chinese.yaml": (18, "99766c5e1145", "0a57008763fc", "1159deb4e385", "0dc8659403e5"),
    "quick/spanish.yaml": (18, "6299a539121d", "0a57008763fc", "018c83a70c8e", "3199eb92dc51"),
    "quick/german.yaml": (18, "4331e6649cff", "0a57008763fc", "fc1a48d42bf5", "edee0a9a372f"),
    "paper/english.yaml": (6, "c06e8f7d7b44", "4f7302b406fc", None, "388dd81ed974"),
    "paper/chinese.yaml": (222, "ffa5f7ed7c45", "4f7302b406fc", "d30b056f379f", "478f064f89ba"),
    "paper/spanish.yaml": (222, "4f57d1ccaeea", "4f7302b406fc", "e3249d4214bb", "4171c17d63e9"),
    "paper/german.yaml": (222, "3ed9cd222cd9", "4f7302b406fc", "010495aed252", "d7f7635a85de"),
}


def keys_of(path: Path) -> tuple[int, str, str | None, str | None, str]:
    space = load_space(path)
    trials, pre, tr = expand(space), pretrain_trials(space), transfer_trials(space)
    return (
        len(trials),
        content_hash([t.key() for t in trials]),
        pre[0].key() if pre else None,
        tr[0].key() if tr else None,
        sweep_key(space),
    )


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_spaces_keep_their_keys(name: str) -> None:
    assert keys_of(SPACES / name) == PINNED[name]


def test_optuna_study_names_and_sweep_key_are_pinned(tmp_path: Path) -> None:
    from sweep_engine.sweep.search import CellSearch

    space = optuna_space(tmp_path)
    search = CellSearch(space, tmp_path / "optuna.journal")
    names = [search.study_name(c) for c in cells(space)[:2]]
    assert names == ["de-xxs-500-scratch-d22f81e02f51", "de-xxs-500-finetune-866ce9320828"]
    assert sweep_key(space) == "555c9d34b294"


def optuna_space(tmp_path: Path) -> Space:
    """quick/german.yaml searched with Optuna (its pins computed by 2c1c91b too)."""
    data = yaml.safe_load((SPACES / "quick" / "german.yaml").read_text())
    data["search"] = {"kind": "optuna", "trials_per_cell": 2, "lr_range": [1e-4, 1e-2]}
    data["pretrain_from"] = str(SPACES / "quick" / "english.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    return load_space(tmp_path / "s.yaml")


# ------------------------------------------------------------------------------------- adding a field later


def with_added_field(obj: Any, value: int = 0, only: str | None = None) -> Any:
    """`obj` (a spec) rebuilt from classes that each gained a field `added_later: int = 0`, as if a later
    version had added one to every spec dataclass; set to `value` in the class named `only` (default: none)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        newer = dataclasses.make_dataclass(
            cls.__name__,
            [("added_later", int, dataclasses.field(default=0))],
            bases=(cls,),
            frozen=cls.__dataclass_params__.frozen,  # type: ignore[attr-defined]
        )
        values = {
            f.name: with_added_field(getattr(obj, f.name), value, only) for f in dataclasses.fields(obj)
        }
        return newer(**values, added_later=value if cls.__name__ == only else 0)
    if isinstance(obj, tuple):
        return tuple(with_added_field(v, value, only) for v in obj)
    return obj


SPEC_CLASSES = [
    "TrialSpec",
    "DataSpec",
    "CorpusSpec",
    "TokenizerSpec",
    "ModelShape",
    "ScheduleSpec",
    "StoppingSpec",
    "ResourceSpec",
]


@pytest.mark.parametrize("name", ["chinese.yaml", "quick/german.yaml", "paper/spanish.yaml"])
def test_a_defaulted_field_added_to_every_spec_leaves_the_keys(name: str) -> None:
    space = load_space(SPACES / name)
    newer = [with_added_field(t) for t in expand(space)]
    assert all(t.added_later == 0 and t.data.corpus.added_later == 0 for t in newer)
    assert content_hash([t.key() for t in newer]) == PINNED[name][1]


@pytest.mark.parametrize("cls", sorted(set(SPEC_CLASSES) - {"ResourceSpec"}))
def test_the_added_field_changes_the_key_once_it_is_set(cls: str) -> None:
    # A fine-tuning trial with an extra validation set holds one of every spec class.
    trial = next(t for t in expand(load_space(SPACES / "german.yaml")) if t.init == "finetune")
    assert trial.data.extra_val and trial.data.tokenizer.corpus is not None
    assert with_added_field(trial, 1, only=cls).key() != trial.key()


def test_resources_and_the_sweep_name_never_enter_the_key() -> None:
    trial = expand(load_space(SPACES / "german.yaml"))[0]
    moved = dataclasses.replace(
        trial, sweep="other", resources=dataclasses.replace(trial.resources, gpus=1.0)
    )
    assert moved.key() == trial.key()
    assert with_added_field(trial, 1, only="ResourceSpec").key() == trial.key()


def test_a_defaulted_search_setting_added_later_leaves_the_sweep_key(tmp_path: Path) -> None:
    space = optuna_space(tmp_path)

    class NewerSearch(SearchConfig):
        added_later: int = 0

    newer = space.model_copy(update={"search": NewerSearch(**space.search.model_dump())})
    assert sweep_key(newer) == sweep_key(space) == "555c9d34b294"
    changed = space.model_copy(update={"search": NewerSearch(**space.search.model_dump(), added_later=1)})
    assert sweep_key(changed) != sweep_key(space)
