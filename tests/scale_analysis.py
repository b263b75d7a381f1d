"""Time and peak memory of the analysis of one SVHN-sized activation file.

``python tests/scale_analysis.py DIR`` writes a synthetic activation file of
26,032 test images × 3 layers × 3,072 units (float32) into DIR, then runs each
per-run analysis step in a fresh process and logs its wall time and peak
resident memory. ``tests/test_analysis_scale.py`` runs it and checks the
budget.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ffrep.cli import setup_logging

log = logging.getLogger("scale_analysis")

N_SAMPLES, N_LAYERS, N_UNITS = 26_032, 3, 3_072


def synthetic_file(path: Path, seed: int = 0) -> Path:
    """Sparse, class-specific activations of SVHN's size, written as the
    workflow writes them."""
    from ffrep.activations import build_dataset, write
    from ffrep.config import RunConfig

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, N_SAMPLES)
    prediction = np.where(rng.random(N_SAMPLES) < 0.9, labels, (labels + 1) % 10)
    hidden = []
    for _ in range(N_LAYERS):
        x = rng.standard_exponential((N_SAMPLES, N_UNITS), dtype=np.float32)
        x *= rng.random((N_SAMPLES, N_UNITS), dtype=np.float32) < 0.05
        # each class drives its own 150 units
        for k in range(10):
            rows = np.flatnonzero(labels == k)
            x[rows, 300 * k : 300 * k + 150] += 2.0
        hidden.append(x)
    run = RunConfig(
        dataset="svhn",
        algorithm="ff",
        architecture="paper",
        seed=seed,
        hidden_units=[N_UNITS] * N_LAYERS,
        learning_rate=1e-4,
        epochs=1,
        batch_size=1024,
    )
    write(build_dataset(hidden, labels, prediction, run, "cpu"), path)
    return path


def synthetic_inhibition(nc: str) -> int:
    """The inhibition analysis of an untrained FF network of SVHN's size on
    random test images, against the synthetic file's labels."""
    import torch

    from ffrep.activations import open_activations
    from ffrep.config import RunConfig
    from ffrep.datasets import DATASETS
    from ffrep.inhibition import inhibition_tables
    from ffrep.models import build_model

    torch.manual_seed(0)
    ds = open_activations(nc)
    run = RunConfig.from_json(ds.attrs["config"])
    net = build_model("ff", DATASETS["svhn"], run)
    x_test = torch.randn(N_SAMPLES, DATASETS["svhn"].n_inputs)
    layers, _ = inhibition_tables(net, run, x_test, ds, "correct", 0.5)
    log.info("inhibition: %s", layers.active_fraction.round(3).tolist())
    return 0


def child(report: str, argv: list[str]) -> None:
    """Run one ``ffrep`` command in this process and record its peak RSS."""
    from ffrep.cli import main as ffrep_main

    if argv[0] == "inhibition-synthetic":
        rc = synthetic_inhibition(argv[1])
    else:
        rc = ffrep_main(argv)
    Path(report).write_text(json.dumps({"rc": rc, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory since its last exec (VmHWM).

    ``getrusage``'s ``ru_maxrss`` would not do: it carries over the parent's
    peak through fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(argv: list[str], folder: Path) -> dict:
    """Wall time and peak RSS of one ``ffrep`` command in a fresh process."""
    report = folder / f"{argv[0]}.rss.json"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", str(report), *argv], check=True
    )
    got = json.loads(report.read_text())
    return {
        "command": " ".join(argv[:2]),
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(got["peak_rss_mb"]),
        "rc": got["rc"],
    }


def main(folder: str) -> list[dict]:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    nc = out / "svhn_ff_paper_seed0.nc"
    t0 = time.perf_counter()
    if not nc.exists():
        synthetic_file(nc)
    log.info(
        "wrote %s (%.0f MB) in %.0f s",
        nc,
        nc.stat().st_size / 2**20,
        time.perf_counter() - t0,
    )
    steps = [
        # each in a fresh process: its peak memory is its own
        [
            "sparsity",
            "--activations",
            str(nc),
            "--out-layers",
            str(out / "s.csv"),
            "--out-classes",
            str(out / "sc.csv"),
        ],
        ["ensembles", "--activations", str(nc)]
        + [
            a
            for n in ("sizes", "overlap", "units", "layers")
            for a in (f"--out-{n}", str(out / f"e_{n}.csv"))
        ],
        [
            "unseen",
            "--activations",
            str(nc),
            "--held-out",
            "0",
            "6",
            "--out-classes",
            str(out / "u_c.csv"),
            "--out-layers",
            str(out / "u_l.csv"),
        ],
        [
            "figure",
            "class-means",
            "--activations",
            str(nc),
            "--out",
            str(out / "class_means.png"),
        ],
        ["wall", "--activations", str(nc), "--out", str(out / "wall.png")],
        ["inhibition-synthetic", str(nc)],
    ]
    results = [measure(s, out) for s in steps]
    for r in results:
        log.info("%s", json.dumps(r))
    (out / "scale.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    setup_logging()
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1])
