"""Excitatory and inhibitory drive of constructed layers and small networks."""

import numpy as np
import pytest
import torch

from ffrep.activations import build_dataset, hidden_activations
from ffrep.datasets import DATASETS
from ffrep.inhibition import inhibition_tables, layer_drives
from ffrep.models import build_model

from analysis_data import run_config


def test_layer_drives_of_a_constructed_layer():
    # unit 0: excitation from input 0, inhibition from input 1, no bias
    # unit 1: no input weight, a negative bias: silent for lack of excitation
    w = np.array([[1.0, -1.0], [0.0, 0.0]], dtype=np.float32)
    b = np.array([0.0, -1.0], dtype=np.float32)
    x = np.array([[2.0, 0.0], [2.0, 3.0], [1.0, 0.0]], dtype=np.float32)
    d = layer_drives(x, w, b, normalized=False)
    np.testing.assert_allclose(d["exc"][:, 0], [2.0, 2.0, 1.0])
    np.testing.assert_allclose(d["inh"][:, 0], [0.0, -3.0, 0.0])
    np.testing.assert_allclose(d["inh"][:, 1], [-1.0, -1.0, -1.0])
    # unit 0 fires at E = 2 and 1 (median 1.5); on sample 1 E = 2 >= 1.5
    np.testing.assert_array_equal(d["inhibited"][:, 0], [False, True, False])
    assert d["underdriven"][:, 1].all()
    # unit 1's weight drive is 0: silent, but not by the bias alone
    assert not d["by_bias"].any()
    np.testing.assert_array_equal(d["silent"][:, 1], True)


def test_normalisation_counterfactual():
    w = np.array([[1.0, 0.0]], dtype=np.float32)
    b = np.array([-0.5], dtype=np.float32)
    x = np.array([[3.0, 4.0]], dtype=np.float32)  # norm 5
    d = layer_drives(x, w, b, normalized=True)
    # normalised: 3/5 - 0.5 > 0 active; raw: 3 - 0.5, active as well
    assert d["exc"][0, 0] + d["inh"][0, 0] == pytest.approx(3 / 5 - 0.5)
    assert d["active_other"][0, 0]
    d = layer_drives(x, w, np.array([-1.0], np.float32), normalized=True)
    # 3/5 - 1 < 0: silenced by the bias, which the raw input would overcome
    assert d["by_bias"][0, 0] and d["active_other"][0, 0]
    assert d["input_norm"][0] == pytest.approx(5)


@pytest.mark.parametrize("algorithm", ["ff", "bp"])
def test_inhibition_tables_reproduce_the_recorded_activations(algorithm):
    torch.manual_seed(0)
    run = run_config(algorithm, hidden_units=[20, 20])
    net = build_model(algorithm, DATASETS["fashion_mnist"], run)
    x = torch.randn(60, 784)
    y = torch.arange(60) % 10
    hidden = hidden_activations(net, run, x, y)
    prediction = y.clone()
    prediction[:10] = (prediction[:10] + 1) % 10
    ds = build_dataset(hidden, y.numpy(), prediction.numpy(), run, "cpu")
    layers, units = inhibition_tables(net, run, x, ds, "correct", 0.5)
    assert list(layers.layer) == [1, 2]
    assert (layers.n_samples == 50).all()
    for i, h in enumerate(hidden):
        assert layers.active_fraction[i] == pytest.approx((h[10:] > 0).mean(), abs=1e-6)
    total = (
        layers.active_fraction
        + layers.silent_inhibited_fraction
        + layers.silent_underdriven_fraction
    )
    np.testing.assert_allclose(total, 1.0)
    assert set(units.columns) >= {"excitatory_drive", "inhibitory_drive", "bias"}
    assert (units.excitatory_drive >= 0).all() and (units.inhibitory_drive <= 0).all()
    expected = "l2" if algorithm == "ff" else "none"
    assert (layers.input_normalization == expected).all()
