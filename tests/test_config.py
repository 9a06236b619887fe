from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep_engine.config import load_space
from sweep_engine.errors import ConfigError

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SHIPPED = (
    sorted(SPACES.glob("*.yaml")) + sorted(SPACES.glob("paper/*.yaml")) + sorted(SPACES.glob("quick/*.yaml"))
)


def minimal() -> dict:
    return {
        "name": "t",
        "pretrain": {
            "corpus": {"builtin": "bible", "part": "ot"},
            "sizes": ["xs"],
            "context": 32,
            "batch_tokens": 256,
            "lr": 1e-3,
            "stopping": {"eval_interval_tokens": 1024, "token_cap": 4096},
        },
        "transfer": {
            "languages": {"de": {"corpus": {"builtin": "bible", "part": "nt"}}},
            "d_f": [1000, 4000],
            "lr": [1e-3],
            "context": 32,
            "batch_tokens": 256,
            "stopping": {"eval_interval_tokens": 1024, "token_cap": 4096},
        },
    }


def write(tmp_path: Path, data: object, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def errors_of(tmp_path: Path, data: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_space(write(tmp_path, data))
    return str(info.value)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(SPACES)))
def test_every_shipped_space_validates(path: Path) -> None:
    space = load_space(path)
    assert space.name
    assert space.pretrain is not None


def test_shipped_spaces_cover_the_study() -> None:
    names = {p.relative_to(SPACES).as_posix() for p in SHIPPED}
    for lang in ("english", "chinese", "spanish", "german"):
        assert f"{lang}.yaml" in names and f"paper/{lang}.yaml" in names


def test_minimal_space_loads(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, minimal()))
    assert space.transfer is not None and space.transfer.d_f == [1000, 4000]
    assert (
        space.results_dir == tmp_path / "results" / "t"
    )  # relative paths are read against the file's directory
    assert space.tracking_uri.startswith("sqlite:///") and space.tracking_uri.endswith("mlflow.db")


def test_error_names_path_rule_and_value(tmp_path: Path) -> None:
    data = minimal()
    data["transfer"]["d_f"] = [1000, 4000, -5]
    message = errors_of(tmp_path, data)
    assert "transfer.d_f[2]: must be a positive integer, got -5" in message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    data = minimal()
    data["transfer"]["lr"] = [0.0]
    data["pretrain"]["context"] = "long"
    data["resources"] = {"cpus_per_trial": -1}
    message = errors_of(tmp_path, data)
    lines = message.splitlines()  # one line per problem, each naming the file
    assert len(lines) == 3 and all(line.startswith(f"{tmp_path / 'space.yaml'}: ") for line in lines)
    assert "transfer.lr[0]: must be positive, got 0.0" in message
    assert "pretrain.context: must be an integer, got 'long'" in message
    assert "resources.cpus_per_trial: must be positive, got -1" in message


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ((), "colour"),
        (("pretrain",), "learning_rate"),
        (("pretrain", "stopping"), "patince"),
        (("transfer", "languages", "de", "corpus"), "buitin"),
    ],
)
def test_unknown_key_at_any_depth(tmp_path: Path, where: tuple[str, ...], key: str) -> None:
    data = minimal()
    node = data
    for part in where:
        node = node[part]
    node[key] = 1
    message = errors_of(tmp_path, data)
    dotted = ".".join((*where, key))
    assert f"{dotted}: unknown key" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["transfer"].update(init=["scratch", "warm"]), "transfer.init[1]: must be one of"),
        (lambda d: d["transfer"].update(d_f=[]), "transfer.d_f: must have at least 1 item(s)"),
        (lambda d: d["transfer"].update(d_f=[10, 10]), "transfer.d_f: values must be unique"),
        (lambda d: d["pretrain"].update(sizes=["huge"]), "pretrain.sizes[0]: must be a named size"),
        (lambda d: d["pretrain"].update(batch_tokens=100), "batch_tokens must be a multiple of context"),
        (lambda d: d["transfer"].update(context=64, batch_tokens=256), "transfer.context: fine-tuning needs"),
        (lambda d: d["transfer"]["languages"].update(eng=d["transfer"]["languages"]["de"]), "ISO 639-1"),
        (lambda d: d["pretrain"]["corpus"].update(path="x.txt"), "exactly one of builtin, path, hf"),
        (lambda d: d.update(search={"kind": "optuna"}), "needs trials_per_cell and lr_range"),
        (
            lambda d: d.update(search={"kind": "optuna", "trials_per_cell": 2, "lr_range": [1, 0.1]}),
            "low < high",
        ),
        (
            lambda d: d["pretrain"].update(schedule={"decay_floor": 2}),
            "pretrain.schedule.decay_floor: must be <= 1.0, got 2",
        ),
        (lambda d: d.update(resources={"gpus_per_trial": 1.5}), "whole number"),
        (lambda d: d.update(tokenizer={"kind": "files"}), "needs both vocab_file and merges_file"),
        (lambda d: d.pop("name"), "name: is required"),
        (lambda d: d.update(name="Has Space"), "name: must match"),
        (lambda d: d["transfer"].update(sizes=["m"]), "transfer.sizes[0]: must be one of the pretrain sizes"),
    ],
)
def test_rules(tmp_path: Path, mutate, expected: str) -> None:
    data = minimal()
    mutate(data)
    assert expected in errors_of(tmp_path, data)


def test_explicit_size(tmp_path: Path) -> None:
    data = minimal()
    data["pretrain"]["sizes"] = [{"name": "tiny", "n_layer": 1, "d_model": 64}]
    data["transfer"]["sizes"] = ["tiny"]
    space = load_space(write(tmp_path, data))
    assert space.pretrain is not None


def test_explicit_size_rule(tmp_path: Path) -> None:
    data = minimal()
    data["pretrain"]["sizes"] = [{"name": "tiny", "n_layer": 0, "d_model": 100}]
    message = errors_of(tmp_path, data)
    assert "pretrain.sizes[0].n_layer: must be a positive integer, got 0" in message
    assert "pretrain.sizes[0].d_model: must be a multiple of 64, got 100" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\npretrain:\n  sizes: [xs\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        load_space(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "file is empty"), ("# nothing\n", "file is empty"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_empty_or_wrong_shape(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_space(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_space(tmp_path / "nope.yaml")


def test_pretrain_from_shares_the_stage(tmp_path: Path) -> None:
    base = minimal()
    del base["transfer"]
    base["name"] = "base"
    base["resources"] = {"cpus_per_trial": 2}
    write(tmp_path, base, "base.yaml")
    child = minimal()
    del child["pretrain"]
    child["pretrain_from"] = "base.yaml"
    space = load_space(write(tmp_path, child))
    assert space.pretrain is not None and space.pretrain.sizes == ["xs"]
    assert space.pretrain.resources is not None and space.pretrain.resources.cpus_per_trial == 2


def test_pretrain_from_errors(tmp_path: Path) -> None:
    child = minimal()
    child["pretrain_from"] = "missing.yaml"
    message = errors_of(tmp_path, child)
    assert "pretrain_from: cannot be given together with pretrain" in message
    del child["pretrain"]
    message = errors_of(tmp_path, child)
    assert f"space.yaml: pretrain_from: {tmp_path / 'missing.yaml'}: file not found" in message


def test_a_revision_pins_a_hugging_face_dataset_only(tmp_path: Path) -> None:
    from sweep_engine.space import expand

    data = minimal()
    data["transfer"]["languages"]["de"]["corpus"] = {"hf": "org/set", "revision": "0033d73"}
    trial = next(t for t in expand(load_space(write(tmp_path, data))) if t.stage == "transfer")
    assert trial.data.corpus.revision == "0033d73"
    unpinned = minimal()
    unpinned["transfer"]["languages"]["de"]["corpus"] = {"hf": "org/set"}
    other = next(t for t in expand(load_space(write(tmp_path, unpinned))) if t.stage == "transfer")
    assert other.data.corpus.revision is None and other.key() != trial.key()
    data["transfer"]["languages"]["de"]["corpus"] = {"path": "de.jsonl", "revision": "0033d73"}
    assert "revision pins a Hugging Face dataset: it needs hf" in errors_of(tmp_path, data)


def test_budgets_follow_d_f_within_their_floor_and_ceiling(tmp_path: Path) -> None:
    from sweep_engine.space import transfer_trials

    data = minimal()
    data["transfer"]["d_f"] = [100, 1000, 4000]
    data["transfer"]["stopping"] = {"eval_interval_tokens": 1024, "token_cap": 30_000, "token_cap_epochs": 10,
                                    "token_cap_min": 2048}  # fmt: skip
    data["transfer"]["schedules"] = [{"warmup_steps": 20, "warmup_max_fraction": 0.25}]
    caps = {t.data.d_f: (t.stopping.token_cap, t.schedule.warmup_steps)
            for t in transfer_trials(load_space(write(tmp_path, data)))}  # fmt: skip
    # 10 epochs: 1,000 -> 2,048 (the floor), 1,000 -> 10,000, 4,000 -> 30,000 (the ceiling); warm-up a quarter
    # of the steps of 256 tokens, at most 20.
    assert caps == {100: (2048, 2), 1000: (10_000, 10), 4000: (30_000, 20)}
    data["transfer"]["stopping"]["token_cap_min"] = 40_000
    assert "token_cap_min must be <= token_cap" in errors_of(tmp_path, data)
    del data["transfer"]["stopping"]["token_cap_epochs"]
    data["transfer"]["stopping"]["token_cap_min"] = 1000
    assert "token_cap_min bounds a cap that follows D_F: it needs token_cap_epochs" in errors_of(
        tmp_path, data
    )
    pre = minimal()
    pre["pretrain"]["stopping"]["token_cap_epochs"] = 2
    assert "pretrain.stopping.token_cap_epochs: pre-training has no D_F" in errors_of(tmp_path, pre)


def test_validate_warns_when_a_cap_cannot_reach_the_overfitting_point(tmp_path: Path) -> None:
    from sweep_engine.budgets import cap_checks, cap_warnings

    data = minimal()  # caps of 4,096 tokens, evaluations every 1,024, patience 3 (the default)
    data["transfer"]["stopping"]["overfit_epochs"] = 2
    space = load_space(write(tmp_path, data))
    checks = {c.d_f: c for c in cap_checks(space)}
    # D_F 1,000: overfit at 2,000 tokens, first evaluation after it at 2,048, then 3 more: 5,120 > 4,096.
    assert checks[1000].overfit_tokens == 2000 and checks[1000].needed == (2 + 3) * 1024
    assert not checks[1000].reaches and checks[1000].trials == 2
    [warning] = [w for w in cap_warnings(space) if "d_f=1,000 " in w]
    assert "token cap 4,096 cannot reach the expected overfitting point: 2 epochs = 2,000 tokens" in warning
    assert len(cap_warnings(space)) == 2  # D_F 4,000 too
    data["transfer"]["stopping"]["token_cap"] = 40_960
    assert cap_warnings(load_space(write(tmp_path, data))) == []
    for name in ("paper/chinese.yaml", "paper/spanish.yaml", "paper/german.yaml"):
        assert cap_warnings(load_space(SPACES / name)) == [], name


def test_pretraining_lrs_per_size(tmp_path: Path) -> None:
    from sweep_engine.space import pretrain_trials

    data = minimal()
    data["pretrain"]["sizes"] = ["xs", "s"]
    data["pretrain"]["lr"] = {"xs": 3e-3, "s": 2e-3}
    assert [t.lr for t in pretrain_trials(load_space(write(tmp_path, data)))] == [3e-3, 2e-3]
    data["pretrain"]["lr"] = {"xs": 3e-3, "m": 2e-3}
    assert "pretrain.lr: a mapping must give one LR for every size and no other" in errors_of(tmp_path, data)


def test_the_forgetting_set_can_be_the_pretraining_held_out_split(tmp_path: Path) -> None:
    from sweep_engine.space import pretrain_trials, transfer_trials

    data = minimal()
    data["pretrain"]["validation"] = {"size": 300}
    data["transfer"]["validation"] = {"size": 100}
    data["transfer"]["extra_val"] = {"en": "pretrain"}
    space = load_space(write(tmp_path, data))
    [(name, corpus)] = transfer_trials(space)[0].data.extra_val
    assert name == "en" and corpus == pretrain_trials(space)[0].data.corpus
    from sweep_engine.data.inputs import input_problems

    assert input_problems(space) == []  # checked as the pre-training corpus it names
    data["transfer"]["validation"] = {"size": 400, "unit": "tokens"}
    assert "the pre-training held-out split is reused only with the same validation unit" in errors_of(
        tmp_path, data
    )
    data["transfer"]["validation"] = {"size": 100}
    data["transfer"]["extra_val"] = {"de": "pretrain"}
    assert "'pretrain' names the 'en' pre-training corpus, so its key must be 'en'" in errors_of(
        tmp_path, data
    )


def test_node_types_and_execution_reach_the_specs_but_not_their_keys(tmp_path: Path) -> None:
    from sweep_engine.space import expand
    from sweep_engine.sweep.ray_tune import trial_resources

    base = expand(load_space(write(tmp_path, minimal())))
    data = minimal()
    data["resources"] = {"gpus_per_trial": 0.5, "accelerator_type": "A10G", "custom_resources": {"g5": 0.5}}
    data["execution"] = {"checkpoint_every_evals": None, "checkpoint_every_s": 900, "compile": "inductor"}
    trials = expand(load_space(write(tmp_path, data)))
    assert [t.key() for t in trials] == [t.key() for t in base]
    t = trials[-1]
    assert t.resources.accelerator_type == "A10G" and t.resources.custom == (("g5", 0.5),)
    assert t.execution.checkpoint_every_s == 900 and t.execution.compile == "inductor"
    assert trial_resources(t) == {"CPU": 1.0, "GPU": 0.5, "g5": 0.5, "accelerator_type:A10G": 0.001}
    from sweep_engine.spec import TrialSpec

    assert TrialSpec.from_dict(t.to_dict()) == t  # through the job payload and back
