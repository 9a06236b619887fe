"""The cluster files validate against Ray's cluster-config schema, and a sweep runs on a two-node Ray cluster
on this machine, losing its second node half-way."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest
import yaml

from sweep_engine.config import load_space
from sweep_engine.space import expand
from sweep_engine.spec import FINISHED
from sweep_engine.sweep.jobs import SweepPaths
from sweep_engine.tracking import TRIAL, MlflowTracker
from tests.sweep.loopback import LoopbackCluster
from tests.tiny_sweep import mlflow_template, shared_cache, space_dict, write_space

REPO = Path(__file__).resolve().parents[2]


def prepared(name: str) -> dict[str, Any]:
    """What `ray up` validates: the file merged with the provider's defaults (no cloud calls)."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(yaml.safe_load((REPO / name).read_text()))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_files_validate_against_rays_schema(name: str) -> None:
    from ray.autoscaler._private.util import validate_config

    config = prepared(name)
    validate_config(config)
    commands = " ".join(config["setup_commands"] + config.get("initialization_commands", []))
    assert (
        "make -C ~/sweep-engine install-cluster" in commands
    )  # the cluster profile: GPU torch, ray[default]
    assert config["file_mounts"] == {"~/sweep-engine": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2  # token authentication on every node
    [server] = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    # The backend on the head's own disk (SQLite over NFS is unsafe), artifacts on the shared file system.
    assert (
        "--backend-store-uri sqlite:///$HOME/mlflow/" in server
        and "--artifacts-destination /mnt/shared/" in server
    )
    assert "/mnt/shared" in yaml.safe_dump(config)  # the paper spaces' storage


def test_aws_cluster_has_gpu_workers_and_a_cpu_head() -> None:
    config = prepared("cluster.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    gpu_types = {t["node_config"]["InstanceType"] for t in types.values() if t["resources"].get("GPU", 0) > 0}
    assert {"g5.2xlarge", "p4d.24xlarge"} <= gpu_types
    # A current image on every node: Ubuntu 22.04 with NVIDIA's driver, never Ray's 18.04 `latest_dlami`.
    for t in types.values():
        assert "ubuntu-22.04" in t["node_config"]["ImageId"] and t["node_config"]["ImageId"].startswith(
            "resolve:ssm:"
        )


def test_the_validator_rejects_a_typo() -> None:
    from ray.autoscaler._private.util import validate_config

    config = copy.deepcopy(prepared("cluster.yaml"))
    config["max_worker"] = 8
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)
    for paper in sorted((REPO / "search_spaces" / "paper").glob("*.yaml")):
        assert yaml.safe_load(paper.read_text())["storage"] == "/mnt/shared/results"


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_places_trials_on_both_and_survives_losing_one(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from ray.cluster_utils import Cluster

    data = space_dict(
        tmp_path / "results",
        languages=("es",),
        transfer={"stopping": {"eval_interval_tokens": 8192, "token_cap": 49152}},
    )
    space = write_space(
        tmp_path / "c.yaml", data, shared_cache(tmp_path_factory), mlflow_template(tmp_path_factory)
    )
    paths, specs = SweepPaths.of(space), expand(space)
    # Two raylets on loopback, one CPU each (a trial holds one): the head and a second node to lose.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"node_a": 1}, "include_dashboard": False},
    )
    try:
        second = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        cluster.wait_for_nodes()
        cmd = [
            sys.executable,
            "-m",
            "sweep_engine.cli",
            "launch",
            str(tmp_path / "c.yaml"),
            "--address",
            cluster.address,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = [s for s in specs if (paths.workdir(s) / "result.json").exists()]
            if len(done) >= 2 and any((paths.workdir(s) / "state.pt").exists() for s in specs):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before the second node could be lost"
        cluster.remove_node(second, allow_graceful=False)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    finally:
        cluster.shutdown()

    ledger = pd.read_parquet(paths.ledger)
    assert sorted(ledger.trial_key) == sorted(s.key() for s in specs) and set(ledger.status) == {FINISHED}
    runs = MlflowTracker(space.tracking_uri, space.experiment_name).runs(TRIAL)
    assert len(runs) == len(specs) and {r.status for r in runs} == {FINISHED}
    assert len({r.tags["node_id"] for r in runs}) == 2  # trials ran on both nodes


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_runs_a_sweep_on_a_two_node_cluster_logging_to_an_mlflow_server(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The cluster path of docs/cluster.md on loopback: `ray start --head`, `ray start --address`, `mlflow
    server`, then `ray job submit -- sweep-engine launch SPACE` (no --address: the job's RAY_ADDRESS), with a
    job working directory, which is what made Ray pull the driver's current directory away (oneMKL abort)."""
    shared = tmp_path / "cluster_fs"  # the cluster's shared file system
    (shared / "results").mkdir(parents=True)
    (shared / "results" / "cache").symlink_to(shared_cache(tmp_path_factory), target_is_directory=True)
    cluster = LoopbackCluster(tmp_path / "cluster")
    try:
        db = cluster.root / "mlflow.db"  # the tracking server's backend, on the head's own disk
        shutil.copy(mlflow_template(tmp_path_factory), db)
        cluster.start_mlflow(db, shared / "mlartifacts")
        cluster.start_head(num_cpus=1)
        cluster.add_worker(num_cpus=1)
        nodes = cluster.wait_for_nodes(2)

        # Storage relative to the space file; the driver runs in a directory of Ray's choosing.
        data = space_dict(Path("../cluster_fs/results"), languages=("es",))
        data["tracking"] = {"uri": cluster.tracking_uri}
        (tmp_path / "spaces").mkdir()
        space_file = tmp_path / "spaces" / "c.yaml"
        space_file.write_text(yaml.safe_dump(data))
        job_dir = tmp_path / "job"
        job_dir.mkdir()
        (job_dir / "NOTE").write_text("the job's working directory, uploaded by ray job submit\n")
        cmd = ["ray", "job", "submit", "--address", cluster.dashboard, "--working-dir", str(job_dir)]
        done = cluster.run([*cmd, "--", "sweep-engine", "launch", str(space_file)], timeout_s=900)
        out = done.stdout + done.stderr
        assert done.returncode == 0 and "succeeded" in out, out[-5000:]
        assert "Cannot load" not in out and "FileNotFoundError" not in out

        space = load_space(space_file)
        specs = expand(space)
        keys = sorted(s.key() for s in specs)
        ledger = pd.read_parquet(SweepPaths.of(space).ledger)
        assert sorted(ledger.trial_key) == keys and set(ledger.status) == {FINISHED}
        tracker = MlflowTracker(cluster.tracking_uri, space.experiment_name, create=False)
        runs = tracker.runs(TRIAL)
        assert sorted(r.tags["trial_key"] for r in runs) == keys and {r.status for r in runs} == {FINISHED}
        ran_on = {r.tags["node_id"] for r in runs}
        assert ran_on == nodes  # every trial on this cluster's nodes, and both nodes used
        # Each child run carries its dataset, source and model (what the runs table shows).
        for run in runs:
            full = tracker.client.get_run(run.run_id)
            assert full.inputs.dataset_inputs and full.outputs.model_outputs
            assert run.tags["mlflow.source.git.commit"] and run.tags["model_path"].endswith("/best")
    finally:
        cluster.stop()
