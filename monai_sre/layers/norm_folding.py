# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Inference-time folding of a BatchNorm into the SRE convolution before it.

In inference a BatchNorm with running statistics is a fixed per-channel affine map, so ``norm(conv(x))`` equals one
convolution with scaled band weights and a shifted bias. On the ring-decomposed path the folded weights are just the
mixing matrices scaled per output channel, so the norm's pass over the feature map disappears (about 5-8% of an
SRE-ResNet's inference on CPU). Nothing is folded in place: the modules, their state dicts and training are
unchanged, and folding is skipped wherever it could change behaviour (training mode, no running statistics, hooks
on either module, the dense path whose kernel is cached).
"""

from __future__ import annotations

import torch
from torch import nn

from monai_sre.layers.sre_conv import SREConv

__all__ = ["batch_norm_affine", "conv_norm"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel ``(scale, shift)`` that an inference-mode BatchNorm applies, or None when ``norm`` is not one.

    Args:
        norm: any module.

    Returns:
        ``(scale, shift)`` with ``norm(y) == y * scale + shift`` per channel, or None for other modules, a BatchNorm
        in training mode, or one without running statistics.
    """
    if not isinstance(norm, _BATCH_NORMS) or norm.training:
        return None
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        return None
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, computed as one convolution when ``norm`` is an inference-mode BatchNorm after an
    :class:`~monai_sre.layers.SREConv` on its ring-decomposed path.

    Args:
        conv: the convolution.
        norm: the normalisation after it.
        x: input of ``conv``.

    Returns:
        ``norm(conv(x))`` (the same numbers to float rounding).
    """
    if isinstance(conv, SREConv) and not (_has_hooks(conv) or _has_hooks(norm)) and conv.use_decomposed():
        affine = batch_norm_affine(norm)
        if affine is not None:
            return conv.forward_affine(x, *affine)
    return norm(conv(x))
