FIGURE_DIR = "results/figures"


rule activation_wall:
    input:
        rules.activations.output,
    output:
        png=report(
            f"{FIGURE_DIR}/walls/{RUN}.png",
            caption="../report/activation_wall.rst",
            category="Activation walls",
            subcategory="{dataset} · {architecture}",
            labels={"algorithm": "{algorithm}", "seed": "{seed}"},
        ),
        pdf=f"{FIGURE_DIR}/walls/{RUN}.pdf",
    log:
        f"logs/figures/activation_wall/{RUN}.log",
    conda:
        "../../environment.yml"
    params:
        max_per_class=ANALYSIS["wall_max_samples_per_class"],
        samples=ANALYSIS["samples"],
    shell:
        "ffrep wall --activations {input:q} --out {output.png:q} {output.pdf:q}"
        " --max-per-class {params.max_per_class} --samples {params.samples}"
        " > {log:q} 2>&1"


rule class_means_figure:
    input:
        rules.activations.output,
    output:
        png=report(
            f"{FIGURE_DIR}/class_means/{RUN}.png",
            caption="../report/class_means.rst",
            category="Class means and ensembles",
            subcategory="{dataset} · {architecture}",
            labels={"algorithm": "{algorithm}", "seed": "{seed}"},
        ),
        pdf=f"{FIGURE_DIR}/class_means/{RUN}.pdf",
    log:
        f"logs/figures/class_means/{RUN}.log",
    conda:
        "../../environment.yml"
    params:
        factor=ANALYSIS["ensemble_factor"],
        samples=ANALYSIS["samples"],
    shell:
        "ffrep figure class-means --activations {input:q} --factor {params.factor}"
        " --samples {params.samples} --out {output.png:q} {output.pdf:q}"
        " > {log:q} 2>&1"


rule hoyer_by_class_figure:
    input:
        rules.sparsity_tables.output.classes,
    output:
        png=report(
            f"{FIGURE_DIR}/hoyer_by_class/{{dataset}}/{{architecture}}.png",
            caption="../report/hoyer_by_class.rst",
            category="Sparseness",
            labels={
                "figure": "hoyer_by_class",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/hoyer_by_class/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/hoyer_by_class/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep hoyer-by-class --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule ensemble_sizes_figure:
    input:
        rules.ensemble_tables.output.sizes,
    output:
        png=report(
            f"{FIGURE_DIR}/ensemble_sizes/{{dataset}}/{{architecture}}.png",
            caption="../report/ensemble_sizes.rst",
            category="Ensembles",
            labels={
                "figure": "ensemble_sizes",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/ensemble_sizes/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/ensemble_sizes/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure ensemble-sizes --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule overlap_figure:
    input:
        rules.ensemble_tables.output.overlap,
    output:
        png=report(
            f"{FIGURE_DIR}/overlap/{{dataset}}/{{architecture}}.png",
            caption="../report/overlap.rst",
            category="Ensembles",
            labels={
                "figure": "overlap",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/overlap/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/overlap/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure overlap --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule sparseness_accuracy_figure:
    input:
        rules.sparsity_tables.output.layers,
    output:
        png=report(
            f"{FIGURE_DIR}/sparseness_accuracy/{{dataset}}/{{architecture}}.png",
            caption="../report/sparseness_accuracy.rst",
            category="Sparseness",
            labels={
                "figure": "sparseness_accuracy",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/sparseness_accuracy/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/sparseness_accuracy/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure sparseness-accuracy --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule unit_measures_figure:
    input:
        rules.ensemble_tables.output.layers,
    output:
        png=report(
            f"{FIGURE_DIR}/unit_measures/{{dataset}}/{{architecture}}.png",
            caption="../report/unit_measures.rst",
            category="Sparseness",
            labels={
                "figure": "unit_measures",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/unit_measures/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/unit_measures/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure unit-measures --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule mixed_selectivity_figure:
    input:
        rules.ensemble_tables.output.layers,
        rules.ensemble_tables.output.overlap,
        "results/tables/class_similarity/{dataset}.csv",
    output:
        png=report(
            f"{FIGURE_DIR}/mixed_selectivity/{{dataset}}/{{architecture}}.png",
            caption="../report/mixed_selectivity.rst",
            category="Mixed selectivity",
            labels={
                "figure": "mixed_selectivity",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/mixed_selectivity/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/mixed_selectivity/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure mixed-selectivity --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule inhibition_figure:
    input:
        rules.inhibition_tables.output.table,
        lambda w: first_seed_tables(w, "inhibition_units.csv"),
    output:
        png=report(
            f"{FIGURE_DIR}/inhibition/{{dataset}}/{{architecture}}.png",
            caption="../report/inhibition.rst",
            category="Inhibition",
            labels={
                "figure": "inhibition",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/inhibition/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/inhibition/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure inhibition --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule unseen_figure:
    input:
        rules.unseen_tables.output.classes,
        rules.unseen_tables.output.layers,
    output:
        png=report(
            f"{FIGURE_DIR}/unseen/{{dataset}}/{{architecture}}.png",
            caption="../report/unseen.rst",
            category="Unseen categories",
            labels={
                "figure": "unseen",
                "dataset": "{dataset}",
                "architecture": "{architecture}",
            },
        ),
        pdf=f"{FIGURE_DIR}/unseen/{{dataset}}/{{architecture}}.pdf",
    log:
        "logs/figures/unseen/{dataset}/{architecture}.log",
    conda:
        "../../environment.yml"
    shell:
        "ffrep figure unseen --table {input:q} --dataset {wildcards.dataset}"
        " --architecture {wildcards.architecture}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
