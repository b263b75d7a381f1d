# ffrep: Forward-Forward emergent representations, from config to figures.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


if config["training"]["batch_seeds"]:

    include: "workflow/rules/train_seeds.smk"


include: "workflow/rules/activations.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


FIGURES = expand_runs(f"results/figures/walls/{RUN}.png") + [
    f"results/figures/hoyer_by_class/{d}/{arch}.png"
    for d, arch in dataset_architectures()
]


rule all:
    default_target: True
    input:
        rules.sparsity_tables.output,
        FIGURES,


rule figures:
    input:
        FIGURES,
