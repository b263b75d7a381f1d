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
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ffrep.datasets import DATASETS, N_CLASSES, DatasetInfo
from ffrep.errors import FFrepError
from ffrep.io import atomic_path, torch_file_damage, torch_file_digest

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


PREPARED_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(FFrepError, RuntimeError):
    """Raw or prepared data that cannot be used; names the file and the fix."""


@dataclass
class Splits:
    """Prepared data: flattened, normalised images and integer labels."""

    x_train: torch.Tensor  # (N_train, C*H*W) float32
    y_train: torch.Tensor  # (N_train,) int64
    x_test: torch.Tensor  # (N_test, C*H*W) float32
    y_test: torch.Tensor  # (N_test,) int64
    dataset: str
    # the identity of the prepared file's contents (see io.torch_file_digest);
    # empty for splits not read from a file
    digest: str = ""

    @property
    def info(self) -> DatasetInfo:
        return DATASETS[self.dataset]


# --- raw files -------------------------------------------------------------


def _read_idx(path: Path, magic: int, ndim: int, dataset: str):
    """Header dimensions and the largest data byte of an IDX file, checked
    against the header."""
    fix = GET_A_COPY.format(dataset=dataset)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim:
                raise DataError(f"{path}: file too short for an IDX header; {fix}")
            found, *dims = struct.unpack(f">{1 + ndim}I", header)
            if found != magic:
                raise DataError(
                    f"{path}: not an IDX file of the expected kind"
                    f" (magic number {found}, expected {magic}); {fix}"
                )
            expected = int(np.prod(dims))
            body, top = 0, 0
            while chunk := f.read(1 << 20):
                body += len(chunk)
                top = max(top, int(np.frombuffer(chunk, np.uint8).max()))
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot be read ({err}); it is truncated or damaged; {fix}"
        ) from err
    if body != expected:
        raise DataError(
            f"{path}: holds {body} bytes of data where its header promises"
            f" {expected}; the file is truncated or damaged; {fix}"
        )
    return tuple(dims), top


def check_idx(path: Path, key: str, info: DatasetInfo) -> None:
    """Check one IDX file (``key`` as in :data:`IDX_FILES`) against ``info``."""
    split, kind = key.split("_")
    n = {"train": info.n_train, "test": info.n_test}[split]
    fix = GET_A_COPY.format(dataset=info.name)
    if kind == "images":
        dims, _ = _read_idx(path, 2051, 3, info.name)
        want = (n, info.shape[1], info.shape[2])
    else:
        dims, top = _read_idx(path, 2049, 1, info.name)
        want = (n,)
        if top >= N_CLASSES:
            raise DataError(
                f"{path}: holds label {top}, outside 0..{N_CLASSES - 1}; {fix}"
            )
    if dims != want:
        raise DataError(
            f"{path}: holds data of shape {dims}, expected {want} for"
            f" {info.name}; {fix}"
        )


def _find_idx(folder: Path, name: str) -> Path | None:
    candidates = [folder / name, folder / f"{name}.gz"]
    return next((p for p in candidates if p.is_file()), None)


def stage_idx(source: Path, raw_folder: Path, info: DatasetInfo) -> None:
    """Check the four IDX files in ``source`` and place them, uncompressed,
    where torchvision looks for them."""
    raw_folder.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_FILES.items():
        path = _find_idx(source, name)
        if path is None:
            raise DataError(
                f"{source}: neither {name} nor {name}.gz found; the folder must"
                " hold the four original IDX files of the dataset"
            )
        check_idx(path, key, info)
        target = raw_folder / name
        opener = gzip.open if path.suffix == ".gz" else open
        with (
            atomic_path(target) as tmp,
            opener(path, "rb") as src,
            open(tmp, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)


def _check_staged_idx(raw_folder: Path, info: DatasetInfo) -> None:
    """Check the uncompressed IDX files torchvision would read, if present."""
    for key, name in IDX_FILES.items():
        if (raw_folder / name).is_file():
            check_idx(raw_folder / name, key, info)


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
    """Check one split's images and labels; ``source`` names their file."""
    fix = GET_A_COPY.format(dataset=info.name)
    what = f"{source}: {info.name} {split}"
    if x.shape != (n, info.n_inputs):
        raise DataError(
            f"{what} images have shape {tuple(x.shape)},"
            f" expected {(n, info.n_inputs)}; {fix}"
        )
    if y.shape != (n,):
        raise DataError(
            f"{what} has labels of shape {tuple(y.shape)}, expected {(n,)}; {fix}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= N_CLASSES):
        raise DataError(
            f"{what} labels span {int(y.min())}..{int(y.max())},"
            f" outside 0..{N_CLASSES - 1}; {fix}"
        )
    if not torch.isfinite(x).all():
        raise DataError(f"{what} images hold NaN or inf; {fix}")


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
    elif name in ("mnist", "fashion_mnist"):
        # files left by an earlier run or put there by hand: torchvision only
        # checks that they exist
        _check_staged_idx(root / info.torchvision_class / "raw", info)
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
    dataset: str | None = None,
) -> Splits:
    """Read prepared splits, keeping the first ``max_train``/``max_test``
    samples; every part of the file is checked against its checksum first,
    and, if ``dataset`` is given, the file must be of that dataset."""
    path = Path(path)
    again = "delete it and run the data preparation again"
    if not path.exists():
        raise DataError(
            f"{path}: prepared data not found; run the workflow's data rule or"
            " ffrep prepare-data"
        )
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a prepared data file (.pt)")
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}: prepared data cannot be read (the file is empty); {again}"
        )
    damage = torch_file_damage(path)
    if damage is not None:
        raise DataError(f"{path}: prepared data cannot be read ({damage}); {again}")
    try:
        payload = torch.load(path, weights_only=True, mmap=True)
    except Exception as err:
        raise DataError(
            f"{path}: prepared data cannot be read ({err}); {again}"
        ) from err
    name = payload.get("dataset") if isinstance(payload, dict) else None
    if name not in DATASETS:
        raise DataError(
            f"{path}: not a prepared ffrep dataset file (those are written by"
            " ffrep prepare-data and the workflow's data rule)"
        )
    if dataset is not None and name != dataset:
        raise DataError(
            f"{path} holds {name}, but the run is on {dataset};"
            f" give the prepared file of {dataset}"
        )
    missing = [k for k in PREPARED_KEYS if not torch.is_tensor(payload.get(k))]
    if missing:
        raise DataError(
            f"{path}: prepared data lacks {', '.join(missing)}; the file is"
            f" incomplete or not ffrep's; {again}"
        )
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
        digest=torch_file_digest(path),
    )
