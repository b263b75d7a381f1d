"""Bad configs fail when the workflow is parsed, naming the key and the fix."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ffrep.config import NAME_PATTERN, ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
HYPER = ("training", "hyperparameters")


def put(*keys_and_value):
    """A change to a config: set the value at the nested keys."""
    *keys, value = keys_and_value

    def change(config):
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


def drop(*keys):
    def change(config):
        node = config
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def ff_default(key, value):
    return put(*HYPER, "ff", "default", key, value)


# (id, change, fragments the message must hold: the key, then the allowed values)
BAD_CONFIGS = [
    ("unknown_top_key", put("colour", "red"), ["unknown key(s) 'colour'", "grid"]),
    (
        "unknown_nested_key",
        put("training", "learning_rate", 0.1),
        ["training: unknown key(s) 'learning_rate'", "hyperparameters"],
    ),
    (
        "misspelled_hyperparameter",
        ff_default("epoch", 3),
        ["training.hyperparameters.ff.default: unknown key(s) 'epoch'", "epochs"],
    ),
    ("seeds_not_a_list", put("grid", "seeds", "0"), ["grid.seeds", "a non-empty list"]),
    ("epochs_fractional", ff_default("epochs", 2.5), ["epochs", "an integer"]),
    (
        "learning_rate_read_as_text",
        ff_default("learning_rate", "1e-2"),
        ["learning_rate", "a number", "1.0e-2"],
    ),
    (
        "boolean_read_as_text",
        put("training", "batch_seeds", "true"),
        ["training.batch_seeds", "true or false", "--configfile"],
    ),
    (
        "empty_datasets",
        put("grid", "datasets", []),
        ["grid.datasets", "a non-empty list"],
    ),
    ("empty_seeds", put("grid", "seeds", []), ["grid.seeds", "a non-empty list"]),
    (
        "empty_algorithms",
        put("grid", "algorithms", []),
        ["grid.algorithms", "a non-empty list"],
    ),
    (
        "unknown_dataset",
        put("grid", "datasets", ["imagenet"]),
        ["grid.datasets.0", "'imagenet'", "'mnist', 'fashion_mnist', 'svhn'"],
    ),
    (
        "unknown_algorithm",
        put("grid", "algorithms", ["ff", "sgd"]),
        ["grid.algorithms.1", "'sgd'", "'ff', 'bp_ff', 'bp'"],
    ),
    ("negative_learning_rate", ff_default("learning_rate", -0.1), ["rate", "> 0"]),
    ("zero_learning_rate", ff_default("learning_rate", 0), ["learning_rate", "> 0"]),
    (
        "nan_learning_rate",
        ff_default("learning_rate", float("nan")),
        ["training.hyperparameters.ff.default.learning_rate: nan", "finite"],
    ),
    (
        "infinite_threshold",
        put("forward_forward", "threshold", float("inf")),
        ["forward_forward.threshold: inf", "finite"],
    ),
    ("zero_epochs", ff_default("epochs", 0), ["ff.default.epochs", ">= 1"]),
    ("negative_batch", ff_default("batch_size", -8), ["batch_size", ">= 1"]),
    (
        "zero_width_layer",
        put("architectures", "tiny", "hidden_units", [64, 0, 64]),
        ["architectures.tiny.hidden_units", "integer >= 1"],
    ),
    (
        "architecture_without_layers",
        put("architectures", "tiny", "hidden_units", []),
        ["architectures.tiny.hidden_units", "a non-empty list"],
    ),
    (
        "held_out_class_missing",
        put("forward_forward", "held_out_classes", [3, 10]),
        ["forward_forward.held_out_classes.1", "an integer from 0 to 9"],
    ),
    (
        "held_out_all_but_one",
        put("forward_forward", "held_out_classes", list(range(9))),
        ["forward_forward.held_out_classes", "at least two classes"],
    ),
    (
        "repeated_seed",
        put("grid", "seeds", [0, 1, 0]),
        ["grid.seeds", "0 appear(s) more than once"],
    ),
    (
        "negative_seed",
        put("grid", "seeds", [-1]),
        ["grid.seeds.0", "an integer from 0 to"],
    ),
    (
        "boolean_seed",
        put("grid", "seeds", [True]),
        ["grid.seeds.0", "not allowed", "an integer"],
    ),
    (
        "architecture_name_with_semicolon",
        put("grid", "architectures", ["tiny;rm -rf x"]),
        ["grid.architectures.0", "not an allowed name", "letters, digits"],
    ),
    (
        "architecture_name_dotdot",
        put("architectures", "..", {"hidden_units": [4]}),
        ["architectures", "'..' is not an allowed name"],
    ),
    (
        "architecture_name_with_slash_and_space",
        put("grid", "architectures", ["a b/c"]),
        ["grid.architectures.0", "not an allowed name"],
    ),
    (
        "architecture_not_defined",
        put("grid", "architectures", ["wide"]),
        ["grid.architectures: 'wide' is not defined", "defined: tiny"],
    ),
    (
        "widths_missing_for_dataset",
        put("architectures", "tiny", "hidden_units", {"mnist": [8]}),
        ["architectures.tiny.hidden_units: no widths for dataset 'fashion_mnist'"],
    ),
    (
        "hyperparameters_missing_for_algorithm",
        drop(*HYPER, "bp"),
        ["training.hyperparameters: no entry for algorithm 'bp'"],
    ),
    (
        "normalization_channels",
        put("data", "normalization", "fashion_mnist", {"mean": [0, 0], "std": [1, 1]}),
        ["data.normalization.fashion_mnist.mean: needs 1 value"],
    ),
    (
        "normalization_zero_std",
        put("data", "normalization", "mnist", {"mean": [0], "std": [0]}),
        ["data.normalization.mnist.std.0", "> 0"],
    ),
    (
        "unknown_device",
        put("training", "device", "tpu"),
        ["training.device", "'tpu'", "'auto', 'cpu', 'cuda'"],
    ),
    (
        "label_value_word",
        put("forward_forward", "label_value", "max"),
        ["forward_forward.label_value", "'data_max' | a number"],
    ),
    (
        "unknown_goodness",
        put("forward_forward", "goodness", "l1"),
        ["forward_forward.goodness", "'l2_norm', 'sum_of_squares'"],
    ),
    (
        "deterministic_as_text",
        put("training", "deterministic", "yes"),
        ["training.deterministic", "true or false"],
    ),
    (
        "compression_level_too_high",
        put("activations", "compression_level", 10),
        ["activations.compression_level", "maximum of 9"],
    ),
    (
        "zero_max_train_samples",
        put("data", "max_train_samples", 0),
        ["data.max_train_samples", ">= 1"],
    ),
    (
        "data_root_with_braces",
        put("data", "root", "resources/{dataset}"),
        ["data.root", "without '{' or '}'"],
    ),
    ("grid_missing", drop("grid"), ["'grid' is a required property"]),
]

# robust to being merged over config/config.yaml, as `--configfile` does
THROUGH_SNAKEMAKE = [
    "unknown_top_key",
    "unknown_dataset",
    "nan_learning_rate",
    "repeated_seed",
    "architecture_name_with_semicolon",
]


def bad_config(change) -> dict:
    config = copy.deepcopy(BASE)
    change(config)
    return config


def test_base_config_is_valid():
    validate_config(copy.deepcopy(BASE))


def test_table_is_large_and_ids_unique():
    ids = [case[0] for case in BAD_CONFIGS]
    assert len(ids) >= 20 and len(set(ids)) == len(ids)
    assert set(THROUGH_SNAKEMAKE) <= set(ids)


@pytest.mark.parametrize(
    "change, fragments",
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_validate_config_names_key_and_allowed_values(change, fragments):
    with pytest.raises(ConfigError) as err:
        validate_config(bad_config(change))
    for fragment in fragments:
        assert fragment in str(err.value)


def test_every_problem_is_listed_at_once():
    config = bad_config(put("grid", "seeds", [0, 0]))
    put("training", "device", "tpu")(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "grid.seeds" in str(err.value) and "training.device" in str(err.value)


def test_schema_name_pattern_is_the_package_one():
    schema = yaml.safe_load(
        (REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()
    )
    assert schema["$defs"]["name"]["pattern"] == NAME_PATTERN


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("grid: [unclosed", "is not valid YAML"),
        ("", "must be a mapping"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_load_config_bad_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_yaml_tags_are_not_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"grid: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


# --- through Snakemake -------------------------------------------------------


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow's files in a scratch folder, so that nothing lands in the repo."""
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    shutil.copytree(REPO / "workflow", work / "workflow")
    shutil.copytree(REPO / "config", work / "config")
    return work


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_good_config_plans_through_snakemake(tmp_path):
    work = workflow_copy(tmp_path)
    done = snakemake(work, "--configfile", "config/test.yaml")
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout + done.stderr


def test_values_in_braces_of_snakemake_config_get_a_hint(tmp_path):
    # Snakemake reads `--config key={nested: value}` values as text
    work = workflow_copy(tmp_path)
    done = snakemake(work, "--config", "training={batch_seeds: true}")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "training.batch_seeds: 'true' is not allowed" in output
    assert "--configfile" in output


@pytest.mark.parametrize("case_id", THROUGH_SNAKEMAKE)
def test_snakemake_refuses_bad_config_before_any_job(tmp_path, case_id):
    change, fragments = next(c[1:] for c in BAD_CONFIGS if c[0] == case_id)
    work = workflow_copy(tmp_path)
    (work / "bad.yaml").write_text(yaml.safe_dump(bad_config(change)))
    done = snakemake(work, "--configfile", "bad.yaml")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "invalid config" in output
    for fragment in fragments:
        assert fragment in output
    assert "Building DAG of jobs" not in output
    assert not (work / "results").exists()
    assert not (work / "logs").exists()
    assert not (work / "resources").exists()


@pytest.mark.parametrize(
    "target",
    [
        "results/runs/fashion_mnist/ff/tiny;touch PWNED/seed0/model.pt",
        "results/runs/fashion_mnist/ff/../../../../outside/seed0/model.pt",
        "results/activations/fashion_mnist/ff/a b/sub/seed0;id.nc",
        "results/runs/fashion_mnist/ff/tiny/seed007/model.pt",
        "results/runs/fashion_mnist/ff/undefined/seed0/model.pt",
    ],
)
def test_crafted_wildcards_match_no_rule(tmp_path, target):
    work = workflow_copy(tmp_path)
    # the target first: --configfile takes every word after it
    done = snakemake(work, target, "--configfile", "config/test.yaml")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "MissingRuleException" in output or "No rule to produce" in output
    assert not (work / "PWNED").exists()
    assert not (work / "results").exists()


def test_config_paths_reach_the_shell_quoted(tmp_path):
    work = workflow_copy(tmp_path)
    folder = "/data/x'; touch PWNED; echo '"
    config = bad_config(put("data", "local_raw", "fashion_mnist", folder))
    (work / "quoted.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(work, "--printshellcmds", "--configfile", "quoted.yaml")
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if "ffrep prepare-data" in ln)
    words = shlex.split(line)
    assert words[words.index("--local-raw") + 1] == folder
    assert not (work / "PWNED").exists()
