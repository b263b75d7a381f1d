"""Side-by-side timings of ffrep's training, prediction, activation I/O and
analysis against straightforward references and the matmul bound.

Every case runs in this one process on the same data, in rounds: each round
times ffrep, its reference and the matmul bound one after the other, and the
least time of each over the rounds is compared, so that the ratios hold even on
a busy machine whose absolute times do not. The straightforward references are
written here, for the benchmark only: a DataLoader over a TensorDataset, a
device copy per batch, separate positive and negative passes and a ``.item()``
per step. The matmul bound of an epoch is the time of its matrix products
alone, run back to back at their shapes, as many as the epoch runs.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ffrep import activations as act
from ffrep import data as data_mod
from ffrep import kernels
from ffrep.analysis import run_sparsity
from ffrep.config import RunConfig
from ffrep.datasets import DATASETS, N_CLASSES
from ffrep.metrics import class_means, ensembles
from ffrep.models import (
    BPNet,
    FFNet,
    LabelOverlay,
    ff_label_goodness,
    ff_loss,
    goodness,
    unit_normalize,
)
from ffrep.train import (
    CHUNK,
    FFData,
    FFInputs,
    adam,
    bp_epoch,
    bp_ff_epoch,
    ff_epoch,
    ff_step,
    generator,
    sample_negatives,
)

log = logging.getLogger(__name__)


@dataclass
class Sizes:
    """The problem the benchmark times."""

    dataset: str = "fashion_mnist"
    n_train: int = 60_000
    n_test: int = 10_000
    hidden_units: list[int] = field(default_factory=lambda: [1000, 1000, 1000])
    batch_size_ff: int = 1024
    batch_size_bp: int = 2048
    # every timed case runs this many times, in turn with the ones it is
    # compared with; the least time of each counts
    rounds: int = 5


CASES = ("ff", "bp_ff", "bp", "predict", "netcdf")
FULL = Sizes()
QUICK = Sizes(
    n_train=2048, n_test=512, hidden_units=[64, 64, 64], batch_size_ff=256,
    batch_size_bp=256, rounds=2,
)  # fmt: skip
SVHN = Sizes(dataset="svhn", n_train=73_257, n_test=26_032, hidden_units=[3072] * 3)


@dataclass
class Row:
    case: str
    method: str
    seconds: float
    reference_s: float | None = None
    bound_s: float | None = None
    peak_mb: float | None = None
    max_abs_diff: float | None = None
    note: str = ""
    # the memory cases: the N x D normalised training images, in MiB; the
    # normalised positive and negative sets FF trains on are twice that
    images_mb: float | None = None

    def as_dict(self) -> dict:
        ref, bound, images = self.reference_s, self.bound_s, self.images_mb
        return {
            "case": self.case,
            "method": self.method,
            "seconds": self.seconds,
            "vs_reference": self.seconds / ref if ref else None,
            "vs_matmul_bound": self.seconds / bound if bound else None,
            "peak_mb": self.peak_mb,
            "max_abs_diff": self.max_abs_diff,
            "peak_vs_pos_neg": self.peak_mb / (2 * images) if images else None,
            "peak_vs_images": self.peak_mb / images if images else None,
            "note": self.note,
        }


# --- measuring ---------------------------------------------------------------


def _status_mb(field: str) -> float:
    """One memory field of this process's ``/proc/self/status`` (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) to the current
    resident size; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory above the level at entry.

    On a GPU: CUDA allocations. On the host, by default the kernel's resident
    high-water mark, reset at entry, so nothing runs beside the timed work (a
    sampling thread would take a core from the two that compute). With
    ``anonymous=True``: anonymous resident memory sampled every few ms, which
    leaves out the file-backed pages of memory-mapped data; for the memory
    cases, whose time is not compared.
    """

    def __init__(self, device: torch.device, anonymous=False, every_s=0.002):
        self.device, self.every_s = device, every_s
        self.anonymous = anonymous
        self.peak_mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
            return self
        self.thread = None
        if not self.anonymous and _reset_peak_rss():
            self.base = _status_mb("VmRSS")
            return self
        self.field = "RssAnon" if self.anonymous else "VmRSS"
        self.base = self.peak = _status_mb(self.field)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(self.every_s):
            self.peak = max(self.peak, _status_mb(self.field))

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self.base
            return
        if self.thread is None:
            self.peak_mb = _status_mb("VmHWM") - self.base
            return
        self.stop.set()
        self.thread.join()
        self.peak_mb = max(self.peak, _status_mb(self.field)) - self.base


def timed(device: torch.device, fn: Callable, *args, anonymous: bool = False):
    """(result, seconds, peak MiB) of ``fn(*args)``, waiting for the device."""
    with PeakMemory(device, anonymous) as mem:
        t0 = time.perf_counter()
        out = fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return out, seconds, mem.peak_mb


class Replay:
    """Runs epochs of ``module`` from the state it had when this was made, and
    keeps the state the first round ended in (the one the diffs compare)."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.initial = copy.deepcopy(module.state_dict())
        self.kept: dict | None = None

    def __call__(self, round_: int, fn: Callable, *args):
        if round_:
            self.module.load_state_dict(self.initial)
        out = fn(*args)
        if not round_:
            self.kept = copy.deepcopy(self.module.state_dict())
        return out

    def restore(self) -> None:
        self.module.load_state_dict(self.kept)


@dataclass
class Best:
    """The least seconds, largest peak and first result of a case's rounds."""

    seconds: float = math.inf
    peak_mb: float = float("nan")
    value: object = None

    def add(self, out, seconds: float, peak_mb: float) -> None:
        if self.value is None:
            self.value = out
        self.seconds = min(self.seconds, seconds)
        if not math.isnan(peak_mb):
            self.peak_mb = (
                peak_mb if math.isnan(self.peak_mb) else max(self.peak_mb, peak_mb)
            )


def interleaved(
    device, rounds: int, cases: dict[str, Callable], bound: Callable | None = None
) -> tuple[dict[str, Best], tuple[float, float]]:
    """Time every case once a round, one after the other, for ``rounds`` rounds:
    a slow spell of a shared machine then falls on all of them, and the least
    time of each is compared. A case is called with the round's number.

    ``bound()``, if given, is measured in every round too and returns (seconds,
    FLOPs) of the matmuls alone; the least seconds are returned with the FLOPs.
    """
    best = {name: Best() for name in cases}
    bound_s, flops = math.inf, math.nan
    for round_ in range(rounds):
        for name, fn in cases.items():
            best[name].add(*timed(device, fn, round_))
        if bound is not None:
            seconds, flops = bound()
            bound_s = min(bound_s, seconds)
    return best, (bound_s, flops)


def matmul_bound(
    widths, rows: int, n_rows: int, device, input_grads, ff_forward: bool = False
):
    """Seconds of an epoch's matmuls alone, run back to back as the epoch runs
    them: ``n_rows / rows`` steps, each with every layer's forward product, and
    then its weight gradient and, for the layers in ``input_grads``, its input
    gradient. Returns (seconds, FLOPs).

    With ``ff_forward`` the forward products run on the kernel of the FF step
    (:func:`kernels.linear`, without bias or activation), the others on
    ``torch.mm``, as the FF step runs them."""
    shapes, step_flops = [], 0.0
    layers = list(zip(widths[:-1], widths[1:], strict=True))
    for d, h in layers:
        shapes.append((rows, d, h, ff_forward))  # forward
        step_flops += 2.0 * rows * d * h
    for layer, (d, h) in reversed(list(enumerate(layers))):
        shapes.append((h, rows, d, False))  # weight gradient
        step_flops += 2.0 * rows * d * h
        if layer in input_grads:
            shapes.append((rows, h, d, False))
            step_flops += 2.0 * rows * d * h
    products = []
    for m, k, n, linear in shapes:
        a, out = torch.randn(m, k, device=device), torch.empty(m, n, device=device)
        if linear:  # the weight as the layer holds it, (n, k)
            w = torch.randn(n, k, device=device)
            products.append(functools.partial(kernels.linear, a, w, None, False, out))
        else:
            b = torch.randn(k, n, device=device)
            products.append(functools.partial(torch.mm, a, b, out=out))
    steps = n_rows / rows
    run_steps = max(1, round(steps))
    for product in products:  # warm-up
        product()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(run_steps):
        for product in products:
            product()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) * steps / run_steps
    return seconds, step_flops * steps


def _epoch_loss(epoch_fn: Callable, *args) -> float:
    """Run an epoch function and wait for its summed loss, as the trainer does."""
    return float(epoch_fn(*args).item())


def _loss_note(ours: float, ref: float) -> str:
    """The epochs' summed losses compared: Adam moves a weight whose gradient is
    at the rounding level by up to ~lr a step, so the weights of two exact
    implementations part by a few lr while the losses agree closely."""
    return f"epoch loss differs from the reference by {abs(ours - ref) / abs(ref):.1e}"


def peak_note(device: torch.device, flops: float, seconds: float) -> str:
    """On a GPU: the rate of ``flops`` in ``seconds`` and its fraction of the
    card's dense fp32 peak (``plan.GPUS``); nothing on a CPU."""
    if device.type != "cuda":
        return ""
    from ffrep.plan import peak_tflops

    name = torch.cuda.get_device_name(device)
    rate = flops / seconds / 1e12
    peak = peak_tflops(name, "fp32")
    if peak is None:
        return f"; {rate:.1f} TFLOP/s on {name} (its peak is not in ffrep.plan.GPUS)"
    return f"; {rate:.1f} TFLOP/s, {rate / peak:.0%} of the {name}'s fp32 peak"


def _epoch_rows(
    case: str, ref: Best, ours: Best, bound, diff: float, device: torch.device
) -> list[Row]:
    """The reference, matmul-bound and ffrep rows of one epoch case; the cases'
    values are their epoch losses, ``bound`` is (seconds, FLOPs)."""
    bound_s, flops = bound
    note = f"{flops / 1e12:.3g} TFLOP, matmuls at {flops / bound_s / 1e9:.3g} GFLOP/s"
    loss = _loss_note(ours.value, ref.value) + peak_note(device, flops, ours.seconds)
    return [
        Row(case, "reference loop", ref.seconds, ref.seconds, bound_s, ref.peak_mb),
        Row(case, "matmul bound", bound_s, ref.seconds, bound_s, note=note),
        Row(case, "ffrep", ours.seconds, ref.seconds, bound_s, ours.peak_mb, diff,
            loss),
    ]  # fmt: skip


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return max(float((p - q).abs().max()) for p, q in pairs)


# --- the straightforward references ------------------------------------------


def reference_ff_layer_epoch(layer, pos, neg, order, run: RunConfig, device):
    """One FF epoch of one layer, written the plain way: the data on the host,
    copied to the device batch by batch."""
    opt = torch.optim.Adam(layer.parameters(), lr=run.learning_rate)
    loader = DataLoader(
        TensorDataset(pos.cpu(), neg.cpu()),
        batch_size=run.batch_size,
        sampler=order.tolist(),
    )
    total = 0.0
    for xp, xn in loader:
        xp, xn = xp.to(device), xn.to(device)
        hp = F.relu(layer(unit_normalize(xp, run.input_normalization)))
        hn = F.relu(layer(unit_normalize(xn, run.input_normalization)))
        gp, gn = goodness(hp, run.goodness), goodness(hn, run.goodness)
        loss = ff_loss(gp, gn, run.threshold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(xp)
    return total


def reference_bp_ff_epoch(net: FFNet, pos, neg, order, run: RunConfig, device):
    """One BP/FF epoch written the plain way."""
    opt = torch.optim.Adam(net.parameters(), lr=run.learning_rate)
    loader = DataLoader(
        TensorDataset(pos.cpu(), neg.cpu()),
        batch_size=run.batch_size,
        sampler=order.tolist(),
    )
    total = 0.0
    for xp, xn in loader:
        xp, xn = xp.to(device), xn.to(device)
        gp = sum(goodness(h, run.goodness) for h in net(xp))
        gn = sum(goodness(h, run.goodness) for h in net(xn))
        loss = ff_loss(gp, gn, run.threshold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(xp)
    return total


def reference_bp_epoch(net: BPNet, x, y, order, run: RunConfig, device):
    opt = torch.optim.Adam(net.parameters(), lr=run.learning_rate)
    loader = DataLoader(
        TensorDataset(x.cpu(), y.cpu()),
        batch_size=run.batch_size,
        sampler=order.tolist(),
    )
    total = 0.0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(xb)
    return total


@torch.no_grad()
def ten_plain_passes(net: FFNet, x, overlay, kind: str) -> torch.Tensor:
    """(N, 10, L) goodness from ten full passes, one per written label."""
    out = torch.empty(x.shape[0], N_CLASSES, len(net.layers), device=x.device)
    for c in range(N_CLASSES):
        for start in range(0, x.shape[0], CHUNK):
            hidden = net(overlay.apply(x[start : start + CHUNK], c))
            for i, h in enumerate(hidden):
                out[start : start + CHUNK, c, i] = goodness(h, kind)
    return out


# --- the cases ---------------------------------------------------------------


def bench_run(sizes: Sizes, algorithm: str, **changes) -> RunConfig:
    batch = sizes.batch_size_bp if algorithm == "bp" else sizes.batch_size_ff
    run = RunConfig(
        dataset=sizes.dataset,
        algorithm=algorithm,
        architecture="bench",
        seed=0,
        hidden_units=list(sizes.hidden_units),
        learning_rate=1e-3,
        epochs=1,
        batch_size=batch,
        device="cpu",
    )
    return replace(run, **changes)


def synthetic_splits(sizes: Sizes, seed: int = 0) -> data_mod.Splits:
    """Standard-normal images and balanced labels of the dataset's shape."""
    gen = torch.Generator().manual_seed(seed)
    d = DATASETS[sizes.dataset].n_inputs
    return data_mod.Splits(
        x_train=torch.randn(sizes.n_train, d, generator=gen),
        y_train=torch.arange(sizes.n_train) % N_CLASSES,
        x_test=torch.randn(sizes.n_test, d, generator=gen),
        y_test=torch.arange(sizes.n_test) % N_CLASSES,
        dataset=sizes.dataset,
    )


def bench_ff(splits, sizes: Sizes, device, run: RunConfig, label: str) -> list[Row]:
    """One epoch of every FF layer, ffrep's trainer against the reference."""
    log.info("FF epoch, %s negatives", run.negative_sampling)
    info = DATASETS[sizes.dataset]
    x, y = splits.x_train.to(device), splits.y_train
    value = float(x.max())
    overlay = LabelOverlay(info, value, device)
    allowed = list(range(N_CLASSES))
    torch.manual_seed(run.seed)
    net = FFNet(info.n_inputs, run.hidden_units, run.input_normalization).to(device)
    ref_net = copy.deepcopy(net)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    order = order.to(device)

    # ffrep: data once on the device, a layer's epoch per call
    inputs = FFInputs(net, FFData(x.clone(), y, allowed, run, overlay, device))
    # reference: the same negatives materialised, a DataLoader over them
    image, wrong = sample_negatives(
        y, allowed, run.negative_sampling, generator(run.seed, "negatives", -1)
    )
    pos = overlay.apply(x, y.to(device))
    neg = overlay.apply(x[image.to(device)], wrong.to(device))

    ours, ref = Best(0.0, 0.0, 0.0), Best(0.0, 0.0, 0.0)
    bound_s, flops = 0.0, 0.0
    for i, (layer, ref_layer) in enumerate(
        zip(net.layers, ref_net.layers, strict=True)
    ):
        best, bound = _ff_layer(inputs, layer, ref_layer, pos, neg, order, run, sizes)
        for total, one in ((ours, best["ffrep"]), (ref, best["reference"])):
            total.seconds += one.seconds
            total.peak_mb = max(total.peak_mb, one.peak_mb)
            total.value += one.value
        bound_s, flops = bound_s + bound[0], flops + bound[1]
        if i + 1 < len(net.layers):
            inputs.advance()
            pos, neg = _layer_out(ref_layer, pos, run), _layer_out(ref_layer, neg, run)
    diff = _max_diff(net, ref_net)
    return _epoch_rows(f"FF epoch ({label})", ref, ours, (bound_s, flops), diff, device)


def _ff_layer(inputs: FFInputs, layer, ref_layer, pos, neg, order, run, sizes):
    """The rounds of one FF layer's epoch, ffrep's and the reference's, and its
    matmul bound; the layers end as after their first round."""
    device = order.device
    batches = inputs.batches(0)
    mine, theirs = Replay(layer), Replay(ref_layer)

    # as the trainer does, one step object (and its buffers) for the layer's
    # epochs; a fresh Adam each round, as the reference has
    step = ff_step(layer, None, run)

    def ours(round_):
        step.opt = adam(layer.parameters(), run, device)
        return mine(round_, _epoch_loss, ff_epoch, step, batches, order, run)

    def reference(round_):
        return theirs(
            round_, reference_ff_layer_epoch, ref_layer, pos, neg, order, run, device
        )

    def bound():
        widths = [layer.in_features, layer.out_features]
        # the products ffrep runs: a first layer whose positive and negative
        # share an image makes one product of it, not two
        shared = inputs.layer == 0 and inputs.data.same_image
        rows = (1 if shared else 2) * run.batch_size
        return matmul_bound(
            widths,
            rows,
            rows // run.batch_size * order.shape[0],
            device,
            (),
            ff_forward=True,
        )

    best = interleaved(
        device, sizes.rounds, {"ffrep": ours, "reference": reference}, bound
    )
    log.debug(
        "FF layer %d (%d -> %d): ffrep %.3f s, reference %.3f s, matmul bound %.3f s",
        inputs.layer + 1,
        layer.in_features,
        layer.out_features,
        best[0]["ffrep"].seconds,
        best[0]["reference"].seconds,
        best[1][0],
    )
    mine.restore()
    theirs.restore()
    return best


@torch.no_grad()
def _layer_out(layer, x, run: RunConfig) -> torch.Tensor:
    return torch.cat(
        [
            F.relu(layer(unit_normalize(x[s : s + CHUNK], run.input_normalization)))
            for s in range(0, x.shape[0], CHUNK)
        ]
    )


def bench_bp_ff(splits, sizes: Sizes, device) -> list[Row]:
    log.info("BP/FF epoch")
    run = bench_run(sizes, "bp_ff")
    info = DATASETS[sizes.dataset]
    x, y = splits.x_train.to(device), splits.y_train
    overlay = LabelOverlay(info, float(x.max()), device)
    allowed = list(range(N_CLASSES))
    torch.manual_seed(run.seed)
    net = FFNet(info.n_inputs, run.hidden_units).to(device)
    ref_net = copy.deepcopy(net)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    order = order.to(device)

    ffdata = FFData(x.clone(), y, allowed, run, overlay, device)
    image, wrong = ffdata.fixed
    pos = overlay.apply(x, y.to(device))
    neg = overlay.apply(x[image], wrong)
    mine, theirs = Replay(net), Replay(ref_net)

    def ours(round_):
        opt = adam(net.parameters(), run, device)
        return mine(
            round_, _epoch_loss, bp_ff_epoch, net, opt, ffdata, image, wrong, order, run
        )

    def reference(round_):
        return theirs(
            round_, reference_bp_ff_epoch, ref_net, pos, neg, order, run, device
        )

    widths = [info.n_inputs, *run.hidden_units]
    best, bound = interleaved(
        device,
        sizes.rounds,
        {"ffrep": ours, "reference": reference},
        lambda: matmul_bound(
            widths,
            2 * run.batch_size,
            2 * x.shape[0],
            device,
            range(1, len(run.hidden_units)),
        ),
    )
    mine.restore()
    theirs.restore()
    diff = _max_diff(net, ref_net)
    return _epoch_rows(
        "BP/FF epoch", best["reference"], best["ffrep"], bound, diff, device
    )


def bench_bp(splits, sizes: Sizes, device) -> list[Row]:
    log.info("BP epoch")
    run = bench_run(sizes, "bp")
    info = DATASETS[sizes.dataset]
    x, y = splits.x_train.to(device), splits.y_train.to(device)
    torch.manual_seed(run.seed)
    net = BPNet(info.n_inputs, run.hidden_units).to(device)
    ref_net = copy.deepcopy(net)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    order = order.to(device)
    mine, theirs = Replay(net), Replay(ref_net)

    def ours(round_):
        opt = adam(net.parameters(), run, device)
        return mine(round_, _epoch_loss, bp_epoch, net, opt, x, y, order, run)

    def reference(round_):
        return theirs(round_, reference_bp_epoch, ref_net, x, y, order, run, device)

    widths = [info.n_inputs, *run.hidden_units, N_CLASSES]
    best, bound = interleaved(
        device,
        sizes.rounds,
        {"ffrep": ours, "reference": reference},
        lambda: matmul_bound(
            widths,
            run.batch_size,
            x.shape[0],
            device,
            range(1, len(widths) - 1),
        ),
    )
    mine.restore()
    theirs.restore()
    diff = _max_diff(net, ref_net)
    return _epoch_rows(
        "BP epoch", best["reference"], best["ffrep"], bound, diff, device
    )


def bench_prediction(splits, sizes: Sizes, device) -> list[Row]:
    log.info("FF prediction")
    run = bench_run(sizes, "ff")
    info = DATASETS[sizes.dataset]
    x = splits.x_test.to(device)
    overlay = LabelOverlay(info, float(x.max()), device)
    torch.manual_seed(run.seed)
    net = FFNet(info.n_inputs, run.hidden_units).to(device).eval()
    best, _ = interleaved(
        device,
        sizes.rounds,
        {
            "reference": lambda _: ten_plain_passes(net, x, overlay, run.goodness),
            "ffrep": lambda _: ff_label_goodness(net, x, overlay, run.goodness),
        },
    )
    ref, ours = best["reference"], best["ffrep"]
    diff = float((ours.value - ref.value).abs().max())
    case = "FF prediction, 10 labels"
    return [
        Row(case, "ten plain passes", ref.seconds, ref.seconds, None, ref.peak_mb),
        Row(case, "ffrep", ours.seconds, ref.seconds, None, ours.peak_mb, diff),
    ]


def synthetic_activations(sizes: Sizes, run: RunConfig, seed: int = 0):
    """ReLU of shifted normals, about 16 % active, as an activation Dataset."""
    rng = np.random.default_rng(seed)
    hidden = []
    for h in sizes.hidden_units:
        a = rng.standard_normal((sizes.n_test, h), dtype=np.float32) - 1.0
        hidden.append(np.maximum(a, 0, out=a))
    labels = np.arange(sizes.n_test) % N_CLASSES
    prediction = np.where(rng.random(sizes.n_test) < 0.9, labels, 0)
    return act.build_dataset(hidden, labels, prediction, run, "cpu")


def analyse_run(path, samples: str = "correct", factor: float = 2.0):
    """The analysis of one run: its sparsity tables and every layer's ensembles."""
    layers, classes = run_sparsity(path, samples)
    ds = act.open_activations(path)
    try:
        mask = ds["correct"].values.astype(bool)
        labels = ds["label"].values[mask].astype(np.int64)
        members = [
            ensembles(class_means(da.values[mask], labels), factor)
            for _, da in act.layer_arrays(ds)
        ]
    finally:
        ds.close()
    return layers, classes, members


def bench_netcdf(splits, sizes: Sizes, device, folder: Path, label: str) -> list[Row]:
    """Write one run's activations, read them back, and analyse them."""
    log.info("NetCDF and analysis, %s %s activations", sizes.dataset, label)
    run = bench_run(sizes, "ff")
    if label == "recorded":
        info = DATASETS[sizes.dataset]
        x, y = splits.x_test.to(device), splits.y_test.to(device)
        torch.manual_seed(run.seed)
        net = FFNet(info.n_inputs, run.hidden_units).to(device)
        hidden = act.hidden_activations(net, run, x, y)
        y_np = y.cpu().numpy()
        ds = act.build_dataset(hidden, y_np, y_np, run, str(device))
    else:
        ds = synthetic_activations(sizes, run)
    path = folder / f"activations-{label}.nc"
    host = torch.device("cpu")
    _, write_s, write_mb = timed(host, act.write, ds, path, run.compression_level)

    def read():
        with act.open_activations(path) as back:
            return [da.values for _, da in act.layer_arrays(back)]

    back, read_s, read_mb = timed(host, read)
    stacked = np.stack(back, axis=1) if "activation" in ds else None
    diff = (
        float(np.abs(stacked - ds["activation"].values).max())
        if stacked is not None
        else None
    )
    _, analysis_s, analysis_mb = timed(host, analyse_run, path)
    mb = path.stat().st_size / 2**20
    name = f"{sizes.dataset} run, {label}"
    return [
        Row(f"NetCDF write ({name})", "ffrep", write_s, peak_mb=write_mb,
            note=f"{mb:.3g} MiB file"),
        Row(f"NetCDF read ({name})", "ffrep", read_s, peak_mb=read_mb,
            max_abs_diff=diff),
        Row(f"analysis ({name})", "ffrep", analysis_s, peak_mb=analysis_mb),
    ]  # fmt: skip


def bench_ff_memory(sizes: Sizes, folder: Path, max_steps: int = 2) -> list[Row]:
    """Peak host memory of FF training from a prepared file of ``sizes``: the
    data copy, every layer (``max_steps`` steps each) and the passes between."""
    log.info("FF training memory, %s size", sizes.dataset)
    path = folder / f"{sizes.dataset}-synthetic.pt"
    splits = synthetic_splits(sizes)
    torch.save(
        {
            "x_train": splits.x_train, "y_train": splits.y_train,
            "x_test": splits.x_test, "y_test": splits.y_test,
            "dataset": sizes.dataset, "mean": [0.0], "std": [1.0],
        },
        path,
    )  # fmt: skip
    train_mb = splits.x_train.numel() * 4 / 2**20
    del splits
    rows = []
    for inputs_kind in ("stored", "recomputed"):
        run = bench_run(sizes, "ff", ff_deeper_inputs=inputs_kind)
        # in a fresh process: what earlier cases left to the allocator would
        # otherwise be reused without showing in the resident memory
        seconds, peak_mb = _in_fresh_process(
            _memory_of_training, path, sizes, run, max_steps, torch.get_num_threads()
        )
        rows.append(
            Row(
                f"FF training memory ({sizes.dataset} size, {inputs_kind} inputs)",
                "ffrep",
                seconds,
                peak_mb=peak_mb,
                note=f"normalised images {train_mb:.0f} MiB, positives and"
                f" negatives {2 * train_mb:.0f} MiB",
                images_mb=train_mb,
            )
        )
    path.unlink()
    return rows


def _in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a new spawned process, which is ended if this one is
    interrupted (SIGTERM is turned into an exception by ``ffrep bench``)."""
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    worker = spawn.Process(target=_reply, args=(send, fn, *args), daemon=True)
    worker.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        worker.join()
        raise RuntimeError(
            f"the benchmark's worker process died (exit code {worker.exitcode})"
        ) from None
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join()
    if not ok:
        raise RuntimeError(f"the benchmark's worker process failed:\n{value}")
    return value


def _reply(send, fn: Callable, *args) -> None:
    """Run in the worker: send (True, result) or (False, the traceback)."""
    import traceback

    try:
        send.send((True, fn(*args)))
    except Exception:
        send.send((False, traceback.format_exc()))
    finally:
        send.close()


def _memory_of_training(path, sizes, run, max_steps, threads) -> tuple[float, float]:
    """(seconds, peak anonymous MiB) of :func:`_train_from_file`, in this
    process from its start."""
    torch.set_num_threads(threads)
    # the runtime's own first-use allocations (thread pools, BLAS buffers) are
    # made before the measurement starts
    layer = torch.nn.Linear(256, 256)
    opt = torch.optim.Adam(layer.parameters(), fused=True)
    layer(torch.randn(512, 256)).relu().norm(dim=1).sum().backward()
    opt.step()
    del layer, opt
    _, seconds, peak_mb = timed(
        torch.device("cpu"),
        _train_from_file,
        path,
        sizes,
        run,
        max_steps,
        anonymous=True,
    )
    return seconds, peak_mb


def _train_from_file(path: Path, sizes: Sizes, run: RunConfig, max_steps: int):
    """FF training as ``train_run`` does it, ``max_steps`` steps a layer."""
    device = torch.device("cpu")
    # as ``data.load`` reads a prepared file, and as ``train_run`` copies it
    payload = torch.load(path, weights_only=True, mmap=True)
    x = payload["x_train"].to(device, copy=True)
    y = payload["y_train"].clone()
    overlay = LabelOverlay(DATASETS[sizes.dataset], float(x.max()), device)
    ffdata = FFData(x, y, list(range(N_CLASSES)), run, overlay, device)
    del x
    torch.manual_seed(0)
    net = FFNet(DATASETS[sizes.dataset].n_inputs, run.hidden_units)
    inputs = FFInputs(net, ffdata)
    order = torch.randperm(y.shape[0])
    for i, layer in enumerate(net.layers):
        opt = adam(layer.parameters(), run, device)
        step = ff_step(layer, opt, run)
        ff_epoch(step, inputs.batches(0), order, run, max_steps).item()
        # as train_ff does: a trained layer's gradients, optimiser and buffers
        # are dropped
        layer.zero_grad(set_to_none=True)
        del opt, step
        if i + 1 < len(net.layers):
            inputs.advance()


# --- the command -------------------------------------------------------------


def run_benchmark(
    quick: bool = False,
    data_path: str | Path | None = None,
    device: str = "cpu",
    cases: tuple[str, ...] = CASES,
    rounds: int | None = None,
) -> pd.DataFrame:
    """The ``cases`` of the benchmark, one after another; a table of the rows.

    ``svhn``, not among the default cases, times the analysis of an SVHN-sized
    run and measures the peak memory of FF training on SVHN-sized data.
    """
    sizes = QUICK if quick else FULL
    if rounds is not None:
        if rounds < 1:
            raise ValueError(f"--rounds must be at least 1, not {rounds}")
        sizes = replace(sizes, rounds=rounds)
    dev = torch.device(device)
    if data_path is not None:
        splits = data_mod.load(data_path, sizes.n_train, sizes.n_test)
        sizes = replace(sizes, dataset=splits.dataset)
    else:
        splits = synthetic_splits(sizes)
    log.info(
        "benchmark on %s: %d training and %d test images, layers %s, %d threads",
        dev,
        splits.x_train.shape[0],
        splits.x_test.shape[0],
        sizes.hidden_units,
        torch.get_num_threads(),
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ffrep-bench-") as tmp:
        if "ff" in cases:
            for sampling in ("paper", "uniform"):
                run = bench_run(sizes, "ff", negative_sampling=sampling)
                rows += bench_ff(splits, sizes, dev, run, f"{sampling} negatives")
        if "bp_ff" in cases:
            rows += bench_bp_ff(splits, sizes, dev)
        if "bp" in cases:
            rows += bench_bp(splits, sizes, dev)
        if "predict" in cases:
            rows += bench_prediction(splits, sizes, dev)
        if "netcdf" in cases:
            rows += bench_netcdf(splits, sizes, dev, Path(tmp), "recorded")
        if "svhn" in cases:
            svhn_sizes = SVHN if not quick else replace(QUICK, dataset="svhn")
            rows += bench_netcdf(None, svhn_sizes, dev, Path(tmp), "synthetic")
            rows += bench_ff_memory(svhn_sizes, Path(tmp))
    return pd.DataFrame([r.as_dict() for r in rows])


# (what, case, method, column, limit): the targets of the full sizes on 2 cores
TARGETS = [
    ("FF epoch vs the reference loop", "FF epoch (paper negatives)", "ffrep",
     "vs_reference", 0.8),
    ("FF epoch vs the matmul bound", "FF epoch (paper negatives)", "ffrep",
     "vs_matmul_bound", 1.25),
    ("FF prediction vs ten plain passes", "FF prediction, 10 labels", "ffrep",
     "vs_reference", 0.8),
    ("Fashion-MNIST run's analysis, s", "analysis (fashion_mnist run, recorded)",
     "ffrep", "seconds", 10.0),
    ("SVHN run's analysis, s", "analysis (svhn run, synthetic)", "ffrep",
     "seconds", 120.0),
    ("SVHN FF peak memory / normalised positives and negatives, stored inputs"
     " (default)", "FF training memory (svhn size, stored inputs)", "ffrep",
     "peak_vs_pos_neg", 2.0),
    ("SVHN FF peak memory / normalised positives and negatives, recomputed inputs",
     "FF training memory (svhn size, recomputed inputs)", "ffrep",
     "peak_vs_pos_neg", 2.0),
    ("stricter reading: SVHN FF peak memory / normalised images, stored inputs"
     " (default)", "FF training memory (svhn size, stored inputs)", "ffrep",
     "peak_vs_images", 2.0),
    ("stricter reading: SVHN FF peak memory / normalised images, recomputed"
     " inputs", "FF training memory (svhn size, recomputed inputs)", "ffrep",
     "peak_vs_images", 2.0),
]  # fmt: skip


def targets(table: pd.DataFrame) -> pd.DataFrame:
    """Each target whose case was run: the measured value, the limit, met or not."""
    rows = []
    for what, case, method, column, limit in TARGETS:
        found = table[(table["case"] == case) & (table["method"] == method)]
        if found.empty:
            continue
        value = float(found[column].iloc[0])
        rows.append(
            {
                "target": what,
                "measured": value,
                "limit": limit,
                "met": "yes" if value <= limit else "no",
            }
        )
    return pd.DataFrame(rows, columns=["target", "measured", "limit", "met"])


def format_table(table: pd.DataFrame) -> str:
    """The benchmark table as Markdown."""
    shown = table.copy()
    for col, fmt in (
        ("measured", "{:.2f}"),
        ("limit", "{:.2f}"),
        ("seconds", "{:.3f}"),
        ("vs_reference", "{:.2f}"),
        ("vs_matmul_bound", "{:.2f}"),
        ("peak_mb", "{:.0f}"),
        ("max_abs_diff", "{:.1e}"),
        ("peak_vs_pos_neg", "{:.2f}"),
        ("peak_vs_images", "{:.2f}"),
    ):
        if col not in shown:
            continue
        shown[col] = [
            "" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)
            for v in shown[col]
        ]
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = [
        "| " + " | ".join(map(str, r)) + " |" for r in shown.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])
