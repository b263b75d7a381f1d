"""The workflow on the tiny config: held-out variant end to end, and figures
rebuilt from cached results without training."""

import json
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from helpers import snakemake


def run(workdir: Path, args: list[str], *targets) -> str:
    out = snakemake(workdir, *targets, "-c2", *args)
    return out.stdout + out.stderr


def scheduled(log: str) -> set[str]:
    """Rules a dry run would run, from its job table."""
    rules, table = set(), False
    for line in log.splitlines():
        if line.startswith("job "):
            table = True
            continue
        if table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if not parts[0].startswith("-"):
                rules.add(parts[0])
    return rules


@pytest.fixture(scope="module")
def completed(tiny_workflow) -> tuple[Path, list[str]]:
    return tiny_workflow


@pytest.mark.slow
def test_unseen_variant_end_to_end(completed):
    completed, _ = completed
    classes = pd.read_csv(completed / "results/tables/unseen_classes.csv")
    held = classes[classes.held_out]
    assert set(held.label) == {0, 6}
    assert set(classes.algorithm) == {"ff", "bp"}
    layers = pd.read_csv(completed / "results/tables/unseen_layers.csv")
    assert layers.nearest_ensemble_accuracy_held_out.between(0, 1).all()
    assert (completed / "results/figures/unseen/fashion_mnist/tiny.png").exists()
    # the held-out runs trained on eight classes only
    metrics = completed / "results/unseen/runs/fashion_mnist/ff/tiny/seed0/metrics.json"
    run = json.loads(metrics.read_text())["run_config"]
    assert run["held_out_classes"] == [0, 6]
    # and their activations were recorded with the neutral label
    unseen_file = (
        completed / "results/unseen/activations/fashion_mnist/ff/tiny/seed0.nc"
    )
    with xr.open_dataset(unseen_file) as ds:
        assert ds.attrs["label_input"] == "neutral"


@pytest.mark.slow
def test_figures_from_cached_results(completed):
    completed, args = completed
    assert "Nothing to be done" in run(completed, args, "-n", "figures")
    (completed / "results/figures/overlap/fashion_mnist/tiny.png").unlink()
    (completed / "results/figures/walls/fashion_mnist/ff/tiny/seed0.png").unlink()
    rules = scheduled(run(completed, args, "-n", "figures"))
    assert rules == {"overlap_figure", "activation_wall", "figures"}
    run(completed, args, "figures")
    assert "Nothing to be done" in run(completed, args, "-n", "all")
