"""Experiment tracking: one parent run per sweep stage, one child run per trial (the only module importing mlflow).

Everything that knows the tracker is here: the default store of a space (`default_uri`), the runs and their
names, the report logged beside them (`log_report`) and the UI (`serve_ui`, `ui_hint`). Another tracker is
another class with the `Tracker` interface and another branch of `open_tracker`.

The sweep driver is the single writer of every run (trial processes never talk to MLflow), so a SQLite store never
sees two writers from one sweep; calls still retry on "database is locked" for two sweeps sharing one store.
A run is found again by its tags (`trial_key`, or `sweep_key` + `stage` for a parent), never created twice, so a
relaunch continues the same runs. `InMemoryTracker` has the same interface for unit tests (Levanter's pattern).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sweep_engine.spec import KILLED, RUNNING, TERMINAL

PARENT = "parent"  # tag run_kind of a stage's parent run
TRIAL = "trial"  # tag run_kind of a trial's run
MODEL_ID_TAG = "model_id"  # a trial run's LoggedModel
# MLflow 3's UI opens an experiment by its kind; without it (and with the UI's default "GenAI" workflow) a
# sweep's URL shows an empty traces overview instead of its runs.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

T = TypeVar("T")


def default_uri(storage_dir: Path) -> str:
    """The store of a space that names none: a SQLite file beside its results (`<storage>/mlflow.db`)."""
    return f"sqlite:///{(Path(storage_dir) / 'mlflow.db').resolve()}"


def _local_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@dataclass
class RunRecord:
    """What the driver needs to know about one run."""

    run_id: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    name: str = ""


class Tracker(Protocol):
    """Where runs, their parameters, tags and metrics go."""

    def parent_run(self, stage: str, sweep_key: str, tags: Mapping[str, str]) -> str:
        """The stage's parent run (created once, found again by sweep_key + stage), set RUNNING."""
        ...

    def trial_run(
        self,
        parent_id: str,
        trial_key: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        name: str | None = None,
    ) -> str:
        """The trial's run under `parent_id` (created once, named `name`, found again by trial_key), set
        RUNNING."""
        ...

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def end_run(self, run_id: str, status: str) -> None:
        """Set a terminal status: FINISHED, FAILED or KILLED."""
        ...

    def runs(self, kind: str | None = None) -> list[RunRecord]:
        """Every run of the experiment (of one `run_kind` when given)."""
        ...

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        """The steps logged for `metric` (so a relaunch logs each curve point once)."""
        ...

    def log_dataset(self, run_id: str, dataset: DatasetRecord) -> None:
        """Record a dataset the run read (MLflow's run inputs: the runs table's Dataset column)."""
        ...

    def log_model(self, run_id: str, model: ModelRecord) -> str:
        """Record the run's model (once per run: a relaunch finds it again); returns its id."""
        ...


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset a run read, as the tracker shows it.

    Attributes:
        name: What the runs table shows, e.g. `bible es nt train D_F=4000`.
        digest: Identifies the exact subset (a hash of the corpus, tokenizer, split and D_F).
        source: Where the text comes from: a file path, a Hugging Face dataset, the built-in Bible.
        source_type: `local`, `hugging_face` or `builtin`.
        context: The role, e.g. `training` or `validation`.
        profile: Extra facts (JSON-able), e.g. tokens and characters.
    """

    name: str
    digest: str
    source: str
    source_type: str
    context: str
    profile: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecord:
    """A trained model, recorded by reference: `path` is its directory on the shared storage (loadable with
    `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(path)`), so no weights are copied into the store."""

    name: str
    path: str
    step: int
    tags: dict[str, str] = field(default_factory=dict)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts/lists as `{"a.b": "1", "c.0.d": "x"}`: MLflow params are flat strings."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = str(list(obj) if isinstance(obj, tuple) else obj)
    return out


def reconcile_running(tracker: Tracker) -> list[str]:
    """Mark runs a killed driver left RUNNING as KILLED; returns their ids. Call before a sweep starts."""
    stale = [r.run_id for r in tracker.runs() if r.status == RUNNING]
    for run_id in stale:
        tracker.end_run(run_id, KILLED)
    return stale


# ------------------------------------------------------------------------------------------------- in memory


@dataclass
class _MemRun:
    record: RunRecord
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    datasets: list[DatasetRecord] = field(default_factory=list)
    model: ModelRecord | None = None


class InMemoryTracker:
    """A Tracker that keeps everything in dicts (unit tests, dry runs)."""

    def __init__(self) -> None:
        self._runs: dict[str, _MemRun] = {}

    def _find(self, **tags: str) -> RunRecord | None:
        for run in self._runs.values():
            if all(run.record.tags.get(k) == v for k, v in tags.items()):
                return run.record
        return None

    def _create(self, tags: Mapping[str, str], params: Mapping[str, str], name: str = "") -> str:
        run_id = uuid.uuid4().hex
        self._runs[run_id] = _MemRun(RunRecord(run_id, RUNNING, dict(tags), dict(params), name or run_id))
        return run_id

    def parent_run(self, stage: str, sweep_key: str, tags: Mapping[str, str]) -> str:
        found = self._find(run_kind=PARENT, sweep_key=sweep_key, stage=stage)
        if found is None:
            return self._create({**tags, "run_kind": PARENT, "sweep_key": sweep_key, "stage": stage}, {})
        found.status = RUNNING
        found.tags.update(tags)
        return found.run_id

    def trial_run(
        self,
        parent_id: str,
        trial_key: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        name: str | None = None,
    ) -> str:
        found = self._find(run_kind=TRIAL, trial_key=trial_key)
        all_tags = {**tags, "run_kind": TRIAL, "trial_key": trial_key, "mlflow.parentRunId": parent_id}
        if found is None:
            return self._create(all_tags, params, name or trial_key)
        found.status = RUNNING
        found.tags.update(all_tags)
        return found.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._runs[run_id].metrics.setdefault(key, []).append((step, float(value)))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._runs[run_id].record.tags.update({k: str(v) for k, v in tags.items()})

    def end_run(self, run_id: str, status: str) -> None:
        self._runs[run_id].record.status = status

    def runs(self, kind: str | None = None) -> list[RunRecord]:
        return [
            r.record for r in self._runs.values() if kind is None or r.record.tags.get("run_kind") == kind
        ]

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        return {step for step, _ in self._runs[run_id].metrics.get(metric, [])}

    def metric_history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) pairs in logging order (tests)."""
        return list(self._runs[run_id].metrics.get(metric, []))

    def log_dataset(self, run_id: str, dataset: DatasetRecord) -> None:
        if dataset not in self._runs[run_id].datasets:
            self._runs[run_id].datasets.append(dataset)

    def log_model(self, run_id: str, model: ModelRecord) -> str:
        self._runs[run_id].model = model
        self._runs[run_id].record.tags["model_path"] = model.path
        return run_id

    def datasets(self, run_id: str) -> list[DatasetRecord]:
        """The datasets a run recorded (tests)."""
        return list(self._runs[run_id].datasets)


# ------------------------------------------------------------------------------------------------- MLflow


def _retry_locked(call: Callable[[], T], attempts: int = 8) -> T:
    """Retry a store call while SQLite reports a lock (another sweep writing the same file)."""
    for i in range(attempts):
        try:
            return call()
        except Exception as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i)
    raise AssertionError("unreachable")


class MlflowTracker:
    """A Tracker on an MLflow tracking store (SQLite file, server URL, ...), one experiment per sweep."""

    def __init__(self, uri: str, experiment: str, *, create: bool = True) -> None:
        """Open the store at `uri` and the experiment `experiment`.

        Raises:
            LookupError: `create` is False and the experiment does not exist.
        """
        # Alembic and MLflow log every schema migration at INFO when a SQLite store is created.
        for name in ("alembic", "mlflow.store.db.utils"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # With a tracking server MLflow prints "View run/experiment at <url>" for every run it ends: URLs that
        # open its GenAI overview, between the progress view's lines. The engine prints the runs table's URL.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = _retry_locked(lambda: self.client.get_experiment_by_name(experiment))
        if exp is None:
            if not create:
                raise LookupError(f"no MLflow experiment {experiment!r} in {uri}")
            # A SQLite store keeps its artifacts beside the database, not in whatever directory MLflow runs from.
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
            self.experiment_id = _retry_locked(
                lambda: self.client.create_experiment(
                    experiment, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
                )
            )
        else:
            if exp.lifecycle_stage == "deleted":
                _retry_locked(lambda: self.client.restore_experiment(exp.experiment_id))
            self.experiment_id = exp.experiment_id
            if create and exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:  # made before the tag was set
                _retry_locked(
                    lambda: self.client.set_experiment_tag(
                        self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING
                    )
                )

    def _search(self, filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:

            def search(token: str | None = token) -> Any:
                return self.client.search_runs(
                    [self.experiment_id], filter_string, max_results=1000, page_token=token
                )

            page = _retry_locked(search)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _reopen(self, run: Any, tags: Mapping[str, str], name: str | None = None) -> str:
        run_id: str = run.info.run_id
        # A relaunch also renames a run made under an older naming rule.
        _retry_locked(lambda: self.client.update_run(run_id, status=RUNNING, name=name))
        self.set_tags(run_id, tags)
        return run_id

    def parent_run(self, stage: str, sweep_key: str, tags: Mapping[str, str]) -> str:
        found = self._search(
            f"tags.run_kind = '{PARENT}' and tags.sweep_key = '{sweep_key}' and tags.stage = '{stage}'"
        )
        all_tags = {**tags, "run_kind": PARENT, "sweep_key": sweep_key, "stage": stage}
        if found:
            return self._reopen(found[0], all_tags)
        run = _retry_locked(
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=f"{stage}-{sweep_key}")
        )
        return str(run.info.run_id)

    def trial_run(
        self,
        parent_id: str,
        trial_key: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        name: str | None = None,
    ) -> str:
        from mlflow.entities import Param

        found = self._search(f"tags.run_kind = '{TRIAL}' and tags.trial_key = '{trial_key}'")
        all_tags = {**tags, "run_kind": TRIAL, "trial_key": trial_key, "mlflow.parentRunId": parent_id}
        if found:
            return self._reopen(found[0], all_tags, name)
        run_name = name or trial_key
        run = _retry_locked(
            lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
        )
        run_id: str = run.info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            chunk = items[i : i + 100]
            _retry_locked(lambda chunk=chunk: self.client.log_batch(run_id, params=chunk))  # type: ignore[misc]
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if items:
            _retry_locked(lambda: self.client.log_batch(run_id, metrics=items))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        if items:
            _retry_locked(lambda: self.client.log_batch(run_id, tags=items))

    def end_run(self, run_id: str, status: str) -> None:
        _retry_locked(lambda: self.client.set_terminated(run_id, status))

    def runs(self, kind: str | None = None) -> list[RunRecord]:
        found = self._search(f"tags.run_kind = '{kind}'" if kind else "")
        return [
            RunRecord(r.info.run_id, r.info.status, dict(r.data.tags), dict(r.data.params), r.info.run_name)
            for r in found
        ]

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        history = _retry_locked(lambda: self.client.get_metric_history(run_id, metric))
        return {int(m.step) for m in history}

    def metric_history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric (tests, status)."""
        history = _retry_locked(lambda: self.client.get_metric_history(run_id, metric))
        return [(m.step, m.value) for m in history]

    def log_dataset(self, run_id: str, dataset: DatasetRecord) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(
            name=dataset.name,
            digest=dataset.digest,
            source_type=dataset.source_type,
            source=json.dumps({"uri": dataset.source}),
            profile=json.dumps(dataset.profile, sort_keys=True),
        )
        tags = [InputTag(key="mlflow.data.context", value=dataset.context)]
        _retry_locked(lambda: self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags)]))

    def log_model(self, run_id: str, model: ModelRecord) -> str:
        from mlflow.entities import LoggedModelOutput

        run = _retry_locked(lambda: self.client.get_run(run_id))
        model_id = run.data.tags.get(MODEL_ID_TAG)
        if model_id is None:  # one model per run, also when a relaunch records the trial again
            tags = {
                **model.tags,
                "path": model.path,
                "format": "transformers save_pretrained (model + tokenizer)",
            }
            logged = _retry_locked(
                lambda: self.client.create_logged_model(
                    self.experiment_id,
                    name=model.name,
                    source_run_id=run_id,
                    tags=tags,
                    model_type="causal-lm",
                )
            )
            model_id = str(logged.model_id)
            _retry_locked(lambda: self.client.finalize_logged_model(model_id, "READY"))
            _retry_locked(lambda: self.client.log_outputs(run_id, [LoggedModelOutput(model_id, model.step)]))
        self.set_tags(run_id, {MODEL_ID_TAG: model_id, "model_path": model.path})
        return str(model_id)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        _retry_locked(lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path))

    def artifacts(self, run_id: str, artifact_path: str) -> list[str]:
        """Paths of the artifacts logged under `artifact_path` (tests)."""
        return [f.path for f in self.client.list_artifacts(run_id, artifact_path)]


def open_tracker(uri: str, experiment: str) -> MlflowTracker:
    """The MLflow tracker of a sweep (creates the experiment, and a SQLite store, when missing)."""
    return MlflowTracker(uri, experiment)


def store_exists(uri: str) -> bool:
    """False only for a local store file not created yet (a server or database is assumed to be there)."""
    path = _local_file(uri)
    return path is None or path.exists()


def existing_tracker(uri: str, experiment: str) -> MlflowTracker | None:
    """The tracker when its store and experiment exist already (read-only callers must not create a store)."""
    if not store_exists(uri):
        return None
    try:
        return MlflowTracker(uri, experiment, create=False)
    except LookupError:
        return None


def log_report(uri: str, experiment: str, report_dir: Path) -> list[str]:
    """Log an analysis report (report.md, report.html, figures/) to every parent run of a sweep's experiment,
    so that it sits beside the runs in the MLflow UI. Returns the run ids; none when the store does not exist."""
    tracker = existing_tracker(uri, experiment)
    if tracker is None:
        return []
    parents = tracker.runs(PARENT)
    for run in parents:
        tracker.log_artifacts(run.run_id, report_dir, "report")
    return [run.run_id for run in parents]


def terminal(statuses: Iterable[str]) -> bool:
    """True when no status is RUNNING (or SCHEDULED)."""
    return all(s in TERMINAL for s in statuses)


# ------------------------------------------------------------------------------------------------- the UI


def serves_own_ui(uri: str) -> bool:
    """A tracking server (e.g. the head node's, cluster.yaml) serves its own UI at its URI."""
    return not uri.startswith(("sqlite:", "file:", "/", "postgresql", "mysql"))


def ui_command(uri: str, host: str, port: int, workers: int) -> list[str]:
    """The command that serves the MLflow UI on a store."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def ui_hint(uri: str) -> str:
    """A command line that opens the runs of a store (printed at the end of the demo)."""
    return f"mlflow ui --backend-store-uri {uri}"


def runs_url(base: str, experiment_id: str | None) -> str:
    """The URL that opens an experiment's runs table (child runs nested under their stage's run) in MLflow's
    UI at `base`; the UI's home page without an experiment id.

    The tab (`/runs`) and `workflowType=machine_learning` are both needed: MLflow 3's UI otherwise opens the
    experiment's GenAI overview, its default workflow in a browser that has not chosen one.
    """
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_url(uri: str, experiment: str) -> str | None:
    """The runs table of a sweep's experiment on a tracking server (`uri` an http(s) URL); None for a local
    store, which has no UI until `sweep-engine ui` serves one."""
    if not uri.startswith(("http://", "https://")):
        return None
    tracker = existing_tracker(uri, experiment)
    return runs_url(uri, tracker.experiment_id if tracker is not None else None)


def serve_ui(uri: str, experiment: str, *, host: str, port: int, workers: int) -> int:
    """Serve the UI on a sweep's store until Ctrl-C; print the URL of the sweep's runs table first.

    Returns:
        The server's exit code (0 after Ctrl-C).
    """
    tracker = existing_tracker(uri, experiment)
    url = runs_url(f"http://{host}:{port}", tracker.experiment_id if tracker is not None else None)
    proc = subprocess.Popen(ui_command(uri, host, port, workers))
    print(f"MLflow UI: {url}  (store {uri}; Ctrl-C stops it)", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return 0
