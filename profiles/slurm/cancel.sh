#!/bin/sh
# Snakemake's cancel command: one executable, the SLURM job ids as arguments.
exec ffrep slurm-cancel "$@"
