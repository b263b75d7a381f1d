"""Damaged, missing or half-downloaded data: a clear error, nothing kept."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
import torchvision.datasets.utils as tv_utils

from ffrep import data

from fakedata import (
    IDX_NAMES,
    files_under,
    idx_bytes,
    images_and_labels,
    shrink,
    write_idx_folder,
    write_prepared,
)

MEAN, STD = [0.1307], [0.3081]
GOOD_COPY = "point data.local_raw.fashion_mnist at a folder with a good copy"


@pytest.fixture
def small(monkeypatch):
    return shrink(monkeypatch)


def prepare(tmp_path, local_raw=None, download=False):
    root, out = tmp_path / "root", tmp_path / "root" / "prepared" / "fm.pt"
    data.prepare("fashion_mnist", root, out, MEAN, STD, download, local_raw)
    return out


def assert_nothing_prepared(tmp_path):
    assert not (tmp_path / "root" / "prepared" / "fm.pt").exists()
    assert not [p for p in (tmp_path / "root").rglob("*.tmp")]


def test_synthetic_raw_files_prepare(tmp_path, small):
    out = prepare(tmp_path, write_idx_folder(tmp_path / "raw"))
    splits = data.load(out)
    assert splits.x_train.shape == (small.n_train, 784)
    assert splits.y_test.max() <= 9


def test_local_raw_not_a_folder(tmp_path, small):
    with pytest.raises(data.DataError, match="data.local_raw.fashion_mnist: .* is not"):
        prepare(tmp_path, tmp_path / "nowhere")
    assert_nothing_prepared(tmp_path)


def test_missing_raw_file(tmp_path, small):
    raw = write_idx_folder(tmp_path / "raw")
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="neither t10k-labels-idx1-ubyte nor"):
        prepare(tmp_path, raw)
    assert_nothing_prepared(tmp_path)


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _corrupt(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(range(64))
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    "damage, gz",
    [(_truncate, True), (_truncate, False), (_corrupt, True)],
    ids=["truncated_gz", "truncated_raw", "corrupted_gz"],
)
def test_damaged_raw_file_is_named(tmp_path, small, damage, gz):
    raw = write_idx_folder(tmp_path / "raw", gz=gz)
    name = IDX_NAMES["train_images"] + (".gz" if gz else "")
    damage(raw / name)
    with pytest.raises(data.DataError) as err:
        prepare(tmp_path, raw)
    message = str(err.value)
    assert str(raw / name) in message
    assert "truncated or damaged" in message and GOOD_COPY in message
    assert_nothing_prepared(tmp_path)


def _replace(raw: Path, key: str, array: np.ndarray) -> Path:
    path = raw / f"{IDX_NAMES[key]}.gz"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def test_wrong_image_count(tmp_path, small):
    raw = write_idx_folder(tmp_path / "raw")
    images, _ = images_and_labels(small.n_train - 1, 0)
    path = _replace(raw, "train_images", images)
    with pytest.raises(data.DataError, match="expected") as err:
        prepare(tmp_path, raw)
    assert str(path) in str(err.value) and GOOD_COPY in str(err.value)
    assert f"({small.n_train - 1}, 28, 28)" in str(err.value)


def test_wrong_image_shape(tmp_path, small):
    raw = write_idx_folder(tmp_path / "raw")
    path = _replace(raw, "test_images", np.zeros((small.n_test, 32, 32)))
    with pytest.raises(data.DataError, match="shape") as err:
        prepare(tmp_path, raw)
    assert str(path) in str(err.value) and "(40, 28, 28)" in str(err.value)


def test_labels_swapped_for_images(tmp_path, small):
    raw = write_idx_folder(tmp_path / "raw")
    _, labels = images_and_labels(small.n_train, 0)
    path = _replace(raw, "train_images", labels)
    with pytest.raises(data.DataError, match="magic number 2049, expected 2051") as e:
        prepare(tmp_path, raw)
    assert str(path) in str(e.value)


def test_label_out_of_range_names_the_file(tmp_path, small):
    raw = write_idx_folder(tmp_path / "raw")
    _, labels = images_and_labels(small.n_test, 1)
    labels[3] = 12
    path = _replace(raw, "test_labels", labels)
    with pytest.raises(data.DataError, match="holds label 12, outside 0..9") as err:
        prepare(tmp_path, raw)
    assert str(path) in str(err.value) and GOOD_COPY in str(err.value)
    assert_nothing_prepared(tmp_path)


def test_damaged_file_already_in_torchvision_folder(tmp_path, small):
    """Raw files left in the data root are checked, not trusted because they exist."""
    staged = tmp_path / "root" / "FashionMNIST" / "raw"
    prepare(tmp_path, write_idx_folder(tmp_path / "raw"))
    victim = staged / IDX_NAMES["train_labels"]
    _truncate(victim, 0.9)
    with pytest.raises(data.DataError, match="truncated or damaged") as err:
        prepare(tmp_path)
    assert str(victim) in str(err.value)


# --- downloads (simulated: nothing leaves this machine) ---------------------


@pytest.fixture
def offline_download(monkeypatch, tmp_path):
    """torchvision downloads served from a local fake folder; ``fail_after``
    files succeed, then one is written half and the connection drops."""
    source = write_idx_folder(tmp_path / "server")
    state = {"fail_after": 0, "calls": 0}

    def fake_urlretrieve(url, filename, chunk_size=None):
        payload = (source / os.path.basename(url)).read_bytes()
        state["calls"] += 1
        if state["calls"] > state["fail_after"]:
            Path(filename).write_bytes(payload[: len(payload) // 3])
            raise URLError("simulated: connection reset")
        Path(filename).write_bytes(payload)

    monkeypatch.setattr(tv_utils, "_urlretrieve", fake_urlretrieve)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    # never a real address, even if the fake were bypassed
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    # the fake files have their own checksums
    resources = [(name, None) for name, _ in tvd.FashionMNIST.resources]
    monkeypatch.setattr(tvd.FashionMNIST, "resources", resources)
    return state


@pytest.mark.parametrize("fail_after", [0, 1, 3])
def test_failed_download_leaves_nothing_complete(
    tmp_path, small, offline_download, fail_after
):
    offline_download["fail_after"] = fail_after
    with pytest.raises(
        data.DataError, match="downloading fashion_mnist .* failed"
    ) as e:
        prepare(tmp_path, download=True)
    assert "simulated: connection reset" in str(e.value)
    assert offline_download["calls"] == fail_after + 1
    root = tmp_path / "root"
    assert files_under(root) == []
    assert not [p for p in root.iterdir() if p.name.startswith(".download-")]
    # a later run without a network sees no data, rather than half of it
    with pytest.raises(data.DataError, match="raw files not found"):
        prepare(tmp_path, download=False)


def test_download_then_prepare(tmp_path, small, offline_download):
    offline_download["fail_after"] = 99
    out = prepare(tmp_path, download=True)
    assert data.load(out).y_train.shape == (small.n_train,)


def test_no_download_no_data(tmp_path, small):
    with pytest.raises(data.DataError, match="set data.download: true"):
        prepare(tmp_path, download=False)


# --- the prepared file -------------------------------------------------------


@pytest.fixture
def prepared(tmp_path, small):
    return write_prepared(tmp_path / "prepared.pt")


def test_prepared_missing(tmp_path):
    with pytest.raises(data.DataError, match="not found; run the workflow's data"):
        data.load(tmp_path / "absent.pt")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.95])
def test_prepared_truncated(prepared, keep):
    _truncate(prepared, keep)
    with pytest.raises(data.DataError, match="cannot be read .* delete it"):
        data.load(prepared)


def test_prepared_garbage(prepared):
    prepared.write_bytes(os.urandom(4096))
    with pytest.raises(data.DataError, match="cannot be read"):
        data.load(prepared)


def _resave(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda p: p.pop("x_test"), "lacks x_test"),
        (lambda p: p.update(dataset="imagenet"), "not a prepared ffrep dataset"),
        (lambda p: p["y_train"].__setitem__(0, 11), "labels span 0..11"),
        (lambda p: p["x_train"].__setitem__((1, 5), float("nan")), "NaN or inf"),
        (lambda p: p.update(x_test=p["x_test"][:-1]), "images have shape (39, 784)"),
    ],
    ids=["missing_split", "wrong_dataset", "label_range", "nan", "short_split"],
)
def test_prepared_wrong_content(prepared, change, fragment):
    _resave(prepared, change)
    with pytest.raises(data.DataError) as err:
        data.load(prepared)
    assert fragment in str(err.value) and str(prepared) in str(err.value)


def test_prepared_not_a_mapping(tmp_path, small):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(data.DataError, match="not a prepared ffrep dataset"):
        data.load(path)


def test_folder_or_model_file_given_as_prepared_data(tmp_path):
    with pytest.raises(data.DataError, match="a folder, not a prepared data file"):
        data.load(tmp_path)
    model = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "run": "{}"}, model)
    with pytest.raises(data.DataError, match="not a prepared ffrep dataset file"):
        data.load(model)
