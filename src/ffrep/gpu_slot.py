"""One GPU per training process on a workstation with several GPUs.

Snakemake runs local jobs side by side without telling them apart; each
training claims the first free GPU through a lock file and sees only that one.
A scheduler that sets ``CUDA_VISIBLE_DEVICES`` (SLURM does) is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR = Path(tempfile.gettempdir()) / "ffrep-gpu-slots"
RETRY_S = 5.0


def visible_gpus() -> int:
    """The number of NVIDIA GPUs ``nvidia-smi -L`` lists, without touching CUDA."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


@contextlib.contextmanager
def gpu_slot(
    n_gpus: int | None = None, lock_dir: Path = LOCK_DIR
) -> Iterator[int | None]:
    """Hold one GPU for the block, waiting while all are held; yields its index,
    or ``None`` where there is nothing to share."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        yield None
        return
    n_gpus = visible_gpus() if n_gpus is None else n_gpus
    if n_gpus < 2:
        yield None
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(n_gpus):
            lock = open(lock_dir / f"gpu{index}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            log.info("using GPU %d of %d", index, n_gpus)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            try:
                yield index
            finally:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                lock.close()
            return
        log.info("all %d GPUs are taken; waiting for one", n_gpus)
        time.sleep(RETRY_S)
