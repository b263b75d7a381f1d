"""A one-node SLURM cluster on localhost for the tests of this folder.

Debian's slurmctld, slurmd, slurm-client and munge, run as root from a
temporary state folder, with no accounting (``sacct`` answers "accounting
storage is disabled"). Every daemon listens on 127.0.0.1 only; the fixture
stops them afterwards. Without the binaries or root the tests skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
)
NODE = "ffrepnode"
# more CPUs than the machine has: test jobs are small and mostly wait
NODE_CPUS = 8
START_TIMEOUT_S = 60


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    conf: Path

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=30, check=False, **kwargs
        )


SLURM_CONF = """\
ClusterName=ffreptest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=100000
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _start(root: Path) -> tuple[Cluster, list[subprocess.Popen]]:
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True)
    (root / "munge").chmod(0o711)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "plugstack.conf").write_text("")
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname().split(".")[0],
            ctld_port=_free_port(),
            d_port=_free_port(),
            root=root,
            node=NODE,
            cpus=NODE_CPUS,
        )
    )
    subprocess.run(
        [
            _which("munged"),
            f"--key-file={key}",
            f"--socket={root}/munge/munge.socket",
            f"--pid-file={root}/munge/munged.pid",
            f"--log-file={root}/munge/munged.log",
            f"--seed-file={root}/munge/seed",
            "--force",
        ],
        check=True,
        timeout=30,
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen(
            [_which(name), "-D", *extra],
            env=env,
            stdout=open(root / "log" / f"{name}.out", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        for name, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", NODE]))
    ]
    cluster = Cluster(root, conf)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        out = cluster.run("sinfo", "--noheader", "--format=%T", env=env)
        if out.stdout.strip() == "idle":
            return cluster, daemons
        if any(d.poll() is not None for d in daemons):
            break
        time.sleep(0.5)
    _stop(cluster, daemons)
    logs = "\n".join(
        p.read_text()[-2000:] for p in sorted((root / "log").glob("*")) if p.is_file()
    )
    raise RuntimeError(f"the test SLURM cluster did not come up:\n{logs}")


def _stop(cluster: Cluster, daemons: list[subprocess.Popen]) -> None:
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    cluster.run("scancel", "--full", "--user=root", env=env)
    for daemon in reversed(daemons):
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    pid_file = cluster.root / "munge" / "munged.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running cluster; ``SLURM_CONF`` points at it for the whole session."""
    missing = [name for name in BINARIES if _which(name) is None]
    if missing:
        pytest.skip(
            "SLURM test cluster needs " + ", ".join(missing) + " (apt-get install"
            " slurmctld slurmd slurm-client munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster runs its daemons as root")
    # a short path: munge's socket path must fit in sockaddr_un
    root = Path(tmp_path_factory.mktemp("slurm", numbered=True))
    cluster, daemons = _start(root)
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        _stop(cluster, daemons)
