# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The local gradient's norm as a nonlinearity: edge strength without orientation, for isotropic networks.

An SRE kernel is radially symmetric, so a stack of SRE convolutions and pointwise activations only ever computes
isotropic filters of isotropic features: it can respond to a blob or a ring, never to the strength of an edge whatever
its direction, the first feature a dense network learns. The norm of the local gradient,
``sqrt(sum_axis ((x[i + 1] - x[i - 1]) / 2) ** 2)`` per channel (central differences, zero padding), is that feature:
a flip of an axis changes the sign of that axis's difference and a permutation of the axes reorders the sum, so the
norm commutes exactly (up to float rounding of the sum) with every rot90/flip symmetry of the grid (the group SRE is
exact for), and for a smooth signal it is the gradient's magnitude up to a second-order error at any other angle.

:class:`GradientNormActivation` applies the usual activation to most channels of a pre-activation and replaces the
rest with their gradient norm; :class:`~monai_sre.networks.SREResNet` uses it after the first convolution of the stem
and of every block when ``gradient_fraction > 0`` (issue 14: with half of the channels, SRE-ResNet-18's upright test
AUC on BreastMNIST 28 rose from 0.799 +- 0.008 to 0.844 +- 0.021 with the 2D bundle's recipe, 3 seeds; the trade-offs
under rotation are in benchmarks/README.md, "Edges without orientation").
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = ["gradient_norm", "GradientNormActivation", "gradient_norm_activation"]


def gradient_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The norm of each channel's central-difference gradient, ``sqrt(eps + sum_axis d_axis ** 2)``.

    ``d_axis[i] = (x[i + 1] - x[i - 1]) / 2`` with zero padding at the border, so the output has the input's shape
    and commutes with flips and permutations of the spatial axes (exactly, up to the order in which the float squares
    are summed). Half-precision inputs are computed in float32 (a bf16 ``eps`` would vanish and the square root's
    gradient at a flat region would be infinite) and returned in their dtype.

    Args:
        x: ``(batch, channels, *spatial)`` with 1 to 3 spatial axes.
        eps: added under the square root, so that the gradient stays finite where the input is flat.

    Returns:
        a tensor of ``x``'s shape and dtype, >= ``sqrt(eps)``.

    Raises:
        ValueError: for an input without a spatial axis.
    """
    dims = x.dim() - 2
    if dims < 1:
        raise ValueError(f"gradient_norm expects (batch, channels, *spatial) with a spatial axis, got {list(x.shape)}.")
    xf = x if x.dtype == torch.float32 or x.dtype == torch.float64 else x.float()
    squares = torch.full_like(xf, eps)
    for axis in range(2, x.dim()):
        pad: List[int] = [0] * (2 * dims)
        pad[2 * (x.dim() - 1 - axis)] = 1  # F.pad pairs run from the last axis backwards
        pad[2 * (x.dim() - 1 - axis) + 1] = 1
        padded = F.pad(xf, pad)
        n = x.size(axis)
        diff = (padded.narrow(axis, 2, n) - padded.narrow(axis, 0, n)) * 0.5
        squares = squares + diff * diff
    return squares.sqrt().to(x.dtype)


class GradientNormActivation(nn.Module):
    """The activation on the first channels, the local gradient's norm (:func:`gradient_norm`) on the last ones.

    The module has no weights; its buffer ``gradient_index`` (the indices of the gradient-norm channels) puts the split
    into every state dict, so that a checkpoint trained with another split (or none) is refused by its shape or as a
    missing/unexpected tensor instead of loading silently into a network that computes something else.

    Args:
        act: the activation of the first ``channels - gradient_channels`` channels (a MONAI activation name/tuple, or a
            module).
        channels: channels of the input.
        gradient_channels: how many of the last channels carry the gradient norm instead.
        eps: see :func:`gradient_norm`.

    Raises:
        ValueError: unless ``0 < gradient_channels < channels``; at call time for an input with another channel count.
    """

    def __init__(self, act: str | tuple | nn.Module, channels: int, gradient_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        if not 0 < gradient_channels < channels:
            raise ValueError(
                f"gradient_channels must be between 0 and channels={channels} (both excluded), got {gradient_channels}."
            )
        self.act = act if isinstance(act, nn.Module) else get_act_layer(name=act)
        self.channels = channels
        self.split = channels - gradient_channels
        self.eps = eps
        self.register_buffer("gradient_index", torch.arange(self.split, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) != self.channels:
            raise ValueError(f"GradientNormActivation expects {self.channels} channels, got input {list(x.shape)}.")
        # the activation may work in place on its slice; the gradient norm reads the other channels only
        activated = self.act(x[:, : self.split])
        return torch.cat([activated, gradient_norm(x[:, self.split :], self.eps)], 1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, gradient_channels={self.channels - self.split}"


def gradient_norm_activation(act: str | tuple, channels: int, fraction: float) -> nn.Module:
    """The activation of a layer with ``channels`` channels of which ``round(fraction * channels)`` carry the gradient
    norm: a :class:`GradientNormActivation`, or the plain activation when that rounds to none.

    Raises:
        ValueError: unless ``0 <= fraction < 1``.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"gradient_fraction must be in [0, 1), got {fraction}.")
    gradient_channels = int(round(fraction * channels))
    if gradient_channels == 0:
        return get_act_layer(name=act)
    return GradientNormActivation(act, channels, min(gradient_channels, channels - 1))
