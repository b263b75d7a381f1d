rule sparsity:
    input:
        rules.activations.output,
    output:
        layers=f"results/tables/runs/{RUN}/sparsity.csv",
        classes=f"results/tables/runs/{RUN}/sparsity_by_class.csv",
    log:
        f"logs/sparsity/{RUN}.log",
    conda:
        "../../environment.yml"
    params:
        samples=ANALYSIS["samples"],
    shell:
        "ffrep sparsity --activations {input:q} --samples {params.samples}"
        " --out-layers {output.layers:q} --out-classes {output.classes:q}"
        " > {log:q} 2>&1"


rule sparsity_tables:
    input:
        layers=expand_runs(f"results/tables/runs/{RUN}/sparsity.csv"),
        classes=expand_runs(f"results/tables/runs/{RUN}/sparsity_by_class.csv"),
    output:
        layers="results/tables/sparsity.csv",
        classes="results/tables/sparsity_by_class.csv",
        summary="results/tables/sparsity_summary.csv",
        class_summary="results/tables/sparsity_by_class_summary.csv",
        tests="results/tables/sparsity_tests.csv",
    log:
        "logs/sparsity_tables.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep tables --layer-tables {input.layers:q}"
        " --class-tables {input.classes:q}"
        " --out-layers {output.layers:q} --out-classes {output.classes:q}"
        " --out-summary {output.summary:q}"
        " --out-class-summary {output.class_summary:q}"
        " --out-tests {output.tests:q} > {log:q} 2>&1"


rule ensembles:
    input:
        rules.activations.output,
    output:
        **{
            name: f"results/tables/runs/{RUN}/ensemble_{name}.csv"
            for name in ENSEMBLE_TABLES
        },
    log:
        f"logs/ensembles/{RUN}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
    params:
        factor=ANALYSIS["ensemble_factor"],
        samples=ANALYSIS["samples"],
    shell:
        "ffrep ensembles --activations {input:q} --factor {params.factor}"
        " --samples {params.samples} --out-sizes {output.sizes:q}"
        " --out-overlap {output.overlap:q} --out-units {output.units:q}"
        " --out-layers {output.layers:q} > {log:q} 2>&1"


# Needs the prepared images (for the class-mean images) and BP's activation
# files (for its confusions); no training of its own.
rule class_similarity:
    input:
        data=rules.prepare_data.output.prepared,
        bp=bp_activations,
    output:
        "results/tables/class_similarity/{dataset}.csv",
    log:
        "logs/class_similarity/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep class-similarity --data {input.data:q} --dataset {wildcards.dataset}"
        " --bp-activations {input.bp:q} --out {output:q} > {log:q} 2>&1"


rule ensemble_tables:
    input:
        **{
            name: expand_runs(f"results/tables/runs/{RUN}/ensemble_{name}.csv")
            for name in ENSEMBLE_TABLES
        },
        similarity=expand(
            "results/tables/class_similarity/{dataset}.csv",
            dataset=config["grid"]["datasets"],
        ),
    output:
        **{name: f"results/tables/ensemble_{name}.csv" for name in ENSEMBLE_TABLES},
        sizes_summary="results/tables/ensemble_sizes_summary.csv",
        overlap_summary="results/tables/ensemble_overlap_summary.csv",
        layers_summary="results/tables/ensemble_layers_summary.csv",
        tests="results/tables/ensemble_tests.csv",
        similarity="results/tables/ensemble_similarity.csv",
    log:
        "logs/ensemble_tables.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep ensemble-tables --sizes {input.sizes:q} --overlap {input.overlap:q}"
        " --units {input.units:q} --layers {input.layers:q}"
        " --class-similarity {input.similarity:q}"
        " --out-sizes {output.sizes:q} --out-overlap {output.overlap:q}"
        " --out-units {output.units:q} --out-layers {output.layers:q}"
        " --out-sizes-summary {output.sizes_summary:q}"
        " --out-overlap-summary {output.overlap_summary:q}"
        " --out-layers-summary {output.layers_summary:q}"
        " --out-tests {output.tests:q} --out-similarity {output.similarity:q}"
        " > {log:q} 2>&1"


# Needs the trained weights and the prepared images besides the activation
# file: the drives are products of weights and layer inputs.
rule inhibition:
    input:
        model=rules.train.output.model,
        data=rules.prepare_data.output.prepared,
        activations=rules.activations.output,
    output:
        layers=f"results/tables/runs/{RUN}/inhibition.csv",
        units=f"results/tables/runs/{RUN}/inhibition_units.csv",
    log:
        f"logs/inhibition/{RUN}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=4000,
    params:
        samples=ANALYSIS["samples"],
        quantile=ANALYSIS["inhibition_reference_quantile"],
    shell:
        "ffrep inhibition --model {input.model:q} --data {input.data:q}"
        " --activations {input.activations:q} --samples {params.samples}"
        " --reference-quantile {params.quantile}"
        " --out-layers {output.layers:q} --out-units {output.units:q}"
        " > {log:q} 2>&1"


rule inhibition_tables:
    input:
        expand_runs(f"results/tables/runs/{RUN}/inhibition.csv"),
    output:
        table="results/tables/inhibition.csv",
        summary="results/tables/inhibition_summary.csv",
        tests="results/tables/inhibition_tests.csv",
    log:
        "logs/inhibition_tables.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep combine --tables {input:q} --out {output.table:q}"
        " --out-summary {output.summary:q} --out-tests {output.tests:q}"
        " --test-metrics silent_inhibited_fraction inhibited_share_of_silent"
        " inhibition_ratio silenced_by_bias_fraction > {log:q} 2>&1"
