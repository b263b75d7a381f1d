"""Prepare the four datasets through torchvision and load the prepared tensors.

Preparation runs once per dataset, on a host that may reach the internet: it
takes raw files from a local folder when the config names one (Debian's
``dataset-fashion-mnist`` package, a cluster's shared copy), or else lets
torchvision download them. It checks what it reads, applies the paper's
``ToTensor`` + ``Normalize`` and writes one file of flattened, channel-first
float32 tensors. Training jobs only ever read that file.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ffrep.datasets import DATASETS, N_CLASSES, DatasetInfo
from ffrep.io import atomic_path

log = logging.getLogger(__name__)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

GET_A_COPY = (
    "delete it and run the data preparation again with data.download: true on a"
    " host with internet access, or point data.local_raw.{dataset} at a folder"
    " with a good copy of the original files"
)


class DataError(RuntimeError):
    """Raw or prepared data that cannot be used; names the file and the fix."""


@dataclass
class Splits:
    """Prepared data: flattened, normalised images and integer labels."""

    x_train: torch.Tensor  # (N_train, C*H*W) float32
    y_train: torch.Tensor  # (N_train,) int64
    x_test: torch.Tensor  # (N_test, C*H*W) float32
    y_test: torch.Tensor  # (N_test,) int64
    dataset: str

    @property
    def info(self) -> DatasetInfo:
        return DATASETS[self.dataset]


# --- raw files -------------------------------------------------------------


def _read_idx_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim:
                raise DataError(f"{path}: file too short for an IDX header")
            found, *dims = struct.unpack(f">{1 + ndim}I", header)
            if found != magic:
                raise DataError(
                    f"{path}: not an IDX file of the expected kind"
                    f" (magic number {found}, expected {magic})"
                )
            expected = int(np.prod(dims))
            body = 0
            while chunk := f.read(1 << 20):
                body += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(
            f"{path}: cannot be read ({err}); it is truncated or damaged"
        ) from err
    if body != expected:
        raise DataError(
            f"{path}: holds {body} bytes of data where its header promises"
            f" {expected}; the file is truncated or damaged"
        )
    return tuple(dims)


def stage_idx(source: Path, raw_folder: Path, info: DatasetInfo) -> None:
    """Check the four IDX files in ``source`` and place them, uncompressed,
    where torchvision looks for them."""
    raw_folder.mkdir(parents=True, exist_ok=True)
    counts = {"train": info.n_train, "test": info.n_test}
    for key, name in IDX_FILES.items():
        split, kind = key.split("_")
        candidates = [source / name, source / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(
                f"{source}: neither {name} nor {name}.gz found; the folder must"
                " hold the four original IDX files of the dataset"
            )
        if kind == "images":
            dims = _read_idx_header(path, 2051, 3)
            want = (counts[split], info.shape[1], info.shape[2])
        else:
            dims = _read_idx_header(path, 2049, 1)
            want = (counts[split],)
        if dims != want:
            raise DataError(
                f"{path}: holds data of shape {dims}, expected {want} for"
                f" {info.name}; " + GET_A_COPY.format(dataset=info.name)
            )
        target = raw_folder / name
        opener = gzip.open if path.suffix == ".gz" else open
        with (
            atomic_path(target) as tmp,
            opener(path, "rb") as src,
            open(tmp, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)


def _stage_local(source: Path, root: Path, info: DatasetInfo) -> None:
    if not source.is_dir():
        raise DataError(
            f"data.local_raw.{info.name}: {source} is not a folder; fix the path"
            " or remove the key to let torchvision download the data"
        )
    if info.name in ("mnist", "fashion_mnist"):
        stage_idx(source, root / info.torchvision_class / "raw", info)
    elif info.name == "svhn":
        for split in ("train", "test"):
            name = f"{split}_32x32.mat"
            if not (source / name).is_file():
                raise DataError(f"{source}: {name} not found")
            _link_or_copy(source / name, root / name)
    elif info.name == "cifar10":
        archive = source / "cifar-10-python.tar.gz"
        folder = source / "cifar-10-batches-py"
        if folder.is_dir():
            _link_or_copy(folder, root / "cifar-10-batches-py")
        elif archive.is_file():
            from torchvision.datasets.utils import extract_archive

            with tempfile.TemporaryDirectory(dir=root) as tmp:
                extract_archive(str(archive), tmp)
                os.replace(Path(tmp) / "cifar-10-batches-py", root / folder.name)
        else:
            raise DataError(
                f"{source}: neither cifar-10-batches-py/ nor cifar-10-python.tar.gz"
            )


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        if target.resolve() == source.resolve():
            return
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.symlink_to(source.resolve())


def _torchvision_splits(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    info = DATASETS[name]
    cls = getattr(tvd, info.torchvision_class)
    if name == "svhn":
        return cls(root, split="train", download=download), cls(
            root, split="test", download=download
        )
    return cls(root, train=True, download=download), cls(
        root, train=False, download=download
    )


def _download(name: str, root: Path) -> None:
    """Download through torchvision into a scratch folder, then move into place,
    so that an interrupted download leaves nothing that looks complete."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        try:
            _torchvision_splits(name, Path(tmp), download=True)
        except Exception as err:  # torchvision raises bare RuntimeError/URLError
            raise DataError(
                f"downloading {name} through torchvision failed: {err}. Run the data"
                " preparation on a host with internet access, or set"
                f" data.local_raw.{name} to a folder with the original files"
            ) from err
        for entry in Path(tmp).iterdir():
            target = root / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)


def _to_tensor(dataset, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images as float in [0, 1], channel-first, like ``ToTensor``."""
    if name == "svhn":
        images = torch.from_numpy(np.asarray(dataset.data))  # (N, C, H, W)
        labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
    elif name == "cifar10":
        images = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2)
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    else:
        images = dataset.data.unsqueeze(1)  # (N, 1, H, W)
        labels = dataset.targets.to(torch.int64)
    return images.contiguous().to(torch.float32).div(255), labels


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``Normalize``: subtract the mean and divide by the std, per channel."""
    mean = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std)


def check_split(
    x: torch.Tensor, y: torch.Tensor, info: DatasetInfo, split: str, n: int, source
):
    if x.shape != (n, info.n_inputs):
        raise DataError(
            f"{source}: {info.name} {split} images have shape {tuple(x.shape)},"
            f" expected {(n, info.n_inputs)}; " + GET_A_COPY.format(dataset=info.name)
        )
    if y.shape != (n,):
        raise DataError(f"{source}: {info.name} {split} has {y.shape[0]} labels, {n=}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= N_CLASSES):
        raise DataError(
            f"{source}: {info.name} {split} labels span {int(y.min())}..{int(y.max())},"
            f" outside 0..{N_CLASSES - 1}; " + GET_A_COPY.format(dataset=info.name)
        )
    if not torch.isfinite(x).all():
        raise DataError(f"{source}: {info.name} {split} images hold NaN or inf")


def prepare(
    name: str,
    root: str | Path,
    out: str | Path,
    mean,
    std,
    download: bool = True,
    local_raw: str | Path | None = None,
) -> Path:
    """Fetch or stage ``name``'s raw files under ``root``, check them and write
    the normalised splits to ``out``."""
    info = DATASETS[name]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if local_raw is not None:
        log.info("staging %s from %s", name, local_raw)
        _stage_local(Path(local_raw), root, info)
    try:
        train, test = _torchvision_splits(name, root, download=False)
    except RuntimeError:
        if not download or local_raw is not None:
            raise DataError(
                f"{name}: raw files not found (or failed their checksum) under"
                f" {root}; set data.download: true on a host with internet access,"
                f" or data.local_raw.{name} to a folder with the original files"
            ) from None
        log.info("downloading %s through torchvision into %s", name, root)
        _download(name, root)
        train, test = _torchvision_splits(name, root, download=False)

    tensors = {}
    for split, ds, n in (("train", train, info.n_train), ("test", test, info.n_test)):
        images, labels = _to_tensor(ds, name)
        images = normalize(images, mean, std).reshape(len(images), -1)
        check_split(images, labels, info, split, n, root)
        tensors[f"x_{split}"], tensors[f"y_{split}"] = images, labels
    payload = {
        **tensors,
        "dataset": name,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    log.info(
        "wrote %s: %d train and %d test images of %d values",
        out,
        info.n_train,
        info.n_test,
        info.n_inputs,
    )
    return out


def load(
    path: str | Path,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Splits:
    """Read prepared splits, keeping the first ``max_train``/``max_test`` samples."""
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, mmap=True)
    except FileNotFoundError:
        raise DataError(
            f"{path}: prepared data not found; run the workflow's data rule"
        ) from None
    except Exception as err:
        raise DataError(
            f"{path}: prepared data cannot be read ({err}); delete it and run the"
            " data preparation again"
        ) from err
    name = payload.get("dataset")
    if name not in DATASETS:
        raise DataError(f"{path}: not a prepared ffrep dataset file")
    info = DATASETS[name]
    # preparation checked the full counts; here the file must be consistent
    for split in ("train", "test"):
        x, y = payload.get(f"x_{split}"), payload.get(f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise DataError(f"{path}: the {split} split is missing; prepare it again")
        check_split(x, y, info, split, y.shape[0], path)
    return Splits(
        x_train=payload["x_train"][:max_train],
        y_train=payload["y_train"][:max_train],
        x_test=payload["x_test"][:max_test],
        y_test=payload["y_test"][:max_test],
        dataset=name,
    )
