"""Load and validate a workflow config, and resolve it into one run's settings.

The JSON schema (``workflow/schemas/config.schema.yaml``) checks types, allowed
values and unknown keys and fills in defaults; :func:`validate_config` then
checks what a schema cannot express, such as a grid naming an architecture
that is not defined.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ffrep.datasets import DATASETS, N_CLASSES
from ffrep.errors import FFrepError

ALGORITHMS = ("ff", "bp_ff", "bp")


class ConfigError(FFrepError, ValueError):
    """A config that cannot be run; the message names the key and the fix."""


def _schema() -> dict[str, Any]:
    text = resources.files("ffrep").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that it fills in ``default`` values."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_TYPE_WORDS = {
    "array": "a list",
    "boolean": "true or false",
    "integer": "an integer",
    "null": "null",
    "number": "a number",
    "object": "a mapping",
    "string": "a string",
}


def _resolve(sub: Any, root: dict) -> dict:
    if isinstance(sub, dict) and "$ref" in sub:
        return _resolve(root["$defs"][sub["$ref"].rsplit("/", 1)[-1]], root)
    return sub if isinstance(sub, dict) else {}


def _form(sub: Any, root: dict) -> str:
    """One allowed form of a value, in words."""
    sub = _resolve(sub, root)
    if "const" in sub:
        return repr(sub["const"])
    if "enum" in sub:
        return "one of " + ", ".join(map(repr, sub["enum"]))
    kind = sub.get("type")
    if kind == "array":
        items = _form(sub.get("items", {}), root)
        least = sub.get("minItems", 0)
        size = {0: "a list", 1: "a non-empty list"}.get(
            least, f"a list of at least {least} items"
        )
        return f"{size}, each {items}"
    if kind == "object":
        keys = ", ".join(sorted(sub.get("properties", {})))
        return f"a mapping with keys among {keys}" if keys else "a mapping"
    words = " or ".join(_TYPE_WORDS.get(k, k) for k in _types(kind))
    if "minimum" in sub and "maximum" in sub:
        return f"{words} from {sub['minimum']} to {sub['maximum']}"
    bounds = (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    )
    words += "".join(f" {op} {sub[b]}" for b, op in bounds if b in sub)
    return words or "a value"


def _types(kind: Any) -> list[str]:
    """The ``type`` of a schema as a list."""
    return [kind] if isinstance(kind, str) else list(kind or [])


def _looks_like_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _describe(error: jsonschema.ValidationError, root: dict) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "enum":
        allowed = ", ".join(map(repr, schema["enum"]))
        return f"{key}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "oneOf":
        forms = " | ".join(_form(sub, root) for sub in schema["oneOf"])
        return f"{key}: {error.instance!r} is not allowed; allowed forms: {forms}"
    if error.validator == "pattern" and error.validator_value == NAME_PATTERN:
        return (
            f"{key}: {error.instance!r} is not an allowed name; allowed: 1 to 64"
            " letters, digits, '_' or '-', starting with a letter or a digit"
        )
    if error.validator == "type":
        hint = ""
        kinds = set(_types(schema.get("type")))
        braces = (
            "Snakemake's --config reads the values inside braces as text: set it"
            " in a file given with --configfile"
        )
        if "boolean" in kinds and str(error.instance).lower() in ("true", "false"):
            hint = f"; {braces}"
        elif kinds & {"number", "integer"} and _looks_like_number(error.instance):
            hint = (
                "; YAML reads numbers such as 1e-2 as text: write 1.0e-2, with a"
                f" dot and a signed exponent; and {braces}"
            )
        return (
            f"{key}: {error.instance!r} is not allowed; allowed:"
            f" {_form(schema, root)}{hint}"
        )
    if error.validator == "uniqueItems":
        seen, repeated = [], []
        for item in error.instance:
            (repeated if item in seen else seen).append(item)
        return (
            f"{key}: {', '.join(map(repr, repeated))} appear(s) more than once;"
            " every entry must be different"
        )
    if error.validator == "pattern" and "description" in schema:
        return f"{key}: {error.instance!r} is not allowed; {schema['description']}"
    return f"{key}: {error.message}; allowed: {_form(schema, root)}"


def _non_finite(value: Any, key: str = "") -> list[str]:
    """Keys whose value is a NaN or infinite number, which no schema refuses."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{key}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{key}.{i}")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key.lstrip('.')}: {value} is not allowed; allowed: finite numbers"]
    return []


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` in place, fill in defaults and return it.

    Raises
    ------
    ConfigError
        Listing every problem found, each with the key it concerns.
    """
    if not isinstance(config, dict):
        raise ConfigError("the config must be a mapping of keys to values")
    schema = _schema()
    errors = sorted(
        _Validator(schema).iter_errors(config),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    problems = [_describe(e, schema) for e in errors] + _non_finite(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def _semantic_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    grid = config["grid"]
    for name in grid["architectures"]:
        if name not in config["architectures"]:
            defined = ", ".join(sorted(config["architectures"]))
            problems.append(
                f"grid.architectures: {name!r} is not defined under 'architectures'"
                f" (defined: {defined})"
            )
            continue
        widths = config["architectures"][name]["hidden_units"]
        if isinstance(widths, dict):
            for dataset in grid["datasets"]:
                if dataset not in widths:
                    problems.append(
                        f"architectures.{name}.hidden_units: no widths for dataset"
                        f" {dataset!r}; add them or give one list for all datasets"
                    )
    hyper = config["training"]["hyperparameters"]
    for algorithm in grid["algorithms"]:
        if algorithm not in hyper:
            problems.append(
                f"training.hyperparameters: no entry for algorithm {algorithm!r},"
                " which the grid runs"
            )
    for dataset, norm in config["data"]["normalization"].items():
        channels = DATASETS[dataset].shape[0]
        for key in ("mean", "std"):
            if len(norm[key]) != channels:
                problems.append(
                    f"data.normalization.{dataset}.{key}: needs {channels} value(s),"
                    f" one per channel, got {len(norm[key])}"
                )
    algorithms = set(config["grid"]["algorithms"])
    if (
        config["training"]["batch_seeds"]
        and config["forward_forward"]["resample_negatives"]
        and algorithms & {"ff", "bp_ff"}
    ):
        problems.append(
            "training.batch_seeds: batched seeds need fixed negatives; set"
            " forward_forward.resample_negatives: false or batch_seeds: false"
        )
    if (
        config["training"]["batch_seeds"]
        and config["training"]["ff_deeper_inputs"] == "recomputed"
        and "ff" in algorithms
    ):
        # TODO(batched recompute): rebuild the stacked seeds' inputs per batch
        problems.append(
            "training.batch_seeds: batched seeds keep their deeper inputs stored;"
            " set training.ff_deeper_inputs: stored or batch_seeds: false"
        )
    held_out = config["forward_forward"]["held_out_classes"]
    if len(held_out) > N_CLASSES - 2:
        problems.append(
            "forward_forward.held_out_classes: at least two classes must stay in"
            f" training; {len(held_out)} of {N_CLASSES} are held out"
        )
    return problems


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Read a YAML config, apply ``overrides`` (nested keys merged) and validate."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if overrides:
        config = merge(config or {}, overrides)
    return validate_config(config)


def merge(base: dict, update: dict) -> dict:
    """Merge ``update`` into a copy of ``base``, recursing into mappings."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Settings of a run that only the recording of its activations reads. The
# training rules leave them out of the settings they pass (and Snakemake
# compares), so that changing one records the activations again without
# training again; the activations rules pass them on their own.
RECORDING_FIELDS = ("label_input", "compression_level")
# Settings that leave the trained weights as they are (recording, evaluation,
# scheduling): a checkpoint is resumed across changes to them.
NOT_TRAINED_FIELDS = (
    *RECORDING_FIELDS,
    "max_test_samples",
    "prediction",
    "num_threads",
    "checkpoint_every_epochs",
)


@dataclass
class RunConfig:
    """Everything one training run depends on, resolved from the config."""

    dataset: str
    algorithm: str
    architecture: str
    seed: int
    hidden_units: list[int]
    learning_rate: float
    epochs: int
    batch_size: int
    threshold: float = 3.0
    goodness: str = "l2_norm"
    input_normalization: str = "l2"
    label_value: float | str = "data_max"
    negative_sampling: str = "paper"
    resample_negatives: bool = False
    prediction: str = "softmax_sum"
    held_out_classes: list[int] = field(default_factory=list)
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    device: str = "auto"
    deterministic: bool = True
    num_threads: int | None = None
    checkpoint_every_epochs: int = 10
    precision: str = "fp32"
    ff_deeper_inputs: str = "stored"
    label_input: str = "true_label"
    compression_level: int = 4

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.algorithm}/{self.architecture}/seed{self.seed}"

    def to_json(self, without: tuple[str, ...] = ()) -> str:
        """The settings as JSON, less the fields ``without``."""
        fields = {k: v for k, v in asdict(self).items() if k not in without}
        return json.dumps(fields, sort_keys=True)

    def training_json(self) -> str:
        """The settings a training job reads (all but the recording ones)."""
        return self.to_json(without=RECORDING_FIELDS)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))


def resolve_run(
    config: dict[str, Any], dataset: str, algorithm: str, architecture: str, seed: int
) -> RunConfig:
    """The settings of one run of the grid of a validated ``config``."""
    widths = config["architectures"][architecture]["hidden_units"]
    if isinstance(widths, dict):
        widths = widths[dataset]
    table = config["training"]["hyperparameters"][algorithm]
    hyper = {**table["default"], **table.get(dataset, {})}
    ff = config["forward_forward"]
    training = config["training"]
    return RunConfig(
        dataset=dataset,
        algorithm=algorithm,
        architecture=architecture,
        seed=int(seed),
        hidden_units=list(widths),
        learning_rate=float(hyper["learning_rate"]),
        epochs=int(hyper["epochs"]),
        batch_size=int(hyper["batch_size"]),
        threshold=float(ff["threshold"]),
        goodness=ff["goodness"],
        input_normalization=ff["input_normalization"],
        label_value=ff["label_value"],
        negative_sampling=ff["negative_sampling"],
        resample_negatives=ff["resample_negatives"],
        prediction=ff["prediction"],
        held_out_classes=list(ff["held_out_classes"]),
        max_train_samples=config["data"]["max_train_samples"],
        max_test_samples=config["data"]["max_test_samples"],
        device=training["device"],
        deterministic=training["deterministic"],
        num_threads=training["num_threads"],
        checkpoint_every_epochs=training["checkpoint_every_epochs"],
        precision=training["precision"],
        ff_deeper_inputs=training["ff_deeper_inputs"],
        label_input=config["activations"]["label_input"],
        compression_level=config["activations"]["compression_level"],
    )


def normalization(config: dict[str, Any], dataset: str) -> tuple[list, list]:
    """Mean and std per channel for ``dataset``: the config's, else the paper's."""
    norm = config["data"]["normalization"].get(dataset)
    if norm:
        return list(norm["mean"]), list(norm["std"])
    info = DATASETS[dataset]
    return list(info.mean), list(info.std)


def grid_runs(config: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every (dataset, algorithm, architecture, seed) of the grid."""
    g = config["grid"]
    return [
        (d, a, arch, s)
        for d in g["datasets"]
        for a in g["algorithms"]
        for arch in g["architectures"]
        for s in g["seeds"]
    ]
