"""SLURM jobs for the workflow through submitit: the submit, status and cancel
commands of the ``slurm`` Snakemake profile (cluster-generic executor).

Site values (partition, account, QoS, GPU request style, extra sbatch flags)
come from the profile's command lines; nothing here names a site.
"""
