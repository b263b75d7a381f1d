"""Several seeds of one configuration (FF, BP/FF or BP) trained as one
batched model.

Seeds differ only in their initial weights, their shuffling and their
negatives; the images are the same. Stacking the seeds' weights along a
leading dimension ``S`` turns every layer's product into one batched product
(``torch.baddbmm``) over the shared data on the device, so that small layers
fill a GPU that one seed alone leaves idle. Each seed's result is the one its
separate run gives, to float tolerance: its batches, negatives and initial
weights come from the same draws, the summed loss gives each seed exactly its
own gradient, and Adam is elementwise, so one Adam over the stacked weights is
S separate Adams.

With ``training.batch_seeds: true`` the workflow's ``train_seeds`` rule calls
:func:`train_seeds` once per configuration (see "Speed" in README.md). A
batched job checkpoints as a single run does, and a killed job resumes to the
weights an uninterrupted one ends with.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.nn import functional as F

from ffrep.config import ConfigError, RunConfig
from ffrep.ffstep import precision_context
from ffrep.models import BPNet, FFNet, goodness, relu_normalize_, unit_normalize
from ffrep.train import (
    CHUNK,
    Checkpoint,
    Checkpointer,
    FFData,
    Progress,
    adam,
    check_finite,
    generator,
    optimizer_step,
    sample_negatives,
)

log = logging.getLogger(__name__)


class StackedLinear(nn.Module):
    """S linear layers of the same shape: (S, R, D) -> (S, R, H)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([la.weight.detach() for la in layers]))
        self.bias = nn.Parameter(torch.stack([la.bias.detach() for la in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias[:, None, :], x, self.weight.transpose(1, 2))

    @torch.no_grad()
    def unstack_into(self, layers: list[nn.Linear]) -> None:
        """Copy seed s's weight and bias into ``layers[s]``."""
        for s, layer in enumerate(layers):
            layer.weight.copy_(self.weight[s])
            layer.bias.copy_(self.bias[s])


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Row ``idx[s, j]`` of ``t[s]``: (S, N, H), (S, B) -> (S, B, H)."""
    seeds = torch.arange(t.shape[0], device=t.device)[:, None]
    return t[seeds, idx]


class SeedData:
    """Each seed's negatives over one shared :class:`FFData`."""

    def __init__(self, ffdata: FFData, runs: list[RunConfig]):
        if any(run.resample_negatives for run in runs):
            # TODO(resample): draw and pass resampled negatives per seed
            raise NotImplementedError("batched seeds need fixed negatives")
        self.data = ffdata
        draws = [
            sample_negatives(
                ffdata.y,
                ffdata.allowed,
                run.negative_sampling,
                generator(run.seed, "negatives", -1),
            )
            for run in runs
        ]
        self.image = torch.stack([image for image, _ in draws]).to(ffdata.device)
        self.wrong = torch.stack([wrong for _, wrong in draws]).to(ffdata.device)

    def first_pre(self, layer: StackedLinear, rows, labels) -> torch.Tensor:
        """(S, R) image rows and labels -> (S, R, H) first-layer pre-activations."""
        s, r = rows.shape
        inputs = self.data.labelled(rows.flatten(), labels.flatten())  # (S·R, D)
        return layer(inputs.view(s, r, -1))

    def batch_pre(self, layer: StackedLinear, idx: torch.Tensor) -> torch.Tensor:
        """(S, B) positives -> (S, 2B, H): the positives, then their negatives."""
        rows = torch.cat([idx, self.image.gather(1, idx)], dim=1)  # (S, 2B)
        labels = torch.cat([self.data.y_device[idx], self.wrong.gather(1, idx)], 1)
        return self.first_pre(layer, rows, labels)


def _ff_losses(g: torch.Tensor, b: int, threshold: float) -> torch.Tensor:
    """Each seed's FF loss: (S, 2B) goodness of B positives, then B negatives,
    -> (S,)."""
    signed = torch.cat([threshold - g[:, :b], g[:, b:] - threshold], dim=1)
    return F.softplus(signed).mean(1)


class _SeedTraining:
    """What every batched trainer shares: the seeds' generators and histories,
    resuming from a checkpoint, saving one, and an epoch's bookkeeping."""

    def __init__(self, nets, runs: list[RunConfig], ckpt, checkpointer, history):
        run = runs[0]
        same = {k: v for k, v in run.__dict__.items() if k != "seed"}
        for other in runs[1:]:
            if {k: v for k, v in other.__dict__.items() if k != "seed"} != same:
                raise ValueError("batched seeds must share every setting but the seed")
        self.nets, self.runs = nets, runs
        self.checkpointer = checkpointer or Checkpointer(None, run)
        self.ckpt = ckpt or Checkpoint()
        self.gens = [generator(r.seed, "shuffle") for r in runs]
        self.histories = [history() for _ in runs]
        if self.ckpt.model:
            for net, state in zip(nets, self.ckpt.model["seeds"], strict=True):
                net.load_state_dict(state)
            for gen, state in zip(self.gens, self.ckpt.generator, strict=True):
                # a copy: torch 2.14 crashes on a state that is a view into a stack
                gen.set_state(state.clone())
            self.histories = self.ckpt.history["loss"]

    def perm(self, n: int, device) -> torch.Tensor:
        """(S, N): each seed's order of the epoch, from its own generator."""
        orders = [torch.randperm(n, generator=g) for g in self.gens]
        return torch.stack(orders).to(device)

    def epoch_losses(self, total: torch.Tensor, n: int, where: str) -> list[float]:
        """Each seed's epoch loss from its summed loss (S,), checked finite;
        the epoch's one host sync."""
        losses = (total / n).tolist()
        for run, value in zip(self.runs, losses, strict=True):
            check_finite(value, f"seed {run.seed}, {where}")
        return losses

    def save(self, stage: int, epoch: int, opt=None) -> None:
        """A checkpoint of the networks as they are in ``nets`` now."""
        self.checkpointer.save(
            Checkpoint(
                stage=stage,
                epoch=epoch,
                model={"seeds": [net.state_dict() for net in self.nets]},
                optimizer=opt.state_dict() if opt is not None else {},
                generator=torch.stack([g.get_state() for g in self.gens]),
                history={"loss": self.histories},
            )
        )


def train_ff_seeds(
    nets: list[FFNet],
    ffdata: FFData,
    runs: list[RunConfig],
    ckpt: Checkpoint | None = None,
    checkpointer: Checkpointer | None = None,
):
    """Greedy FF for every seed at once; ``nets`` are trained in place.

    ``ffdata`` is built once from the shared images (with any of the runs);
    every seed draws its own negatives and order.
    TODO(uniform): share the image product between a positive and its
    negative here too, as :meth:`train.FFData.batch_pre` does.

    With a ``checkpointer`` the seeds' weights, the stacked Adam state, the
    generators and the histories are saved as :func:`train.train_ff` saves
    them; training resumes from ``ckpt``, one that it saved.

    Returns each seed's loss history, as :func:`train.train_ff` does.
    """
    run = runs[0]
    device, n = ffdata.device, ffdata.y.shape[0]
    state = _SeedTraining(
        nets, runs, ckpt, checkpointer, lambda: [[] for _ in run.hidden_units]
    )
    ckpt = state.ckpt
    seeds = SeedData(ffdata, runs)
    hp = hn = None  # (S, N, H) n(h) of each seed's positives and negatives

    for li in range(len(run.hidden_units)):
        layer = StackedLinear([net.layers[li] for net in nets]).to(device)
        if li < ckpt.stage:
            hp, hn = _advance(seeds, layer, li, hp, hn, run)
            continue
        opt = adam(layer.parameters(), run, device)
        start_epoch = 0
        if li == ckpt.stage and ckpt.optimizer:
            opt.load_state_dict(ckpt.optimizer)
            start_epoch = ckpt.epoch
        progress = Progress(
            run.epochs, start_epoch, f"ff layer {li + 1}, {len(runs)} seeds"
        )
        for epoch in range(start_epoch, run.epochs):
            perm = state.perm(n, device)
            total = torch.zeros(len(runs), device=device)
            for start in range(0, n, run.batch_size):
                idx = perm[:, start : start + run.batch_size]  # (S, B)
                b = idx.shape[1]

                # every seed's positives, then its negatives
                with precision_context(run.precision, device):
                    if li == 0:
                        pre = seeds.batch_pre(layer, idx)
                    else:
                        pre = layer(torch.cat([_rows(hp, idx), _rows(hn, idx)], 1))
                    g = goodness(F.relu(pre), run.goodness).float()  # (S, 2B)
                    losses = _ff_losses(g, b, run.threshold)  # (S,)

                # the sum gives every seed exactly its own gradient
                optimizer_step(opt, losses.sum())
                total += losses.detach() * b
            where = f"layer {li + 1}, epoch {epoch + 1}"
            losses = state.epoch_losses(total, n, where)
            for history, value in zip(state.histories, losses, strict=True):
                history[li].append(value)
            progress.step(loss=sum(losses) / len(losses))
            if state.checkpointer.due(epoch + 1, run.epochs):
                layer.unstack_into([net.layers[li] for net in nets])
                state.save(li, epoch + 1, opt)
        progress.close()
        layer.unstack_into([net.layers[li] for net in nets])
        del opt
        if li + 1 < len(run.hidden_units):
            hp, hn = _advance(seeds, layer, li, hp, hn, run)
            state.save(li + 1, 0)
    return state.histories


class StackedNet(nn.Module):
    """The seeds' networks trained as a whole (BP/FF, BP), every layer stacked:
    the hidden layers, and BP's read-out."""

    def __init__(self, nets: list[FFNet] | list[BPNet]):
        super().__init__()
        self.nets = nets
        first = nets[0]
        self.layers = nn.ModuleList(
            StackedLinear([net.layers[i] for net in nets])
            for i in range(len(first.layers))
        )
        is_bp = isinstance(first, BPNet)
        self.head = StackedLinear([net.head for net in nets]) if is_bp else None
        self.normalization = getattr(first, "normalization", "none")

    def unstack(self) -> None:
        """Copy each seed's slices back into its network."""
        for i, layer in enumerate(self.layers):
            layer.unstack_into([net.layers[i] for net in self.nets])
        if self.head is not None:
            self.head.unstack_into([net.head for net in self.nets])


def _bp_ff_seeds_epoch(model: StackedNet, opt, seeds: SeedData, perm, run):
    """One BP/FF epoch of every seed, as :func:`train.bp_ff_epoch`; (S,) losses."""
    total = torch.zeros(perm.shape[0], device=perm.device)
    for start in range(0, perm.shape[1], run.batch_size):
        idx = perm[:, start : start + run.batch_size]  # (S, B)
        with precision_context(run.precision, perm.device):
            h = F.relu(seeds.batch_pre(model.layers[0], idx))  # (S, 2B, H)
            g = goodness(h, run.goodness)
            for layer in model.layers[1:]:
                h = F.relu(layer(unit_normalize(h, model.normalization)))
                g = g + goodness(h, run.goodness)
            losses = _ff_losses(g.float(), idx.shape[1], run.threshold)
        optimizer_step(opt, losses.sum())
        total += losses.detach() * idx.shape[1]
    return total


def _bp_seeds_epoch(model: StackedNet, opt, x, y, perm, run):
    """One BP epoch of every seed, as :func:`train.bp_epoch`; (S,) losses."""
    total = torch.zeros(perm.shape[0], device=perm.device)
    for start in range(0, perm.shape[1], run.batch_size):
        idx = perm[:, start : start + run.batch_size]  # (S, B)
        s, b = idx.shape
        with precision_context(run.precision, perm.device):
            h = x[idx]  # (S, B, D)
            for layer in model.layers:
                h = F.relu(layer(h))
            logits = model.head(h).float().flatten(0, 1)
            losses = F.cross_entropy(logits, y[idx].flatten(), reduction="none")
            losses = losses.view(s, b).mean(1)
        optimizer_step(opt, losses.sum())
        total += losses.detach() * b
    return total


def _train_seeds_end_to_end(nets, runs, ckpt, checkpointer, n, device, epoch_fn):
    """The epochs of the seeds' networks trained as a whole, stacked:
    ``epoch_fn(model, opt, perm)`` runs one epoch and returns (S,) summed
    losses. Checkpoints and resumes as :func:`train_ff_seeds` does."""
    run = runs[0]
    state = _SeedTraining(nets, runs, ckpt, checkpointer, list)
    model = StackedNet(nets).to(device)
    opt = adam(model.parameters(), run, device)
    if state.ckpt.optimizer:
        opt.load_state_dict(state.ckpt.optimizer)
    name = f"{run.algorithm}, {len(runs)} seeds"
    progress = Progress(run.epochs, state.ckpt.epoch, name)
    for epoch in range(state.ckpt.epoch, run.epochs):
        total = epoch_fn(model, opt, state.perm(n, device))
        losses = state.epoch_losses(total, n, f"epoch {epoch + 1} (all layers)")
        for history, value in zip(state.histories, losses, strict=True):
            history.append(value)
        progress.step(loss=sum(losses) / len(losses))
        if state.checkpointer.due(epoch + 1, run.epochs):
            model.unstack()
            state.save(0, epoch + 1, opt)
    progress.close()
    model.unstack()
    return state.histories


def train_bp_ff_seeds(nets, ffdata: FFData, runs, ckpt=None, checkpointer=None):
    """BP/FF for every seed at once, as :func:`train.train_bp_ff` for each."""
    seeds = SeedData(ffdata, runs)

    def epoch_fn(model, opt, perm):
        return _bp_ff_seeds_epoch(model, opt, seeds, perm, runs[0])

    n = ffdata.y.shape[0]
    return _train_seeds_end_to_end(
        nets, runs, ckpt, checkpointer, n, ffdata.device, epoch_fn
    )


def train_bp_seeds(nets, x, y, runs, ckpt=None, checkpointer=None):
    """BP for every seed at once, as :func:`train.train_bp` for each."""

    def epoch_fn(model, opt, perm):
        return _bp_seeds_epoch(model, opt, x, y, perm, runs[0])

    return _train_seeds_end_to_end(
        nets, runs, ckpt, checkpointer, x.shape[0], x.device, epoch_fn
    )


@torch.no_grad()
def _advance(seeds: SeedData, layer: StackedLinear, li: int, hp, hn, run):
    """Every seed's positives and negatives through its trained layer, over
    their old storage where the widths allow (a chunk's rows depend on that
    chunk's inputs only)."""
    n, s = seeds.data.y.shape[0], seeds.image.shape[0]
    norm = run.input_normalization
    width = layer.weight.shape[1]
    if li > 0 and hp.shape[-1] == width:
        out_p, out_n = hp, hn
    else:
        out_p = seeds.data.base.new_empty(s, n, width)
        out_n = torch.empty_like(out_p)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        if li == 0:
            rows = torch.arange(sl.start, sl.stop, device=out_p.device).expand(s, -1)
            pos = seeds.first_pre(layer, rows, seeds.data.y_device[rows])
            neg = seeds.first_pre(layer, seeds.image[:, sl], seeds.wrong[:, sl])
        else:
            pos, neg = layer(hp[:, sl]), layer(hn[:, sl])
        out_p[:, sl] = relu_normalize_(pos, norm)
        out_n[:, sl] = relu_normalize_(neg, norm)
    return out_p, out_n


def seeds_problem(runs: list[RunConfig]) -> str | None:
    """Why ``runs`` cannot be trained as one batched job, or None."""
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        return f"each seed once, please: got seeds {seeds}"
    first = {k: v for k, v in runs[0].__dict__.items() if k != "seed"}
    for other in runs[1:]:
        differ = sorted(
            k for k, v in other.__dict__.items() if k != "seed" and first[k] != v
        )
        if differ:
            return (
                f"the runs must differ in their seed only; seed {other.seed}"
                f" differs in {', '.join(differ)}"
            )
    run = runs[0]
    if run.algorithm != "bp" and run.resample_negatives:
        return (
            "batched seeds need fixed negatives; set"
            " forward_forward.resample_negatives: false, or train the seeds apart"
        )
    if run.algorithm == "ff" and run.ff_deeper_inputs == "recomputed":
        return (
            "batched seeds keep their deeper inputs stored; set"
            " training.ff_deeper_inputs: stored, or train the seeds apart"
        )
    return None


def train_seeds(
    runs: list[RunConfig],
    data_path,
    model_outs: list,
    metrics_outs: list,
    checkpoint=None,
) -> list[dict]:
    """Train the seeds ``runs`` of one configuration in one job and write
    every seed's weights and metrics where its own ``ffrep train`` would;
    ``checkpoint`` is the job's checkpoint file, removed once they are."""
    from ffrep.datasets import DATASETS
    from ffrep.models import LabelOverlay, build_model
    from ffrep.train import (
        allowed_classes,
        configure_torch,
        finish_run,
        label_value,
        training_data,
    )

    problem = seeds_problem(runs)
    if problem is not None:
        raise ConfigError(f"ffrep train-seeds: {problem}")
    run = runs[0]
    device = configure_torch(run)
    log.info(
        "training seeds %s of %s on %s", [r.seed for r in runs], run.run_id, device
    )
    splits, x, y = training_data(run, data_path, device)
    info = DATASETS[run.dataset]
    nets = []
    for r in runs:
        torch.manual_seed(r.seed)
        nets.append(build_model(r.algorithm, info, r).to(device))
    checkpointer = Checkpointer(
        checkpoint, run, runs[1:], data=splits.digest, kind="seeds"
    )
    ckpt = checkpointer.load(nets) or Checkpoint()
    t0 = time.perf_counter()
    train_label = None
    if run.algorithm == "bp":
        histories = train_bp_seeds(nets, x, y, runs, ckpt, checkpointer)
    else:
        train_label = label_value(run, x)
        overlay = LabelOverlay(info, train_label, device)
        ffdata = FFData(x, y.cpu(), allowed_classes(run), run, overlay, device)
        del x
        trainer = train_ff_seeds if run.algorithm == "ff" else train_bp_ff_seeds
        histories = trainer(nets, ffdata, runs, ckpt, checkpointer)
        del ffdata
    wall_s = time.perf_counter() - t0
    timing = {
        "n_train": int(y.shape[0]),
        "wall_time_s": wall_s / len(runs),
        "batched_seeds": [r.seed for r in runs],
        "batched_wall_time_s": wall_s,
    }
    resumed = bool(ckpt.model)
    metrics = [
        finish_run(net, r, splits, h, timing, train_label, resumed, m, j)
        for net, r, h, m, j in zip(
            nets, runs, histories, model_outs, metrics_outs, strict=True
        )
    ]
    checkpointer.remove()
    return metrics
