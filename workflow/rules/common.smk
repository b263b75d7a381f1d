import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from ffrep.config import (
    ConfigError,
    grid_runs,
    normalization,
    resolve_run,
    validate_config,
)
from ffrep.datasets import DATASETS
from ffrep.integrity import check_activation_file

try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


# Jobs call the `ffrep` command of the environment that runs Snakemake, which
# has the package installed (the config was validated with it), even when
# that environment was not activated.
envvars:
    "PATH",


os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ.get("PATH", "")]
)
DATA_ROOT = config["data"]["root"]
RUN = "{dataset}/{algorithm}/{architecture}/seed{seed}"
RUNS = grid_runs(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    algorithm="ff|bp_ff|bp",
    # only names the config defines (each already matches NAME_PATTERN)
    architecture="|".join(sorted(config["architectures"])),
    # no leading zeros: seed007 would train seed 7 a second time
    seed="0|[1-9][0-9]{0,9}",


def run_config(wildcards):
    """The resolved settings of one run, as JSON for the command line."""
    run = resolve_run(
        config,
        wildcards.dataset,
        wildcards.algorithm,
        wildcards.architecture,
        int(wildcards.seed),
    )
    return run.training_json()


def expand_runs(pattern):
    """``pattern`` filled in for every run of the grid."""
    return [
        pattern.format(dataset=d, algorithm=a, architecture=arch, seed=s)
        for d, a, arch, s in RUNS
    ]


def dataset_architectures():
    return sorted({(d, arch) for d, _, arch, _ in RUNS})


def normalization_args(wildcards):
    mean, std = normalization(config, wildcards.dataset)
    return "--mean {} --std {}".format(
        " ".join(map(str, mean)), " ".join(map(str, std))
    )


def local_raw_arg(wildcards):
    folder = config["data"]["local_raw"].get(wildcards.dataset)
    # quoted for the shell: a folder name is never run as a command
    return f"--local-raw {shlex.quote(folder)}" if folder else ""


def set_aside_damaged_activations():
    """Move damaged activation files to results/damaged/, so that they are
    rebuilt, when needed, instead of analysed.

    Done in dry runs too, so that the plan shown is the plan run.
    """
    for path in expand_runs(f"results/activations/{RUN}.nc"):
        problem = check_activation_file(path)
        if problem:
            aside = os.path.join("results", "damaged", os.path.relpath(path, "results"))
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            os.replace(path, aside)
            logger.warning(f"{path} is {problem}; moved to {aside}, to be rebuilt")


# jobs parse the workflow too; only the process that plans them checks
if workflow.is_main_process:
    set_aside_damaged_activations()
