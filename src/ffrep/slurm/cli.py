"""``ffrep slurm-submit|slurm-status|slurm-cancel``, also ``python -m ffrep.slurm``."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)


def cmd_submit(args) -> None:
    from ffrep.slurm.params import SiteOptions, parse_sbatch_args
    from ffrep.slurm.state import StateDir
    from ffrep.slurm.submit import submit

    site = SiteOptions(
        partition=args.partition,
        gpu_partition=args.gpu_partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        gpu_style=args.gpu_style,
        default_runtime_min=args.default_runtime_min,
        sbatch_args=parse_sbatch_args(args.sbatch_arg),
    )
    job_id = submit(args.jobscript, site, args.log_root, StateDir(args.state_dir))
    sys.stdout.write(f"{job_id}\n")


def cmd_status(args) -> None:
    from ffrep.slurm.state import StateDir
    from ffrep.slurm.status import FAILED, job_status

    try:
        status = job_status(
            args.job_id, StateDir(args.state_dir), args.grace_s, args.latency_s
        )
    except Exception:  # Snakemake aborts on a non-zero exit: answer anyway
        log.exception("job %s: status unknown, reported failed", args.job_id)
        status = FAILED
    sys.stdout.write(f"{status}\n")


def cmd_cancel(args) -> None:
    from ffrep.slurm.cancel import cancel

    cancel(args.job_ids)


def add_subcommands(sub) -> None:
    """Add the three commands to the ``ffrep`` sub-parsers ``sub``."""
    from ffrep.slurm.params import GPU_STYLES
    from ffrep.slurm.state import DEFAULT_STATE_DIR
    from ffrep.slurm.submit import DEFAULT_LOG_ROOT

    p = sub.add_parser("slurm-submit", help="submit a Snakemake jobscript to SLURM")
    p.add_argument("jobscript")
    p.add_argument("--partition", default="", help="empty: the cluster's default")
    p.add_argument("--gpu-partition", default="", help="for jobs with gpu > 0")
    p.add_argument("--account", default="")
    p.add_argument("--qos", default="")
    p.add_argument("--constraint", default="")
    p.add_argument(
        "--gpu-style", choices=GPU_STYLES, default="gpus", help="--gpus or --gres"
    )
    p.add_argument("--default-runtime-min", type=int, default=60)
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="extra sbatch option, repeatable (e.g. exclusive, mail-type=FAIL)",
    )
    p.add_argument("--log-root", default=DEFAULT_LOG_ROOT)
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("slurm-status", help="running, success or failed")
    p.add_argument("job_id")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.add_argument(
        "--grace-s",
        type=float,
        default=300.0,
        help="how long a job SLURM does not answer for counts as running",
    )
    p.add_argument(
        "--latency-s",
        type=float,
        default=60.0,
        help="how long to wait for the outputs of a completed job",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("slurm-cancel", help="cancel SLURM jobs")
    p.add_argument("job_ids", nargs="*")
    p.set_defaults(func=cmd_cancel)


def main(argv: list[str] | None = None) -> int:
    from ffrep.cli import setup_logging

    parser = argparse.ArgumentParser(prog="python -m ffrep.slurm")
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_subcommands(sub)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    args.func(args)
    return 0
