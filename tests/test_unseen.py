"""Held-out categories: the nearest-ensemble rule and the per-run tables."""

import numpy as np
import pytest

from ffrep.config import load_config
from ffrep.unseen import (
    nearest_ensemble_accuracy,
    run_unseen,
    unseen_algorithms,
    unseen_problems,
    unseen_run,
)

from analysis_data import activations, write_file

REPO_CONFIG = "config/test.yaml"


def test_nearest_ensemble_separates_distinct_ensembles():
    x, labels = activations()
    assert nearest_ensemble_accuracy(x, labels, [3, 7, 9], 2.0) == 1.0


def test_nearest_ensemble_is_at_chance_without_ensembles():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    x = rng.random((labels.size, 40))
    acc = nearest_ensemble_accuracy(x, labels, [1, 2], 2.0)
    assert acc == pytest.approx(0.5, abs=0.1)


def test_nearest_ensemble_needs_two_classes():
    x, labels = activations()
    assert np.isnan(nearest_ensemble_accuracy(x, labels, [3], 2.0))


def test_run_unseen_tables(tmp_path):
    # every sample of class 0 misclassified: it still counts, being held out
    path = write_file(tmp_path / "u.nc", wrong=40, held_out_classes=[0, 6])
    classes, layers = run_unseen(path, [0, 6], 2.0, "correct")
    held = classes[(classes.layer == 1) & classes.held_out]
    assert set(held.label) == {0, 6}
    assert (held.n_samples == 40).all()
    assert (held.ensemble_size == 7).all()
    # the shared units 50 and 51 are the overlap of the two held-out ensembles,
    # not of seen ones; class 2 and 4 share unit 52 among the seen classes
    assert (held.mean_overlap_with_seen == 0).all()
    assert (held.units_in_no_seen_ensemble == 7).all()
    layer = layers.iloc[0]
    assert layer.nearest_ensemble_accuracy_held_out == 1.0
    assert layer.chance_held_out == 0.5
    assert layer.variant == "unseen"


def test_unseen_config_is_checked_and_resolved():
    config = load_config(
        REPO_CONFIG,
        {
            "analysis": {
                "unseen": {"held_out_classes": [2, 4], "label_input": "true_label"}
            }
        },
    )
    assert unseen_problems(config) == []
    run = unseen_run(config, "fashion_mnist", "ff", "tiny", 0)
    assert run.held_out_classes == [2, 4]
    # the label input is the recording's: the unseen_activations rule passes it
    assert "label_input" not in run.training_json()
    # a grid narrowed to BP keeps the variant's BP runs only, and says so
    config["grid"]["algorithms"] = ["bp"]
    config["analysis"]["unseen"]["algorithms"] = ["ff", "bp"]
    assert unseen_algorithms(config) == (["bp"], ["ff"])
    assert unseen_problems(config) == []
    config["grid"]["algorithms"] = ["ff", "bp"]
    config["forward_forward"]["held_out_classes"] = [1]
    assert unseen_problems(config)
    config["forward_forward"]["held_out_classes"] = []
    config["analysis"]["unseen"]["held_out_classes"] = list(range(9))
    assert unseen_problems(config)


def test_unseen_label_input_is_validated():
    from ffrep.config import ConfigError

    with pytest.raises(ConfigError, match="label_input"):
        load_config(REPO_CONFIG, {"analysis": {"unseen": {"label_input": "each"}}})
