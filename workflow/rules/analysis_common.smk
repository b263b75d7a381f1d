# Settings and input functions of the analysis, unseen and figure rules.
from ffrep.unseen import unseen_algorithms, unseen_problems, unseen_run

ANALYSIS = config["analysis"]
ENSEMBLE_TABLES = ["sizes", "overlap", "units", "layers"]


def runs_of(dataset, algorithm=None):
    """The grid's runs of ``dataset`` (and ``algorithm``), as wildcard values."""
    return [
        dict(dataset=d, algorithm=a, architecture=arch, seed=s)
        for d, a, arch, s in RUNS
        if d == dataset and algorithm in (None, a)
    ]


def bp_activations(wildcards):
    return [
        "results/activations/{dataset}/{algorithm}/{architecture}/seed{seed}.nc".format(
            **r
        )
        for r in runs_of(wildcards.dataset, "bp")
    ]


# The held-out variant of the grid (analysis.unseen): its runs, under
# results/unseen/, are trained without the held-out classes.
UNSEEN = config["analysis"]["unseen"]
_problems = unseen_problems(config)
if _problems:
    raise WorkflowError("invalid config:\n  " + "\n  ".join(_problems))
UNSEEN_ALGORITHMS, _outside = unseen_algorithms(config)
if UNSEEN["held_out_classes"] and _outside and workflow.is_main_process:
    logger.warning(
        f"analysis.unseen.algorithms: {', '.join(_outside)} not in grid.algorithms;"
        " the held-out variant trains the grid's algorithms only"
    )
UNSEEN_RUNS = [
    r for r in RUNS if UNSEEN["held_out_classes"] and r[1] in UNSEEN_ALGORITHMS
]


def expand_unseen(pattern):
    """``pattern`` filled in for every run of the held-out variant."""
    return [
        pattern.format(dataset=d, algorithm=a, architecture=arch, seed=s)
        for d, a, arch, s in UNSEEN_RUNS
    ]


def unseen_run_config(wildcards):
    run = unseen_run(
        config,
        wildcards.dataset,
        wildcards.algorithm,
        wildcards.architecture,
        int(wildcards.seed),
    )
    return run.training_json()


def first_seed_tables(wildcards, name):
    """Per-run table ``name`` of the first seed of each algorithm."""
    seed = min(config["grid"]["seeds"])
    pattern = f"results/tables/runs/{RUN}/{name}"
    return [
        pattern.format(
            dataset=wildcards.dataset,
            algorithm=a,
            architecture=wildcards.architecture,
            seed=seed,
        )
        for a in config["grid"]["algorithms"]
    ]
