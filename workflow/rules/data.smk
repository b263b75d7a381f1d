rule prepare_data:
    output:
        prepared=f"{DATA_ROOT}/prepared/{{dataset}}.pt",
    log:
        "logs/prepare_data/{dataset}.log",
    # downloads need the internet, which login nodes have and compute nodes lack
    localrule: True
    conda:
        "../../environment.yml"
    params:
        # the prepared file lies in ROOT/prepared/
        root=lambda wildcards, output: os.path.dirname(os.path.dirname(output.prepared)),
        normalization=normalization_args,
        local_raw=local_raw_arg,
        download="--download" if config["data"]["download"] else "--no-download",
    shell:
        "ffrep prepare-data --dataset {wildcards.dataset}"
        " --root {params.root:q} --out {output.prepared:q}"
        " {params.normalization} {params.local_raw} {params.download}"
        " > {log:q} 2>&1"
