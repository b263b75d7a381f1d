"""Submit one Snakemake jobscript to SLURM through submitit."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ffrep.slurm.environ import clean_environ
from ffrep.slurm.job import run_jobscript
from ffrep.slurm.params import (
    JobSpec,
    SiteOptions,
    log_folder,
    read_properties,
    slurm_parameters,
)
from ffrep.slurm.state import JobRecord, StateDir

log = logging.getLogger(__name__)

DEFAULT_LOG_ROOT = "logs/slurm"


def submit(
    jobscript: str | Path,
    site: SiteOptions,
    log_root: str | Path = DEFAULT_LOG_ROOT,
    state: StateDir | None = None,
) -> str:
    """Submit ``jobscript``; return the SLURM job id."""
    import submitit

    jobscript = os.path.abspath(jobscript)
    spec = JobSpec.from_properties(read_properties(jobscript))
    folder = log_folder(spec, log_root)
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**slurm_parameters(spec, site))
    with clean_environ():
        job = executor.submit(run_jobscript, jobscript)
    log_file = Path(folder) / f"{job.job_id}_0_log.out"
    (state or StateDir()).save(
        JobRecord(
            job_id=job.job_id,
            rule=spec.rule,
            wildcards=spec.wildcards,
            folder=str(folder),
            log=str(log_file),
            outputs=list(spec.outputs),
            submitted_at=time.time(),
        )
    )
    link_rule_logs(spec.logs, log_file)
    log.info("%s: SLURM job %s, log %s", spec.rule, job.job_id, log_file)
    return job.job_id


def link_rule_logs(rule_logs, slurm_log: Path) -> None:
    """``NAME.slurm.log`` beside each ``NAME.log`` of the rule: a relative link
    to the log of the job's latest SLURM attempt, kept when a job is killed."""
    for rule_log in map(Path, rule_logs):
        link = rule_log.with_name(f"{rule_log.stem}.slurm{rule_log.suffix}")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(slurm_log, link.parent))
        os.replace(tmp, link)
