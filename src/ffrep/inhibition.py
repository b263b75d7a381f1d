"""Inhibition behind the sparsity: sign structure of the weights, the split of
each unit's pre-activation into excitatory and inhibitory drive, why silent
units are silent, and what the layer-input normalisation does.

Needs the trained weights and the test images (not only the activations): the
drives are products of weights and layer inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ffrep import data as data_mod
from ffrep.activations import open_activations
from ffrep.datasets import DATASETS
from ffrep.ensembles import run_keys, sample_mask
from ffrep.io import write_csv
from ffrep.metrics import CHUNK, drive_split, reference_excitation, silence_causes
from ffrep.models import EPS, LabelOverlay
from ffrep.train import label_value, load_model

log = logging.getLogger(__name__)


def _norm(x: np.ndarray) -> np.ndarray:
    """Row L2 norms, floored as the network floors them: (samples, 1)."""
    return np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def network_input(run, x: torch.Tensor, labels) -> np.ndarray:
    """The first layer's input: the image with the label written in (FF, BP/FF)
    as the activation files record it, or the raw image (BP)."""
    if run.algorithm == "bp":
        return x.numpy()
    overlay = LabelOverlay(DATASETS[run.dataset], label_value(run, x))
    x = x.clone()
    if labels is None:
        overlay.neutral_(x)
    else:
        overlay.apply_(x, torch.as_tensor(labels, dtype=torch.int64))
    return x.numpy()


def layer_drives(inp: np.ndarray, weight, bias, normalized: bool, quantile=0.5):
    """Drives of one layer on its (un-normalised) input ``inp``.

    Returns a dict of (samples, units) arrays: ``exc`` and ``inh`` (float32);
    the booleans ``silent``, ``inhibited`` and ``underdriven`` (see
    :func:`ffrep.metrics.silence_causes`), ``by_bias`` (silent although the
    weight drive alone is positive) and ``active_other``: active under the
    other choice of input normalisation (raw input for a normalising network,
    unit-norm input for BP); and ``input_norm`` (samples,).
    """
    norm = _norm(inp)
    n, units = inp.shape[0], weight.shape[0]
    exc = np.empty((n, units), dtype=np.float32)
    inh = np.empty_like(exc)
    by_bias = np.empty((n, units), dtype=bool)
    active_other = np.empty_like(by_bias)
    for start in range(0, n, CHUNK):
        sl = slice(start, start + CHUNK)
        x = inp[sl] / norm[sl] if normalized else inp[sl]
        exc[sl], inh[sl] = drive_split(x, weight, bias)
        wdrive = exc[sl] + inh[sl] - bias[None, :]
        by_bias[sl] = (wdrive > 0) & (wdrive + bias[None, :] <= 0)
        scale = norm[sl] if normalized else 1 / norm[sl]
        active_other[sl] = wdrive * scale + bias[None, :] > 0
    ref = reference_excitation(exc, inh, quantile)
    inhibited, underdriven = silence_causes(exc, inh, ref)
    return {
        "exc": exc,
        "inh": inh,
        "silent": inhibited | underdriven,
        "inhibited": inhibited,
        "underdriven": underdriven,
        "by_bias": by_bias,
        "active_other": active_other,
        "input_norm": norm[:, 0],
    }


def run_inhibition(
    model_path: str | Path,
    data_path: str | Path,
    activations_path: str | Path,
    samples: str = "correct",
    quantile: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inhibition tables of one run: one row per layer, one per layer and unit.

    The test images carry the label the activation file was recorded with
    (its ``label_input``), and the samples are those the statistics use.
    """
    net, run = load_model(model_path)
    ds = open_activations(activations_path)
    try:
        n_test = ds.sizes["sample"]
        splits = data_mod.load(data_path, run.max_train_samples, n_test, run.dataset)
        return inhibition_tables(net, run, splits.x_test, ds, samples, quantile)
    finally:
        ds.close()


def inhibition_tables(net, run, x_test: torch.Tensor, ds, samples, quantile):
    """:func:`run_inhibition` on a network, its test images and its activations."""
    keys = run_keys(ds)
    mask = sample_mask(ds, samples)
    label_input = ds.attrs.get("label_input", run.label_input)
    coord = {"true_label": "label", "predicted_label": "prediction"}
    labels = ds[coord[label_input]].values[mask] if label_input in coord else None
    inp = network_input(run, x_test[torch.as_tensor(mask)], labels)
    normalized = run.algorithm != "bp" and run.input_normalization == "l2"
    rows, unit_rows = [], []
    for i, layer in enumerate(net.layers):
        w = layer.weight.detach().numpy()
        b = layer.bias.detach().numpy()
        d = layer_drives(inp, w, b, normalized, quantile)
        silent = d["silent"]
        base = {**keys, "layer": i + 1, "n_units": w.shape[0]}
        rows.append(
            {
                **base,
                "n_samples": int(inp.shape[0]),
                "input_normalization": "l2" if normalized else "none",
                "weight_positive_fraction": float((w > 0).mean()),
                "weight_mean_positive": float(w[w > 0].mean()),
                "weight_mean_negative": float(w[w < 0].mean()),
                "bias_positive_fraction": float((b > 0).mean()),
                "bias_mean": float(b.mean()),
                "excitatory_drive": float(d["exc"].mean()),
                "inhibitory_drive": float(d["inh"].mean()),
                "inhibition_ratio": float(-d["inh"].sum() / max(d["exc"].sum(), EPS)),
                "active_fraction": float((~silent).mean()),
                "silent_inhibited_fraction": float(d["inhibited"].mean()),
                "silent_underdriven_fraction": float(d["underdriven"].mean()),
                "inhibited_share_of_silent": float(
                    d["inhibited"].sum() / max(silent.sum(), 1)
                ),
                "silenced_by_bias_fraction": float(d["by_bias"].mean()),
                "active_fraction_other_normalization": float(d["active_other"].mean()),
                "input_norm_mean": float(d["input_norm"].mean()),
            }
        )
        unit_rows.append(
            pd.DataFrame(
                {
                    **base,
                    "unit": np.arange(w.shape[0]),
                    "excitatory_drive": d["exc"].mean(0),
                    "inhibitory_drive": d["inh"].mean(0),
                    "bias": b,
                    "weight_positive_fraction": (w > 0).mean(1),
                    "active_fraction": (~silent).mean(0),
                    "silent_inhibited_fraction": d["inhibited"].mean(0),
                    "silent_underdriven_fraction": d["underdriven"].mean(0),
                }
            )
        )
        # the next layer's input: this layer's post-ReLU activation
        inp = np.maximum(d["exc"] + d["inh"], 0)
        del d
    return pd.DataFrame(rows), pd.concat(unit_rows, ignore_index=True)


def write_run_inhibition(model, data, activations, out_layers, out_units, **kw):
    layers, units = run_inhibition(model, data, activations, **kw)
    write_csv(out_layers, layers)
    write_csv(out_units, units)
    log.info("inhibition of %s written", model)
