"""Job properties from a Snakemake jobscript, and the submitit parameters
rendered from them and from the site options of the profile."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Job environment: NetCDF/HDF5 on shared file systems cannot lock files, and
# cuBLAS needs a fixed workspace to be deterministic.
JOB_ENV = {
    "HDF5_USE_FILE_LOCKING": "FALSE",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
GPU_STYLES = ("gpus", "gres")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class JobscriptError(ValueError):
    """A file that is not a Snakemake jobscript with job properties."""


@dataclass(frozen=True)
class JobSpec:
    """What one Snakemake job asks for."""

    rule: str
    wildcards: dict[str, str]
    threads: int
    gpus: int = 0
    gpu_model: str | None = None
    mem_mb: int | None = None
    runtime_min: int | None = None
    outputs: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()

    @classmethod
    def from_properties(cls, props: dict) -> JobSpec:
        resources = props.get("resources") or {}
        rule = props.get("rule") or f"group_{props.get('groupid', 'job')}"
        return cls(
            rule=rule,
            wildcards={k: str(v) for k, v in (props.get("wildcards") or {}).items()},
            threads=int(props.get("threads") or 1),
            gpus=int(resources.get("gpu") or 0),
            gpu_model=resources.get("gpu_model") or None,
            mem_mb=_int_or_none(resources.get("mem_mb")),
            runtime_min=_int_or_none(resources.get("runtime")),
            outputs=tuple(props.get("output") or ()),
            logs=tuple(props.get("log") or ()),
        )


@dataclass(frozen=True)
class SiteOptions:
    """The site's choices, all given by the profile; empty means unset."""

    partition: str = ""
    gpu_partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpu_style: str = "gpus"
    default_runtime_min: int = 60
    sbatch_args: dict[str, str | bool] = field(default_factory=dict)

    def __post_init__(self):
        if self.gpu_style not in GPU_STYLES:
            raise ValueError(
                f"GPU request style {self.gpu_style!r}: use one of {GPU_STYLES}"
            )


def _int_or_none(value) -> int | None:
    return None if value in (None, "") else int(value)


def read_properties(jobscript: str | Path) -> dict:
    """The ``# properties = {...}`` line Snakemake writes into every jobscript."""
    with open(jobscript) as f:
        for line in f:
            if line.startswith("# properties = "):
                return json.loads(line.split("=", 1)[1])
    raise JobscriptError(f"{jobscript}: no '# properties = ' line")


def parse_sbatch_args(items: list[str]) -> dict[str, str | bool]:
    """``KEY=VALUE`` or ``KEY`` (a flag) per item, KEY without leading dashes."""
    out: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.lstrip("-").partition("=")
        if not key:
            raise ValueError(f"empty sbatch option in {item!r}")
        out[key] = value if sep else True
    return out


def job_label(spec: JobSpec) -> str:
    """``rule`` then the wildcard values, safe for a job name or a file name."""
    parts = [spec.rule] + [_SAFE.sub("_", v) for v in spec.wildcards.values()]
    return ".".join(parts)


def log_folder(spec: JobSpec, root: str | Path) -> Path:
    """``root/rule/key=value/...``: one folder per rule and wildcards."""
    folder = Path(root) / spec.rule
    for key, value in spec.wildcards.items():
        folder /= f"{key}={_SAFE.sub('_', value)}"
    return folder


def slurm_parameters(spec: JobSpec, site: SiteOptions) -> dict:
    """Keyword arguments of ``submitit.SlurmExecutor.update_parameters``."""
    params: dict = {
        "job_name": f"ffrep.{job_label(spec)}"[:128],
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": spec.threads,
        # submitit's default limit is five minutes: always pass the rule's
        "time": spec.runtime_min or site.default_runtime_min,
        "stderr_to_stdout": True,
        # the batch step itself runs the job: it holds every allocated CPU
        # and GPU, which an inner srun would not inherit on Slurm >= 22.05
        "use_srun": False,
        "setup": [f"export {k}={v}" for k, v in JOB_ENV.items()],
    }
    if spec.mem_mb:
        params["mem"] = f"{spec.mem_mb}M"
    partition = site.gpu_partition if spec.gpus and site.gpu_partition else None
    partition = partition or site.partition
    for key, value in (
        ("partition", partition),
        ("account", site.account),
        ("qos", site.qos),
        ("constraint", site.constraint),
    ):
        if value:
            params[key] = value
    if spec.gpus:
        what = f"{spec.gpu_model}:{spec.gpus}" if spec.gpu_model else str(spec.gpus)
        if site.gpu_style == "gpus":
            params["additional_parameters"] = {"gpus": what}
        else:
            params["gres"] = f"gpu:{what}"
    if site.sbatch_args:
        params.setdefault("additional_parameters", {}).update(site.sbatch_args)
    return params
