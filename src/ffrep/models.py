"""The three model families of the paper: FF and BP/FF networks, and the BP MLP."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ffrep.datasets import N_CLASSES, DatasetInfo
from ffrep.kernels import linear, uses_onednn

EPS = 1e-12


def goodness(h: torch.Tensor, kind: str) -> torch.Tensor:
    """Goodness of each row of ``h``: (..., H) -> (...)."""
    if kind == "l2_norm":
        return torch.linalg.vector_norm(h, dim=-1)
    if kind == "sum_of_squares":
        return h.pow(2).sum(-1)
    if kind == "mean_of_squares":
        return h.pow(2).mean(-1)
    raise ValueError(f"unknown goodness {kind!r}")


def goodness_coefficient(
    grad_g: torch.Tensor, g: torch.Tensor, width: int, kind: str
) -> torch.Tensor:
    """The per-row ``c`` of a goodness's gradient ``dg/dh = c · h``, times the
    gradient ``grad_g`` arriving at the goodness ``g`` of rows ``width`` wide."""
    if kind == "l2_norm":
        # d||h||/dh = h / ||h||, and 0 for an all-zero row, as autograd gives
        return torch.where(g > 0, grad_g / g.clamp_min(EPS), 0.0)
    if kind == "sum_of_squares":
        return 2.0 * grad_g
    if kind == "mean_of_squares":
        return 2.0 * grad_g / width
    raise ValueError(f"unknown goodness {kind!r}")


class _ReluGoodness(torch.autograd.Function):
    """``goodness(relu(pre))`` with a one-pass backward.

    Every goodness is a function of ``h = relu(pre)`` whose gradient is ``h``
    times a per-row coefficient, and ``h`` is zero wherever the ReLU is off,
    so ``d pre = h · c`` needs neither the ReLU mask nor the norm's guard.
    """

    @staticmethod
    def forward(ctx, pre: torch.Tensor, kind: str) -> torch.Tensor:
        h = F.relu(pre)
        g = goodness(h, kind)
        ctx.save_for_backward(h, g)
        ctx.kind = kind
        return g

    @staticmethod
    def backward(ctx, grad_g: torch.Tensor):
        h, g = ctx.saved_tensors
        coef = goodness_coefficient(grad_g, g, h.shape[-1], ctx.kind)
        return h * coef.unsqueeze(-1).to(h.dtype), None


def relu_goodness(pre: torch.Tensor, kind: str) -> torch.Tensor:
    """``goodness(relu(pre), kind)``: (..., H) -> (...), with a cheap backward."""
    if kind not in ("l2_norm", "sum_of_squares", "mean_of_squares"):
        raise ValueError(f"unknown goodness {kind!r}")
    return _ReluGoodness.apply(pre, kind)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, threshold: float):
    """Mean of softplus(θ - g+) over positives and softplus(g- - θ) over
    negatives, taken over both sets together."""
    return F.softplus(torch.cat([threshold - g_pos, g_neg - threshold])).mean()


class LabelOverlay:
    """Writes a class label into flattened images, as the authors do.

    The label region is the first 10 values of row 0 (in every channel for
    RGB); it is zeroed and the label's position is set to ``value``.
    """

    def __init__(self, info: DatasetInfo, value: float, device=None):
        c, h, w = info.shape
        cols = torch.arange(N_CLASSES)
        channels = torch.arange(c) * (h * w)
        # (10, C): the flat positions that carry class k
        self.positions = (cols[:, None] + channels[None, :]).to(device)
        self.region = self.positions.reshape(-1)
        self.value = float(value)
        self.n_inputs = c * h * w

    def to(self, device) -> LabelOverlay:
        self.positions = self.positions.to(device)
        self.region = self.region.to(device)
        return self

    def apply_(self, x: torch.Tensor, labels: torch.Tensor | int) -> torch.Tensor:
        """Write ``labels`` into ``x`` (N, D) in place and return it."""
        x[:, self.region] = 0
        if isinstance(labels, int):
            x[:, self.positions[labels]] = self.value
        else:
            rows = torch.arange(x.shape[0], device=x.device)[:, None]
            x[rows, self.positions[labels]] = self.value
        return x

    def apply(self, x: torch.Tensor, labels: torch.Tensor | int) -> torch.Tensor:
        return self.apply_(x.clone(), labels)

    def neutral_(self, x: torch.Tensor) -> torch.Tensor:
        """Spread the label value evenly over the ten positions."""
        x[:, self.region] = self.value / N_CLASSES
        return x


@torch.no_grad()
def label_free_(
    x: torch.Tensor, overlay: LabelOverlay, normalization: str, chunk: int = 8192
) -> torch.Tensor:
    """Rewrite ``x`` (N, D) in place as the label-free part of its normalised,
    labelled copies and return each row's label scale (N,).

    Every labelled copy of an image has the same length
    ``s = sqrt(||x0||² + C v²)`` (x0: the image with its label region zeroed, C
    channels, v the label value), so ``n(x with label c) = x0 / s + (v / s) e_c``
    where ``e_c`` marks the positions of label c. ``x`` becomes ``x0 / s`` and
    the returned scale is ``v / s`` (``v`` when there is no normalisation).
    """
    x[:, overlay.region] = 0
    scale = x.new_full((x.shape[0],), overlay.value)
    if normalization == "none":
        return scale
    label_sq = overlay.positions.shape[1] * overlay.value**2
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]
        length = (xb.pow(2).sum(-1) + label_sq).sqrt().clamp_min(EPS)  # (B,)
        xb.div_(length[:, None])
        scale[start : start + chunk] = overlay.value / length
    return scale


def labelled_input_(
    rows: torch.Tensor,
    positions: torch.Tensor,
    scale: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Write the labels into label-free normalised inputs (see
    :func:`label_free_`), in place: (R, D) with (R,) scales and (R,) labels.

    ``positions`` (10, C) are the flat positions of each label; the label
    region of ``rows`` is zero, so the normalised labelled input is ``rows``
    with ``scale`` at its label's positions.
    """
    r = torch.arange(rows.shape[0], device=rows.device)[:, None]
    rows[r, positions[labels]] = scale[:, None].to(rows.dtype)
    return rows


def labelled_pre(
    layer: nn.Linear,
    positions: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """First-layer pre-activations of labelled, normalised inputs from their
    parts (see :func:`label_free_`): (R, D), (R,), (R,) -> (R, H). ``base`` is
    left as it is; no row is normalised again."""
    return layer(labelled_input_(base.clone(), positions, scale, labels))


class _TwiceLabelledPre(torch.autograd.Function):
    """First-layer pre-activations of images each labelled twice, from one
    product with their shared image part (see :func:`twice_labelled_pre`)."""

    @staticmethod
    def forward(ctx, base, scale, labels, positions, weight, bias):
        shared = torch.addmm(bias, base, weight.T)  # (B, H)
        label_rows = weight[:, positions].sum(-1).T  # (10, H)
        # (2, B, H): the shared part plus each copy's label columns, scaled
        pre = torch.addcmul(shared, scale[:, None], label_rows[labels])
        ctx.save_for_backward(base, scale, labels, positions)
        return pre.view(-1, shared.shape[1])

    @staticmethod
    def backward(ctx, grad):
        base, scale, labels, positions = ctx.saved_tensors
        g = grad.view(2, base.shape[0], -1)
        shared = g[0] + g[1]  # both copies read the same image part
        grad_w = shared.T.mm(base)  # (H, D); zero on the label region
        grad_b = shared.sum(0)
        # each label's columns collect the scaled gradients of its copies
        coef = one_hot(labels.flatten(), grad.dtype) * scale.repeat(2)[:, None]
        per_label = coef.T.mm(grad)  # (10, H)
        c = positions.shape[1]
        grad_w.index_add_(1, positions.flatten(), per_label.repeat_interleave(c, 0).T)
        return None, None, None, None, grad_w, grad_b


def twice_labelled_pre(
    layer: nn.Linear,
    positions: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """(2B, H) first-layer pre-activations of B label-free normalised images
    (see :func:`label_free_`), labelled ``labels[0]`` and then ``labels[1]``
    ((2, B)).

    Both copies of an image have the same length, so they share the product
    of its image part, computed once, and differ by their label's columns of
    the weight. The weight's gradient is likewise one product over B rows; no
    labelled input is built. ``base`` itself gets no gradient.
    """
    return _TwiceLabelledPre.apply(
        base, scale, labels, positions, layer.weight, layer.bias
    )


def unit_normalize(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "none":
        return x
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(EPS)


@torch.no_grad()
def relu_normalize_(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``unit_normalize(relu(x))`` over ``x``'s storage, for inputs kept whole."""
    x = F.relu_(x)
    if kind == "none":
        return x
    return x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(EPS))


def one_hot(labels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(...,) class indices -> (..., 10), by a gather: no check, no host sync."""
    return torch.eye(N_CLASSES, dtype=dtype, device=labels.device)[labels]


class FFNet(nn.Module):
    """``h_l = relu(W_l · n(h_{l-1}) + b_l)`` for each hidden layer.

    Used by FF (each layer trained on its own goodness) and by BP/FF (the
    summed goodness trained end to end).
    """

    def __init__(self, n_inputs: int, hidden_units: list[int], normalization="l2"):
        super().__init__()
        widths = [n_inputs, *hidden_units]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.normalization = normalization

    def layer_forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.layers[index](unit_normalize(x, self.normalization)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden layer's activation: a list of (N, H_l)."""
        hidden = []
        for i in range(len(self.layers)):
            x = self.layer_forward(i, x)
            hidden.append(x)
        return hidden


class BPNet(nn.Module):
    """``[Linear → ReLU] × L → Linear(→10)`` trained on cross-entropy."""

    def __init__(self, n_inputs: int, hidden_units: list[int]):
        super().__init__()
        widths = [n_inputs, *hidden_units]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], N_CLASSES)

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = F.relu(layer(x))
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x)[-1])


def build_model(algorithm: str, info: DatasetInfo, run) -> nn.Module:
    if algorithm == "bp":
        return BPNet(info.n_inputs, run.hidden_units)
    return FFNet(info.n_inputs, run.hidden_units, run.input_normalization)


@torch.no_grad()
def ff_label_goodness(
    net: FFNet,
    x: torch.Tensor,
    overlay: LabelOverlay,
    kind: str,
    chunk: int = 128,
) -> torch.Tensor:
    """Goodness of every layer for every candidate label: (N, 10, L).

    The ten labelled copies of an image differ only in the label region and
    have the same length, so the first layer's product with the image part is
    computed once and the label's columns are added per candidate. ``chunk``
    images (ten times as many rows) at a time keep a layer's input and output
    in the CPU's cache, where the products run fastest.
    """
    n_layers = len(net.layers)
    out = torch.empty(x.shape[0], N_CLASSES, n_layers, device=x.device)
    first = net.layers[0]
    # (10, H): the label value times the first layer's weight summed over each
    # label's positions
    label_rows = overlay.value * first.weight[:, overlay.positions].sum(-1).T
    # one label entry per channel contributes value² to the squared length
    label_sq = overlay.positions.shape[1] * overlay.value**2
    # each layer's output in a buffer of its own, kept for every chunk (where
    # oneDNN computes the deeper layers, only the first's)
    deeper = not uses_onednn(x, first.weight)
    kept = [
        x.new_empty(chunk * N_CLASSES, layer.out_features) if i == 0 or deeper else None
        for i, layer in enumerate(net.layers)
    ]
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk].clone()
        b = xb.shape[0]
        xb[:, overlay.region] = 0
        if net.normalization == "l2":
            scale = (xb.pow(2).sum(-1, keepdim=True) + label_sq).sqrt()
            scale = scale.clamp_min(EPS).reciprocal()  # (B, 1)
        else:
            scale = xb.new_ones(b, 1)
        # (B, H): the shared image part, scaled, with the bias
        shared = torch.addcmul(first.bias, linear(xb, first.weight, None, False), scale)
        # (B, 10, H): first-layer pre-activations of the ten labelled copies
        pre = kept[0][: b * N_CLASSES].view(b, N_CLASSES, -1)
        torch.addcmul(shared[:, None, :], scale[:, :, None], label_rows, out=pre)
        h = F.relu_(pre).view(-1, pre.shape[-1])  # (B*10, H)
        for i in range(n_layers):
            if i:
                out_i = kept[i][: h.shape[0]] if kept[i] is not None else None
                h = _layer_into(net, i, h, out_i)
            out[start : start + chunk, :, i] = goodness(h, kind).view(-1, N_CLASSES)
    return out


def _layer_into(net: FFNet, i: int, h: torch.Tensor, out: torch.Tensor | None):
    """``net.layer_forward(i, h)``, written into ``out`` where the kernel allows
    (see :func:`kernels.linear`); ``h`` is normalised in place."""
    if net.normalization != "none":
        h.div_(torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp_min(EPS))
    layer = net.layers[i]
    return linear(h, layer.weight, layer.bias, True, out)


def ff_predict(goodness_per_label: torch.Tensor, rule: str) -> torch.Tensor:
    """Predicted class from (N, 10, L) goodness."""
    if rule == "softmax_sum":
        return goodness_per_label.softmax(dim=1).sum(-1).argmax(dim=1)
    if rule == "goodness_sum_skip_first":
        # Hinton's rule; a one-layer network has no layer to keep but the first
        kept = (
            goodness_per_label[:, :, 1:]
            if goodness_per_label.shape[-1] > 1
            else (goodness_per_label)
        )
        return kept.sum(-1).argmax(dim=1)
    raise ValueError(f"unknown prediction rule {rule!r}")
