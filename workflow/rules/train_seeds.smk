# training.batch_seeds: every seed of one configuration trained in one job,
# which writes each seed's model and metrics where the train rule would.
import math
import shlex

from ffrep.plan import host_memory_mb, job_minutes


ruleorder: train_seeds > train


def seed_runs(wildcards):
    """The resolved settings of every seed of the job's configuration."""
    return [
        resolve_run(
            config,
            wildcards.dataset,
            wildcards.algorithm,
            wildcards.architecture,
            int(seed),
        )
        for seed in config["grid"]["seeds"]
    ]


def seed_run_args(wildcards):
    """--run-json with every seed's resolved settings, quoted for the shell."""
    runs = [run.training_json() for run in seed_runs(wildcards)]
    return " ".join(shlex.quote(r) for r in runs)


def seeds_mem_mb(wildcards):
    """The job's host memory: every seed's stored inputs (ffrep.plan), and
    never less than a train job asks for."""
    return max(8000, math.ceil(host_memory_mb(seed_runs(wildcards))))


def seeds_runtime(wildcards):
    """Minutes: twice ffrep.plan's prediction for the job on an A100, and never
    less than a train job asks for."""
    return max(240, math.ceil(2 * job_minutes(seed_runs(wildcards), "a100")))


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
        mem_mb=seeds_mem_mb,
        # minutes; a retry resumes from the checkpoint, with more time
        runtime=lambda wildcards, attempt: seeds_runtime(wildcards) * attempt,
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        runs=seed_run_args,
        # outside the outputs: Snakemake deletes those when a job fails
        checkpoint="results/checkpoints/{dataset}/{algorithm}/{architecture}/seeds.pt",
    shell:
        "ffrep train-seeds --run-json {params.runs} --data {input.data:q}"
        " --model {output.models:q} --metrics {output.metrics:q}"
        " --checkpoint {params.checkpoint:q} --threads {threads} > {log:q} 2>&1"
