# ffrep: Forward-Forward emergent representations, from config to figures.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


if config["training"]["batch_seeds"]:

    include: "workflow/rules/train_seeds.smk"


include: "workflow/rules/activations.smk"
include: "workflow/rules/analysis_common.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/unseen.smk"
include: "workflow/rules/figures.smk"


PER_RUN_FIGURES = ["walls", "class_means"]
SUMMARY_FIGURES = [
    "hoyer_by_class",
    "ensemble_sizes",
    "overlap",
    "sparseness_accuracy",
    "unit_measures",
    "mixed_selectivity",
    "inhibition",
] + (["unseen"] if UNSEEN_RUNS else [])
FIGURES = [
    path
    for name in PER_RUN_FIGURES
    for path in expand_runs(f"results/figures/{name}/{RUN}.png")
] + [
    f"results/figures/{name}/{d}/{arch}.png"
    for name in SUMMARY_FIGURES
    for d, arch in dataset_architectures()
]
TABLES = [
    rules.sparsity_tables.output,
    rules.ensemble_tables.output,
    rules.inhibition_tables.output,
] + ([rules.unseen_tables.output] if UNSEEN_RUNS else [])


rule all:
    default_target: True
    input:
        TABLES,
        FIGURES,


# Only analysis and figures: with results/ holding the runs, nothing trains.
rule figures:
    input:
        TABLES,
        FIGURES,
