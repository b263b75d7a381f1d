"""Subcommands of the ``ffrep`` command for the analysis and its figures."""

from __future__ import annotations

SAMPLES = ["correct", "all"]


def cmd_ensembles(args) -> None:
    from ffrep.ensembles import write_run_ensembles

    outputs = {
        "sizes": args.out_sizes,
        "overlap": args.out_overlap,
        "units": args.out_units,
        "layers": args.out_layers,
    }
    write_run_ensembles(args.activations, outputs, args.factor, args.samples)


def cmd_ensemble_tables(args) -> None:
    from ffrep.analysis import ENSEMBLE_TABLES, write_ensemble_tables

    per_run = {name: getattr(args, name) for name in ENSEMBLE_TABLES}
    outputs = {k: v for k, v in vars(args).items() if k.startswith("out_") and v}
    outputs = {k.removeprefix("out_"): v for k, v in outputs.items()}
    write_ensemble_tables(per_run, outputs, args.class_similarity or ())


def cmd_class_similarity(args) -> None:
    from ffrep.ensembles import class_similarity
    from ffrep.io import write_csv

    write_csv(args.out, class_similarity(args.data, args.bp_activations, args.dataset))


def cmd_inhibition(args) -> None:
    from ffrep.inhibition import write_run_inhibition

    write_run_inhibition(
        args.model,
        args.data,
        args.activations,
        args.out_layers,
        args.out_units,
        samples=args.samples,
        quantile=args.reference_quantile,
    )


def cmd_combine(args) -> None:
    from ffrep.analysis import algorithm_tests, combine, summarise_over_seeds
    from ffrep.io import write_csv

    frame = combine(args.tables)
    write_csv(args.out, frame)
    keys = args.keys
    if args.out_summary:
        write_csv(args.out_summary, summarise_over_seeds(frame, keys))
    if args.out_tests:
        write_csv(args.out_tests, algorithm_tests(frame, args.test_metrics))


def cmd_unseen(args) -> None:
    from ffrep.unseen import write_run_unseen

    write_run_unseen(
        args.activations,
        args.held_out,
        args.out_classes,
        args.out_layers,
        args.factor,
        args.samples,
    )


def cmd_figure(args) -> None:
    from ffrep import figures

    kind = args.kind
    if kind in ("class-means",):
        figures.class_mean_units(args.activations, args.out, args.factor, args.samples)
    elif kind == "mixed-selectivity":
        figures.mixed_selectivity(
            *args.table, args.dataset, args.architecture, args.out
        )
    elif kind == "inhibition":
        figures.inhibition(
            args.table[0], args.table[1:], args.dataset, args.architecture, args.out
        )
    elif kind == "unseen":
        figures.unseen_categories(
            *args.table, args.dataset, args.architecture, args.out
        )
    else:
        draw = {
            "ensemble-sizes": figures.ensemble_sizes,
            "overlap": figures.overlap_heatmap,
            "sparseness-accuracy": figures.sparseness_accuracy,
            "unit-measures": figures.unit_measures,
        }[kind]
        draw(args.table[0], args.dataset, args.architecture, args.out)


FIGURES = [
    "class-means",
    "ensemble-sizes",
    "overlap",
    "sparseness-accuracy",
    "unit-measures",
    "mixed-selectivity",
    "inhibition",
    "unseen",
]


def register(sub) -> None:
    """Add the analysis subcommands to the ``ffrep`` parser's ``sub``."""
    p = sub.add_parser("ensembles", help="ensemble tables of one activation file")
    p.add_argument("--activations", required=True)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--samples", choices=SAMPLES, default="correct")
    for name in ("sizes", "overlap", "units", "layers"):
        p.add_argument(f"--out-{name}", required=True)
    p.set_defaults(func=cmd_ensembles)

    p = sub.add_parser("ensemble-tables", help="combine ensemble tables of the grid")
    for name in ("sizes", "overlap", "units", "layers"):
        p.add_argument(f"--{name}", nargs="+", required=True)
        p.add_argument(f"--out-{name}", required=True)
    for name in ("sizes", "overlap", "layers"):
        p.add_argument(f"--out-{name}-summary")
    p.add_argument("--class-similarity", nargs="*")
    p.add_argument("--out-tests", required=True)
    p.add_argument("--out-similarity")
    p.set_defaults(func=cmd_ensemble_tables)

    p = sub.add_parser("class-similarity", help="image similarity, BP confusion")
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--bp-activations", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_class_similarity)

    p = sub.add_parser("inhibition", help="excitatory and inhibitory drive of a run")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--activations", required=True)
    p.add_argument("--samples", choices=SAMPLES, default="correct")
    p.add_argument("--reference-quantile", type=float, default=0.5)
    p.add_argument("--out-layers", required=True)
    p.add_argument("--out-units", required=True)
    p.set_defaults(func=cmd_inhibition)

    p = sub.add_parser("combine", help="concatenate per-run tables, summarise, test")
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--keys", nargs="+", default=["dataset", "algorithm", "architecture", "layer"]
    )
    p.add_argument("--out-summary")
    p.add_argument("--out-tests")
    p.add_argument("--test-metrics", nargs="+", default=[])
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("unseen", help="held-out category tables of one run")
    p.add_argument("--activations", required=True)
    p.add_argument("--held-out", type=int, nargs="+", required=True)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--samples", choices=SAMPLES, default="correct")
    p.add_argument("--out-classes", required=True)
    p.add_argument("--out-layers", required=True)
    p.set_defaults(func=cmd_unseen)

    p = sub.add_parser("figure", help="draw one analysis figure")
    p.add_argument("kind", choices=FIGURES)
    p.add_argument("--table", nargs="+", help="input tables, in the figure's order")
    p.add_argument("--activations")
    p.add_argument("--dataset")
    p.add_argument("--architecture")
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--samples", choices=SAMPLES, default="correct")
    p.add_argument("--out", nargs="+", required=True)
    p.set_defaults(func=cmd_figure)
