"""The environment sbatch sees: nothing of an allocation Snakemake runs in."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

# sbatch reads SBATCH_* as options and exports SLURM_* into the job, where
# srun and libraries would take the outer allocation's values for their own.
_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SUBMITIT_")
_KEEP = frozenset({"SLURM_CONF"})


def submission_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables of an enclosing allocation."""
    return {
        k: v for k, v in environ.items() if k in _KEEP or not k.startswith(_PREFIXES)
    }


@contextlib.contextmanager
def clean_environ() -> Iterator[None]:
    """Run the block with :func:`submission_environ` as ``os.environ``."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(submission_environ(saved))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
