"""A small record per submitted job, kept by the submitting host, so that the
status command knows a job's log folder and outputs from its id alone."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ffrep.io import atomic_path

DEFAULT_STATE_DIR = ".snakemake/ffrep_slurm"


@dataclass
class JobRecord:
    job_id: str
    rule: str
    wildcards: dict
    folder: str
    log: str
    outputs: list
    submitted_at: float

    @property
    def result_pickle(self) -> Path:
        """Where submitit writes the job's outcome."""
        return Path(self.folder) / f"{self.job_id}_0_result.pkl"


class StateDir:
    def __init__(self, root: str | Path = DEFAULT_STATE_DIR):
        self.root = Path(root)

    def _path(self, job_id: str, kind: str) -> Path:
        if not job_id.replace("_", "").isalnum():
            raise ValueError(f"not a SLURM job id: {job_id!r}")
        return self.root / f"{job_id}.{kind}.json"

    def save(self, record: JobRecord) -> None:
        with atomic_path(self._path(record.job_id, "job")) as tmp:
            tmp.write_text(json.dumps(asdict(record), indent=1))

    def load(self, job_id: str) -> JobRecord | None:
        path = self._path(job_id, "job")
        if not path.exists():
            return None
        return JobRecord(**json.loads(path.read_text()))

    def waiting_since(self, job_id: str, reason: str, now: float | None = None):
        """When the status of ``job_id`` first became ``reason``; recorded now
        if it was something else before."""
        now = time.time() if now is None else now
        path = self._path(job_id, "waiting")
        if path.exists():
            mark = json.loads(path.read_text())
            if mark["reason"] == reason:
                return mark["since"]
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"reason": reason, "since": now}))
        return now

    def clear_waiting(self, job_id: str) -> None:
        self._path(job_id, "waiting").unlink(missing_ok=True)
