"""A real Ray cluster and MLflow tracking server on this machine's loopback, for tests and for docs/cluster.md.

Every server is a real process started the way a user starts it (`ray start --head --block`, `ray start
--address`, `mlflow server`), each in a process group of its own, and ended by that group's id (SIGTERM, then
SIGKILL): never `ray stop`, which would end every Ray instance on a shared machine. Ports are free ones chosen
here; Ray's files live in a temporary directory of the cluster's own; token authentication is on, with a token
generated for this cluster (Ray 2.60 turns it on by itself when ~/.ray/auth_token exists, which another user of
the machine may rewrite at any time).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent  # ray, mlflow and sweep-engine of this environment


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """End the process group `proc` leads: SIGTERM, then SIGKILL after `grace_s` (its own group only)."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait
        while time.time() < deadline and _group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies count as gone: the group is still listed until their parent reaps them.
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return any(not s.strip().startswith("Z") for s in out.splitlines() if s.strip())


def wait_for(what: str, ready: object, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `ready()` until true; fail with `what` after `timeout_s` or when `proc` exits."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if callable(ready) and ready():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout_s:.0f} s")


@dataclass
class LoopbackCluster:
    """A Ray head, worker nodes and an MLflow server on 127.0.0.1, all under `root`.

    Attributes:
        root: The cluster's directory: Ray's temp dir, its token, the processes' logs and working directory.
        env: The environment every command of the cluster runs with (token auth on, no RAY_ADDRESS).
    """

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_tmp: list[Path] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0
    mlflow_port: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray's sockets live in its temp dir, and a socket path may not exceed 107 bytes: a short one of its own.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="se-ray-", dir="/tmp"))
        token = self.root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(token),
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        self.env = env

    @property
    def dashboard(self) -> str:
        """The address `ray job submit --address` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115  # the process writes it until it ends
        proc = subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def start_head(self, num_cpus: int = 1) -> None:
        ports = free_ports(9)
        self.gcs_port, self.dashboard_port = ports[0], ports[1]
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1"]
        cmd += [f"--port={ports[0]}", "--dashboard-host=127.0.0.1", f"--dashboard-port={ports[1]}"]
        cmd += [f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}"]
        cmd += [f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}"]
        cmd += [f"--ray-client-server-port={ports[6]}", f"--object-manager-port={ports[7]}"]
        cmd += [f"--node-manager-port={ports[8]}", f"--num-cpus={num_cpus}"]
        cmd += [f"--temp-dir={self.ray_tmp}", "--disable-usage-stats"]
        proc = self._start("head", cmd)
        wait_for("ray head", lambda: "Ray runtime started" in self.log("head"), 120, proc)

    def add_worker(self, num_cpus: int = 1) -> None:
        i = sum(1 for p in (self.root).glob("worker-*.log")) + 1
        ports = free_ports(6)
        cmd = [str(BIN / "ray"), "start", "--block", f"--address=127.0.0.1:{self.gcs_port}"]
        cmd += ["--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}"]
        cmd += [f"--dashboard-agent-listen-port={ports[0]}", f"--dashboard-agent-grpc-port={ports[1]}"]
        cmd += [f"--runtime-env-agent-port={ports[2]}", f"--metrics-export-port={ports[3]}"]
        cmd += [f"--object-manager-port={ports[4]}", f"--node-manager-port={ports[5]}"]
        # A temp dir of its own, as a node on another machine has: two nodes sharing one session directory share
        # runtime_resources/, and this node's runtime-env agent would re-extract and later delete the job's
        # working_dir package that the driver on the head runs in (its cwd gone: oneMKL aborts in getcwd()).
        worker_tmp = Path(tempfile.mkdtemp(prefix="se-ray-", dir="/tmp"))
        self.extra_tmp.append(worker_tmp)
        cmd += [f"--temp-dir={worker_tmp}", "--disable-usage-stats"]
        proc = self._start(f"worker-{i}", cmd)
        wait_for(f"ray worker {i}", lambda: "Ray runtime started" in self.log(f"worker-{i}"), 120, proc)

    def node_ids(self) -> set[str]:
        """The ids of the cluster's live nodes (Ray's state API, through the dashboard)."""
        done = self.run(["ray", "list", "nodes", "--address", self.dashboard, "--format", "json"])
        if done.returncode != 0:
            return set()
        return {n["node_id"] for n in json.loads(done.stdout) if n.get("state") == "ALIVE"}

    def wait_for_nodes(self, n: int, timeout_s: float = 120) -> set[str]:
        wait_for(f"{n} Ray nodes", lambda: len(self.node_ids()) >= n, timeout_s)
        return self.node_ids()

    def start_mlflow(self, backend_db: Path, artifacts: Path) -> None:
        """`mlflow server` with its backend store in `backend_db` and artifacts under `artifacts`."""
        (self.mlflow_port,) = free_ports(1)
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{backend_db}"]
        cmd += [
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.mlflow_port),
        ]
        cmd += ["--workers", "1"]
        proc = self._start("mlflow", cmd)

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("mlflow server", healthy, 120, proc)

    def run(
        self, cmd: list[str], timeout_s: float = 60, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of this environment (`ray`, `sweep-engine`, ...) against the cluster."""
        exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
        return subprocess.run(
            [exe, *cmd[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            **kwargs,  # type: ignore[call-overload]
        )

    def stop(self) -> None:
        """End every process group this cluster started, the last started first."""
        for proc in reversed(self.procs):
            stop_group(proc)
        for d in (self.ray_tmp, *self.extra_tmp):
            shutil.rmtree(d, ignore_errors=True)
