"""Shared fixtures: small prepared data and the tiny workflow run once."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FASHION_MNIST, copy_workflow, snakemake, write_idx, write_prepared


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("data") / "fashion_mnist.pt")


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> tuple[Path, list[str]]:
    """The workflow run to completion on config/test.yaml; returns the folder
    and the arguments that select its config."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    args = ["--configfile", "config/test.yaml"]
    if not FASHION_MNIST.is_dir():
        raw = write_idx(work / "fake-raw", n_train=60_000, n_test=10_000)
        args += ["--config", f"data={{local_raw: {{fashion_mnist: {raw}}}}}"]
    snakemake(work, "all", "-c2", *args)
    return work, args
