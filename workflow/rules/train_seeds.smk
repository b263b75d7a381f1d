# training.batch_seeds: every seed of one configuration trained in one job,
# which writes each seed's model and metrics where the train rule would.
import shlex


ruleorder: train_seeds > train


def seed_run_args(wildcards):
    """--run-json with every seed's resolved settings, quoted for the shell."""
    runs = [
        resolve_run(
            config,
            wildcards.dataset,
            wildcards.algorithm,
            wildcards.architecture,
            int(seed),
        ).training_json()
        for seed in config["grid"]["seeds"]
    ]
    return " ".join(shlex.quote(r) for r in runs)


SEED_RUN = "results/runs/{{dataset}}/{{algorithm}}/{{architecture}}/seed{seed}"


rule train_seeds:
    input:
        data=rules.prepare_data.output.prepared,
    output:
        models=expand(f"{SEED_RUN}/model.pt", seed=config["grid"]["seeds"]),
        metrics=expand(f"{SEED_RUN}/metrics.json", seed=config["grid"]["seeds"]),
    log:
        "logs/train_seeds/{dataset}/{algorithm}/{architecture}.log",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        # minutes; a retry resumes from the checkpoint, with more time
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        runs=seed_run_args,
        # outside the outputs: Snakemake deletes those when a job fails
        checkpoint="results/checkpoints/{dataset}/{algorithm}/{architecture}/seeds.pt",
    shell:
        "ffrep train-seeds --run-json {params.runs} --data {input.data:q}"
        " --model {output.models:q} --metrics {output.metrics:q}"
        " --checkpoint {params.checkpoint:q} --threads {threads} > {log:q} 2>&1"
