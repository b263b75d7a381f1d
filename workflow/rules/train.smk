rule train:
    input:
        data=rules.prepare_data.output.prepared,
    output:
        model=f"results/runs/{RUN}/model.pt",
        metrics=f"results/runs/{RUN}/metrics.json",
    log:
        f"logs/train/{RUN}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        # minutes; a retry resumes from the checkpoint, with more time
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        run=run_config,
        # outside the outputs: Snakemake deletes those when a job fails
        checkpoint=f"results/checkpoints/{RUN}.pt",
    shell:
        "ffrep train --run-json {params.run:q} --data {input.data:q}"
        " --model {output.model:q} --metrics {output.metrics:q}"
        " --checkpoint {params.checkpoint:q} --threads {threads}"
        " > {log:q} 2>&1"
