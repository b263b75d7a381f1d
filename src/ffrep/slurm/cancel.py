"""Cancel SLURM jobs quickly: Snakemake waits about two seconds."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 1.5


def cancel(job_ids: list[str]) -> int:
    """``scancel`` the jobs; the exit status of scancel, 1 if it hung."""
    if not job_ids:
        return 0
    try:
        return subprocess.run(
            ["scancel", *job_ids], timeout=CANCEL_TIMEOUT_S, check=False
        ).returncode
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("scancel %s: %s", " ".join(job_ids), err)
        return 1
