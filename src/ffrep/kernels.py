"""Dense products of the layers, on the fastest kernel torch offers for them."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _onednn_linear() -> Callable | None:
    """oneDNN's linear layer with a fused activation, where torch has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor | None = None) -> bool:
    """Whether :func:`linear` computes ``x``'s product (with ``weight``) on
    oneDNN: fp32 on a CPU, outside autocast, with no gradient to record (the
    op has no backward), where torch has oneDNN's linear."""
    tracked = torch.is_grad_enabled() and (
        x.requires_grad or (weight is not None and weight.requires_grad)
    )
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.shape[1] > 0
        and not torch.is_autocast_enabled("cpu")
        and not tracked
    )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    relu: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x · weightᵀ + bias``, through a ReLU if ``relu``; no gradient is
    recorded through it on oneDNN (see :func:`uses_onednn`).

    On a CPU in fp32 oneDNN's linear computes it in a new tensor, with the bias
    fused into the product: on the AMD EPYC the benchmark was written on, its
    products ran about 7 % faster than those of the default BLAS (MKL) at the
    FF layers' shapes. Elsewhere the product goes into ``out`` (a new tensor if
    None) and the bias follows. The ReLU is a pass of its own either way:
    oneDNN's fused ReLU turns a NaN into 0, and a diverging run must show its
    NaNs. Both give the same numbers to float rounding, NaNs included.
    """
    if uses_onednn(x, weight):
        if bias is not None:
            bias = bias.contiguous()  # oneDNN reads the bias as contiguous
        out = _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    else:
        if out is None:
            out = torch.mm(x, weight.T)
        else:
            torch.mm(x, weight.T, out=out)
        if bias is not None:
            out.add_(bias)
    return out.clamp_min_(0) if relu else out
