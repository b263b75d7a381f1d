"""The ``ffrep`` command: every step of the workflow, runnable on its own."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("ffrep")


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("FFREP_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def _run_config(args):
    from ffrep.config import RunConfig, load_config, resolve_run

    if args.run_json:
        return RunConfig.from_json(args.run_json)
    missing = [
        k
        for k in ("dataset", "algorithm", "architecture", "seed")
        if getattr(args, k) is None
    ]
    if missing:
        raise SystemExit(
            "ffrep train: give --run-json, or --config with "
            + ", ".join(f"--{k}" for k in missing)
        )
    config = load_config(args.config)
    return resolve_run(
        config, args.dataset, args.algorithm, args.architecture, args.seed
    )


def cmd_train(args) -> None:
    from ffrep.train import train_run

    run = _run_config(args)
    if args.threads and not run.num_threads:
        import torch

        torch.set_num_threads(args.threads)
    from ffrep.gpu_slot import gpu_slot

    out = Path(args.out_dir) / run.run_id
    with gpu_slot() if run.device != "cpu" else contextlib.nullcontext():
        train_run(
            run,
            data_path=args.data,
            model_out=args.model or out / "model.pt",
            metrics_out=args.metrics or out / "metrics.json",
            checkpoint=args.checkpoint or out / "checkpoint.pt",
        )


def cmd_train_seeds(args) -> None:
    from ffrep.batched import train_seeds
    from ffrep.config import RunConfig

    runs = [RunConfig.from_json(text) for text in args.run_json]
    if not len(runs) == len(args.model) == len(args.metrics):
        raise SystemExit("ffrep train-seeds: give one --model and --metrics per run")
    if args.threads and not runs[0].num_threads:
        import torch

        torch.set_num_threads(args.threads)
    from ffrep.gpu_slot import gpu_slot

    with gpu_slot() if runs[0].device != "cpu" else contextlib.nullcontext():
        train_seeds(runs, args.data, args.model, args.metrics, args.checkpoint)


def cmd_prepare_data(args) -> None:
    from ffrep.config import load_config, normalization
    from ffrep.data import prepare
    from ffrep.datasets import DATASETS

    info = DATASETS[args.dataset]
    root, download, local_raw = None, True, None
    mean, std = info.mean, info.std
    if args.config:
        config = load_config(args.config)
        data = config["data"]
        mean, std = normalization(config, args.dataset)
        root, download = data["root"], data["download"]
        local_raw = data["local_raw"].get(args.dataset)
    # a flag given on the command line wins over the config
    root = args.root or root
    if root is None:
        raise SystemExit("ffrep prepare-data: give --config, or --root")
    download = download if args.download is None else args.download
    local_raw = args.local_raw or local_raw
    mean, std = args.mean or mean, args.std or std
    out = args.out or Path(root) / "prepared" / f"{args.dataset}.pt"
    prepare(args.dataset, root, out, mean, std, download, local_raw)


def cmd_activations(args) -> None:
    from ffrep.activations import extract

    extract(args.model, args.data, args.out, args.label_input, args.compression_level)


def cmd_sparsity(args) -> None:
    from ffrep.analysis import write_run_sparsity

    write_run_sparsity(
        args.activations, args.out_layers, args.out_classes, args.samples
    )


def cmd_tables(args) -> None:
    from ffrep.analysis import write_tables

    write_tables(
        args.layer_tables,
        args.class_tables,
        args.out_layers,
        args.out_classes,
        args.out_summary,
        args.out_class_summary,
        args.out_tests,
    )


def cmd_wall(args) -> None:
    from ffrep.figures import activation_wall

    activation_wall(args.activations, args.out, args.max_per_class, args.samples)


def cmd_hoyer_by_class(args) -> None:
    from ffrep.figures import hoyer_by_class

    hoyer_by_class(args.table, args.dataset, args.architecture, args.out)


def cmd_summary(args) -> None:
    import pandas as pd

    table = Path(args.table)
    frame = pd.read_csv(table)
    cols = ["dataset", "architecture", "algorithm", "layer", "n_seeds"]
    shown = frame[cols].copy()
    for name in ("accuracy", "hoyer", "active_fraction"):
        mean, low, high = (frame[f"{name}_{s}"] for s in ("mean", "ci_low", "ci_high"))
        shown[name] = [
            f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if hi == hi else f"{m:.3f}"
            for m, lo, hi in zip(mean, low, high, strict=True)
        ]
    results = table.parent.parent
    lines = [
        "Sparsity of each hidden layer, mean [95% interval] over seeds:",
        shown.to_string(index=False),
        "",
        f"tables:  {results / 'tables'}",
        f"figures: {results / 'figures'}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_check_config(args) -> None:
    from ffrep.config import grid_runs, load_config

    config = load_config(args.config)
    log.info("%s is valid: %d training runs", args.config, len(grid_runs(config)))


def cmd_bench(args) -> None:
    import signal

    import torch

    from ffrep.bench import CASES, format_table, run_benchmark, targets

    for name in ("threads", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"ffrep bench: --{name} must be at least 1, not {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "ffrep bench: --device cuda, but no CUDA device is visible here; run it"
            " on a GPU node, or leave --device out for the CPU"
        )

    def stop(signum, frame):
        # unwind, so that the temporary files and the worker process go too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    cases = tuple(args.case or CASES) + (("svhn",) if args.svhn else ())
    table = run_benchmark(args.quick, args.data, args.device, cases, args.rounds)
    sys.stdout.write(format_table(table) + "\n")
    if not args.quick:
        # the targets are set for the full sizes
        sys.stdout.write("\n" + format_table(targets(table)) + "\n")
    if args.csv:
        from ffrep.io import write_csv

        write_csv(args.csv, table)


def cmd_plan(args) -> None:
    from ffrep.config import load_config
    from ffrep.plan import GPU_STAGES, plan, workflow_jobs

    config = load_config(args.config)
    table = plan(config, args.gpu, args.efficiency, args.step_overhead_s)
    sys.stdout.write(table.to_string(index=False, float_format="{:.3g}".format))
    sys.stdout.write(
        f"\n\ntotal: {table['gpu_hours'].sum():.3g} GPU-hours on {args.gpu}\n"
    )
    if config["training"]["device"] == "cpu":
        sys.stdout.write(
            "(training.device is cpu: these jobs will run on CPUs; the times are"
            f" for the GPU named, {args.gpu})\n"
        )
    if not args.jobs:
        return
    try:
        jobs = workflow_jobs(args.config)
    except (FileNotFoundError, RuntimeError) as err:
        log.warning("the other jobs are not counted: %s", err)
        return
    others = jobs[~jobs["stage"].isin([*GPU_STAGES, "all"])]
    sys.stdout.write(
        f"\njobs with no training still to run (snakemake -n): {others['jobs'].sum()}\n"
    )
    sys.stdout.write(others.to_string(index=False) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from ffrep.datasets import DATASETS

    parser = argparse.ArgumentParser(
        prog="ffrep",
        description="Forward-Forward emergent representations: each workflow step.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("train", help="train one run (FF, BP/FF or BP)")
    p.add_argument(
        "--config",
        default="config/config.yaml",
        help="the workflow config the run's settings come from (%(default)s)",
    )
    p.add_argument("--dataset", help="mnist, fashion_mnist, svhn or cifar10")
    p.add_argument("--algorithm", choices=["ff", "bp_ff", "bp"])
    p.add_argument("--architecture", help="a name under the config's architectures")
    p.add_argument("--seed", type=int)
    p.add_argument("--run-json", help="a resolved run config (as the workflow passes)")
    p.add_argument("--data", required=True, help="prepared dataset file (.pt)")
    p.add_argument(
        "--out-dir",
        default="results/runs",
        help="outputs go to OUT_DIR/DATASET/ALGORITHM/ARCHITECTURE/seedSEED/"
        " (%(default)s, which the workflow also uses: pick another for debugging)",
    )
    p.add_argument("--model", help="weights file (overrides --out-dir)")
    p.add_argument("--metrics", help="metrics JSON file (overrides --out-dir)")
    p.add_argument("--checkpoint", help="checkpoint file (overrides --out-dir)")
    p.add_argument(
        "--threads", type=int, help="torch threads, unless the run config sets them"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "train-seeds", help="train the seeds of one configuration in one job"
    )
    p.add_argument("--run-json", nargs="+", required=True, help="one per seed")
    p.add_argument("--data", required=True, help="prepared dataset file (.pt)")
    p.add_argument("--model", nargs="+", required=True, help="one per seed")
    p.add_argument("--metrics", nargs="+", required=True, help="one per seed")
    p.add_argument("--checkpoint", help="the job's checkpoint file (default: none)")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_train_seeds)

    p = sub.add_parser("prepare-data", help="fetch, check and normalise a dataset")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--config", help="take every setting below from this config")
    p.add_argument("--root", help="folder of raw files and torchvision downloads")
    p.add_argument("--out", help="prepared file (default ROOT/prepared/DATASET.pt)")
    p.add_argument("--mean", type=float, nargs="+")
    p.add_argument("--std", type=float, nargs="+")
    p.add_argument("--local-raw", help="folder holding the original raw files")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("activations", help="record a run's test-set activations")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--label-input",
        choices=["true_label", "predicted_label", "neutral"],
        help="the label written into FF and BP/FF inputs (default true_label)",
    )
    p.add_argument(
        "--compression-level",
        type=int,
        choices=range(10),
        metavar="0-9",
        help="zlib level of the NetCDF file (default 4)",
    )
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("sparsity", help="sparsity tables of one activation file")
    p.add_argument("--activations", required=True)
    p.add_argument("--out-layers", required=True)
    p.add_argument("--out-classes", required=True)
    p.add_argument("--samples", choices=["correct", "all"], default="correct")
    p.set_defaults(func=cmd_sparsity)

    p = sub.add_parser("tables", help="combine per-run tables over the grid")
    p.add_argument("--layer-tables", nargs="+", required=True)
    p.add_argument("--class-tables", nargs="+", required=True)
    p.add_argument("--out-layers", required=True)
    p.add_argument("--out-classes", required=True)
    p.add_argument("--out-summary", required=True)
    p.add_argument("--out-class-summary", required=True)
    p.add_argument("--out-tests", help="FF against BP and BP/FF, per layer")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("wall", help="activation wall figure of one run")
    p.add_argument("--activations", required=True)
    p.add_argument("--out", nargs="+", required=True)
    p.add_argument("--max-per-class", type=int, default=200)
    p.add_argument("--samples", choices=["correct", "all"], default="correct")
    p.set_defaults(func=cmd_wall)

    p = sub.add_parser("hoyer-by-class", help="per-class sparseness bars")
    p.add_argument("--table", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--architecture", required=True)
    p.add_argument("--out", nargs="+", required=True)
    p.set_defaults(func=cmd_hoyer_by_class)

    p = sub.add_parser("summary", help="print the sparsity summary of a workflow run")
    p.add_argument("table", help="results/tables/sparsity_summary.csv")
    p.set_defaults(func=cmd_summary)

    from ffrep.analysis_cli import register

    register(sub)

    p = sub.add_parser("bench", help="time training, prediction, I/O and analysis")
    p.add_argument("--quick", action="store_true", help="small sizes, seconds")
    p.add_argument("--data", help="a prepared dataset file (default: synthetic)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--svhn", action="store_true", help="add the SVHN-size cases")
    p.add_argument(
        "--case",
        action="append",
        choices=["ff", "bp_ff", "bp", "predict", "netcdf", "svhn"],
        help="run only this case (repeatable; default: all)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--rounds",
        type=int,
        help="times each case is run, in turn with what it is compared with;"
        " the least time counts (default 5, 2 with --quick)",
    )
    p.add_argument("--csv", help="also write the table here")
    p.set_defaults(func=cmd_bench)

    from ffrep.plan import EFFICIENCY, GPUS, STEP_OVERHEAD_S

    p = sub.add_parser("plan", help="jobs, FLOPs and predicted GPU time of a config")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS))
    p.add_argument("--efficiency", type=float, default=EFFICIENCY)
    p.add_argument("--step-overhead-s", type=float, default=STEP_OVERHEAD_S)
    p.add_argument(
        "--jobs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count the other jobs still to run, with snakemake -n in this"
        " folder (the workflow's)",
    )
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)

    from ffrep.slurm.cli import add_subcommands

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ffrep.errors import FFrepError

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        args.func(args)
    except FFrepError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
