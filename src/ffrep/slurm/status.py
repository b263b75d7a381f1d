"""The state of a SLURM job, without accounting: ``squeue``, then
``scontrol show job``, then submitit's result file."""

from __future__ import annotations

import logging
import pickle
import subprocess
import time
from pathlib import Path

from ffrep.slurm.state import JobRecord, StateDir

log = logging.getLogger(__name__)

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
ACTIVE = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
# everything else that ends a job: FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL,
# CANCELLED, PREEMPTED, BOOT_FAIL, DEADLINE, REVOKED
DONE = "COMPLETED"
QUERY_TIMEOUT_S = 20


def _query(command: list[str]) -> str | None:
    """The command's stdout, or ``None`` when it fails or hangs."""
    try:
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("%s: %s", command[0], err)
        return None
    if out.returncode != 0:
        log.debug("%s: %s", " ".join(command), out.stderr.strip())
        return None
    return out.stdout


# TODO(per-job queries): cluster-generic asks for one job at a time, so a large
# grid costs one squeue per job per round; a short-lived cache of one squeue
# for all jobs would spare the controller.
def scheduler_state(job_id: str) -> str | None:
    """The job's state from ``squeue``, else ``scontrol``; ``None`` if neither
    knows it (job purged, or the controller does not answer)."""
    out = _query(["squeue", "--noheader", "--jobs", job_id, "--format=%T"])
    if out and out.strip():
        return out.split()[0].strip().upper()
    out = _query(["scontrol", "--oneliner", "show", "job", job_id])
    if out:
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1].upper()
    return None


def submitit_outcome(record: JobRecord | None) -> str | None:
    """``success`` or ``failed`` from submitit's result file, if it exists."""
    if record is None or not record.result_pickle.exists():
        return None
    try:
        with open(record.result_pickle, "rb") as f:
            outcome = pickle.load(f)[0]
    except (OSError, EOFError, IndexError, pickle.UnpicklingError) as err:
        log.warning("unreadable %s: %s", record.result_pickle, err)
        return None
    return SUCCESS if outcome == "success" else FAILED


def missing_outputs(record: JobRecord | None) -> list[str]:
    if record is None:
        return []
    return [p for p in record.outputs if not Path(p).exists()]


def job_status(
    job_id: str,
    state: StateDir,
    grace_s: float,
    latency_s: float,
    now: float | None = None,
) -> str:
    """One of ``running``, ``success``, ``failed``; never raises for an
    unknown or silent job, which is ``running`` for ``grace_s`` seconds."""
    now = time.time() if now is None else now
    record = state.load(job_id)
    slurm = scheduler_state(job_id)
    if slurm in ACTIVE:
        state.clear_waiting(job_id)
        return RUNNING
    if slurm is not None and slurm != DONE:
        _explain(job_id, f"SLURM state {slurm}", record)
        return FAILED
    outcome = SUCCESS if slurm == DONE else submitit_outcome(record)
    if outcome == FAILED:
        _explain(job_id, "submitit reports an error", record)
        return FAILED
    if outcome == SUCCESS:
        missing = missing_outputs(record)
        if not missing:
            state.clear_waiting(job_id)
            return SUCCESS
        # outputs may show up late on a shared file system
        since = state.waiting_since(job_id, "outputs", now)
        if now - since < latency_s:
            return RUNNING
        _explain(job_id, f"exited 0 without {', '.join(missing)}", record)
        return FAILED
    since = state.waiting_since(job_id, "unknown", now)
    if now - since < grace_s:
        log.info("job %s: no answer from SLURM for %.0f s", job_id, now - since)
        return RUNNING
    _explain(job_id, f"unknown to SLURM for {grace_s:.0f} s", record)
    return FAILED


def _explain(job_id: str, why: str, record: JobRecord | None) -> None:
    where = f"; log {record.log}" if record else ""
    log.error("job %s failed: %s%s", job_id, why, where)
