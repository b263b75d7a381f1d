"""The workflow on the tiny config: held-out variant end to end, and figures
rebuilt from cached results without training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def snakemake(workdir: Path, *args) -> str:
    # targets before --configfile, which takes every word after it
    cmd = [sys.executable, "-m", "snakemake", *args, "-c2"]
    out = subprocess.run(
        [*cmd, "--configfile", "config/test.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
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
def completed(tmp_path_factory) -> Path:
    if not FASHION_MNIST.exists():
        pytest.skip("needs the Fashion-MNIST files of dataset-fashion-mnist")
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config", "environment.yml"):
        src = REPO / name
        copy = shutil.copytree if src.is_dir() else shutil.copy
        copy(src, work / name)
    snakemake(work, "all")
    return work


@pytest.mark.slow
def test_unseen_variant_end_to_end(completed):
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
    assert run["held_out_classes"] == [0, 6] and run["label_input"] == "neutral"


@pytest.mark.slow
def test_figures_from_cached_results(completed):
    assert "Nothing to be done" in snakemake(completed, "-n", "figures")
    (completed / "results/figures/overlap/fashion_mnist/tiny.png").unlink()
    (completed / "results/figures/walls/fashion_mnist/ff/tiny/seed0.png").unlink()
    rules = scheduled(snakemake(completed, "-n", "figures"))
    assert rules == {"overlap_figure", "activation_wall", "figures"}
    snakemake(completed, "figures")
    assert "Nothing to be done" in snakemake(completed, "-n", "all")
