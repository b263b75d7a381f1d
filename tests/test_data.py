import numpy as np
import pytest
import torch
import torchvision

from ffrep.data import DataError, load, prepare, stage_idx
from ffrep.datasets import DATASETS

from helpers import FASHION_MNIST, write_idx

FMNIST = DATASETS["fashion_mnist"]


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_matches_torchvision_transforms(tmp_path):
    out = prepare(
        "fashion_mnist",
        root=tmp_path / "root",
        out=tmp_path / "fmnist.pt",
        mean=FMNIST.mean,
        std=FMNIST.std,
        download=False,
        local_raw=FASHION_MNIST,
    )
    splits = load(out)
    assert splits.x_train.shape == (60_000, 784)
    assert splits.x_test.shape == (10_000, 784)
    assert splits.x_train.dtype == torch.float32
    assert torch.bincount(splits.y_train).tolist() == [6000] * 10
    assert torch.bincount(splits.y_test).tolist() == [1000] * 10
    # the paper's per-sample transforms give the same numbers, to the bit
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(FMNIST.mean, FMNIST.std),
        ]
    )
    reference = torchvision.datasets.FashionMNIST(
        tmp_path / "root", train=False, transform=transform
    )
    for i in (0, 1, 4321, 9999):
        image, label = reference[i]
        assert torch.equal(image.flatten(), splits.x_test[i])
        assert label == splits.y_test[i]


def test_local_idx_files_are_checked_and_staged(tmp_path):
    source = write_idx(tmp_path / "raw", n_train=60, n_test=10)
    with pytest.raises(DataError, match=r"shape \(60, 28, 28\), expected"):
        stage_idx(source, tmp_path / "staged", FMNIST)
    small = FMNIST.__class__(**{**FMNIST.__dict__, "n_train": 60, "n_test": 10})
    stage_idx(source, tmp_path / "staged", small)
    staged = tmp_path / "staged" / "train-images-idx3-ubyte"
    assert staged.stat().st_size == 16 + 60 * 784


def test_prepare_refuses_a_folder_without_the_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        prepare(
            "fashion_mnist",
            tmp_path / "root",
            tmp_path / "x.pt",
            FMNIST.mean,
            FMNIST.std,
            download=False,
            local_raw=tmp_path / "empty",
        )
    assert not (tmp_path / "x.pt").exists()


def test_load_keeps_the_first_samples(prepared):
    full = load(prepared)
    cut = load(prepared, max_train=100, max_test=7)
    assert cut.x_train.shape == (100, 784) and cut.y_test.shape == (7,)
    np.testing.assert_array_equal(cut.x_train.numpy(), full.x_train[:100].numpy())
