"""The layer-local FF step computed by hand, on buffers kept between steps.

For every goodness the FF loss's gradient with respect to a layer's
pre-activations is the layer's output ``h`` times one coefficient per row
(see :func:`models.goodness_coefficient`), so a step needs no autograd graph:
the layer's product with its bias and ReLU (:func:`linear`), the goodness, the
coefficients, the outputs scaled in place into the gradient, the weight
gradient's product into the kept ``.grad``, and Adam.

Apart from the layer's output where oneDNN computes it (see
:func:`kernels.linear`), no tensor of a batch's size is allocated after the
first step. On a CPU a fresh tensor of that size (8 MiB for 2048 rows of 1000)
is often memory the allocator maps anew, whose first touch costs page faults;
a step of the plain autograd form, with several such tensors, spent about a
fifth of its time in them on the 2-core machine the benchmark was written on.
The step gives the autograd form's numbers to float rounding (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ffrep.config import RunConfig
from ffrep.kernels import linear, uses_onednn
from ffrep.models import goodness, goodness_coefficient, one_hot


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of the training loops: ``fp32``, ``tf32`` (CUDA matmuls in
    TF32) or ``bf16`` (autocast; weights and optimiser state stay fp32)."""
    if precision == "fp32":
        yield
    elif precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved[0]
            torch.backends.cudnn.allow_tf32 = saved[1]
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        raise ValueError(f"unknown precision {precision!r}")


@dataclass
class SharedImages:
    """A first layer's batch whose negatives are their positives' images with
    another label (``uniform``): B label-free normalised images, their label
    scales, and (2, B) labels, positives' then negatives'."""

    base: torch.Tensor
    scale: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor  # (10, C) input positions of each label


@dataclass
class FFBatches:
    """Where an FF layer's steps read their inputs from.

    ``rows(idx, out)`` gives the (2B, D) inputs of positives ``idx`` and then of
    their negatives, written into ``out`` (a kept buffer) where it can, or into
    a new tensor when ``out`` is None. For a first layer whose negatives share
    their positives' images, ``shared(idx, out)`` gives :class:`SharedImages`
    instead (the B images written into ``out``).
    """

    rows: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    shared: Callable[[torch.Tensor, torch.Tensor | None], SharedImages] | None = None


class FFStep:
    """One layer-local FF step at a time for ``layer``, by hand, with the
    optimiser ``opt`` (an attribute, which may be replaced between steps).

    The run's precision must be ``fp32`` or ``tf32`` (TF32 products on CUDA);
    ``bf16`` runs under autocast through autograd instead (see
    :func:`train.ff_step`).
    """

    def __init__(self, layer: nn.Linear, opt: torch.optim.Optimizer, run: RunConfig):
        if run.precision == "bf16":
            raise ValueError("the hand-computed FF step runs in fp32 or tf32 only")
        self.layer, self.opt, self.run = layer, opt, run
        self._kept: dict[str, torch.Tensor] = {}
        for p in layer.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _buffer(self, name: str, rows: int, width: int) -> torch.Tensor:
        """A kept (rows, width) buffer; a smaller last batch uses its head."""
        kept = self._kept.get(name)
        if kept is None or kept.shape[0] < rows or kept.shape[1] != width:
            w = self.layer.weight
            kept = self._kept[name] = w.new_empty(rows, width)
        return kept[:rows]

    @torch.no_grad()
    def __call__(self, batches: FFBatches, idx: torch.Tensor) -> torch.Tensor:
        """Train on positives ``idx`` and their negatives; the batch's mean loss
        as a device scalar."""
        with precision_context(self.run.precision, idx.device):
            return self._step(batches, idx)

    def _step(self, batches: FFBatches, idx: torch.Tensor) -> torch.Tensor:
        b = idx.shape[0]
        weight, bias = self.layer.weight, self.layer.bias
        h_width, d_width = weight.shape
        if batches.shared is not None:
            batch = batches.shared(idx, self._buffer("inputs", b, d_width))
            h = self._twice_labelled_pre(batch).clamp_min_(0)
            loss = self._to_gradient_(h, b)
            self._twice_labelled_grads(batch, h)
        else:
            inputs = batches.rows(idx, self._buffer("inputs", 2 * b, d_width))
            # oneDNN writes its product into a tensor of its own
            out = (
                None
                if uses_onednn(inputs, weight)
                else self._buffer("pre", 2 * b, h_width)
            )
            h = linear(inputs, weight, bias, True, out)
            loss = self._to_gradient_(h, b)
            torch.sum(h, 0, out=bias.grad)
            torch.mm(h.T, inputs, out=weight.grad)
        self.opt.step()
        return loss

    def _to_gradient_(self, h: torch.Tensor, b: int) -> torch.Tensor:
        """Turn (2b, H) outputs ``h = relu(pre)``, positives first, into the
        loss's gradient with respect to the pre-activations, in place; return
        the mean loss.

        loss = mean(softplus(s)), s = θ - g for positives and g - θ for
        negatives, so dloss/dg = ∓ sigmoid(s) / 2b; dg/dpre is ``h`` times a
        per-row coefficient, zero wherever the ReLU is off.
        """
        g = goodness(h, self.run.goodness)  # (2b,)
        signed = torch.cat([self.run.threshold - g[:b], g[b:] - self.run.threshold])
        loss = F.softplus(signed).mean()
        grad_g = torch.sigmoid(signed).div_(2 * b)
        grad_g[:b].neg_()
        coef = goodness_coefficient(grad_g, g, h.shape[1], self.run.goodness)
        h.mul_(coef[:, None])
        return loss

    def _twice_labelled_pre(self, batch: SharedImages) -> torch.Tensor:
        """(2B, H) pre-activations of the B images labelled twice, from one
        product with their shared image part (as
        :func:`models.twice_labelled_pre`): the product goes into the first
        half, is copied to the second, and each row's label columns, scaled,
        are added by one product with the (2B, 10) scaled one-hot labels."""
        weight, bias = self.layer.weight, self.layer.bias
        b, h_width = batch.base.shape[0], weight.shape[0]
        pre = self._buffer("pre", 2 * b, h_width)
        first = pre[:b]
        image_part = linear(batch.base, weight, bias, False, first)
        pre[b:].copy_(image_part)
        if image_part is not first:
            first.copy_(image_part)
        label_rows = weight[:, batch.positions].sum(-1).T  # (10, H)
        pre.addmm_(self._scaled_labels(batch), label_rows)
        return pre

    def _twice_labelled_grads(self, batch: SharedImages, grad: torch.Tensor) -> None:
        """The weight and bias gradients from the (2B, H) gradient of
        :meth:`_twice_labelled_pre` (overwritten)."""
        weight, bias = self.layer.weight, self.layer.bias
        b = batch.base.shape[0]
        # each label's columns collect the scaled gradients of its copies
        per_label = self._scaled_labels(batch).T.mm(grad)  # (10, H)
        shared = grad[:b].add_(grad[b:])  # both copies read the image part
        torch.sum(shared, 0, out=bias.grad)
        torch.mm(shared.T, batch.base, out=weight.grad)  # zero on the label region
        c = batch.positions.shape[1]
        weight.grad.index_add_(
            1, batch.positions.flatten(), per_label.repeat_interleave(c, 0).T
        )

    @staticmethod
    def _scaled_labels(batch: SharedImages) -> torch.Tensor:
        """(2B, 10): each copy's one-hot label times its image's label scale."""
        coef = one_hot(batch.labels.flatten(), batch.base.dtype)
        return coef.mul_(batch.scale.repeat(2)[:, None])
