import json

import pytest
import torch

from ffrep.train import TrainingDiverged, load_model, train_run

from helpers import small_run


def _train(tmp_path, prepared, run, name="run"):
    out = tmp_path / name
    metrics = train_run(
        run, prepared, out / "model.pt", out / "metrics.json", out / "ckpt.pt"
    )
    return metrics, out


@pytest.mark.parametrize("algorithm", ["ff", "bp_ff", "bp"])
def test_each_algorithm_beats_chance_clearly(tmp_path, prepared, algorithm):
    metrics, out = _train(tmp_path, prepared, small_run(algorithm))
    assert metrics["test_accuracy"] > 0.5, metrics["test_accuracy"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert saved["device"] == "cpu" and saved["wall_time_s"] > 0
    assert not (out / "ckpt.pt").exists()  # removed once the run is complete
    net, run = load_model(out / "model.pt")
    assert run.algorithm == algorithm and len(net.layers) == 3


@pytest.mark.parametrize("algorithm", ["ff", "bp"])
def test_same_seed_same_weights_other_seed_differs(tmp_path, prepared, algorithm):
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        _, out = _train(tmp_path, prepared, small_run(algorithm, seed=seed), name)
        weights.append(torch.load(out / "model.pt", weights_only=True)["state_dict"])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    assert not torch.equal(weights[0]["layers.0.weight"], weights[2]["layers.0.weight"])


def test_uniform_and_resampled_negatives_train(tmp_path, prepared):
    run = small_run("ff", negative_sampling="uniform", resample_negatives=True)
    metrics, _ = _train(tmp_path, prepared, run)
    assert metrics["test_accuracy"] > 0.5


def test_held_out_classes_are_not_trained_on(tmp_path, prepared):
    metrics, _ = _train(tmp_path, prepared, small_run("ff", held_out_classes=[3, 7]))
    assert metrics["n_train"] == pytest.approx(600 * 0.8, abs=30)


def test_divergence_names_layer_and_epoch(tmp_path, prepared):
    run = small_run("ff", learning_rate=1e30, threshold=1e30)
    with pytest.raises(TrainingDiverged, match=r"layer 1, epoch 1"):
        _train(tmp_path, prepared, run)
    assert not (tmp_path / "run" / "model.pt").exists()
