"""What a SLURM job runs: Snakemake's jobscript, in a clean environment."""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)


class JobscriptFailed(RuntimeError):
    """The jobscript exited non-zero."""


def run_jobscript(jobscript: str) -> int:
    """Run ``jobscript`` with ``/bin/sh``; raise unless it exits 0."""
    log.info("running %s on %s", jobscript, os.uname().nodename)
    returncode = subprocess.run(["/bin/sh", jobscript], check=False).returncode
    if returncode != 0:
        raise JobscriptFailed(f"{jobscript} exited with status {returncode}")
    return returncode
