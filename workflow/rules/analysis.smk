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
        samples=config["analysis"]["samples"],
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
    log:
        "logs/sparsity_tables.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep tables --layer-tables {input.layers:q}"
        " --class-tables {input.classes:q}"
        " --out-layers {output.layers:q} --out-classes {output.classes:q}"
        " --out-summary {output.summary:q}"
        " --out-class-summary {output.class_summary:q} > {log:q} 2>&1"
