"""Training of FF (greedy, layer-local), BP/FF (end to end on the summed
goodness) and BP (cross-entropy), with checkpoints that make a killed run
resume to the same result as an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
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
from ffrep.config import NOT_TRAINED_FIELDS, RunConfig
from ffrep.datasets import DATASETS, N_CLASSES
from ffrep.errors import FFrepError
from ffrep.ffstep import FFBatches, FFStep, SharedImages, precision_context
from ffrep.io import atomic_path, torch_file_damage, write_json
from ffrep.models import (
    BPNet,
    FFNet,
    LabelOverlay,
    build_model,
    ff_label_goodness,
    ff_loss,
    ff_predict,
    goodness,
    label_free_,
    labelled_input_,
    relu_goodness,
    relu_normalize_,
    twice_labelled_pre,
    unit_normalize,
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
    """Atomic checkpoints of a run (or of the seeds ``others`` trained with it
    in one job, ``kind="seeds"``), resumed only by the same settings on the
    same data (``data``: the prepared file's digest, see
    :func:`io.torch_file_digest`). A checkpoint that is damaged, of another
    configuration, or whose contents do not fit the run is ignored with a
    warning, and training starts again."""

    def __init__(
        self,
        path: str | Path | None,
        run: RunConfig,
        others=(),
        data: str = "",
        kind: str = "run",
    ):
        self.path = Path(path) if path else None
        self.run, self.kind = run, kind
        settings = [r.to_json(without=NOT_TRAINED_FIELDS) for r in (run, *others)]
        text = "\n".join([kind, data, *settings])
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()
        self.every = run.checkpoint_every_epochs

    def load(self, models=None) -> Checkpoint | None:
        """The checkpoint to resume from, or None; ``models`` (the run's network,
        or the seeds' networks) are what its weights must fit."""
        if self.path is None or not self.path.exists():
            return None
        damage = torch_file_damage(self.path)
        if damage is not None:
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, damage)
            return None
        try:
            # on the CPU first: a checkpoint from a GPU node also resumes on a CPU
            payload = torch.load(self.path, weights_only=True, map_location="cpu")
        except Exception as err:
            log.warning("ignoring unreadable checkpoint %s (%s)", self.path, err)
            return None
        if not isinstance(payload, dict) or "fingerprint" not in payload:
            log.warning("ignoring %s: not an ffrep checkpoint", self.path)
            return None
        if payload.get("fingerprint") != self.fingerprint:
            log.warning(
                "ignoring checkpoint %s of another configuration or other data",
                self.path,
            )
            return None
        payload.pop("fingerprint")
        problem = self._problem(payload, models)
        if problem is not None:
            log.warning("ignoring checkpoint %s: %s", self.path, problem)
            return None
        ckpt = Checkpoint(**payload)
        log.info(
            "resuming from %s: stage %d, epoch %d", self.path, ckpt.stage, ckpt.epoch
        )
        return ckpt

    def _problem(self, payload: dict, models) -> str | None:
        """What in a checkpoint's contents does not fit this run, or None."""
        fields = set(Checkpoint.__dataclass_fields__)
        if set(payload) != fields:
            return f"its parts are {sorted(payload)}, not {sorted(fields)}"
        stage, epoch = payload["stage"], payload["epoch"]
        stages = len(self.run.hidden_units) if self.run.algorithm == "ff" else 1
        if not isinstance(stage, int) or not 0 <= stage < stages:
            return f"stage {stage!r} is not a stage of this run"
        if not isinstance(epoch, int) or not 0 <= epoch <= self.run.epochs:
            return f"epoch {epoch!r} is not an epoch of this run"
        for name in ("model", "optimizer", "history"):
            if not isinstance(payload[name], dict):
                return f"its {name} is not a table"
        gen = payload["generator"]
        if gen is not None and not (torch.is_tensor(gen) and gen.dtype == torch.uint8):
            return "its generator state is not one"
        if not models or not payload["model"]:
            return None
        states = [payload["model"]]
        if self.kind == "seeds":
            states = payload["model"].get("seeds")
            if not isinstance(states, list) or len(states) != len(models):
                return f"it does not hold the weights of {len(models)} seeds"
            if gen is None or gen.dim() != 2 or gen.shape[0] != len(models):
                return f"it does not hold the generators of {len(models)} seeds"
        for state, model in zip(states, models, strict=True):
            want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if not isinstance(state, dict) or want != {
                k: tuple(getattr(v, "shape", ())) for k, v in state.items()
            }:
                return "its weights do not fit the network"
        return None

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


def check_finite(value: float, where: str) -> None:
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


def adam(params, run: RunConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with default betas; the fused kernel where torch has one."""
    return torch.optim.Adam(
        params, lr=run.learning_rate, fused=device.type in ("cpu", "cuda")
    )


class FFData:
    """The training set of an FF or BP/FF network, on the device.

    A positive and its negative differ from their image only in the label
    region, and every labelled copy of an image has the same length, so the set
    is kept once: ``base`` (N, D), the label-free part of the normalised images,
    and ``label_scale`` (N,); the normalised input of image i with label c is
    ``base[i] + label_scale[i] · e_c`` (see :func:`models.label_free_`).

    Once the first layer is trained and frozen, :meth:`freeze_first` replaces
    the images by their product with it, which the deeper layers' inputs are
    built from without another product.
    """

    def __init__(self, x, y, allowed, run: RunConfig, overlay, device):
        self.label_scale = label_free_(x, overlay, run.input_normalization)
        self.base = x  # (N, D), rewritten in place
        self.product: torch.Tensor | None = None  # (N, H), see freeze_first
        self.y = y  # (N,) on the host, for sampling
        self.y_device = y.to(device)
        self.allowed, self.run, self.overlay = allowed, run, overlay
        self.device = device
        # ``uniform`` keeps each image and changes only its label
        self.same_image = run.negative_sampling == "uniform"
        self.fixed = self.draw(None) if not run.resample_negatives else None

    def draw(self, epoch: int | None):
        gen = generator(self.run.seed, "negatives", epoch if epoch is not None else -1)
        image, wrong = sample_negatives(
            self.y, self.allowed, self.run.negative_sampling, gen
        )
        return image.to(self.device), wrong.to(self.device)

    def negatives(self, epoch: int):
        return self.fixed if self.fixed is not None else self.draw(epoch)

    def labelled(self, rows: torch.Tensor, labels: torch.Tensor, out=None):
        """(R, D) normalised inputs of images ``rows`` labelled ``labels``, in
        ``out`` if given."""
        # the gather (faster than base[rows]) is a copy the label is written into
        base = torch.index_select(self.base, 0, rows, out=out)
        scale = self.label_scale[rows]
        return labelled_input_(base, self.overlay.positions, scale, labels)

    @torch.no_grad()
    def freeze_first(self, layer) -> None:
        """Keep ``base · Wᵀ`` (N, H) of the trained first layer instead of the
        images (over their storage where the widths allow), with each label's
        columns of ``W`` summed (10, H) and the bias: the layer's
        pre-activations for any labels are then a gather and two adds
        (:meth:`first_pre`), with no product."""
        weight = layer.weight
        self.product = _transform(
            lambda rows: rows @ weight.T, self.base, weight.shape[0], in_place=True
        )
        self.base = None
        self.label_rows = weight[:, self.overlay.positions].sum(-1).T.contiguous()
        self.first_bias = layer.bias.detach().clone()

    def first_pre(self, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(R, H) frozen first-layer pre-activations of images ``rows`` labelled
        ``labels`` (after :meth:`freeze_first`)."""
        pre = self.product.index_select(0, rows)
        pre.addcmul_(self.label_scale[rows][:, None], self.label_rows[labels])
        return pre.add_(self.first_bias)

    def batches(self, image, wrong) -> FFBatches:
        """The first layer's batches with the negatives ``image``, ``wrong``
        (negative slot j is image ``image[j]`` labelled ``wrong[j]``)."""
        if self.same_image:
            # a negative is its positive's image: one product serves both
            def shared(idx, out=None) -> SharedImages:
                return SharedImages(
                    base=torch.index_select(self.base, 0, idx, out=out),
                    scale=self.label_scale[idx],
                    labels=torch.stack([self.y_device[idx], wrong[idx]]),  # (2, B)
                    positions=self.overlay.positions,
                )

            return FFBatches(shared=shared)

        def rows(idx, out=None) -> torch.Tensor:
            labels = torch.cat([self.y_device[idx], wrong[idx]])  # (2B,)
            return self.labelled(torch.cat([idx, image[idx]]), labels, out)

        return FFBatches(rows=rows)

    def batch_pre(self, layer, idx, image, wrong) -> torch.Tensor:
        """(2B, H) first-layer pre-activations of positives ``idx``, then of
        their negatives, through autograd."""
        return batch_pre(layer, self.batches(image, wrong), idx)


class FFInputs:
    """What the FF layer being trained sees, kept on the device.

    The first layer reads :class:`FFData`; a deeper layer reads the normalised
    outputs of the layers below, ``n(h)``, of the positives and of the fixed
    negatives (resampled negatives are passed through the frozen layers per
    batch instead). With ``training.ff_deeper_inputs: recomputed`` nothing is
    stored: the batch's positives and negatives are passed through the frozen
    layers at every step, so only the images' product with the first layer is
    kept. Either way the frozen first layer costs no product (see
    :meth:`FFData.freeze_first`).
    """

    def __init__(self, net: FFNet, ffdata: FFData):
        self.net, self.data = net, ffdata
        self.layer = 0
        self.recompute = ffdata.run.ff_deeper_inputs == "recomputed"
        self.hp: torch.Tensor | None = None  # (N, H) n(h) of the positives
        self.hn: torch.Tensor | None = None  # (N, H) n(h) of the fixed negatives

    def batches(self, epoch: int) -> FFBatches:
        """The inputs of the current layer's batches in ``epoch``."""
        image, wrong = self.data.negatives(epoch)
        if self.layer == 0:
            return self.data.batches(image, wrong)
        if self.recompute:
            y = self.data.y_device

            def recomputed(idx, out=None):
                rows = torch.cat([idx, image[idx]])
                return self._through_frozen(rows, torch.cat([y[idx], wrong[idx]]))

            return FFBatches(rows=recomputed)
        hp, hn = self.hp, self.hn

        def stored(idx, out=None):
            # both halves gathered straight into the batch, no concatenated copy
            b = idx.shape[0]
            out = hp.new_empty(2 * b, hp.shape[1]) if out is None else out
            torch.index_select(hp, 0, idx, out=out[:b])
            if hn is not None:
                torch.index_select(hn, 0, idx, out=out[b:])
            else:  # resampled negatives: through the frozen layers
                out[b:] = self._through_frozen(image[idx], wrong[idx])
            return out

        return FFBatches(rows=stored)

    @torch.no_grad()
    def _through_frozen(self, rows, labels) -> torch.Tensor:
        x = F.relu_(self.data.first_pre(rows, labels))
        for i in range(1, self.layer):
            x = self.net.layer_forward(i, x)
        return unit_normalize(x, self.net.normalization)

    @torch.no_grad()
    def advance(self) -> None:
        """Pass the inputs through the layer just trained; they become the next
        layer's inputs, over the old storage where the widths allow. With
        recomputed inputs only the first layer's product is kept."""
        layer = self.net.layers[self.layer]
        if self.layer == 0:
            self.data.freeze_first(layer)
            if not self.recompute:
                self._store_first(layer.out_features)
        elif not self.recompute:
            norm = self.net.normalization

            def fn(x):
                return relu_normalize_(layer(x), norm)

            width = layer.out_features
            if self.hn is not None:
                self.hn = _transform(fn, self.hn, width, in_place=True)
            self.hp = _transform(fn, self.hp, width, in_place=True)
        self.layer += 1

    def _store_first(self, width: int) -> None:
        """The frozen first layer's ``n(h)`` of the positives and of the fixed
        negatives, the positives' over the product's storage unless resampled
        negatives still need the product."""
        data, norm = self.data, self.net.normalization
        n = data.product.shape[0]
        if data.fixed is not None:
            image, wrong = data.fixed
            self.hn = data.product.new_empty(n, width)
            for start in range(0, n, CHUNK):
                sl = slice(start, start + CHUNK)
                self.hn[sl] = relu_normalize_(
                    data.first_pre(image[sl], wrong[sl]), norm
                )
        keep = data.fixed is None
        out = data.product.new_empty(n, width) if keep else data.product
        for start in range(0, n, CHUNK):
            rows = torch.arange(start, min(start + CHUNK, n), device=data.device)
            pre = data.first_pre(rows, data.y_device[rows])
            out[start : start + CHUNK] = relu_normalize_(pre, norm)
        self.hp = out
        if not keep:
            data.product = None


def optimizer_step(opt, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def batch_pre(layer, batches: FFBatches, idx: torch.Tensor) -> torch.Tensor:
    """(2B, H) pre-activations of positives ``idx`` and their negatives,
    through autograd."""
    if batches.shared is not None:
        s = batches.shared(idx, None)
        return twice_labelled_pre(layer, s.positions, s.base, s.scale, s.labels)
    return layer(batches.rows(idx, None))


class _AutogradFFStep:
    """The layer-local step through autograd, for ``bf16`` under autocast."""

    def __init__(self, layer, opt, run: RunConfig):
        self.layer, self.opt, self.run = layer, opt, run

    def __call__(self, batches: FFBatches, idx: torch.Tensor) -> torch.Tensor:
        with precision_context(self.run.precision, idx.device):
            pre = batch_pre(self.layer, batches, idx)
            g = relu_goodness(pre, self.run.goodness).float()  # (2B,)
            loss = ff_loss(g[: len(idx)], g[len(idx) :], self.run.threshold)
        optimizer_step(self.opt, loss)
        return loss.detach()


def ff_step(layer, opt, run: RunConfig):
    """The layer-local step of ``layer`` with the optimiser ``opt`` (its
    ``opt`` attribute): computed by hand on buffers kept for as long as the
    step is (:class:`ffstep.FFStep`) in fp32 and tf32, through autograd under
    ``bf16`` autocast."""
    if run.precision == "bf16":
        return _AutogradFFStep(layer, opt, run)
    return FFStep(layer, opt, run)


def ff_epoch(step, batches: FFBatches, perm, run: RunConfig, max_steps=None):
    """One epoch of one FF layer's ``step`` (see :func:`ff_step`) in the order
    ``perm``; returns the summed loss as a device scalar, so that the loop
    never waits for the device.

    ``max_steps`` stops early (for memory measurements only).
    """
    n = perm.shape[0]
    total = torch.zeros((), device=perm.device)
    for i, start in enumerate(range(0, n, run.batch_size)):
        if max_steps is not None and i >= max_steps:
            break
        # a local step on the batch's positives and negatives
        loss = step(batches, perm[start : start + run.batch_size])
        total += loss * min(run.batch_size, n - start)
    return total


def train_ff(net: FFNet, ffdata: FFData, run: RunConfig, ckpt, checkpointer, gen):
    """Greedy layer-local FF: each layer for all its epochs with its own Adam."""
    history = ckpt.history.setdefault("loss", [[] for _ in net.layers])
    n = ffdata.y.shape[0]
    inputs = FFInputs(net, ffdata)

    for layer_index in range(len(net.layers)):
        if layer_index < ckpt.stage:
            inputs.advance()
            continue
        opt = adam(net.layers[layer_index].parameters(), run, ffdata.device)
        start_epoch = 0
        if ckpt.stage == layer_index and ckpt.optimizer:
            opt.load_state_dict(ckpt.optimizer)
            start_epoch = ckpt.epoch
        step = ff_step(net.layers[layer_index], opt, run)
        progress = Progress(run.epochs, start_epoch, f"ff layer {layer_index + 1}")
        for epoch in range(start_epoch, run.epochs):
            batches = inputs.batches(epoch)
            perm = torch.randperm(n, generator=gen).to(ffdata.device)
            total = ff_epoch(step, batches, perm, run)
            # one host sync per epoch
            epoch_loss = total.item() / n
            check_finite(epoch_loss, f"layer {layer_index + 1}, epoch {epoch + 1}")
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
        # a trained layer's gradients, optimiser state and buffers are not
        # needed again
        net.layers[layer_index].zero_grad(set_to_none=True)
        del opt, step
        if layer_index + 1 < len(net.layers):
            inputs.advance()
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


def bp_ff_epoch(net: FFNet, opt, ffdata: FFData, image, wrong, perm, run):
    """One BP/FF epoch in the order ``perm``; the summed loss as a device scalar."""
    n = perm.shape[0]
    total = torch.zeros((), device=perm.device)
    for start in range(0, n, run.batch_size):
        idx = perm[start : start + run.batch_size]

        # summed goodness of the batch's positives, then of its negatives
        with precision_context(run.precision, perm.device):
            h = F.relu(ffdata.batch_pre(net.layers[0], idx, image, wrong))
            g = goodness(h, run.goodness)  # (2B,)
            for i in range(1, len(net.layers)):
                h = net.layer_forward(i, h)
                g = g + goodness(h, run.goodness)
            g = g.float()
            loss = ff_loss(g[: len(idx)], g[len(idx) :], run.threshold)

        optimizer_step(opt, loss)  # one step over every layer
        total += loss.detach() * len(idx)
    return total


def _train_end_to_end(
    net, run: RunConfig, ckpt, checkpointer, gen, n, device, name, epoch_fn
):
    """The epochs of a network trained as a whole (BP/FF, BP): ``epoch_fn(opt,
    epoch, perm)`` runs one epoch and returns its summed loss on the device."""
    history = ckpt.history.setdefault("loss", [])
    opt = adam(net.parameters(), run, device)
    if ckpt.optimizer:
        opt.load_state_dict(ckpt.optimizer)
    progress = Progress(run.epochs, ckpt.epoch, name)
    for epoch in range(ckpt.epoch, run.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        # one host sync per epoch
        epoch_loss = epoch_fn(opt, epoch, perm).item() / n
        check_finite(epoch_loss, f"epoch {epoch + 1} (all layers)")
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


def train_bp_ff(net: FFNet, ffdata: FFData, run: RunConfig, ckpt, checkpointer, gen):
    """BP/FF: one Adam over every layer on the softplus of the summed goodness."""

    def epoch_fn(opt, epoch, perm):
        image, wrong = ffdata.negatives(epoch)
        return bp_ff_epoch(net, opt, ffdata, image, wrong, perm, run)

    n = ffdata.y.shape[0]
    return _train_end_to_end(
        net, run, ckpt, checkpointer, gen, n, ffdata.device, "bp_ff", epoch_fn
    )


def bp_epoch(net: BPNet, opt, x, y, perm, run: RunConfig):
    """One BP epoch in the order ``perm``; the summed loss as a device scalar."""
    total = torch.zeros((), device=x.device)
    for start in range(0, perm.shape[0], run.batch_size):
        idx = perm[start : start + run.batch_size]
        with precision_context(run.precision, x.device):
            loss = F.cross_entropy(net(x[idx]).float(), y[idx])
        optimizer_step(opt, loss)
        total += loss.detach() * len(idx)
    return total


def train_bp(net: BPNet, x, y, run: RunConfig, ckpt, checkpointer, gen):
    """BP: cross-entropy through the MLP and its linear read-out."""

    def epoch_fn(opt, epoch, perm):
        return bp_epoch(net, opt, x, y, perm, run)

    return _train_end_to_end(
        net, run, ckpt, checkpointer, gen, x.shape[0], x.device, "bp", epoch_fn
    )


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


def training_data(run: RunConfig, data_path: str | Path, device: torch.device):
    """The prepared splits, and the training images (one copy on ``device``,
    which FF rewrites in place) and labels of the classes ``run`` trains on."""
    splits = data_mod.load(
        data_path, run.max_train_samples, run.max_test_samples, run.dataset
    )
    keep = torch.isin(splits.y_train, torch.as_tensor(allowed_classes(run)))
    if bool(keep.all()):
        x = splits.x_train.to(device, copy=True)
    else:
        x = splits.x_train[keep].to(device)
    y = splits.y_train[keep].to(device)
    if len(torch.unique(y)) < 2:
        raise data_mod.DataError(
            f"{run.run_id}: the {keep.numel()} training images that"
            " data.max_train_samples keeps hold fewer than two classes once the"
            " held-out classes are left out; raise data.max_train_samples"
        )
    return splits, x, y


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
    splits, x, y = training_data(run, data_path, device)
    info = DATASETS[run.dataset]
    allowed = allowed_classes(run)

    checkpointer = Checkpointer(checkpoint, run, data=splits.digest)
    torch.manual_seed(run.seed)
    net = build_model(run.algorithm, info, run).to(device)
    ckpt = checkpointer.load([net]) or Checkpoint()
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

    metrics = finish_run(
        net,
        run,
        splits,
        history,
        {"n_train": int(y.shape[0]), "wall_time_s": wall_s},
        train_label,
        bool(ckpt.model),
        model_out,
        metrics_out,
    )
    checkpointer.remove()
    return metrics


def finish_run(
    net, run, splits, history, timing, train_label, resumed, model_out, metrics_out
) -> dict:
    """Predict the test set, then write the run's weights and metrics.

    ``timing`` holds ``n_train`` and ``wall_time_s`` (of this run's share of a
    batched job, or of its own).
    """
    device = next(net.parameters()).device
    x_test = splits.x_test.to(device)
    y_test = splits.y_test.to(device)
    prediction = predict(net, run, x_test)
    accuracy = float((prediction == y_test).float().mean())
    silent = silent_layers(net, run, x_test[:CHUNK], y_test[:CHUNK])
    if silent:
        log.warning(
            "%s: hidden layer(s) %s have no active unit on any test image; the"
            " training has likely diverged: lower the learning rate",
            run.run_id,
            ", ".join(map(str, silent)),
        )
    wall_s, n_train = timing["wall_time_s"], timing["n_train"]
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
        "n_train": n_train,
        "n_test": int(y_test.shape[0]),
        "label_value_train": train_label,
        "label_value_test": label_value(run, x_test) if run.algorithm != "bp" else None,
        "torch_threads": torch.get_num_threads(),
        "precision": run.precision,
        "resumed": resumed,
        "silent_layers": silent,
        "run_config": json.loads(run.training_json()),
        **{k: v for k, v in timing.items() if k not in ("wall_time_s", "n_train")},
    }
    metrics.update(_throughput(run, n_train, wall_s, device, resumed))
    save_model(net, run, model_out)
    write_json(metrics_out, metrics)
    log.info("%s: test accuracy %.4f in %.1f s", run.run_id, accuracy, wall_s)
    return metrics


@torch.no_grad()
def silent_layers(net, run: RunConfig, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """The hidden layers (from 1) with no unit active on any of the test images
    ``x``, which FF and BP/FF see with their true labels ``y``."""
    if run.algorithm == "bp":
        hidden = net.hidden(x)
    else:
        overlay = LabelOverlay(DATASETS[run.dataset], label_value(run, x), x.device)
        hidden = net(overlay.apply(x, y))
    return [i + 1 for i, h in enumerate(hidden) if not bool((h > 0).any())]


def _throughput(
    run: RunConfig, n_train: int, wall_s: float, device, resumed: bool
) -> dict:
    """The training's FLOPs, achieved rate and, on a GPU, memory and the share of
    the device's peak rate that the run achieved. A resumed run's time covers
    only its last part, so no rate is given for it."""
    from ffrep.plan import peak_tflops, training_flops

    flops = training_flops(run, n_train)
    out = {"train_flops": flops}
    rate = None if resumed else flops / max(wall_s, 1e-9) / 1e12
    if rate is not None:
        out["train_tflops_per_s"] = rate
    if device.type == "cuda":
        out["gpu_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_max_memory_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        peak = peak_tflops(torch.cuda.get_device_name(device), run.precision)
        if peak is not None and rate is not None:
            out["gpu_utilisation_of_peak"] = rate / peak
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def save_model(net, run: RunConfig, path: str | Path) -> None:
    payload = {"state_dict": net.state_dict(), "run": run.training_json()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class ModelFileError(FFrepError, RuntimeError):
    """A weights file that is missing, damaged or not ffrep's."""


def load_model(path: str | Path, device="cpu"):
    """Rebuild a trained network from its weights file, without unpickling code."""
    again = "delete the file and train the run again"
    if not Path(path).is_file():
        raise ModelFileError(f"{path}: model weights not found; train the run")
    damage = torch_file_damage(path)
    if damage is not None:
        raise ModelFileError(
            f"{path}: cannot read the model weights: {damage}; {again}"
        )
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
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
