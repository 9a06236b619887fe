"""A sweep's best models are usable with Hugging Face alone, and their MLflow runs say where they are.

A real two-trial sweep (the training loop, no stand-in) runs in process; then each trial's `best/` is loaded
with `AutoModelForCausalLM` and `AutoTokenizer` only, and its recorded validation loss is computed again from
the validation tokens with plain torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweep_engine.data import load_trial_data
from sweep_engine.spec import FINISHED, TrialSpec
from sweep_engine.sweep.driver import SweepDriver
from sweep_engine.sweep.jobs import InlineExecutor, SweepPaths
from sweep_engine.tracking import TRIAL, MlflowTracker
from sweep_engine.training.loop import run_trial
from tests.tiny_sweep import mlflow_template, shared_cache, space_dict, write_space


def mean_loss(model: torch.nn.Module, tokens: np.ndarray, context: int) -> float:
    """Mean next-token loss over `tokens` in windows of `context` predictions (the tail a shorter window): the
    rule the engine evaluates by (training/evaluate.py), written out here."""
    ids = torch.from_numpy(tokens.astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, context):
            window = ids[start : start + context + 1]
            logits = model(input_ids=window[None, :-1]).logits[0]
            total += float(F.cross_entropy(logits.double(), window[1:], reduction="sum"))
            count += len(window) - 1
    return total / count


@pytest.mark.slow
def test_best_checkpoints_load_with_transformers_alone_and_reproduce_their_loss(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = space_dict(tmp_path / "results", languages=("es",))
    data["transfer"].update(d_f=[1000], init=["finetune"])
    space = write_space(
        tmp_path / "hf.yaml", data, shared_cache(tmp_path_factory), mlflow_template(tmp_path_factory)
    )
    tracker = MlflowTracker(space.tracking_uri, space.experiment_name)
    summary = SweepDriver(space, InlineExecutor(run_trial), tracker).run()
    assert summary.exit_code == 0
    paths = SweepPaths.of(space)
    runs = {r.tags["trial_key"]: r for r in tracker.runs(TRIAL)}
    assert len(runs) == 2 and {r.status for r in runs.values()} == {FINISHED}

    for key, run in runs.items():
        best = paths.checkpoints_dir / key / "best"
        model = AutoModelForCausalLM.from_pretrained(best).eval()
        tokenizer = AutoTokenizer.from_pretrained(best)
        row = tracker.client.get_run(run.run_id)
        spec = TrialSpec.from_dict(json.loads((best / "trial_spec.json").read_text()))
        trial_data = load_trial_data(spec.data, paths.cache_dir)
        # The tokenizer is the trial's: the same ids for the validation text, and back.
        eot = tokenizer.eos_token_id
        assert eot is not None and model.config.eos_token_id == eot
        cuts = np.flatnonzero(trial_data.val == eot)
        docs = [d for d in np.split(trial_data.val, cuts) if len(d[d != eot]) > 0][:20]
        for doc in docs:
            ids = [int(i) for i in doc if i != eot]
            text = tokenizer.decode(ids)
            assert tokenizer(text)["input_ids"] == ids
        # The model is the best step's: its validation loss is the one the run recorded.
        recorded = row.data.metrics["best_val_loss"]
        assert mean_loss(model, trial_data.val, spec.context) == pytest.approx(recorded, rel=1e-5)

        # The run carries the model (a reference to best/), its training set, the code's commit and versions.
        tags = row.data.tags
        assert tags["model_path"] == str(best)
        logged = tracker.client.get_logged_model(tags["model_id"])
        assert logged.source_run_id == run.run_id and logged.tags["path"] == str(best)
        assert [o.model_id for o in row.outputs.model_outputs] == [tags["model_id"]]
        [dataset] = row.inputs.dataset_inputs
        d_f = "all" if spec.data.d_f is None else str(spec.data.d_f)
        assert dataset.dataset.name.endswith(f"train D_F={d_f}") and len(dataset.dataset.digest) == 12
        assert tags["mlflow.source.git.commit"] and tags["versions.torch"] == torch.__version__
