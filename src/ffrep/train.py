"""Training of FF (greedy, layer-local), BP/FF (end to end on the summed
goodness) and BP (cross-entropy), with checkpoints that make a killed run
resume to the same result as an uninterrupted one."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ffrep import data as data_mod
from ffrep.config import RunConfig
from ffrep.datasets import DATASETS, N_CLASSES
from ffrep.errors import FFrepError
from ffrep.io import atomic_path, write_json
from ffrep.models import (
    BPNet,
    FFNet,
    LabelOverlay,
    build_model,
    ff_label_goodness,
    ff_loss,
    ff_predict,
    goodness,
)

log = logging.getLogger(__name__)

CHUNK = 4096  # rows per chunk when a whole set is passed through a layer


class TrainingDiverged(FFrepError, RuntimeError):
    """The loss became NaN or infinite."""


# --- set-up ------------------------------------------------------------------


def configure_torch(run: RunConfig) -> torch.device:
    """Threads, determinism, seeds and device for ``run``; returns the device."""
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    # cuBLAS needs this before its first use to be deterministic
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(run.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    random.seed(run.seed)
    np.random.seed(run.seed % 2**32)
    torch.manual_seed(run.seed)
    return pick_device(run.device)


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "training.device is 'cuda' but no CUDA device is visible; set it to"
            " 'auto' or 'cpu', or run the job on a GPU node"
        )
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def sub_seed(seed: int, *tags) -> int:
    """A seed for one purpose of one run, independent of all other draws."""
    words = [seed] + [
        int(hashlib.sha1(str(t).encode()).hexdigest()[:8], 16) for t in tags
    ]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def generator(seed: int, *tags) -> torch.Generator:
    return torch.Generator().manual_seed(sub_seed(seed, *tags))


# --- negatives ---------------------------------------------------------------


def sample_negatives(
    labels: torch.Tensor,
    allowed: list[int],
    scheme: str,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one negative per training image: (image index, wrong label).

    ``paper`` draws N of the N·(K-1) wrong-label copies without replacement,
    as the authors do, so an image can appear as a negative several times or
    not at all; ``uniform`` gives every image one uniformly drawn wrong label.
    Labels are drawn from ``allowed`` only; the copies are never built.
    """
    n, k = labels.shape[0], len(allowed)
    rank = torch.full((N_CLASSES,), -1, dtype=torch.int64)
    rank[torch.as_tensor(allowed)] = torch.arange(k)
    r = rank[labels]
    if scheme == "paper":
        pick = torch.randperm(n * (k - 1), generator=gen)[:n]
        image, offset = pick // (k - 1), pick % (k - 1)
    elif scheme == "uniform":
        image = torch.arange(n)
        offset = torch.randint(0, k - 1, (n,), generator=gen)
    else:
        raise ValueError(f"unknown negative sampling {scheme!r}")
    wrong = torch.as_tensor(allowed)[(r[image] + 1 + offset) % k]
    return image, wrong


# --- checkpoints -------------------------------------------------------------


@dataclass
class Checkpoint:
    """Where a run stands: stage (FF layer, else 0), next epoch and state."""

    stage: int = 0
    epoch: int = 0
    model: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    generator: torch.Tensor | None = None
    history: dict = field(default_factory=dict)


class Checkpointer:
    def __init__(self, path: str | Path | None, run: RunConfig):
        self.path = Path(path) if path else None
        self.fingerprint = hashlib.sha256(run.to_json().encode()).hexdigest()
        self.every = run.checkpoint_every_epochs

    def load(self) -> Checkpoint | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, weights_only=True)
        except Exception as err:
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, err)
            return None
        if payload.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s of another configuration", self.path)
            return None
        payload.pop("fingerprint")
        ckpt = Checkpoint(**payload)
        log.info(
            "resuming from %s: stage %d, epoch %d", self.path, ckpt.stage, ckpt.epoch
        )
        return ckpt

    def due(self, epoch_done: int, last: int) -> bool:
        return self.path is not None and (
            epoch_done % self.every == 0 or epoch_done == last
        )

    def save(self, ckpt: Checkpoint) -> None:
        if self.path is None:
            return
        payload = {"fingerprint": self.fingerprint, **ckpt.__dict__}
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# --- training loops ----------------------------------------------------------


class Progress:
    """A progress bar on a terminal, and a log line with an ETA every few seconds."""

    def __init__(self, total: int, done: int, desc: str, every_s: float = 10.0):
        self.total, self.done, self.desc = total, done, desc
        self.start, self.last = time.perf_counter(), 0.0
        self.every_s, self.first = every_s, done
        self.bar = tqdm(
            total=total, initial=done, desc=desc, disable=not sys.stderr.isatty()
        )

    def step(self, **values) -> None:
        self.done += 1
        self.bar.update(1)
        self.bar.set_postfix(values, refresh=False)
        now = time.perf_counter() - self.start
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = now / max(self.done - self.first, 1)
            eta = rate * (self.total - self.done)
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
            log.info(
                "%s epoch %d/%d %s (%.2fs/epoch, ETA %s)",
                self.desc,
                self.done,
                self.total,
                shown,
                rate,
                time.strftime("%H:%M:%S", time.gmtime(eta)),
            )

    def close(self) -> None:
        self.bar.close()


def _check_finite(value: float, where: str) -> None:
    """Stop at the first epoch whose mean loss is NaN or infinite, before it is
    checkpointed: nothing diverged is kept."""
    if not np.isfinite(value):
        raise TrainingDiverged(
            f"the loss became {value} at {where}; nothing of this epoch was saved;"
            " lower the learning rate or check the data and the forward_forward"
            " settings"
        )


@torch.no_grad()
def _transform(fn: Callable, x: torch.Tensor, width: int, in_place: bool):
    """Pass ``x`` through ``fn`` chunk by chunk, over ``x``'s storage if allowed."""
    out = x if in_place and width == x.shape[1] else x.new_empty(x.shape[0], width)
    for start in range(0, x.shape[0], CHUNK):
        out[start : start + CHUNK] = fn(x[start : start + CHUNK])
    return out


def _gather_negatives(pos, image, wrong, overlay, idx=None):
    """Negative inputs: the positives of ``image`` relabelled with ``wrong``."""
    if idx is not None:
        image, wrong = image[idx], wrong[idx]
    return overlay.apply_(pos[image], wrong)


class FFData:
    """The positives and negatives a network trains on, on the device."""

    def __init__(self, x, y, allowed, run: RunConfig, overlay, device):
        self.pos = overlay.apply_(x, y.to(device))  # (N, D)
        self.y, self.allowed, self.run, self.overlay = y, allowed, run, overlay
        self.device = device
        self.fixed = self.draw(None) if not run.resample_negatives else None

    def draw(self, epoch: int | None):
        gen = generator(self.run.seed, "negatives", epoch if epoch is not None else -1)
        image, wrong = sample_negatives(
            self.y, self.allowed, self.run.negative_sampling, gen
        )
        return image.to(self.device), wrong.to(self.device)

    def negatives(self, epoch: int):
        return self.fixed if self.fixed is not None else self.draw(epoch)


def train_ff(net: FFNet, ffdata: FFData, run: RunConfig, ckpt, checkpointer, gen):
    """Greedy layer-local FF: each layer for all its epochs with its own Adam."""
    history = ckpt.history.setdefault("loss", [[] for _ in net.layers])
    n = ffdata.pos.shape[0]
    # inputs of the current layer; ``None`` for negatives means "gather from pos"
    hp, hn = ffdata.pos, None
    frozen = []  # layers already trained, for resampled negatives

    for layer_index in range(len(net.layers)):
        layer_fn = functools.partial(net.layer_forward, layer_index)
        if layer_index < ckpt.stage:
            frozen.append(layer_fn)
            hp, hn = _advance(net, ffdata, layer_index, hp, hn, frozen)
            continue
        opt = torch.optim.Adam(
            net.layers[layer_index].parameters(), lr=run.learning_rate
        )
        start_epoch = 0
        if ckpt.stage == layer_index and ckpt.optimizer:
            opt.load_state_dict(ckpt.optimizer)
            start_epoch = ckpt.epoch
        progress = Progress(run.epochs, start_epoch, f"ff layer {layer_index + 1}")
        for epoch in range(start_epoch, run.epochs):
            neg_source = _negative_source(ffdata, frozen, hn, epoch)
            perm = torch.randperm(n, generator=gen).to(ffdata.device)
            total = torch.zeros((), device=ffdata.device)
            for start in range(0, n, run.batch_size):
                idx = perm[start : start + run.batch_size]
                xb = torch.cat([hp[idx], neg_source(idx)])  # (2B, D)
                g = goodness(layer_fn(xb), run.goodness)
                loss = ff_loss(g[: len(idx)], g[len(idx) :], run.threshold)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            # one host sync per epoch
            epoch_loss = total.item() / n
            _check_finite(epoch_loss, f"layer {layer_index + 1}, epoch {epoch + 1}")
            history[layer_index].append(epoch_loss)
            progress.step(loss=epoch_loss)
            if checkpointer.due(epoch + 1, run.epochs):
                checkpointer.save(
                    Checkpoint(
                        stage=layer_index,
                        epoch=epoch + 1,
                        model=net.state_dict(),
                        optimizer=opt.state_dict(),
                        generator=gen.get_state(),
                        history=ckpt.history,
                    )
                )
        progress.close()
        frozen.append(layer_fn)
        if layer_index + 1 < len(net.layers):
            hp, hn = _advance(net, ffdata, layer_index, hp, hn, frozen)
            checkpointer.save(
                Checkpoint(
                    stage=layer_index + 1,
                    epoch=0,
                    model=net.state_dict(),
                    generator=gen.get_state(),
                    history=ckpt.history,
                )
            )
    return history


def _negative_source(ffdata: FFData, frozen, hn, epoch):
    """A function from batch indices to that batch's negative inputs."""
    if hn is not None:
        return lambda idx: hn[idx]
    image, wrong = ffdata.negatives(epoch)
    if not frozen or ffdata.fixed is not None:
        return lambda idx: _gather_negatives(
            ffdata.pos, image, wrong, ffdata.overlay, idx
        )

    # resampled negatives of a deeper layer go through the frozen layers
    def through_frozen(idx):
        with torch.no_grad():
            x = _gather_negatives(ffdata.pos, image, wrong, ffdata.overlay, idx)
            for fn in frozen:
                x = fn(x)
        return x

    return through_frozen


def _advance(net, ffdata: FFData, layer_index, hp, hn, frozen):
    """Pass the positives and the fixed negatives through a trained layer; they
    become the next layer's training data."""
    if ffdata.fixed is None:
        # resampled negatives are rebuilt from the positives every epoch
        width = net.layers[layer_index].out_features
        fn = frozen[layer_index]
        return _transform(fn, hp, width, in_place=hp is not ffdata.pos), None
    width = net.layers[layer_index].out_features
    fn = frozen[layer_index]
    if hn is None:
        image, wrong = ffdata.fixed
        hn = hp.new_empty(hp.shape[0], width)
        with torch.no_grad():
            for start in range(0, hp.shape[0], CHUNK):
                sl = slice(start, start + CHUNK)
                hn[sl] = fn(_gather_negatives(hp, image[sl], wrong[sl], ffdata.overlay))
    else:
        hn = _transform(fn, hn, width, in_place=True)
    # the positives are no longer needed once the negatives are built
    hp = _transform(fn, hp, width, in_place=True)
    ffdata.pos = None
    return hp, hn


def train_bp_ff(net: FFNet, ffdata: FFData, run: RunConfig, ckpt, checkpointer, gen):
    """BP/FF: one Adam over every layer on the softplus of the summed goodness."""
    history = ckpt.history.setdefault("loss", [])
    opt = torch.optim.Adam(net.parameters(), lr=run.learning_rate)
    if ckpt.optimizer:
        opt.load_state_dict(ckpt.optimizer)
    n = ffdata.pos.shape[0]
    progress = Progress(run.epochs, ckpt.epoch, "bp_ff")
    for epoch in range(ckpt.epoch, run.epochs):
        image, wrong = ffdata.negatives(epoch)
        perm = torch.randperm(n, generator=gen).to(ffdata.device)
        total = torch.zeros((), device=ffdata.device)
        for start in range(0, n, run.batch_size):
            idx = perm[start : start + run.batch_size]
            xn = _gather_negatives(ffdata.pos, image, wrong, ffdata.overlay, idx)
            hidden = net(torch.cat([ffdata.pos[idx], xn]))
            g = sum(goodness(h, run.goodness) for h in hidden)
            loss = ff_loss(g[: len(idx)], g[len(idx) :], run.threshold)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        epoch_loss = total.item() / n
        _check_finite(epoch_loss, f"epoch {epoch + 1} (all layers)")
        history.append(epoch_loss)
        progress.step(loss=epoch_loss)
        if checkpointer.due(epoch + 1, run.epochs):
            checkpointer.save(
                Checkpoint(
                    epoch=epoch + 1,
                    model=net.state_dict(),
                    optimizer=opt.state_dict(),
                    generator=gen.get_state(),
                    history=ckpt.history,
                )
            )
    progress.close()
    return history


def train_bp(net: BPNet, x, y, run: RunConfig, ckpt, checkpointer, gen):
    """BP: cross-entropy through the MLP and its linear read-out."""
    history = ckpt.history.setdefault("loss", [])
    opt = torch.optim.Adam(net.parameters(), lr=run.learning_rate)
    if ckpt.optimizer:
        opt.load_state_dict(ckpt.optimizer)
    n = x.shape[0]
    progress = Progress(run.epochs, ckpt.epoch, "bp")
    for epoch in range(ckpt.epoch, run.epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        total = torch.zeros((), device=x.device)
        for start in range(0, n, run.batch_size):
            idx = perm[start : start + run.batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        epoch_loss = total.item() / n
        _check_finite(epoch_loss, f"epoch {epoch + 1}")
        history.append(epoch_loss)
        progress.step(loss=epoch_loss)
        if checkpointer.due(epoch + 1, run.epochs):
            checkpointer.save(
                Checkpoint(
                    epoch=epoch + 1,
                    model=net.state_dict(),
                    optimizer=opt.state_dict(),
                    generator=gen.get_state(),
                    history=ckpt.history,
                )
            )
    progress.close()
    return history


# --- evaluation --------------------------------------------------------------


def label_value(run: RunConfig, x: torch.Tensor) -> float:
    """The value written at the label's position: the split's maximum by default."""
    if run.label_value == "data_max":
        return float(x.max())
    return float(run.label_value)


@torch.no_grad()
def predict(net, run: RunConfig, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes of raw (unlabelled) test images on ``x``'s device."""
    net.eval()
    if run.algorithm == "bp":
        return torch.cat(
            [net(x[s : s + CHUNK]).argmax(1) for s in range(0, len(x), CHUNK)]
        )
    overlay = LabelOverlay(DATASETS[run.dataset], label_value(run, x), x.device)
    g = ff_label_goodness(net, x, overlay, run.goodness)
    return ff_predict(g, run.prediction)


# --- one run -----------------------------------------------------------------


def allowed_classes(run: RunConfig) -> list[int]:
    return [c for c in range(N_CLASSES) if c not in set(run.held_out_classes)]


def train_run(
    run: RunConfig,
    data_path: str | Path,
    model_out: str | Path,
    metrics_out: str | Path,
    checkpoint: str | Path | None = None,
) -> dict:
    """Train one run of the grid and write its weights and metrics."""
    device = configure_torch(run)
    log.info("training %s on %s", run.run_id, device)
    splits = data_mod.load(data_path, run.max_train_samples, run.max_test_samples)
    info = DATASETS[run.dataset]
    allowed = allowed_classes(run)
    keep = torch.isin(splits.y_train, torch.as_tensor(allowed))
    x = splits.x_train[keep].to(device, copy=True)
    y = splits.y_train[keep].to(device)
    if len(torch.unique(y)) < 2:
        raise ValueError(f"{run.run_id}: fewer than two classes left to train on")

    checkpointer = Checkpointer(checkpoint, run)
    ckpt = checkpointer.load() or Checkpoint()
    torch.manual_seed(run.seed)
    net = build_model(run.algorithm, info, run).to(device)
    if ckpt.model:
        net.load_state_dict(ckpt.model)
    gen = generator(run.seed, "shuffle")
    if ckpt.generator is not None:
        gen.set_state(ckpt.generator)

    t0 = time.perf_counter()
    train_label = None
    if run.algorithm == "bp":
        history = train_bp(net, x, y, run, ckpt, checkpointer, gen)
    else:
        train_label = label_value(run, x)
        overlay = LabelOverlay(info, train_label, device)
        ffdata = FFData(x, y.cpu(), allowed, run, overlay, device)
        del x
        trainer = train_ff if run.algorithm == "ff" else train_bp_ff
        history = trainer(net, ffdata, run, ckpt, checkpointer, gen)
        del ffdata
    wall_s = time.perf_counter() - t0

    x_test = splits.x_test.to(device)
    y_test = splits.y_test.to(device)
    prediction = predict(net, run, x_test)
    accuracy = float((prediction == y_test).float().mean())
    metrics = {
        "run": run.run_id,
        "dataset": run.dataset,
        "algorithm": run.algorithm,
        "architecture": run.architecture,
        "seed": run.seed,
        "test_accuracy": accuracy,
        "loss_history": history,
        "wall_time_s": wall_s,
        "device": str(device),
        "device_name": _device_name(device),
        "n_train": int(y.shape[0]),
        "n_test": int(y_test.shape[0]),
        "label_value_train": train_label,
        "label_value_test": label_value(run, x_test) if run.algorithm != "bp" else None,
        "torch_threads": torch.get_num_threads(),
        "resumed": bool(ckpt.model),
        "run_config": run.__dict__,
    }
    if device.type == "cuda":
        metrics["gpu_max_memory_allocated_mb"] = (
            torch.cuda.max_memory_allocated() / 2**20
        )
    save_model(net, run, model_out)
    write_json(metrics_out, metrics)
    checkpointer.remove()
    log.info("%s: test accuracy %.4f in %.1f s", run.run_id, accuracy, wall_s)
    return metrics


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def save_model(net, run: RunConfig, path: str | Path) -> None:
    payload = {"state_dict": net.state_dict(), "run": run.to_json()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class ModelFileError(FFrepError, RuntimeError):
    """A weights file that is missing, damaged or not ffrep's."""


def load_model(path: str | Path, device="cpu"):
    """Rebuild a trained network from its weights file, without unpickling code."""
    again = "delete the file and train the run again"
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(
            f"{path}: model weights not found; train the run"
        ) from None
    except Exception as err:
        raise ModelFileError(
            f"{path}: cannot read the model weights ({err}); {again}"
        ) from err
    if not isinstance(payload, dict) or not {"run", "state_dict"} <= set(payload):
        raise ModelFileError(f"{path}: not an ffrep weights file; {again}")
    try:
        run = RunConfig.from_json(payload["run"])
        net = build_model(run.algorithm, DATASETS[run.dataset], run)
        net.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ModelFileError(
            f"{path}: the weights do not fit the run they describe ({err}); {again}"
        ) from err
    return net.to(device), run
