import json

import numpy as np
import pytest
import xarray as xr

from ffrep.activations import (
    ActivationFileError,
    build_dataset,
    extract,
    layer_arrays,
    open_activations,
    write,
)
from ffrep.train import train_run

from helpers import small_run


def _dataset(widths):
    rng = np.random.default_rng(0)
    hidden = [
        np.maximum(rng.normal(size=(50, w)), 0).astype(np.float32) for w in widths
    ]
    labels = rng.integers(0, 10, 50)
    prediction = np.where(rng.random(50) < 0.8, labels, (labels + 1) % 10)
    return hidden, build_dataset(hidden, labels, prediction, small_run("ff"), "cpu")


def test_netcdf_round_trip_keeps_dims_coords_attrs_and_zeros(tmp_path):
    hidden, ds = _dataset([16, 16, 16])
    write(ds, tmp_path / "a.nc")
    back = open_activations(tmp_path / "a.nc")
    assert back["activation"].dims == ("sample", "layer", "unit")
    assert back["activation"].dtype == np.float32
    assert back["layer"].values.tolist() == [1, 2, 3]
    for name in ("label", "prediction", "correct"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    for layer, da in layer_arrays(back):
        np.testing.assert_array_equal(da.values, hidden[layer - 1])  # exact zeros too
    assert (back["activation"].values == 0).sum() == sum((h == 0).sum() for h in hidden)
    for key in ("dataset", "algorithm", "architecture", "seed", "git_commit"):
        assert back.attrs[key] == ds.attrs[key]
    assert json.loads(back.attrs["config"])["algorithm"] == "ff"
    assert "torch" in json.loads(back.attrs["versions"])
    assert back["activation"].encoding["zlib"] is True
    back.close()


def test_layers_of_different_widths_get_a_variable_each(tmp_path):
    hidden, ds = _dataset([16, 8])
    write(ds, tmp_path / "b.nc")
    back = open_activations(tmp_path / "b.nc")
    assert set(back.data_vars) == {"layer1", "layer2"}
    shapes = [da.shape for _, da in layer_arrays(back)]
    assert shapes == [(50, 16), (50, 8)]
    back.close()


def test_incomplete_file_is_refused(tmp_path):
    xr.Dataset({"x": ("a", np.zeros(3))}).to_netcdf(tmp_path / "c.nc")
    with pytest.raises(ActivationFileError, match="incomplete"):
        open_activations(tmp_path / "c.nc")
    (tmp_path / "d.nc").write_bytes(b"not netcdf")
    with pytest.raises(ActivationFileError, match="unreadable"):
        open_activations(tmp_path / "d.nc")


@pytest.mark.parametrize("algorithm", ["ff", "bp"])
def test_extract_records_the_test_set(tmp_path, prepared, algorithm):
    run = small_run(algorithm, epochs=1)
    train_run(run, prepared, tmp_path / "m.pt", tmp_path / "m.json")
    ds = extract(tmp_path / "m.pt", prepared, tmp_path / "act.nc")
    back = open_activations(tmp_path / "act.nc")
    assert back.sizes["sample"] == 200 and back.sizes["unit"] == 32
    assert back.attrs["label_input"] == ("none" if algorithm == "bp" else "true_label")
    assert float(back.attrs["accuracy"]) == pytest.approx(back["correct"].values.mean())
    assert (back["activation"].values >= 0).all()
    assert ds.attrs["seed"] == 0
    back.close()
