# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Turn any torch or MONAI network into an SRE network: :func:`convert_to_sre`.

Rules, applied to a deep copy of the model:

- every ``nn.Conv1d/2d/3d`` with a kernel larger than 1 becomes an :class:`~monai_sre.layers.SREConv` with the same
  channels, padding, dilation, groups, bias and padding mode, at stride 1;
- a strided convolution becomes that stride-1 SRE convolution followed by a :class:`SymmetricDownsample` (average):
  convolving before pooling keeps the receptive field and the output size of the original layer exactly
  (``ceil(n' / s)`` where ``n'`` is the stride-1 output), so a trained model converts to its nearest SRE model;
- 1x1 convolutions stay; a strided one becomes a symmetric average pool followed by the 1x1 convolution at
  stride 1 (the two commute, and pooling first is ``s^d`` times cheaper);
- ``project_weights=True`` projects each dense kernel onto the band basis (:func:`project_dense_kernel`): the weight
  of a band is the mean of the dense taps in it, which is the least-squares nearest SRE kernel;
- ``replace_pooling=True`` also swaps strided max/average pools for :class:`SymmetricDownsample`;
- a transposed convolution (also inside MONAI's ``UpSample`` in ``"deconv"`` mode) at stride 1 with an odd kernel
  becomes an :class:`~monai_sre.layers.SREConvTranspose`. A strided one that outputs ``stride * n`` (kernel ``k``,
  padding ``p``, output padding ``q`` with ``k - 2p + q = stride``, as MONAI's UNets use) has no symmetric placement
  of its taps (it puts input ``i`` at output ``stride * i``), so it becomes the symmetric upsampling that inverts
  :class:`SymmetricDownsample` on even sizes: nearest-neighbour upsampling by ``stride`` followed by a stride-1 SRE
  convolution with the same odd kernel (weights: band means of the transposed kernel divided by ``stride^d``,
  which keeps the gain), or, when the kernel equals the stride (``k = s``, ``p = 0``: BasicUNet's 2x2 deconv), a
  1x1 convolution with the mean of the taps (every tap of a 2x2 or 2x2x2 kernel is at the same distance from its
  centre, so that mean is the exact SRE projection);
- a convolution ``X`` with a zero-padding sibling ``X_padding`` (TensorFlow-style "same" padding, uneven for
  strided layers, as in MONAI's ``EfficientNet``) gets the symmetric form: the padder becomes an identity and the
  SRE convolution pads ``(k - 1) / 2 * dilation`` on every side, which gives the same output size ``ceil(n / s)``.

Parts that still prevent exact rot90/flip invariance are found by :func:`find_symmetry_breakers` and reported in a
warning. The inspection is static: modules are checked, functional calls inside ``forward`` (``F.max_pool2d``,
flattening a spatial map into a linear layer, ...) cannot be seen, and unused modules are reported too.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from monai_sre.layers.pooling import SymmetricDownsample
from monai_sre.layers.rings import (
    OUTSIDE,
    normalize_kernel_size,
    num_rings_default,
    per_axis,
    ring_index,
    ring_sizes,
    same_padding,
)
from monai_sre.layers.sre_conv import SREConv, SREConvTranspose

__all__ = ["convert_to_sre", "project_dense_kernel", "find_symmetry_breakers"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_POOLS = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_OTHER_POOLS = (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)
_PADS = (
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ZERO_PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


def project_dense_kernel(
    weight: torch.Tensor, kernel_size: Sequence[int] | int | None = None, num_rings: int | None = None
) -> torch.Tensor:
    """Least-squares projection of a dense convolution kernel onto the SRE band basis.

    The dense kernel is first centred in (zero-padded to, or cropped to) ``kernel_size``; then every band weight is
    the mean of the taps in that band. Taps outside the circle are dropped and empty bands get 0. A kernel that is
    already radially symmetric (constant on each band, zero outside) is reproduced exactly.

    Args:
        weight: dense kernel of shape ``(out, in / groups, *k)`` with odd ``k``.
        kernel_size: odd SRE kernel size (int or per axis); None keeps ``k``.
        num_rings: number of bands; None gives one-voxel rings.

    Returns:
        band weights of shape ``(out, in / groups, num_rings)`` (the ``weight`` of an :class:`SREConv`).

    Raises:
        ValueError: for a weight with fewer than 3 or more than 5 dims, an even ``k``, or an even ``kernel_size``.
    """
    dims = weight.dim() - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"weight must have shape (out, in, *kernel) with 1-3 spatial dims, got {list(weight.shape)}.")
    source = normalize_kernel_size(tuple(weight.shape[2:]), dims)
    target = source if kernel_size is None else normalize_kernel_size(kernel_size, dims)
    # Centre the dense kernel in the target size: pad with zeros where it grows, crop where it shrinks.
    pad: list[int] = []
    for s, t in zip(reversed(source), reversed(target)):
        pad += [(t - s) // 2, (t - s) // 2]
    dense = torch.nn.functional.pad(weight, pad)
    index = ring_index(target, dims, num_rings).to(weight.device)
    bands = num_rings_default(target, dims) if num_rings is None else int(num_rings)
    inside = index.flatten() != OUTSIDE
    flat = dense.flatten(2)[..., inside]
    sums = flat.new_zeros(flat.shape[:2] + (bands,)).index_add_(2, index.flatten()[inside], flat)
    counts = ring_sizes(index, bands).to(device=weight.device, dtype=weight.dtype)
    return sums / counts.clamp(min=1)


def _resolve_padding(conv: nn.Module, dims: int) -> tuple[int, ...]:
    padding = conv.padding
    if padding == "valid":
        return (0,) * dims
    if padding == "same":
        # torch only allows 'same' at stride 1; for odd kernels it is symmetric, (k - 1) / 2 * dilation per side.
        return same_padding(conv.kernel_size, conv.dilation)
    return per_axis(padding, dims, "padding")


def _convert_conv(
    name: str,
    conv: nn.Conv1d | nn.Conv2d | nn.Conv3d,
    kernel_size: Sequence[int] | int | None,
    num_rings: int | None,
    project_weights: bool,
    padder_removed: bool = False,
) -> nn.Module:
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"convert_to_sre: layer {name!r} is a lazy convolution; run one forward pass first.")
    dims = len(conv.kernel_size)
    source = tuple(conv.kernel_size)
    stride = tuple(conv.stride)
    strided = any(s != 1 for s in stride)
    padding = _resolve_padding(conv, dims)
    if padder_removed:  # its padder is removed: pad symmetrically, as "same" at stride 1
        padding = same_padding(source, conv.dilation)
    if all(k == 1 for k in source):
        if not strided:
            return conv
        pointwise = copy.deepcopy(conv)
        pointwise.stride = (1,) * dims
        if all(p == 0 for p in padding):
            return nn.Sequential(SymmetricDownsample(dims, stride, "avg"), pointwise)
        return nn.Sequential(pointwise, SymmetricDownsample(dims, stride, "avg"))
    if any(k % 2 == 0 for k in source):
        raise ValueError(
            f"convert_to_sre: layer {name!r} ({type(conv).__name__}) has an even kernel_size {source}; SRE kernels "
            "need a centre tap, so only convolutions with odd kernels (or 1x1) can be converted."
        )
    target = source if kernel_size is None else normalize_kernel_size(kernel_size, dims)
    # Keep the output size: grow (or shrink) the padding by half the change of the kernel's dilated extent.
    new_padding = tuple(p + (t - s) // 2 * d for p, s, t, d in zip(padding, source, target, conv.dilation))
    if any(p < 0 for p in new_padding):
        raise ValueError(
            f"convert_to_sre: layer {name!r} has padding {padding} for kernel {source}; kernel_size={target} would "
            "need negative padding to keep its output size. Choose a kernel_size of at least the original size."
        )
    weight = conv.weight
    sre = SREConv(
        dims, conv.in_channels, conv.out_channels, target, stride=1, padding=new_padding, dilation=conv.dilation,
        groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode, num_rings=num_rings,
        device=weight.device, dtype=weight.dtype,
    )
    if project_weights:
        with torch.no_grad():
            sre.weight.copy_(project_dense_kernel(weight.detach(), target, sre.num_rings) / sre.band_scale)
            if conv.bias is not None:
                sre.bias.copy_(conv.bias.detach())
    sre.weight.requires_grad_(weight.requires_grad)
    if sre.bias is not None and conv.bias is not None:
        sre.bias.requires_grad_(conv.bias.requires_grad)
    sre.train(conv.training)
    if not strided:
        return sre
    return nn.Sequential(sre, SymmetricDownsample(dims, stride, "avg"))


def _grouped_as_conv(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A transposed convolution's weight ``(in, out / g, *k)`` as the forward convolution's ``(out, in / g, *k)``."""
    cin, per_group = weight.shape[:2]
    w = weight.reshape(groups, cin // groups, per_group, *weight.shape[2:]).transpose(1, 2)
    return w.reshape(groups * per_group, cin // groups, *weight.shape[2:])


def _convert_transposed(
    conv: nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d, num_rings: int | None, project_weights: bool
) -> nn.Module:
    """The symmetric form of a transposed convolution (see the module docstring), or ``conv`` itself when none."""
    dims = len(conv.kernel_size)
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    p, q = per_axis(conv.padding, dims), tuple(conv.output_padding)
    if any(d != 1 for d in conv.dilation) or conv.padding_mode != "zeros":
        return conv
    weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    factory = {"device": weight.device, "dtype": weight.dtype}
    if all(v == 1 for v in s) and all(v % 2 for v in k):
        new: nn.Module = SREConvTranspose(
            dims, conv.in_channels, conv.out_channels, k, 1, p, q, conv.groups, bias is not None, 1, "zeros",
            num_rings, **factory,
        )
        sre = new
        kernel = weight
    elif all(kk - 2 * pp + qq == ss for kk, pp, qq, ss in zip(k, p, q, s)) and (
        k == s and not any(p) or all(v % 2 for v in k)
    ):
        upsample = nn.Upsample(scale_factor=tuple(float(v) for v in s), mode="nearest")
        conv_weight = _grouped_as_conv(weight, conv.groups).flip(list(range(2, 2 + dims)))
        if k == s and not any(p):
            pointwise = nn.Conv1d if dims == 1 else nn.Conv2d if dims == 2 else nn.Conv3d
            one = pointwise(conv.in_channels, conv.out_channels, 1, groups=conv.groups, bias=bias is not None,
                            **factory)
            with torch.no_grad():
                if project_weights:
                    one.weight.copy_(conv_weight.mean(tuple(range(2, 2 + dims)), keepdim=True))
                    if bias is not None:
                        one.bias.copy_(bias)
            one.train(conv.training)
            return nn.Sequential(upsample, one)
        sre = SREConv(dims, conv.in_channels, conv.out_channels, k, groups=conv.groups, bias=bias is not None,
                      num_rings=num_rings, **factory)
        new = nn.Sequential(upsample, sre)
        # nearest upsampling repeats every input stride^d times where the transposed kernel places it once
        kernel = conv_weight / float(torch.tensor(s).prod())
    else:
        return conv
    if project_weights:
        with torch.no_grad():
            sre.weight.copy_(project_dense_kernel(kernel, k, sre.num_rings) / sre.band_scale)
            if bias is not None:
                sre.bias.copy_(bias)
    sre.weight.requires_grad_(conv.weight.requires_grad)
    new.train(conv.training)
    return new


def _same_padder(pad: nn.Module | None, conv: nn.Module) -> bool:
    """Whether ``pad`` is a zero padding of at most the kernel's extent per axis, feeding an unpadded odd ``conv``."""
    if not isinstance(pad, _ZERO_PADS) or float(getattr(pad, "value", 0.0)) != 0.0:
        return False
    dims = len(conv.kernel_size)
    sides = per_axis(pad.padding, 2 * dims) if not isinstance(pad.padding, int) else (pad.padding,) * 2 * dims
    totals = [sides[2 * i] + sides[2 * i + 1] for i in range(dims)][::-1]  # F.pad order: last axis first
    extents = [(k - 1) * d for k, d in zip(conv.kernel_size, conv.dilation)]
    return (
        all(k % 2 for k in conv.kernel_size) and any(k > 1 for k in conv.kernel_size)
        and all(p == 0 for p in _resolve_padding(conv, dims)) and all(t <= e for t, e in zip(totals, extents))
    )


def _pool_dims(pool: nn.Module) -> int:
    for dims, pool_types in enumerate(zip(_MAX_POOLS, _AVG_POOLS), start=1):
        if isinstance(pool, pool_types):
            return dims
    raise TypeError(f"not a max or average pool: {type(pool).__name__}")


def _convert_pool(pool: nn.Module) -> nn.Module:
    dims = _pool_dims(pool)
    stride = per_axis(pool.stride if pool.stride is not None else pool.kernel_size, dims)
    # A pool that returns indices feeds a MaxUnpool, which needs the original windows: leave it (it stays reported).
    if all(s == 1 for s in stride) or getattr(pool, "return_indices", False):
        return pool
    return SymmetricDownsample(dims, stride, "max" if isinstance(pool, _MAX_POOLS) else "avg")


def _isotropic(*values: tuple[int, ...]) -> bool:
    return all(len(set(v)) == 1 for v in values)


def _breaker(module: nn.Module) -> str | None:
    """Why ``module`` breaks exact rot90/flip equivariance, or None when it does not."""
    if isinstance(module, _CONVS):
        dims = len(module.kernel_size)
        padding = _resolve_padding(module, dims)
        if any(k != 1 for k in module.kernel_size):
            return f"dense {module.kernel_size} kernel (not radially symmetric); convert it with convert_to_sre"
        if any(s != 1 for s in module.stride):
            return f"1x1 convolution with stride {module.stride} samples a grid anchored at index 0"
        if not _isotropic(padding):
            return f"padding {padding} differs between axes"
        return None
    if isinstance(module, (SREConv, SREConvTranspose)):
        if any(s != 1 for s in module.stride):
            return f"SRE convolution with stride {module.stride} samples a grid anchored at index 0"
        if not _isotropic(module.kernel_size, module.padding, module.dilation):
            return (
                f"anisotropic SRE kernel/padding/dilation ({module.kernel_size}, {module.padding}, "
                f"{module.dilation}): equivariant only to the symmetries of its shape (flips, swaps of equal axes)"
            )
        return None
    if isinstance(module, SymmetricDownsample):
        return None if _isotropic(module.stride) else f"anisotropic downsampling stride {module.stride}"
    if isinstance(module, _MAX_POOLS + _AVG_POOLS):
        dims = _pool_dims(module)
        stride = per_axis(module.stride if module.stride is not None else module.kernel_size, dims)
        kernel = per_axis(module.kernel_size, dims)
        if any(s != 1 for s in stride):
            return (
                f"strided {type(module).__name__} (kernel {kernel}, stride {stride}): windows anchored at index 0 "
                "are symmetric only at some input sizes"
            )
        if any(k % 2 == 0 for k in kernel) or not _isotropic(kernel, per_axis(module.padding, dims)):
            return f"{type(module).__name__} with even or anisotropic window {kernel} shifts the grid"
        return None
    if isinstance(module, _ADAPTIVE_POOLS):
        sizes = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,)
        if any(s not in (1, None) for s in sizes):
            return f"adaptive pooling to {module.output_size}: bins are symmetric only for some input sizes"
        return None
    if isinstance(module, _OTHER_POOLS):
        return f"{type(module).__name__} is not symmetric about the image centre"
    if isinstance(module, _PADS):
        padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if len(set(padding)) != 1:
            return f"padding {padding} is not the same on every side"
        return None
    if isinstance(module, _TRANSPOSED):
        return (
            f"dense transposed convolution (kernel {tuple(module.kernel_size)}, stride {tuple(module.stride)}, "
            f"padding {module.padding}, output_padding {tuple(module.output_padding)}, dilation "
            f"{tuple(module.dilation)}): no symmetric form; convertible are stride 1 with an odd kernel, and "
            "stride s with output size s * n (kernel - 2 * padding + output_padding = s) and an odd kernel or "
            "kernel = s, padding 0"
        )
    if isinstance(module, nn.Upsample):
        factors = module.scale_factor if isinstance(module.scale_factor, tuple) else (module.scale_factor,)
        if module.size is not None or any(f is None or float(f) != int(f) for f in factors):
            if module.mode in ("nearest", "nearest-exact") or module.size is not None:
                return f"upsampling to size {module.size} / by {module.scale_factor}: not an integer factor"
        return None
    if isinstance(module, (nn.PixelShuffle, nn.PixelUnshuffle)):
        return f"{type(module).__name__} assigns channels to fixed positions of each block (not rotation-equivariant)"
    return None


def find_symmetry_breakers(model: nn.Module) -> list[tuple[str, str]]:
    """Modules that prevent exact invariance/equivariance of ``model`` to rot90 and flips of its input.

    The check is static (see the module docstring): functional calls in ``forward`` are not seen, and unused
    modules (e.g. MONAI ResNet's ``maxpool`` when ``no_max_pool=True``) are listed too.

    Args:
        model: any torch module.

    Returns:
        ``(module name, reason)`` pairs, in module order; empty when no module breaks the symmetry.
    """
    found = []
    for name, module in model.named_modules():
        reason = _breaker(module)
        if reason is not None:
            found.append((name or type(module).__name__, reason))
    return found


def convert_to_sre(
    model: nn.Module,
    kernel_size: Sequence[int] | int | None = None,
    num_rings: int | None = None,
    project_weights: bool = True,
    replace_pooling: bool = False,
) -> nn.Module:
    """Return a copy of ``model`` with SRE convolutions in place of its spatial convolutions.

    See the module docstring for the rules. Modules that still break exact rot90/flip invariance after conversion
    are reported in a ``UserWarning`` (see :func:`find_symmetry_breakers`); strided pools among them are removed by
    ``replace_pooling=True``.

    Args:
        model: any torch or MONAI network; it is not modified.
        kernel_size: odd SRE kernel size for every converted convolution (int or per axis); None keeps each
            layer's own (odd) size. Padding changes with it so that every output keeps its size.
        num_rings: number of bands of the SRE kernels; None gives one-voxel rings.
        project_weights: initialise each SRE kernel with the least-squares projection of the dense kernel (and copy
            the bias); False keeps the SRE layer's fresh initialisation.
        replace_pooling: replace strided ``MaxPool``/``AvgPool`` layers by :class:`SymmetricDownsample` (output
            size ``ceil(n / stride)``, which may differ by one from the original for some sizes).

    Returns:
        the converted copy, in the same training/eval mode, on the same device and dtype.

    Raises:
        TypeError: when ``model`` is not an ``nn.Module``.
        ValueError: for a convolution with an even kernel, an even ``kernel_size``, a ``kernel_size`` smaller than
            a layer's padding allows, or an uninitialised lazy convolution; the message names the layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_sre: model must be a torch.nn.Module, got {type(model).__name__}.")
    converted = copy.deepcopy(model)
    # Every path, including the second name of a shared layer; collected before any replacement.
    targets = [(name, module) for name, module in converted.named_modules(remove_duplicate=False) if name]
    named = dict(targets)
    # "same" padders (``X_padding`` beside convolution ``X``) that the symmetric SRE padding replaces
    same_pads = {
        f"{name}_padding" for name, module in targets if isinstance(module, _CONVS) and _same_padder(
            named.get(f"{name}_padding"), module)
    }
    # One replacement per module object, so that a layer registered under several names stays shared.
    replacements: dict[int, nn.Module] = {}

    def replace(name: str, module: nn.Module) -> nn.Module:
        if name in same_pads:
            return nn.Identity()
        if id(module) not in replacements:
            if isinstance(module, _CONVS):
                replacements[id(module)] = _convert_conv(
                    name, module, kernel_size, num_rings, project_weights, f"{name}_padding" in same_pads
                )
            elif isinstance(module, _TRANSPOSED):
                replacements[id(module)] = _convert_transposed(module, num_rings, project_weights)
            elif replace_pooling and isinstance(module, _MAX_POOLS + _AVG_POOLS):
                replacements[id(module)] = _convert_pool(module)
            else:
                replacements[id(module)] = module
        return replacements[id(module)]

    if isinstance(converted, _CONVS + _TRANSPOSED + _MAX_POOLS + _AVG_POOLS):
        converted = replace(type(converted).__name__, converted)
    else:
        for name, module in targets:
            new = replace(name, module)
            if new is not module:
                parent_name, _, child_name = name.rpartition(".")
                setattr(converted.get_submodule(parent_name) if parent_name else converted, child_name, new)

    breakers = find_symmetry_breakers(converted)
    if breakers:
        strided_pools = [
            m for m in converted.modules() if isinstance(m, _MAX_POOLS + _AVG_POOLS) and _convert_pool(m) is not m
        ]
        hint = " Pass replace_pooling=True to replace the strided pools." if strided_pools else ""
        listing = "; ".join(f"{n}: {r}" for n, r in breakers)
        warnings.warn(
            f"convert_to_sre: the converted model is not exactly invariant to rot90/flips because of {listing}.{hint}",
            UserWarning,
            stacklevel=2,
        )
    return converted
