"""What ffrep knows about each dataset: sizes, shapes, classes and normalisation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: str
    shape: tuple[int, int, int]  # (C, H, W)
    n_train: int
    n_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def n_inputs(self) -> int:
        c, h, w = self.shape
        return c * h * w


_DIGITS = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        torchvision_class="MNIST",
        shape=(1, 28, 28),
        n_train=60_000,
        n_test=10_000,
        mean=(0.1307,),
        std=(0.3081,),
        classes=_DIGITS,
    ),
    # The authors reuse the MNIST constants for Fashion-MNIST.
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        torchvision_class="FashionMNIST",
        shape=(1, 28, 28),
        n_train=60_000,
        n_test=10_000,
        mean=(0.1307,),
        std=(0.3081,),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "svhn": DatasetInfo(
        name="svhn",
        torchvision_class="SVHN",
        shape=(3, 32, 32),
        n_train=73_257,
        n_test=26_032,
        mean=(0.4376821, 0.4437697, 0.47280442),
        std=(0.19803012, 0.20101562, 0.19703614),
        classes=_DIGITS,
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        torchvision_class="CIFAR10",
        shape=(3, 32, 32),
        n_train=50_000,
        n_test=10_000,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
    ),
}

N_CLASSES = 10
