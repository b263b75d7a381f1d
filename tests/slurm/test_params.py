"""Golden tests of the submitit parameters and sbatch file rendered from a
jobscript's rule resources and the profile's site options."""

from __future__ import annotations

import json

import pytest
from submitit.slurm.slurm import _make_sbatch_string

from ffrep.slurm.environ import submission_environ
from ffrep.slurm.params import (
    JobSpec,
    SiteOptions,
    log_folder,
    parse_sbatch_args,
    read_properties,
    slurm_parameters,
)

TRAIN_PROPERTIES = {
    "type": "single",
    "rule": "train",
    "local": False,
    "input": ["resources/data/prepared/cifar10.pt"],
    "output": [
        "results/runs/cifar10/ff/paper/seed3/model.pt",
        "results/runs/cifar10/ff/paper/seed3/metrics.json",
    ],
    "wildcards": {
        "dataset": "cifar10",
        "algorithm": "ff",
        "architecture": "paper",
        "seed": "3",
    },
    "params": {},
    "log": ["logs/train/cifar10/ff/paper/seed3.log"],
    "threads": 4,
    "resources": {"mem_mb": 8000, "runtime": 480, "gpu": 1, "tmpdir": "/tmp"},
    "jobid": 7,
}
SITE = SiteOptions(
    partition="cpu",
    gpu_partition="gpu",
    account="proj123",
    qos="normal",
    constraint="a100|h100",
    sbatch_args=parse_sbatch_args(["exclusive", "--mail-type=FAIL"]),
)
GOLDEN_SBATCH = """\
#!/bin/bash

# Parameters
#SBATCH --account=proj123
#SBATCH --constraint='a100|h100'
#SBATCH --cpus-per-task=4
#SBATCH --exclusive
#SBATCH --gpus=1
#SBATCH --job-name=ffrep.train.cifar10.ff.paper.3
#SBATCH --mail-type=FAIL
#SBATCH --mem=8000M
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=ROOT/logs/slurm/train/dataset=cifar10/algorithm=ff/architecture=paper/seed=3/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=normal
#SBATCH --signal=USR2@90
#SBATCH --time=480
#SBATCH --wckey=submitit

# setup
export HDF5_USE_FILE_LOCKING=FALSE
export CUBLAS_WORKSPACE_CONFIG=:4096:8

# command
export SUBMITIT_EXECUTOR=slurm
python -m submitit.core._submit FOLDER
"""  # noqa: E501


def test_properties_read_from_jobscript(tmp_path):
    script = tmp_path / "snakejob.train.7.sh"
    script.write_text(
        f"#!/bin/sh\n# properties = {json.dumps(TRAIN_PROPERTIES)}\nexit 0\n"
    )
    assert read_properties(script) == TRAIN_PROPERTIES


def test_gpu_rule_parameters():
    spec = JobSpec.from_properties(TRAIN_PROPERTIES)
    assert slurm_parameters(spec, SITE) == {
        "job_name": "ffrep.train.cifar10.ff.paper.3",
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 4,
        "time": 480,
        "mem": "8000M",
        "partition": "gpu",
        "account": "proj123",
        "qos": "normal",
        "constraint": "a100|h100",
        "stderr_to_stdout": True,
        "use_srun": False,
        "additional_parameters": {"gpus": "1", "exclusive": True, "mail-type": "FAIL"},
        "setup": [
            "export HDF5_USE_FILE_LOCKING=FALSE",
            "export CUBLAS_WORKSPACE_CONFIG=:4096:8",
        ],
    }


def test_gpu_rule_sbatch_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = JobSpec.from_properties(TRAIN_PROPERTIES)
    folder = log_folder(spec, "logs/slurm")
    text = _make_sbatch_string(
        command="python -m submitit.core._submit FOLDER",
        folder=folder,
        **slurm_parameters(spec, SITE),
    )
    assert text.replace(str(tmp_path.resolve()), "ROOT") == GOLDEN_SBATCH


def test_gres_style_with_gpu_model():
    props = {
        **TRAIN_PROPERTIES,
        "resources": {"gpu": 2, "gpu_model": "a100", "runtime": 30},
    }
    params = slurm_parameters(
        JobSpec.from_properties(props), SiteOptions(gpu_style="gres")
    )
    assert params["gres"] == "gpu:a100:2"
    assert "additional_parameters" not in params
    assert "partition" not in params and "account" not in params


def test_cpu_rule_goes_to_cpu_partition_with_default_runtime():
    props = {**TRAIN_PROPERTIES, "resources": {"mem_mb": 1000}}
    params = slurm_parameters(JobSpec.from_properties(props), SITE)
    assert params["partition"] == "cpu"
    assert params["time"] == SITE.default_runtime_min
    assert params["additional_parameters"] == {"exclusive": True, "mail-type": "FAIL"}


def test_unknown_gpu_style_refused():
    with pytest.raises(ValueError, match="GPU request style"):
        SiteOptions(gpu_style="gpu")


def test_allocation_variables_not_passed_on():
    environ = {
        "PATH": "/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "SLURM_JOB_ID": "12",
        "SLURM_CPUS_PER_TASK": "8",
        "SBATCH_PARTITION": "big",
        "SRUN_CPUS_PER_TASK": "8",
    }
    assert submission_environ(environ) == {
        "PATH": "/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
