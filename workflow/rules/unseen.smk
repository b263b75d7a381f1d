# The held-out variant of the grid: runs trained without the classes of
# analysis.unseen.held_out_classes, under results/unseen/, analysed for
# ensembles of the unseen categories.


rule unseen_train:
    input:
        data=rules.prepare_data.output.prepared,
    output:
        model=f"results/unseen/runs/{RUN}/model.pt",
        metrics=f"results/unseen/runs/{RUN}/metrics.json",
    log:
        f"logs/unseen/train/{RUN}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        run=unseen_run_config,
        checkpoint=f"results/checkpoints/unseen/{RUN}.pt",
    shell:
        "ffrep train --run-json {params.run:q} --data {input.data:q}"
        " --model {output.model:q} --metrics {output.metrics:q}"
        " --checkpoint {params.checkpoint:q} --threads {threads}"
        " > {log:q} 2>&1"


rule unseen_activations:
    input:
        model=rules.unseen_train.output.model,
        data=rules.prepare_data.output.prepared,
    output:
        f"results/unseen/activations/{RUN}.nc",
    log:
        f"logs/unseen/activations/{RUN}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        label_input=UNSEEN["label_input"],
        compression=config["activations"]["compression_level"],
    shell:
        "ffrep activations --model {input.model:q} --data {input.data:q}"
        " --label-input {params.label_input} --compression-level {params.compression}"
        " --out {output:q} > {log:q} 2>&1"


rule unseen:
    input:
        rules.unseen_activations.output,
    output:
        classes=f"results/unseen/tables/runs/{RUN}/unseen_classes.csv",
        layers=f"results/unseen/tables/runs/{RUN}/unseen_layers.csv",
    log:
        f"logs/unseen/analysis/{RUN}.log",
    conda:
        "../../environment.yml"
    params:
        held_out=" ".join(map(str, UNSEEN["held_out_classes"])),
        factor=ANALYSIS["ensemble_factor"],
        samples=ANALYSIS["samples"],
    shell:
        "ffrep unseen --activations {input:q} --held-out {params.held_out}"
        " --factor {params.factor} --samples {params.samples}"
        " --out-classes {output.classes:q} --out-layers {output.layers:q}"
        " > {log:q} 2>&1"


rule unseen_tables:
    input:
        classes=expand_unseen(f"results/unseen/tables/runs/{RUN}/unseen_classes.csv"),
        layers=expand_unseen(f"results/unseen/tables/runs/{RUN}/unseen_layers.csv"),
    output:
        classes="results/tables/unseen_classes.csv",
        classes_summary="results/tables/unseen_classes_summary.csv",
        layers="results/tables/unseen_layers.csv",
        layers_summary="results/tables/unseen_layers_summary.csv",
        tests="results/tables/unseen_tests.csv",
    log:
        "logs/unseen_tables.log",
    conda:
        "../../environment.yml"
    shell:
        "(ffrep combine --tables {input.classes:q} --out {output.classes:q}"
        " --keys dataset algorithm architecture layer held_out label"
        " --out-summary {output.classes_summary:q}"
        " && ffrep combine --tables {input.layers:q} --out {output.layers:q}"
        " --out-summary {output.layers_summary:q} --out-tests {output.tests:q}"
        " --test-metrics nearest_ensemble_accuracy_held_out) > {log:q} 2>&1"
