rule activations:
    input:
        model=rules.train.output.model,
        data=rules.prepare_data.output.prepared,
    output:
        f"results/activations/{RUN}.nc",
    log:
        f"logs/activations/{RUN}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        label_input=config["activations"]["label_input"],
        compression=config["activations"]["compression_level"],
    shell:
        "ffrep activations --model {input.model:q} --data {input.data:q}"
        " --label-input {params.label_input} --compression-level {params.compression}"
        " --out {output:q} > {log:q} 2>&1"
