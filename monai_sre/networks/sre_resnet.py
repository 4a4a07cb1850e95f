# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SREResNet: MONAI's ResNet with SRE convolutions and symmetric downsampling, exactly invariant to rot90 and flips.

Differences from :class:`monai.networks.nets.ResNet` (same argument names and order, SRE options appended):

- every spatial convolution is an :class:`~monai_sre.layers.SREConv` (radially symmetric kernel, stride 1); every
  stride becomes a :class:`~monai_sre.layers.SymmetricDownsample` in front of it, and the max-pool a symmetric max
  pool, so with a global-pooling head the logits are exactly invariant to the 8 (2D) or 48 (3D) rot90/flip
  symmetries of the input at any input size, odd or even (28, 64, 65, ...);
- ``norm`` and ``act`` reach every block and shortcut (MONAI applies them to the stem only; a norm with a fixed
  ``normalized_shape`` stays at the stem, and ``block_norm`` chooses another), ``norm="instance"`` (no affine weight)
  works, and ``shortcut_type="A"`` is scriptable;
- a fresh BatchNorm's running variance accounts for the gain of its SRE kernel on smooth input, so untrained deep
  networks stay finite in eval mode; ``zero_init_residual`` (as torchvision) keeps them O(1) at every depth;
- ``sre_resnetN(pretrained=<path>)`` loads a local checkpoint as MONAI's builders do; no public SRE weights exist,
  so ``pretrained=True`` raises;
- defaults suit MedMNIST: a 5-voxel stem at stride 1 and no max-pool (``conv1_t_size=5``, ``no_max_pool=True``),
  stage kernels ``[9, 9, 5, 5]`` in 1D/2D and ``5`` in 3D;
- the input is checked: rank, channel count and a minimum size (see :attr:`SREResNet.min_input_size`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck, get_inplanes
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_sre.layers.gradient_norm import gradient_norm_activation
from monai_sre.layers.norm_folding import conv_norm, sequential_conv_norm
from monai_sre.layers.pooling import DOWNSAMPLE_MODES, SymmetricDownsample
from monai_sre.layers.ring_ops import channels_last
from monai_sre.layers.rings import taps_inside
from monai_sre.layers.sre_conv import SREConv, set_band_scale_

__all__ = [
    "SREResNet",
    "SREResNetBlock",
    "SREResNetBottleneck",
    "sre_resnet10",
    "sre_resnet18",
    "sre_resnet34",
    "sre_resnet50",
    "sre_resnet101",
    "sre_resnet152",
    "sre_resnet200",
    "default_kernel_sizes",
    "smooth_input_gain",
    "SRE_RESNET_PARAMS",
    "SHIPPED_WEIGHTS",
]

_KernelSize = Sequence[int] | int


def default_kernel_sizes(spatial_dims: int) -> tuple[int, int, int, int]:
    """Default SRE kernel size of the four stages: ``(9, 9, 5, 5)`` in 1D/2D, ``(5, 5, 5, 5)`` in 3D.

    Args:
        spatial_dims: number of spatial dimensions.

    Returns:
        one odd kernel size per stage.
    """
    return (5, 5, 5, 5) if spatial_dims == 3 else (9, 9, 5, 5)


@torch.no_grad()
def smooth_input_gain(conv: SREConv, max_channels: int = 32) -> float:
    """How many times more of a spatially constant input than of white noise an SRE convolution passes on.

    A band weight is shared by all ``n_b`` taps of its band, so a constant input (and the mean that every ReLU output
    carries) adds up ``n_b`` equal terms per band: the kernel's power gain at zero frequency is ``sum_b n_b^2 w_b^2``
    where white noise sees ``sum_b n_b w_b^2``. For random band weights the ratio is ``sum_b n_b^2 / sum_b n_b``:
    1.9 for 9-tap 1D kernels, 10 (5x5) to 22 (9x9) in 2D, 51 for 5x5x5; a dense kernel with independent taps has 1.

    Args:
        conv: the SRE convolution, measured on its current weights through its own dense kernel (so whatever the
            parameterisation of the band weights).
        max_channels: output channels measured (the first ones): the ratio is a mean over channels.

    Returns:
        ``sum_{o,i} (sum_t K[o, i, t])^2 / sum_{o,i,t} K[o, i, t]^2`` of the dense kernel ``K``.
    """
    rows = min(conv.weight.shape[0], max_channels)
    with torch.random.fork_rng(devices=[]):  # the probe's own initialisation leaves the caller's random stream alone
        probe = SREConv(conv.spatial_dims, conv.weight.shape[1], rows, conv.kernel_size, bias=False,
                        num_rings=conv.num_rings, device=conv.weight.device, dtype=conv.weight.dtype)
    probe.weight.copy_(conv.band_weight()[:rows])
    kernel = probe.dense_kernel().flatten(2)
    return float(kernel.sum(-1).pow(2).sum() / kernel.pow(2).sum().clamp_min(torch.finfo(kernel.dtype).tiny))


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _block_norm(norm: str | tuple) -> str | tuple:
    """The norm of the blocks for a stem ``norm``: the same, except for one whose arguments fix the feature shape
    (LayerNorm's ``normalized_shape``), which fits the stem only; then batch norm, as MONAI's ResNet has there."""
    if isinstance(norm, (tuple, list)) and len(norm) > 1 and isinstance(norm[1], dict) and (
        "normalized_shape" in norm[1]
    ):
        return "batch"
    return norm


def _is_strided(stride: Sequence[int] | int) -> bool:
    return any(s != 1 for s in ((stride,) if isinstance(stride, int) else stride))


class _ZeroPadShortcut(nn.Module):
    """Shortcut "A": the (already downsampled) input with zero channels appended up to ``out_channels``.

    A module rather than MONAI's ``functools.partial`` of a method, so that the network stays scriptable.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        shape[1] = self.out_channels - shape[1]
        return torch.cat([x, x.new_zeros(shape)], dim=1)


class SREResNetBlock(nn.Module):
    """Basic residual block with two SRE convolutions; a stride downsamples the input symmetrically first.

    Args:
        in_planes: number of input channels.
        planes: number of output channels.
        spatial_dims: number of spatial dimensions of the input image.
        stride: downsampling factor of the block (1 keeps the size, 2 halves it to ``ceil(n / 2)``).
        downsample: shortcut applied to the (already downsampled) input, or None for the identity.
        act: activation type and arguments.
        norm: feature normalization type and arguments.
        kernel_size: odd SRE kernel size of both convolutions.
        num_rings: number of bands of the SRE kernels; None gives one-voxel rings.
        downsample_mode: ``"avg"`` or ``"max"`` symmetric downsampling when ``stride != 1``.
        gradient_fraction: share of the first convolution's channels whose activation is their local gradient norm
            (:class:`~monai_sre.layers.GradientNormActivation`); 0 keeps ``act`` on all of them.
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int = 3,
        stride: Sequence[int] | int = 1,
        downsample: nn.Module | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        *,
        kernel_size: _KernelSize = 3,
        num_rings: int | None = None,
        downsample_mode: str = "avg",
        gradient_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        # The block downsamples its input once, before both branches: cheaper than a pool inside each branch, and
        # the symmetric pool keeps every branch exactly equivariant.
        self.pool = SymmetricDownsample(spatial_dims, stride, downsample_mode) if _is_strided(stride) else nn.Identity()
        self.conv1 = SREConv(spatial_dims, in_planes, planes, kernel_size, bias=False, num_rings=num_rings)
        self.bn1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes)
        self.act1 = gradient_norm_activation(act, planes, gradient_fraction)
        self.conv2 = SREConv(spatial_dims, planes, planes, kernel_size, bias=False, num_rings=num_rings)
        self.bn2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes)
        self.act = get_act_layer(name=act)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if torch.jit.is_scripting():
            residual = x
            out = self.act1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            return self.act(out)
        return self._block(x)

    @torch.jit.unused
    def _block(self, x: torch.Tensor) -> torch.Tensor:
        # inference folds each BatchNorm into its SRE convolution (same numbers, one pass less), and on the C++ path
        # the shortcut's add and the ReLUs into the convolutions' output tiles (no passes of their own)
        out = conv_norm(self.conv1, self.bn1, x, act=self.act1)
        residual = x if self.downsample is None else self._shortcut(x)
        return conv_norm(self.conv2, self.bn2, out, residual=residual, act=self.act)

    @torch.jit.unused
    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return sequential_conv_norm(self.downsample, x)


class SREResNetBottleneck(nn.Module):
    """Bottleneck block (1x1, SRE kxk, 1x1); a stride downsamples the input symmetrically first.

    Args:
        in_planes: number of input channels.
        planes: number of channels of the bottleneck (the output has ``planes * 4``).
        spatial_dims: number of spatial dimensions of the input image.
        stride: downsampling factor of the block (1 keeps the size, 2 halves it to ``ceil(n / 2)``).
        downsample: shortcut applied to the (already downsampled) input, or None for the identity.
        act: activation type and arguments.
        norm: feature normalization type and arguments.
        kernel_size: odd SRE kernel size of the middle convolution.
        num_rings: number of bands of the SRE kernel; None gives one-voxel rings.
        downsample_mode: ``"avg"`` or ``"max"`` symmetric downsampling when ``stride != 1``.
        gradient_fraction: share of the SRE convolution's channels whose activation is their local gradient norm
            (:class:`~monai_sre.layers.GradientNormActivation`); 0 keeps ``act`` on all of them.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int = 3,
        stride: Sequence[int] | int = 1,
        downsample: nn.Module | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        *,
        kernel_size: _KernelSize = 3,
        num_rings: int | None = None,
        downsample_mode: str = "avg",
        gradient_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.pool = SymmetricDownsample(spatial_dims, stride, downsample_mode) if _is_strided(stride) else nn.Identity()
        self.conv1 = conv_type(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes)
        self.conv2 = SREConv(spatial_dims, planes, planes, kernel_size, bias=False, num_rings=num_rings)
        self.bn2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes)
        self.conv3 = conv_type(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=planes * self.expansion)
        self.act = get_act_layer(name=act)
        self.act2 = gradient_norm_activation(act, planes, gradient_fraction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        residual = x
        out = self.act(self.bn1(self.conv1(x)))
        if torch.jit.is_scripting():
            out = self.act2(self.bn2(self.conv2(out)))
        else:
            out = self.act2(self._middle(out))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x) if torch.jit.is_scripting() else self._shortcut(x)
        out += residual
        return self.act(out)

    @torch.jit.unused
    def _middle(self, x: torch.Tensor) -> torch.Tensor:
        # inference folds the BatchNorm into the SRE convolution (same numbers, one pass less)
        return conv_norm(self.conv2, self.bn2, x)

    @torch.jit.unused
    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return sequential_conv_norm(self.downsample, x)


_BLOCKS: dict[str, type[SREResNetBlock | SREResNetBottleneck]] = {
    "basic": SREResNetBlock,
    "bottleneck": SREResNetBottleneck,
}
# MONAI's block classes name the same architecture; accept them so that a ResNet config ports unchanged.
_MONAI_BLOCKS: dict[type, type[SREResNetBlock | SREResNetBottleneck]] = {
    ResNetBlock: SREResNetBlock,
    ResNetBottleneck: SREResNetBottleneck,
}


def _resolve_block(block: type[nn.Module] | str) -> type[SREResNetBlock | SREResNetBottleneck]:
    if isinstance(block, str):
        if block not in _BLOCKS:
            raise ValueError(
                f"Unknown block {block!r}: use 'basic' or 'bottleneck' (or SREResNetBlock/SREResNetBottleneck)."
            )
        return _BLOCKS[block]
    if block in (SREResNetBlock, SREResNetBottleneck):
        return block
    if block in _MONAI_BLOCKS:
        return _MONAI_BLOCKS[block]
    raise ValueError(f"Unknown block {block!r}: use 'basic', 'bottleneck', SREResNetBlock or SREResNetBottleneck.")


def _minimum_size(strides: Sequence[int]) -> int:
    """Smallest axis length for which each downsampling in ``strides`` (in order) receives at least its stride."""
    need = 1
    for s in reversed([s for s in strides if s != 1]):
        need = max(s, s * (need - 1) + 1)
    return need


class SREResNet(nn.Module):
    """ResNet with SRE convolutions and symmetric downsampling, a drop-in for :class:`monai.networks.nets.ResNet`.

    In eval mode the logits (or features) are exactly invariant to every rot90/flip symmetry of the input when the
    stem kernel and stride are the same along all axes (an anisotropic stem keeps the symmetries its shape has).

    Args:
        block: ``"basic"``/``"bottleneck"``, :class:`SREResNetBlock`/:class:`SREResNetBottleneck`, or MONAI's
            ``ResNetBlock``/``ResNetBottleneck`` (mapped to their SRE counterparts).
        layers: number of blocks in each of the four stages.
        block_inplanes: channels of the four stages, scaled by ``widen_factor``.
        spatial_dims: number of spatial dimensions of the input image (1, 2 or 3).
        n_input_channels: number of input channels.
        conv1_t_size: odd SRE kernel size of the stem (int or per axis). MONAI's default is 7; here 5.
        conv1_t_stride: downsampling factor of the stem (int or per axis), done by symmetric downsampling.
        no_max_pool: skip the (symmetric, stride-2) max-pool after the stem. MONAI's default is False; here True.
        shortcut_type: ``"A"`` (zero-padded channels) or ``"B"`` (1x1 conv + norm) for shortcuts that change shape.
        widen_factor: multiplies ``block_inplanes``.
        num_classes: number of outputs of the final linear layer.
        feed_forward: add the final linear layer; False returns the pooled features.
        bias_downsample: bias of the 1x1 shortcut convolution (type "B").
        act: activation type and arguments, used in the stem and every block.
        norm: feature normalization type and arguments, used in the stem, every block and every shortcut (see
            ``block_norm``).
        kernel_size: odd SRE kernel size of the stages: one int for all four, or a list of four (each an int or a
            per-axis tuple); None gives :func:`default_kernel_sizes` (``[9, 9, 5, 5]`` in 1D/2D, ``5`` in 3D).
        num_rings: number of bands of every SRE kernel; None gives one-voxel rings (``k // 2 + 1`` bands).
        downsample_mode: ``"avg"`` (default) or ``"max"`` symmetric downsampling for the strided stem and stages.
        zero_init_residual: zero the weight of the last norm of every residual branch (torchvision's option), so
            that every block starts as its shortcut: activations of a fresh network then stay O(1) at every depth,
            also in eval mode. Without it a fresh network in eval mode (BatchNorm still the identity) grows about
            1.4x per residual block, as MONAI's ResNet does (1e8-1e10 for SRE-ResNet-200).
        zero_mean_init: every SRE kernel starts with zero mean, its He-drawn band weights shifted and rescaled to
            their norm (:meth:`~monai_sre.layers.SREConv.center_band_weight_`): a shared band weight makes a drawn
            kernel's mean, its gain on a constant input, 10-22 times its white-noise gain. With ``zero_init_residual``
            and ``gradient_fraction=0.5``, SRE-ResNet-18 at Adam 1e-3 left the majority-class loss after its first
            epoch in 3 of 3 seeds (BreastMNIST 28; the two initialisations without the gradient channels: after 2,
            the gradient channels alone: after 2-5; benchmarks/README.md, issue 14).
        block_norm: norm of the blocks and shortcuts; None gives ``norm``, except that a norm whose arguments fix
            the feature shape (``("layer", {"normalized_shape": ...})``, which fits the stem only) gives ``"batch"``
            in the blocks, as in MONAI's ResNet.
        band_scale: parameterisation of every SRE layer's band weights (:data:`~monai_sre.layers.BAND_SCALES`):
            ``"none"`` suits Adam, ``"rsqrt_taps"`` SGD (every tap then steps as a dense tap does, whatever the
            size of its band; :func:`~monai_sre.layers.band_scale`). Outputs and checkpoints do not depend on it:
            a checkpoint trained under one loads into a network built with the other.
        gradient_fraction: share of the channels after the stem's and every block's first SRE convolution (the
            bottleneck's middle one) that carry their local gradient norm instead of ``act``
            (:class:`~monai_sre.layers.GradientNormActivation`): edge strength in any direction, which radially
            symmetric kernels cannot form, at no cost to the exact invariance. 0 (default) is the plain network; the
            split is part of the state dict, so a checkpoint loads only into a network with the same split.

    Raises:
        ValueError: for an unknown ``block``, ``shortcut_type``, ``downsample_mode`` or ``band_scale``, ``layers``,
            ``block_inplanes`` or ``kernel_size`` not of length 4, an even kernel size, a ``gradient_fraction``
            outside ``[0, 1)``; at call time for an input of the wrong rank or channel count or smaller than
            :attr:`min_input_size`.
    """

    __constants__ = ["spatial_dims", "n_input_channels", "no_max_pool"]

    def __init__(
        self,
        block: type[nn.Module] | str,
        layers: Sequence[int],
        block_inplanes: Sequence[int],
        spatial_dims: int = 3,
        n_input_channels: int = 3,
        conv1_t_size: _KernelSize = 5,
        conv1_t_stride: Sequence[int] | int = 1,
        no_max_pool: bool = True,
        shortcut_type: str = "B",
        widen_factor: float = 1.0,
        num_classes: int = 400,
        feed_forward: bool = True,
        bias_downsample: bool = True,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        *,
        kernel_size: Sequence[_KernelSize] | int | None = None,
        num_rings: int | None = None,
        downsample_mode: str = "avg",
        zero_init_residual: bool = False,
        zero_mean_init: bool = False,
        block_norm: str | tuple | None = None,
        band_scale: str = "none",
        gradient_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        block_type = _resolve_block(block)
        block_norm = _block_norm(norm) if block_norm is None else block_norm
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if len(layers) != 4 or len(block_inplanes) != 4:
            raise ValueError(
                f"layers and block_inplanes need 4 entries (one per stage), got layers={list(layers)}, "
                f"block_inplanes={list(block_inplanes)}."
            )
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}.")
        if downsample_mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"downsample_mode must be one of {DOWNSAMPLE_MODES}, got {downsample_mode!r}.")
        if n_input_channels < 1:
            raise ValueError(f"n_input_channels must be a positive int, got {n_input_channels}.")
        stage_kernels = self._stage_kernels(kernel_size, spatial_dims)
        planes = [int(p * widen_factor) for p in block_inplanes]
        if min(planes) < 1:
            raise ValueError(f"block_inplanes {list(block_inplanes)} times widen_factor={widen_factor} leaves a stage "
                             "without channels.")

        self.spatial_dims = spatial_dims
        self.n_input_channels = n_input_channels
        self.no_max_pool = no_max_pool
        self.in_planes = planes[0]
        stem_stride = ensure_tuple_rep(conv1_t_stride, spatial_dims)

        self.stem_pool = (
            SymmetricDownsample(spatial_dims, stem_stride, downsample_mode)
            if _is_strided(stem_stride)
            else nn.Identity()
        )
        self.conv1 = SREConv(
            spatial_dims, n_input_channels, self.in_planes, conv1_t_size, bias=False, num_rings=num_rings
        )
        self.bn1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=self.in_planes)
        self.act = gradient_norm_activation(act, self.in_planes, gradient_fraction)
        self.maxpool = nn.Identity() if no_max_pool else SymmetricDownsample(spatial_dims, 2, "max")
        common = {"spatial_dims": spatial_dims, "shortcut_type": shortcut_type, "bias_downsample": bias_downsample,
                  "act": act, "norm": block_norm, "num_rings": num_rings, "downsample_mode": downsample_mode,
                  "gradient_fraction": gradient_fraction}
        self.layer1 = self._make_layer(block_type, planes[0], layers[0], 1, stage_kernels[0], **common)
        self.layer2 = self._make_layer(block_type, planes[1], layers[1], 2, stage_kernels[1], **common)
        self.layer3 = self._make_layer(block_type, planes[2], layers[2], 2, stage_kernels[2], **common)
        self.layer4 = self._make_layer(block_type, planes[3], layers[3], 2, stage_kernels[3], **common)
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc = nn.Linear(planes[3] * block_type.expansion, num_classes) if feed_forward else None

        strides_per_axis = [[s] + ([] if no_max_pool else [2]) + [2, 2, 2] for s in stem_stride]
        #: Smallest accepted input size per axis: every downsampling must receive at least ``stride`` voxels,
        #: otherwise it no longer downsamples and the deeper stages run on a single voxel.
        self.min_input_size = tuple(_minimum_size(s) for s in strides_per_axis)
        self._init_weights(zero_init_residual, zero_mean_init)
        # after the initialisation, which draws the band weights: the re-parameterisation keeps them
        set_band_scale_(self, band_scale)

    @staticmethod
    def _stage_kernels(kernel_size: Sequence[_KernelSize] | int | None, spatial_dims: int) -> list[_KernelSize]:
        if kernel_size is None:
            return list(default_kernel_sizes(spatial_dims))
        if isinstance(kernel_size, int):
            return [kernel_size] * 4
        kernels = list(kernel_size)
        if len(kernels) != 4:
            raise ValueError(f"kernel_size must be an int or a list of 4 (one per stage), got {kernel_size!r}.")
        return kernels

    def _make_layer(
        self,
        block: type[SREResNetBlock | SREResNetBottleneck],
        planes: int,
        blocks: int,
        stride: int,
        kernel_size: _KernelSize,
        spatial_dims: int,
        shortcut_type: str,
        bias_downsample: bool,
        act: str | tuple,
        norm: str | tuple,
        num_rings: int | None,
        downsample_mode: str,
        gradient_fraction: float,
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or self.in_planes != out_planes:
            # The block has already downsampled its input, so the shortcut only matches the channels; a 1x1
            # convolution is radially symmetric by itself.
            if shortcut_type == "A":
                downsample = _ZeroPadShortcut(out_planes)
            else:
                conv_type = Conv[Conv.CONV, spatial_dims]
                downsample = nn.Sequential(
                    conv_type(self.in_planes, out_planes, kernel_size=1, bias=bias_downsample),
                    get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=out_planes),
                )
        options = {"act": act, "norm": norm, "kernel_size": kernel_size, "num_rings": num_rings,
                   "downsample_mode": downsample_mode, "gradient_fraction": gradient_fraction}
        stage = [block(self.in_planes, planes, spatial_dims, stride, downsample, **options)]
        self.in_planes = out_planes
        for _ in range(1, blocks):
            stage.append(block(self.in_planes, planes, spatial_dims, 1, None, **options))
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool, zero_mean_init: bool = False) -> None:
        """He (fan-out) initialisation as in MONAI's ResNet with the true fan of the SRE kernels; norms at 1 and 0.

        A fresh BatchNorm's running variance (used in eval mode) starts at the gain of its SRE kernel on a smooth
        input relative to white noise (:func:`smooth_input_gain`) instead of 1: a band weight is shared by many taps,
        so with a running variance of 1 every SRE layer amplified the mean of its input 10-50 times and untrained
        deep networks reached 1e28 and NaN in eval mode. Training replaces the statistics (momentum 0.1) and the
        weights and training-mode outputs are those of He's initialisation. ``zero_init_residual`` zeroes the
        weight of the last norm of every residual branch, so that each block starts as its shortcut;
        ``zero_mean_init`` then removes every SRE kernel's mean (the running variances keep the drawn kernels' gain).
        """
        for m in self.modules():
            if isinstance(m, SREConv):
                # Only the taps inside the circle carry a weight: fan-out = out_channels * taps inside.
                fan_out = m.out_channels * taps_inside(m.kernel_size, m.spatial_dims, m.num_rings)
                m.init_band_weight_(nn.init.normal_, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, _NORMS):
                # Norms without affine parameters (InstanceNorm's default) have weight None.
                if getattr(m, "weight", None) is not None:
                    nn.init.constant_(m.weight, 1.0)
                if getattr(m, "bias", None) is not None:
                    nn.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0.0)
        for conv, norm in self._conv_norm_pairs():
            if getattr(norm, "running_var", None) is not None:
                norm.running_var.fill_(smooth_input_gain(conv))
        if zero_init_residual:
            for block in self.modules():
                last = block.bn3 if isinstance(block, SREResNetBottleneck) else (
                    block.bn2 if isinstance(block, SREResNetBlock) else None)
                if getattr(last, "weight", None) is not None:
                    nn.init.zeros_(last.weight)
        if zero_mean_init:
            for m in self.modules():
                if isinstance(m, SREConv):
                    m.center_band_weight_(0.0)

    def _conv_norm_pairs(self) -> list[tuple[SREConv, nn.Module]]:
        """Every SRE convolution with the norm that follows it."""
        pairs: list[tuple[SREConv, nn.Module]] = [(self.conv1, self.bn1)]
        for block in self.modules():
            if isinstance(block, SREResNetBlock):
                pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            elif isinstance(block, SREResNetBottleneck):
                pairs.append((block.conv2, block.bn2))
        return pairs

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"SREResNet: input must have {self.spatial_dims + 2} dims (batch, channels, {self.spatial_dims} "
                f"spatial) for spatial_dims={self.spatial_dims}, got shape {list(x.shape)}."
            )
        if x.shape[1] != self.n_input_channels:
            raise ValueError(
                f"SREResNet: input must have n_input_channels={self.n_input_channels} channels (dim 1), "
                f"got shape {list(x.shape)}."
            )
        min_size = list(self.min_input_size)
        for i in range(self.spatial_dims):
            if x.shape[i + 2] < min_size[i]:
                raise ValueError(
                    f"SREResNet: input spatial shape {list(x.shape[2:])} is too small for the network's downsampling: "
                    f"the minimum size is {min_size} (every downsampling must receive at least as many voxels as its "
                    "stride)."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)``, or pooled features when ``feed_forward=False``.

        Args:
            x: images of shape ``(batch, n_input_channels, *spatial)``.

        Returns:
            the logits or features.

        Raises:
            ValueError: for an input of the wrong rank or channel count, or smaller than :attr:`min_input_size`.
        """
        self._check_input(x)
        if self.spatial_dims == 2 and x.device.type == "cpu":
            # channels-last from the start, so that the stem's output and its norm and activation are stored as the
            # SRE layers' CPU paths read them: the 2D training step about 3% faster (684 -> 661 and 694 -> 674 ms,
            # either order first, one thread, batch 32 of 3x32x32; inference and 3D unchanged), outputs the same
            x = channels_last(x)
        x = self.stem_pool(x)
        x = self.act(self.bn1(self.conv1(x))) if torch.jit.is_scripting() else self._stem(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        if self.fc is not None:
            x = self.fc(x)
        return x

    @torch.jit.unused
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        # inference folds the stem's BatchNorm (and on the C++ path its ReLU) into its SRE convolution (same
        # numbers, one pass less)
        return conv_norm(self.conv1, self.bn1, x, act=self.act)


#: The architectures of the builders, as MONAI's ``resnet_params`` and torchvision's builders: depth ->
#: (block, blocks per stage).
SRE_RESNET_PARAMS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}

#: Trained SRE weights that ship with this project (MedMNIST bundles), named when ``pretrained=True`` is asked for.
SHIPPED_WEIGHTS = (
    "bundles/sre_medmnist_2d/models/model.pt (SRE-ResNet-18, 2D, widen_factor=0.5, kernel_size=[9, 9, 5, 5])",
    "bundles/sre_medmnist_3d/models/model.pt (SRE-ResNet-18, 3D, widen_factor=0.5, kernel_size=5)",
)


def _load_pretrained(model: SREResNet, path: str | os.PathLike) -> None:
    # The project's one checkpoint reader: weights_only, flat or nested under "model", DDP "module." prefix
    # stripped, shapes checked, and a bundle's shipped weights checked against their recorded SHA-256.
    from monai_sre.io.checkpoints import load_weights

    load_weights(model, path)


def _sre_resnet(depth: int, pretrained: bool | str | os.PathLike, progress: bool, **kwargs: Any) -> SREResNet:
    """Build SRE-ResNet-``depth`` from :data:`SRE_RESNET_PARAMS` and load ``pretrained`` weights as MONAI does."""
    if pretrained is True:
        shipped = "; ".join(SHIPPED_WEIGHTS)
        raise NotImplementedError(
            f"sre_resnet{depth}(pretrained=True): no public pretrained weights exist for SRE-ResNet-{depth} (MONAI's "
            "pretrained=True downloads MedicalNet weights of dense 3D ResNets, which do not fit SRE kernels). Pass "
            "pretrained=<path to a checkpoint of this architecture>, e.g. a run of the MedMNIST bundles or their "
            f"shipped weights: {shipped}."
        )
    block, layers = SRE_RESNET_PARAMS[depth]
    model = SREResNet(block, list(layers), get_inplanes(), **kwargs)
    if pretrained is not False and pretrained is not None:
        if not isinstance(pretrained, (str, os.PathLike)):
            raise TypeError(f"pretrained must be False, True or a checkpoint path, got {type(pretrained).__name__}.")
        _load_pretrained(model, pretrained)
    return model


def sre_resnet10(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-10 (basic blocks ``[1, 1, 1, 1]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(10, pretrained, progress, **kwargs)


def sre_resnet18(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-18 (basic blocks ``[2, 2, 2, 2]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(18, pretrained, progress, **kwargs)


def sre_resnet34(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-34 (basic blocks ``[3, 4, 6, 3]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(34, pretrained, progress, **kwargs)


def sre_resnet50(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-50 (bottleneck blocks ``[3, 4, 6, 3]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(50, pretrained, progress, **kwargs)


def sre_resnet101(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-101 (bottleneck blocks ``[3, 4, 23, 3]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(101, pretrained, progress, **kwargs)


def sre_resnet152(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-152 (bottleneck blocks ``[3, 8, 36, 3]``): :func:`sre_resnet200`'s arguments."""
    return _sre_resnet(152, pretrained, progress, **kwargs)


def sre_resnet200(pretrained: bool | str | os.PathLike = False, progress: bool = True, **kwargs: Any) -> SREResNet:
    """SRE-ResNet-200 (bottleneck blocks ``[3, 24, 36, 3]``), with the arguments of MONAI's ``resnet200``.

    All ``sre_resnetN`` builders take these arguments; the architectures come from :data:`SRE_RESNET_PARAMS`.

    Args:
        pretrained: False (fresh weights); or the path of a checkpoint of the same architecture (a state dict, flat
            or under ``"model"`` as the bundles write it), loaded strictly, as MONAI's builders load a path.
            ``True`` raises: no public SRE weights exist (the error names the shipped MedMNIST weights).
        progress: accepted for MONAI/torchvision compatibility; nothing is downloaded.
        kwargs: arguments of :class:`SREResNet` other than ``block``, ``layers`` and ``block_inplanes``.

    Returns:
        the network.

    Raises:
        NotImplementedError: for ``pretrained=True``.
        TypeError: for a ``pretrained`` that is neither a bool nor a path.
        FileNotFoundError: when the checkpoint file does not exist.
        ValueError: when the checkpoint is unreadable or does not fit the architecture (names the file).
    """
    return _sre_resnet(200, pretrained, progress, **kwargs)
