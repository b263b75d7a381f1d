"""The slurm profile and the ``ffrep slurm-*`` commands on a real SLURM
cluster (the ``slurm_cluster`` fixture), with no accounting."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUN = "fashion_mnist/ff/tiny/seed0"
AFTER_TRAINING = (
    "activations",
    "activation_wall",
    "sparsity",
    "sparsity_tables",
    "hoyer_by_class",
)
WAIT_S = 600


def job_env() -> dict[str, str]:
    """The jobs import this checkout of the package and use one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env["OMP_NUM_THREADS"] = "1"
    return env


def ffrep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffrep", *args],
        cwd=cwd,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def workflow_copy(tmp_path: Path, edit=None) -> Path:
    """The workflow and the slurm profile in ``tmp_path``, with the tiny config
    (changed by ``edit``) as ``config/slurm_test.yaml``."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, tmp_path / name)
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config["grid"]["seeds"] = [0]
    if edit:
        edit(config)
    (tmp_path / "config" / "slurm_test.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


@contextlib.contextmanager
def snakemake(workdir: Path, *args: str) -> Iterator[subprocess.Popen]:
    """Snakemake with the slurm profile in ``workdir``; ended if the test fails."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/slurm_test.yaml",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        *args,
    ]
    with open(workdir / "snakemake.out", "w") as out:
        proc = subprocess.Popen(
            command, cwd=workdir, env=job_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # SIGINT: Snakemake cancels its SLURM jobs and exits
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def records(workdir: Path) -> list[dict]:
    folder = workdir / ".snakemake" / "ffrep_slurm"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.job.json"))]


def wait_until(condition, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def jobscript(folder: Path, body: str, outputs=(), runtime=5) -> Path:
    props = {
        "type": "single",
        "rule": "probe",
        "wildcards": {"case": folder.name},
        "output": [str(p) for p in outputs],
        "log": [],
        "threads": 1,
        "resources": {"mem_mb": 100, "runtime": runtime, "gpu": 0},
        "jobid": 1,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.sh"
    path.write_text(f"#!/bin/sh\n# properties = {json.dumps(props)}\n{body}\n")
    return path


def final_status(job_id: str, cwd: Path, *extra: str) -> str:
    def settled():
        out = ffrep("slurm-status", job_id, *extra, cwd=cwd)
        assert out.returncode == 0, out.stderr
        assert out.stdout in ("running\n", "success\n", "failed\n"), out.stdout
        return None if out.stdout == "running\n" else out.stdout.strip()

    return wait_until(settled, f"job {job_id} to end")


def test_status_without_accounting(slurm_cluster, tmp_path):
    sacct = subprocess.run(
        ["sacct", "-j", "1"], capture_output=True, text=True, timeout=30
    )
    assert "accounting storage is disabled" in (sacct.stdout + sacct.stderr).lower()

    done = tmp_path / "ok" / "done.txt"
    ok = ffrep(
        "slurm-submit",
        str(jobscript(tmp_path / "ok", f"touch {done}", [done])),
        cwd=tmp_path,
    )
    failing = ffrep(
        "slurm-submit", str(jobscript(tmp_path / "bad", "exit 3")), cwd=tmp_path
    )
    lazy = ffrep(
        "slurm-submit",
        str(jobscript(tmp_path / "lazy", "exit 0", [tmp_path / "never.txt"])),
        cwd=tmp_path,
    )
    for out in (ok, failing, lazy):
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().isdigit() and out.stdout.count("\n") == 1

    assert final_status(ok.stdout.strip(), tmp_path) == "success"
    assert final_status(failing.stdout.strip(), tmp_path) == "failed"
    # a job that exits 0 without its outputs
    assert final_status(lazy.stdout.strip(), tmp_path, "--latency-s=2") == "failed"
    log = next((tmp_path / "logs" / "slurm" / "probe").glob("case=ok/*_0_log.out"))
    assert "Job completed successfully" in log.read_text()


def test_unknown_job_is_running_for_the_grace_time(slurm_cluster, tmp_path):
    out = ffrep("slurm-status", "999999", "--grace-s=300", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "running\n")
    out = ffrep("slurm-status", "999999", "--grace-s=0", cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, "failed\n")


def test_cancel_is_fast_and_reported_failed(slurm_cluster, tmp_path):
    out = ffrep(
        "slurm-submit", str(jobscript(tmp_path / "sleep", "sleep 300")), cwd=tmp_path
    )
    job_id = out.stdout.strip()
    wait_until(
        lambda: ffrep("slurm-status", job_id, cwd=tmp_path).stdout == "running\n",
        "the job to start",
    )
    start = time.monotonic()
    cancel = subprocess.run(
        [str(REPO / "profiles" / "slurm" / "cancel.sh"), job_id],
        env=job_env(),
        timeout=10,
        check=False,
    )
    assert cancel.returncode == 0
    assert time.monotonic() - start < 2.0
    assert final_status(job_id, tmp_path) == "failed"


def test_tiny_config_end_to_end(slurm_cluster, tmp_path):
    workdir = workflow_copy(tmp_path)
    # the small jobs after training as one SLURM job: each costs a Snakemake
    # start-up on the node, which the test's two cores feel
    groups = [f"{rule}=analysis" for rule in AFTER_TRAINING]
    with snakemake(workdir, "--groups", *groups) as proc:
        assert proc.wait(timeout=WAIT_S) == 0, (workdir / "snakemake.out").read_text()
    rules = sorted(r["rule"] for r in records(workdir))
    assert rules.count("train") == 3
    assert "prepare_data" not in rules
    assert (workdir / "results" / "tables" / "sparsity_summary.csv").exists()
    for r in records(workdir):
        assert Path(workdir / r["log"]).exists()
        assert r["log"].startswith(f"logs/slurm/{r['rule']}/")
    # the rule's log links to its SLURM job's log
    for r in records(workdir):
        if r["rule"] == "train":
            w = r["wildcards"]
            run = f"{w['dataset']}/{w['algorithm']}/{w['architecture']}/seed{w['seed']}"
            link = workdir / "logs" / "train" / f"{run}.slurm.log"
            assert link.resolve() == (workdir / r["log"]).resolve()


def test_cancelled_training_resumes_bit_identical(slurm_cluster, tmp_path):
    def longer(config):
        config["grid"]["algorithms"] = ["ff"]
        config["data"]["max_train_samples"] = 6000
        config["training"]["hyperparameters"]["ff"]["default"]["epochs"] = 40

    workdir = workflow_copy(tmp_path, longer)
    checkpoint = workdir / "results" / "checkpoints" / f"{RUN}.pt"
    model = workdir / "results" / "runs" / RUN / "model.pt"

    def mid_first_layer():
        if not checkpoint.exists():
            return False
        return torch.load(checkpoint, weights_only=True)["epoch"] >= 2

    with snakemake(workdir, str(model.relative_to(workdir))) as proc:
        wait_until(mid_first_layer, "a checkpoint in the first layer")
        (first,) = [r for r in records(workdir) if r["rule"] == "train"]
        # scancel itself: the job has most of its epochs left, not seconds
        subprocess.run(["scancel", first["job_id"]], check=True, timeout=30)
        assert final_status(first["job_id"], workdir) == "failed"
        # the profile's retry resubmits the job, which resumes
        assert proc.wait(timeout=WAIT_S) == 0, (workdir / "snakemake.out").read_text()
    assert len([r for r in records(workdir) if r["rule"] == "train"]) == 2
    metrics = json.loads((model.parent / "metrics.json").read_text())
    assert metrics["resumed"] is True

    reference = uninterrupted(workdir, metrics["run_config"])
    resumed = torch.load(model, weights_only=True)["state_dict"]
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), name


def uninterrupted(workdir: Path, run_config: dict) -> dict:
    """The weights of the same run trained here in one go."""
    from ffrep.config import RunConfig
    from ffrep.train import train_run

    run = RunConfig.from_json(json.dumps(run_config))
    out = workdir / "reference"
    train_run(
        run,
        workdir / "resources" / "data" / "prepared" / "fashion_mnist.pt",
        out / "model.pt",
        out / "metrics.json",
        checkpoint=None,
    )
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]
