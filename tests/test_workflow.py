"""The whole workflow through the real Snakemake command line."""

import re
import shutil
import subprocess

import pandas as pd
import pytest
import xarray as xr

from helpers import REPO, copy_workflow, snakemake


def test_default_config_plans_the_paper_grid_without_data(tmp_path):
    work = copy_workflow(tmp_path)
    out = snakemake(work, "-n", "--quiet", "rules")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M))
    assert int(counts["train"]) == 120
    assert int(counts["prepare_data"]) == 4
    assert not (work / "resources").exists() and not (work / "results").exists()


def test_batched_seeds_plan_one_checkpointed_job_per_configuration(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "batched.yaml").write_text("training: {batch_seeds: true}\n")
    out = snakemake(work, "-n", "-p", "--configfile", "batched.yaml")
    text = out.stdout + out.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, re.M))
    # the 120 runs as one job per dataset and algorithm, of ten seeds each
    assert int(counts["train_seeds"]) == 12 and "train" not in counts
    commands = [line for line in text.splitlines() if "ffrep train-seeds" in line]
    assert len(commands) == 12
    assert all(
        c.count("--run-json") == 1 and c.count('"seed": ') == 10 for c in commands
    )
    assert all("--checkpoint results/checkpoints/" in c for c in commands)
    assert any("fashion_mnist/bp_ff/paper/seeds.pt" in c for c in commands)
    # the ten SVHN FF seeds ask for their stored inputs and their time
    job = text[text.index("wildcards: dataset=svhn, algorithm=ff") :]
    resources = job[job.index("resources:") :].splitlines()[0]
    asked = dict(re.findall(r"(\w+)=(\d+)", resources))
    assert int(asked["mem_mb"]) > 16_000 and int(asked["runtime"]) > 240


def test_tiny_config_runs_end_to_end(tiny_workflow):
    work, _ = tiny_workflow
    table = pd.read_csv(work / "results/tables/sparsity.csv")
    for column in (
        "dataset",
        "algorithm",
        "architecture",
        "seed",
        "layer",
        "accuracy",
        "hoyer",
        "active_fraction",
        "n_samples",
    ):
        assert column in table.columns
    assert set(table.algorithm) == {"ff", "bp_ff", "bp"}
    assert sorted(table.layer.unique()) == [1, 2, 3]
    assert len(table) == 3 * 2 * 3
    assert table.hoyer.between(0, 1).all()
    by_class = pd.read_csv(work / "results/tables/sparsity_by_class.csv")
    assert set(by_class.label) <= set(range(10)) and len(by_class) > len(table)
    summary = pd.read_csv(work / "results/tables/sparsity_summary.csv")
    assert (summary.n_seeds == 2).all()
    ds = xr.open_dataset(work / "results/activations/fashion_mnist/ff/tiny/seed0.nc")
    assert ds.sizes == {"sample": 500, "layer": 3, "unit": 64}
    ds.close()
    for name in (
        "walls/fashion_mnist/bp/tiny/seed1",
        "hoyer_by_class/fashion_mnist/tiny",
    ):
        for ext in ("png", "pdf"):
            assert (work / "results/figures" / f"{name}.{ext}").stat().st_size > 1000
    assert not list((work / "results").rglob("*.tmp"))


def test_second_run_has_nothing_to_do(tiny_workflow):
    work, args = tiny_workflow
    out = snakemake(work, "-n", *args)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_recording_settings_record_again_without_training(tiny_workflow):
    work, args = tiny_workflow
    overlay = work / "recording.yaml"
    overlay.write_text("activations: {compression_level: 6, label_input: neutral}\n")
    # args: --configfile, the test config, then any --config
    out = snakemake(work, "-n", "--configfile", args[1], overlay.name, *args[2:])
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.M))
    assert int(counts["activations"]) == 6
    assert "train" not in counts and "prepare_data" not in counts


def test_report_has_every_figure_and_renders_in_a_browser(tiny_workflow, tmp_path):
    work, args = tiny_workflow
    snakemake(work, "--report", "report.html", *args)
    html = (work / "report.html").read_text()
    rules = (REPO / "workflow/rules/figures.smk").read_text()
    for category in set(re.findall(r'category="([^"{]+)"', rules)):
        assert category in html, category
    for figure in (work / "results/figures").rglob("*.png"):
        assert figure.name in html, figure
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            (work / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] > 100 and pixels.std() > 0.01  # a page, not a blank
