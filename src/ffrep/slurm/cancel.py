"""Cancel SLURM jobs quickly: Snakemake kills its cancel command after ~2 s."""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 1.0


def cancel(job_ids: list[str], wait_s: float = CANCEL_WAIT_S) -> int:
    """Start ``scancel`` on the jobs and wait at most ``wait_s`` for it.

    A slow controller does not lose the request: scancel runs on in its own
    session, out of reach of the signal that ends this command.
    """
    if not job_ids:
        return 0
    try:
        proc = subprocess.Popen(["scancel", *job_ids], start_new_session=True)
    except OSError as err:
        log.error("scancel: %s", err)
        return 1
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        log.warning("scancel %s goes on in the background", " ".join(job_ids))
        return 0
