"""What runs inside one Ray Tune trial: the training loop, directly or through a Ray Train TorchTrainer.

A one-worker trial calls `training.loop.run_trial` in its own process (a TorchTrainer costs ~20 s of start-up per run on
small machines). A trial with `workers > 1` is the driver of a Ray Train V2 run (Ray's Train-in-Tune pattern):
it builds a `TorchTrainer` whose workers each run `run_trial` under DDP; the Train run is named after the
trial_key, so a retried trial finds its Train run again, and its evaluations reach Tune through
`TuneReportCallback`. Either way the training state lives in the trial's workdir (`state.pt`), which is what a
retry resumes from; Ray checkpoints would only copy it.

A trial ends with one final report: `final=1` and the result as JSON, or `failed=1` with the reason of a
deterministic failure (config, oom, diverged), which returns normally so that Tune does not retry it. Any other
exception propagates: Tune retries the trial up to `max_retries` times (FailureConfig). A multi-worker trial's
worker failures are retried by Ray Train's own FailureConfig; when Train gives up the trial ends FAILED (a Tune
retry on top would multiply the attempts), while the death of the trial's own process is still retried by Tune.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep_engine.spec import TrialResult, TrialSpec, read_result
from sweep_engine.sweep.faults import (
    DETERMINISTIC,
    Fault,
    error_message,
    failure_reason,
    fault_for,
    parse_faults,
)
from sweep_engine.sweep.jobs import ATTEMPT_HEADER, FAILURE_FILE, trial_lock, trial_log


def trial_entry(config: dict[str, Any]) -> None:
    """The Tune function trainable: run one trial (config["job"] is a TrialJob payload) and report its end."""
    job = config["job"]
    spec = TrialSpec.from_dict(job["spec"])
    workdir = Path(job["workdir"])
    node = {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    with output_to_log(workdir, node):
        (workdir / FAILURE_FILE).unlink(missing_ok=True)  # an earlier attempt's, not this one's
        try:
            with trial_lock(workdir):
                if spec.resources.workers > 1:
                    result = _run_distributed(spec, job)
                else:
                    from sweep_engine.training.loop import run_trial

                    reporter = TuneReporter(workdir, fault_for(spec, parse_faults(job.get("faults"))), node)
                    result = run_trial(
                        spec,
                        reporter,
                        workdir=workdir,
                        init_dir=Path(job["init_dir"]) if job.get("init_dir") else None,
                        cache_dir=Path(job["cache_dir"]),
                    )
        except Exception as exc:
            traceback.print_exc()  # into the trial log, whole: the report carries only its last lines
            reason = failure_reason(exc)
            _write_failure(workdir, reason, exc)
            if reason not in DETERMINISTIC and not isinstance(exc, TrainGaveUp):
                raise  # a crash: Tune retries it from the workdir's state.pt
            tune.report({"failed": 1, "failure_reason": reason, "error": error_message(exc), **node})
            return
    tune.report({"final": 1, "result": json.dumps(result.to_dict()), **node})


@contextmanager
def output_to_log(workdir: Path, node: dict[str, str]) -> Iterator[None]:
    """Send this process's file descriptors 1 and 2 to the trial log while the attempt runs, so that what a
    native library prints before it aborts (Intel oneMKL, CUDA, glibc) and a segfault's Python traceback
    (faulthandler writes to descriptor 2) land there too, not only Python's own output."""
    workdir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(trial_log(workdir), "ab", buffering=0) as log:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(
            f"{ATTEMPT_HEADER}pid {os.getpid()} node {node['node_ip']} {node['node_id']} {started}\n".encode()
        )
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        faulthandler.enable(all_threads=True)  # on sys.stderr, i.e. descriptor 2: the log now
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class TrainGaveUp(RuntimeError):
    """A Ray Train run failed after its own retries (FailureConfig): final, not retried by Tune as well."""


class TuneReporter:
    """Forwards each evaluation to Tune (the driver logs it to MLflow and the progress view)."""

    def __init__(self, workdir: Path, fault: Fault | None, node: dict[str, str], tag: str = "") -> None:
        self.workdir, self.fault, self.node, self.tag = workdir, fault, node, tag

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        if self.fault is not None:
            self.fault.fire(self.workdir, self.tag)
        tune.report({**metrics, **self.node})


class TrainReporter(TuneReporter):
    """Inside a Ray Train worker: every rank reports (ray.train.report is a collective in Train V2)."""

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        if self.fault is not None:
            self.fault.fire(self.workdir, self.tag)
        ray.train.report({**metrics, **self.node})


def _write_failure(workdir: Path, reason: str, exc: BaseException) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / FAILURE_FILE).write_text(json.dumps({"reason": reason, "error": error_message(exc)}))
    except OSError:
        pass  # the report to Tune carries the reason anyway


# ------------------------------------------------------------------------------------------------ Ray Train


def _run_distributed(spec: TrialSpec, job: dict[str, Any]) -> TrialResult:
    """Run the trial as a Ray Train V2 TorchTrainer with `spec.resources.workers` DDP processes."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = spec.resources
    per_worker: dict[str, float] = {"CPU": res.cpus, **dict(res.custom)}
    if res.gpus > 0:
        per_worker["GPU"] = res.gpus
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=job,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpus > 0,
            resources_per_worker=per_worker,
            accelerator_type=res.accelerator_type,
        ),
        run_config=ray.train.RunConfig(
            # No timestamp in the name: a retried Tune trial finds (and resumes) the same Train run.
            name=f"train-{job['key']}",
            storage_path=job["train_storage"],
            failure_config=ray.train.FailureConfig(max_failures=int(job.get("max_retries", 0))),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:
        # Train has retried its workers max_retries times already; a Tune retry on top would square that.
        raise TrainGaveUp(f"Ray Train run of trial {job['key']} failed: {exc}") from exc
    result = read_result(Path(job["workdir"]))
    if result is None:
        raise RuntimeError(f"the Train run of trial {job['key']} ended without {job['workdir']}/result.json")
    return result


def _train_worker(job: dict[str, Any]) -> None:
    """One DDP rank: Ray Train has set up torch.distributed; run_trial wraps the model in DDP itself."""
    from ray.train.torch import get_device

    from sweep_engine.training.loop import run_trial

    ctx = ray.train.get_context()
    spec = TrialSpec.from_dict(job["spec"])
    workdir = Path(job["workdir"])
    node = {"node_id": ray.get_runtime_context().get_node_id(), "rank": str(ctx.get_world_rank())}
    fault = fault_for(spec, parse_faults(job.get("faults")))
    reporter = TrainReporter(workdir, fault, node, tag=f"-rank{ctx.get_world_rank()}")
    with output_to_log(workdir, {**node, "node_ip": f"{ray.util.get_node_ip_address()} rank {node['rank']}"}):
        run_trial(
            spec,
            reporter,
            workdir=workdir,
            init_dir=Path(job["init_dir"]) if job.get("init_dir") else None,
            cache_dir=Path(job["cache_dir"]),
            device_fn=get_device,  # this rank's GPU as Ray Train assigned it (used by GPU trials only)
        )
