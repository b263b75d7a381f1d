rule activation_wall:
    input:
        rules.activations.output,
    output:
        png=f"results/figures/walls/{RUN}.png",
        pdf=f"results/figures/walls/{RUN}.pdf",
    log:
        f"logs/activation_wall/{RUN}.log",
    conda:
        "../../environment.yml"
    params:
        max_per_class=config["analysis"]["wall_max_samples_per_class"],
        samples=config["analysis"]["samples"],
    shell:
        "ffrep wall --activations {input:q} --out {output.png:q} {output.pdf:q}"
        " --max-per-class {params.max_per_class} --samples {params.samples}"
        " > {log:q} 2>&1"


rule hoyer_by_class:
    input:
        rules.sparsity_tables.output.classes,
    output:
        png="results/figures/hoyer_by_class/{dataset}/{architecture}.png",
        pdf="results/figures/hoyer_by_class/{dataset}/{architecture}.pdf",
    log:
        "logs/hoyer_by_class/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep hoyer-by-class --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
