"""Size a config before running it: jobs, FLOPs and predicted wall time per stage.

The FLOPs are those of the matrix products ffrep's trainer executes (two per
multiply-add); elementwise work is left out. A job's predicted time is
``flops / (peak · efficiency) + steps · step_overhead_s``: the matmuls at a
stated share of the device's dense peak, plus a fixed cost per optimiser step
for the small kernels and their launches. Both constants are rough; calibrate
them against a run's ``train_tflops_per_s`` (in its metrics) and pass them.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ffrep.config import RunConfig, grid_runs, resolve_run
from ffrep.datasets import DATASETS, N_CLASSES

# dense peak TFLOP/s per precision, from the vendors' data sheets (SXM parts)
GPUS: dict[str, dict[str, float]] = {
    "h200": {"fp32": 67.0, "tf32": 495.0, "bf16": 990.0},
    "h100": {"fp32": 67.0, "tf32": 495.0, "bf16": 990.0},
    "a100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "l40s": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0},
    "v100": {"fp32": 15.7},
}
EFFICIENCY = 0.3  # share of the peak that 1024-row MLP matmuls reach
STEP_OVERHEAD_S = 4e-4  # per optimiser step: ~30 small kernels and their launches


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of a named GPU ('NVIDIA H100 80GB HBM3', 'a100') or None."""
    name = device_name.lower()
    for key, table in GPUS.items():
        if key in name:
            return table.get(precision)
    return None


def widths(run: RunConfig) -> list[int]:
    return [DATASETS[run.dataset].n_inputs, *run.hidden_units]


def n_train(run: RunConfig) -> int:
    """Training images the run keeps (held-out classes assumed balanced)."""
    n = DATASETS[run.dataset].n_train
    if run.max_train_samples is not None:
        n = min(n, run.max_train_samples)
    return n * (N_CLASSES - len(run.held_out_classes)) // N_CLASSES


def n_test(run: RunConfig) -> int:
    n = DATASETS[run.dataset].n_test
    return n if run.max_test_samples is None else min(n, run.max_test_samples)


def training_flops(run: RunConfig, n: int | None = None) -> float:
    """Matmul FLOPs of training ``run`` on ``n`` images (default: all it keeps)."""
    n = n_train(run) if n is None else n
    w = widths(run)
    macs = [a * b for a, b in zip(w[:-1], w[1:], strict=True)]  # per row, per layer
    if run.algorithm == "bp":
        head = w[-1] * N_CLASSES
        forward = n * (sum(macs) + head)
        # weight gradients of every layer, input gradients of all but the first
        backward = forward + n * (sum(macs[1:]) + head)
        return 2.0 * run.epochs * (forward + backward)
    # a positive and its negative share the image product under uniform sampling
    first_rows = n if run.negative_sampling == "uniform" else 2 * n
    rows = [first_rows] + [2 * n] * (len(macs) - 1)
    if run.algorithm == "bp_ff":
        forward = sum(r * m for r, m in zip(rows, macs, strict=True))
        backward = forward + sum(r * m for r, m in zip(rows[1:], macs[1:], strict=True))
        return 2.0 * run.epochs * (forward + backward)
    total = 0.0
    for r, m in zip(rows, macs, strict=True):
        total += run.epochs * 2 * r * m  # forward and weight gradient
    if len(macs) > 1:
        # the images' product with the frozen first layer, once: the deeper
        # layers' inputs are built from it with no product of the first layer
        total += n * macs[0]
    for layer in range(1, len(macs)):
        frozen = sum(macs[1:layer])  # per row, the frozen layers above the first
        if run.ff_deeper_inputs == "recomputed":
            # every batch's positives and negatives through the frozen layers
            total += run.epochs * 2 * n * frozen
            continue
        if layer + 1 < len(macs):
            # the pass that builds the next layer's inputs (fixed negatives too)
            total += (n if run.resample_negatives else 2 * n) * macs[layer]
        if run.resample_negatives:
            total += run.epochs * n * frozen  # negatives through the frozen layers
    return 2.0 * total


def prediction_flops(run: RunConfig, n: int | None = None) -> float:
    """Matmul FLOPs of predicting ``n`` test images (FF: all ten labels)."""
    n = n_test(run) if n is None else n
    w = widths(run)
    macs = [a * b for a, b in zip(w[:-1], w[1:], strict=True)]
    if run.algorithm == "bp":
        return 2.0 * n * (sum(macs) + w[-1] * N_CLASSES)
    # the ten labelled copies share the first layer's image product
    return 2.0 * n * (macs[0] + N_CLASSES * sum(macs[1:]))


def training_steps(run: RunConfig, n: int | None = None) -> int:
    n = n_train(run) if n is None else n
    per_epoch = math.ceil(n / run.batch_size)
    layers = len(run.hidden_units) if run.algorithm == "ff" else 1
    return per_epoch * run.epochs * layers


def job_minutes(
    runs: list[RunConfig],
    gpu: str = "a100",
    efficiency: float = EFFICIENCY,
    step_overhead_s: float = STEP_OVERHEAD_S,
) -> float:
    """Predicted minutes of one training job of ``runs`` on ``gpu``: one run,
    or the seeds of a batched job, whose steps run together."""
    run = runs[0]
    device = device_for(gpu, run.precision, efficiency, step_overhead_s)
    flops = sum(training_flops(r) + prediction_flops(r) for r in runs)
    seconds = flops / (device.tflops * 1e12) + training_steps(run) * step_overhead_s
    return seconds / 60


def host_memory_mb(runs: list[RunConfig]) -> float:
    """Host memory, in MiB, that a training job of ``runs`` (one run, or a
    batched job's seeds) needs when it trains on the CPU: the prepared
    training images twice (the file's pages and the copy trained on); for
    each seed its weights with their gradients and Adam state, eight
    batch-sized temporaries and, for FF, its two stored deeper inputs
    (positives and negatives); and 2 GiB for the rest."""
    run = runs[0]
    n, w = n_train(run), widths(run)
    widest = max(run.hidden_units)
    per_seed = 4 * sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))
    per_seed += 8 * 2 * run.batch_size * widest
    if run.algorithm == "ff":
        per_seed += 2 * n * widest
    return (2 * n * w[0] + len(runs) * per_seed) * 4 / 2**20 + 2048


@dataclass
class Device:
    name: str
    tflops: float  # the rate the plan assumes, peak × efficiency
    step_overhead_s: float


def device_for(
    gpu: str, precision: str, efficiency: float, overhead_s: float
) -> Device:
    table = GPUS.get(gpu.lower())
    if table is None:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(sorted(GPUS))}")
    peak = table.get(precision)
    if peak is None:
        raise ValueError(f"{gpu} has no {precision} matmuls; choose fp32")
    return Device(gpu.lower(), peak * efficiency, overhead_s)


def plan(
    config: dict,
    gpu: str = "h100",
    efficiency: float = EFFICIENCY,
    step_overhead_s: float = STEP_OVERHEAD_S,
) -> pd.DataFrame:
    """One row per (stage, dataset, algorithm) of a validated ``config``.

    With ``training.batch_seeds`` the seeds of a configuration are one
    ``train_seeds`` job: their FLOPs add up, their steps run together.
    """
    from ffrep.unseen import unseen_algorithms, unseen_run

    batched = config["training"]["batch_seeds"]
    train_stage = "train_seeds" if batched else "train"
    unseen = config["analysis"]["unseen"]
    held_algorithms, _ = unseen_algorithms(config)
    rows = {}
    for dataset, algorithm, arch, seed in grid_runs(config):
        run = resolve_run(config, dataset, algorithm, arch, seed)
        device = device_for(gpu, run.precision, efficiency, step_overhead_s)
        rate = device.tflops * 1e12
        stages = {
            train_stage: (
                training_flops(run) + prediction_flops(run),
                training_steps(run),
            ),
            # the activations job predicts again, then records one pass
            "activations": (prediction_flops(run) + _one_pass_flops(run), 0),
        }
        if unseen["held_out_classes"] and algorithm in held_algorithms:
            # the held-out variant (analysis.unseen): its own runs, one by one
            held = unseen_run(config, dataset, algorithm, arch, seed)
            stages["unseen_train"] = (
                training_flops(held) + prediction_flops(held),
                training_steps(held),
            )
            stages["unseen_activations"] = stages["activations"]
        for stage, (flops, steps) in stages.items():
            key = (stage, dataset, algorithm, arch)
            row = rows.setdefault(key, {"jobs": 0, "flops": 0.0, "seconds": 0.0})
            joins = batched and stage == train_stage and row["jobs"] > 0
            if joins:
                steps = 0  # a seed more in the same job's steps
            else:
                row["jobs"] += 1
            row["flops"] += flops
            row["seconds"] += flops / rate + steps * device.step_overhead_s
    table = pd.DataFrame(
        [
            {
                "stage": stage,
                "dataset": dataset,
                "algorithm": algorithm,
                "architecture": arch,
                "jobs": r["jobs"],
                "tflop_per_job": r["flops"] / r["jobs"] / 1e12,
                "minutes_per_job": r["seconds"] / r["jobs"] / 60,
                "gpu_hours": r["seconds"] / 3600,
            }
            for (stage, dataset, algorithm, arch), r in rows.items()
        ]
    )
    return table.sort_values(["stage", "dataset", "algorithm"], kind="stable")


def _one_pass_flops(run: RunConfig) -> float:
    w = widths(run)
    return 2.0 * n_test(run) * sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))


# the rules whose jobs train or run the networks; :func:`plan` sizes them
GPU_STAGES = (
    "train",
    "train_seeds",
    "activations",
    "unseen_train",
    "unseen_activations",
)


def workflow_jobs(config_path: str | Path, workdir: str | Path = ".") -> pd.DataFrame:
    """The jobs still to run for a config, per rule, as the workflow in
    ``workdir`` plans them (``snakemake -n``)."""
    workdir = Path(workdir)
    if not (workdir / "Snakefile").is_file():
        raise FileNotFoundError(f"no Snakefile in {workdir.resolve()}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--quiet",
            "rules",
            "--configfile",
            str(Path(config_path).resolve()),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{text[-2000:]}")
    # the job stats table: 'rule  count' lines, up to its total
    counts: dict[str, int] = {}
    for name, count in re.findall(r"^(\w+)\s+(\d+)$", text, re.M):
        if name == "total":
            break
        counts[name] = int(count)
    return pd.DataFrame([{"stage": k, "jobs": v} for k, v in counts.items()])
