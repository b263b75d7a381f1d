import pytest

from ffrep.config import ConfigError, grid_runs, load_config, resolve_run

from helpers import REPO


def test_default_config_is_the_paper_grid():
    config = load_config(REPO / "config" / "config.yaml")
    assert len(grid_runs(config)) == 4 * 3 * 1 * 10
    run = resolve_run(config, "mnist", "ff", "paper", 3)
    assert (run.learning_rate, run.epochs, run.batch_size) == (1e-2, 1200, 1024)
    assert run.hidden_units == [1000, 1000, 1000]
    assert (run.threshold, run.goodness, run.input_normalization) == (
        3.0,
        "l2_norm",
        "l2",
    )
    assert run.label_value == "data_max" and run.negative_sampling == "paper"
    assert not run.resample_negatives and run.prediction == "softmax_sum"
    expected = {
        ("fashion_mnist", "ff"): (1e-2, 100, 1024),
        ("svhn", "ff"): (1e-4, 1000, 1024),
        ("cifar10", "ff"): (1e-4, 1000, 1024),
        ("mnist", "bp_ff"): (1e-4, 300, 1024),
        ("fashion_mnist", "bp_ff"): (1e-4, 300, 1024),
        ("svhn", "bp_ff"): (1e-4, 200, 1024),
        ("cifar10", "bp_ff"): (1e-4, 200, 1024),
        ("mnist", "bp"): (1e-4, 80, 2048),
        ("cifar10", "bp"): (1e-4, 80, 2048),
    }
    for (dataset, algorithm), hyper in expected.items():
        run = resolve_run(config, dataset, algorithm, "paper", 0)
        assert (run.learning_rate, run.epochs, run.batch_size) == hyper
    assert resolve_run(config, "svhn", "bp", "paper", 0).hidden_units == [3072] * 3


@pytest.mark.parametrize("name", ["demo.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    load_config(REPO / "config" / name)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"training: unknown key\(s\) 'epochz'"):
        load_config(REPO / "config" / "test.yaml", {"training": {"epochz": 3}})


def test_wrong_value_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"forward_forward.goodness: .*'l2_norm'"):
        load_config(
            REPO / "config" / "test.yaml", {"forward_forward": {"goodness": "cube"}}
        )
