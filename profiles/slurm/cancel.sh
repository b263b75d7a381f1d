#!/bin/sh
# Snakemake's cancel command: one executable, the SLURM job ids as arguments.
exec python -m ffrep.slurm slurm-cancel "$@"
