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


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether :func:`linear` computes ``x``'s product with oneDNN: fp32 on a
    CPU, outside autocast, where torch has oneDNN's linear."""
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    relu: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x · weightᵀ + bias``, through a ReLU if ``relu``.

    On a CPU in fp32 oneDNN's linear computes it in a new tensor, with the bias
    and the ReLU fused into the product: on the AMD EPYC the benchmark was
    written on, its products ran about 7 % faster than those of the default
    BLAS (MKL) at the FF layers' shapes. Elsewhere the product goes into
    ``out`` (a new tensor if None) and the bias and the ReLU follow. Both give
    the same numbers to float rounding.
    """
    if uses_onednn(x):
        return _ONEDNN_LINEAR(x, weight, bias, "relu" if relu else "none", [], "")
    if out is None:
        out = x.new_empty(x.shape[0], weight.shape[0])
    torch.mm(x, weight.T, out=out)
    if bias is not None:
        out.add_(bias)
    return out.clamp_min_(0) if relu else out
