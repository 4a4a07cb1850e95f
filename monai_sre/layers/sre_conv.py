# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE convolutions: radially symmetric kernels with one learnable weight per distance band.

The execution paths give the same result (to float tolerance):

- ``"dense"`` expands the band weights into a full kernel by indexing with the band map (a gather, whose backward is
  a scatter-add) and runs one ``F.convNd``; it costs ``Cin/g * Cout * k^d`` multiply-adds per output voxel.
- ``"decomposed"`` sums every input channel over each band and mixes bands and channels with matrix products
  (:mod:`monai_sre.layers.ring_ops`, which holds that operator, its backward and its cost model).
- ``"triton"`` runs the same decomposition as fused Triton kernels on CUDA (:mod:`monai_sre.layers.ring_triton`):
  band sums of a tile formed in registers and fed into one tensor-core product over all bands; stride 1, groups 1.
- ``"cpp"`` runs it as a fused C++ kernel on CPU (:mod:`monai_sre.layers.ring_cpp`, compiled on first use): disk
  (ball) sums of a tile of rows from horizontal box sums, fed into one product over all bands; 2D and 3D, float32,
  stride 1, groups 1, dilation 1, zero padding of the kernel radius.

``path="auto"`` (default) picks the fastest per layer. On CUDA it measures every available path the first time it
meets an input (device, shape, memory format, dtype, autocast dtype and grad mode) and keeps the winner per layer;
on CPU, where timings on shared cores are noisy and tests must be deterministic, it uses a cost model calibrated by
measurement (:func:`~monai_sre.layers.ring_ops.decomposition_pays_off`), separately for training (autograd
enabled) and inference, and runs a decomposed choice of a layer with at most 3072 (2D) or 768 (3D, default band
maps) bands x channels on the C++ kernel (:data:`~monai_sre.layers.ring_cpp.CPP_MAX_DEPTH`, ``CPP_MAX_DEPTH_3D``).
``MONAI_SRE_AUTOTUNE=1`` measures on CPU too, ``MONAI_SRE_AUTOTUNE=0`` never measures (the cost model on CPU, the
dense path elsewhere). Under ``torch.compile`` nothing is measured: a choice measured before compiling is kept,
otherwise the static one applies (on CPU the C++ kernel included: its entry points are PyTorch operators, which the
compiler keeps as nodes of its graph).

Mixed precision: under ``torch.autocast`` every path computes in the autocast dtype (float16 or bfloat16) and
returns it, as ``torch.nn.Conv`` does; channels-last inputs run on every path without copies back and forth. In
inference (no autograd needed for the weight) the dense kernel is cached; the cache is keyed on the weight's version
counter, storage, device and dtype, so ``load_state_dict``, in-place updates and ``.to()`` all
invalidate it, and it never holds an autograd graph. The decomposed path keeps its fixed per-band filters per dtype,
channel count and device. Under TorchScript and tracing (ONNX export) the decomposed path runs as plain convolutions,
so exported graphs contain only standard operators.

The stored ``weight`` times the ``band_scale`` buffer is the band weight the convolution uses. ``band_scale="none"``
(default) stores the band weights themselves; ``"rsqrt_taps"`` stores them times ``sqrt(n_b)`` so that SGD moves
every tap as far as a dense kernel's tap whatever the size ``n_b`` of its band (:func:`band_scale`). State-dict
version 2 saves the buffer; loading converts a file stored under any scale, or written before version 2 (no buffer,
the band weights themselves), to the layer's own.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor, get_track_meta
from torch import nn

from monai_sre.layers.ring_ops import (
    RingDecomposedConv,
    autocast_dtype,
    band_boxes,
    band_filters,
    band_padding,
    band_tap_offsets,
    band_taps,
    channels_last,
    conv_nd,
    conv_transpose_nd,
    cpu_chunk_bytes,
    decomposition_pays_off,
    ring_conv_forward,
    ring_conv_portable,
    ring_conv_triton,
    time_call,
    triton_available,
)
from monai_sre.layers.ring_cpp import (
    CPP_MAX_DEPTH,
    CPP_MAX_DEPTH_3D,
    FusedRingConv,
    cpp_available,
    disk_widths,
    fused_inference,
)
from monai_sre.layers.rings import (
    OUTSIDE,
    normalize_kernel_size,
    num_rings_default,
    per_axis,
    ring_index,
    ring_sizes,
    same_padding,
    taps_inside,
)

__all__ = [
    "SREConv",
    "SREConv1d",
    "SREConv2d",
    "SREConv3d",
    "SREConvTranspose",
    "SREConvTranspose1d",
    "SREConvTranspose2d",
    "SREConvTranspose3d",
    "decomposition_pays_off",
    "AUTOTUNE_ENV",
    "BAND_SCALES",
    "band_scale",
    "set_band_scale_",
    "upgrade_band_weights",
    "upgrade_state_dict",
]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PATHS = ("auto", "dense", "decomposed", "triton", "cpp")
#: Parameterisations of the band weights (``band_weight = weight * band_scale``): ``"none"`` stores the band weights
#: themselves; ``"rsqrt_taps"`` stores them times ``sqrt(n_b)`` for a band of ``n_b`` taps (see :func:`band_scale`).
BAND_SCALES = ("none", "rsqrt_taps")
#: Environment variable: "1" measures the paths of ``path="auto"`` on every device, "0" on none (default: CUDA only).
AUTOTUNE_ENV = "MONAI_SRE_AUTOTUNE"


@torch.jit.unused
def _is_exporting() -> bool:
    """Whether a graph is being recorded for export (``torch.jit.trace``, ``torch.export``, ``torch.onnx.export``):
    the batch-chunked ring path writes into views sized from the batch, which an exported graph with a dynamic batch
    dimension cannot keep (ONNX Runtime then returned wrong values for a batch of 3)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


# TorchScript compiles the signature of a call to an unused free function and cannot resolve the postponed
# (string) annotation "bool": give it the type itself.
_is_exporting.__annotations__["return"] = bool


@torch.jit.ignore
def plain_tensor(x: torch.Tensor | None) -> torch.Tensor | None:
    """A MONAI ``MetaTensor`` as the plain ``torch.Tensor`` it holds (the same data and autograd history); anything
    else as it is (the tensor subclasses of ``torch.export`` and ``torch.compile`` included, which must stay).

    Why: a ``MetaTensor`` (what ``LoadImaged`` and ``EnsureTyped`` give by default) reached the C++ kernel's operators
    as itself; its ``new_empty`` override refused their call (``TypeError: new_empty(): argument 'size' must be tuple
    of ints``, every SRE-ResNet on CPU), and its re-wrapping of a custom autograd function's output made that output a
    view that ``out += residual`` may not change in place. So SREConv computes on the plain tensor and gives the
    metadata back to the result (:func:`like_input`).
    """
    return x.as_tensor() if isinstance(x, MetaTensor) else x


@torch.jit.ignore
def like_input(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` as a ``MetaTensor`` with ``x``'s metadata when ``x`` is one (and MONAI tracks metadata), as
    ``torch.nn.Conv`` returns it through ``MetaTensor.update_meta``, whose steps these are (so a converted segmentation
    network's output keeps the affine that ``SaveImaged`` writes); ``out`` itself otherwise. Not MONAI's
    ``convert_to_dst_type``: it makes the result contiguous, and a channels-last output then takes other paths in the
    next layer (outputs 1e-9 to 7e-6 from the plain input's)."""
    if not isinstance(x, MetaTensor) or not get_track_meta():
        return out
    return out.as_subclass(MetaTensor).copy_meta_from(x, copy_attr=not x.is_batch)


def _check_band_scale(mode: str) -> str:
    if mode not in BAND_SCALES:
        raise ValueError(f"band_scale must be one of {BAND_SCALES}, got {mode!r}.")
    return mode


def band_scale(band_sizes: torch.Tensor | Sequence[int], mode: str = "rsqrt_taps") -> torch.Tensor:
    """Per-band factor between a stored SRE weight and the band weight the convolution uses.

    A band of ``n_b`` taps receives the summed gradient of its taps. With the factor ``c_b`` a plain SGD step moves
    each tap of the band by ``lr * c_b^2 * (sum of the tap gradients)``: ``c_b = 1`` (``"none"``) moves a 32-tap band
    up to 32 times as far as one tap of a dense kernel, ``c_b = 1/sqrt(n_b)`` (``"rsqrt_taps"``) moves every tap by
    ``lr`` times the mean gradient of its band's taps, the step of a dense tap, for every band size. Adam's step is
    already about ``lr`` per parameter, so under Adam ``"none"`` gives every tap a dense tap's step and
    ``"rsqrt_taps"`` shrinks wide bands' steps. Measured in ``benchmarks/band_parameterisation.py``.

    Args:
        band_sizes: number of taps of each band (:func:`~monai_sre.layers.rings.ring_sizes`, or a layer's
            ``band_sizes``).
        mode: one of :data:`BAND_SCALES`.

    Returns:
        float64 factors of shape ``(num_rings,)``; 1 for an empty band (it touches no tap).

    Raises:
        ValueError: for a ``mode`` not in :data:`BAND_SCALES`.
    """
    sizes = torch.as_tensor(band_sizes).to(torch.float64)
    if _check_band_scale(mode) == "none":
        return torch.ones_like(sizes)
    return torch.where(sizes > 0, sizes.clamp(min=1).rsqrt(), torch.ones_like(sizes))


def upgrade_band_weights(
    state_dict: dict[str, torch.Tensor], prefix: str, scale: torch.Tensor, version: int | None = None
) -> None:
    """Rewrite one SRE layer's entries of ``state_dict`` in place for a layer whose band scale is ``scale``.

    The band weights (``weight * band_scale``) are kept: ``weight`` becomes ``weight * scale_file / scale``. A file
    without ``band_scale`` was written before state-dict version 2 and stored the band weights (scale 1). Entries of
    another shape are left for ``load_state_dict`` to report.

    Args:
        state_dict: a state dict holding ``{prefix}weight`` and, from version 2 on, ``{prefix}band_scale``.
        prefix: the layer's key prefix (``"layer1.0.conv1."``).
        scale: the layer's own :attr:`band_scale` buffer.
        version: the layer's state-dict version from the file's metadata, if known. With version 2 or later a
            missing ``band_scale`` is left missing (a damaged file), not taken for scale 1.
    """
    weight_key, scale_key = prefix + "weight", prefix + "band_scale"
    weight = state_dict.get(weight_key)
    if not isinstance(weight, torch.Tensor) or weight.shape[-1:] != scale.shape:
        return
    stored = state_dict.get(scale_key)
    if stored is None:
        if version is not None and version >= 2:
            return
        stored = torch.ones_like(scale)
    if not isinstance(stored, torch.Tensor) or stored.shape != scale.shape:
        return
    if not torch.equal(stored.to(scale), scale):
        factor = stored.to(device=weight.device, dtype=torch.float64) / scale.to(weight.device, torch.float64)
        state_dict[weight_key] = (weight.to(torch.float64) * factor).to(weight.dtype)
    state_dict[scale_key] = scale.detach().clone()


def upgrade_state_dict(state_dict: Mapping[str, torch.Tensor], network: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """A state dict for ``network`` in its SRE layers' parameterisation, from one of any earlier version or scale.

    ``load_state_dict`` converts on its own; this is the converter for checkpoint files (load, upgrade,
    ``torch.save``), so a file holds the current format.

    Args:
        state_dict: weights of ``network``, e.g. ``torch.load(path, weights_only=True)``.
        network: a network with the same keys, whose SRE layers define the target band scales.

    Returns:
        a new state dict (the input is not modified) giving the same outputs in ``network``, with each SRE layer's
        metadata version set to the current one.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict(state_dict)
    metadata = dict(getattr(state_dict, "_metadata", None) or {})
    for name, module in network.named_modules():
        if isinstance(module, _SREConvNd):
            version = metadata.get(name, {}).get("version")
            upgrade_band_weights(out, f"{name}." if name else "", module.band_scale, version)
            metadata[name] = {**metadata.get(name, {}), "version": module._version}
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


@torch.no_grad()
def set_band_scale_(module: nn.Module, mode: str) -> nn.Module:
    """Re-parameterise every SRE layer of ``module`` in place with the band scale ``mode``; outputs are unchanged.

    The band weights (what the convolutions use) are kept and the stored ``weight`` becomes them divided by the new
    scale, so this can follow any initialisation or loaded checkpoint. Call it before building the optimizer: its
    state (momentum, Adam's moments) refers to the stored parameters.

    Args:
        module: a network or a single SRE layer.
        mode: one of :data:`BAND_SCALES`.

    Returns:
        ``module``.

    Raises:
        ValueError: for a ``mode`` not in :data:`BAND_SCALES`.
    """
    _check_band_scale(mode)
    for layer in module.modules():
        if isinstance(layer, _SREConvNd) and layer.band_scale_mode != mode:
            new = band_scale(layer.band_sizes, mode).to(layer.band_scale)
            layer.weight.mul_(layer.band_scale / new)
            layer.band_scale.copy_(new)
            layer.band_scale_mode = mode
    return module


class _SREConvNd(nn.Module):
    """Shared implementation of the SRE convolutions (forward and transposed)."""

    # 2: the stored weight times the per-band band_scale (saved with it) is the band weight; 1 (no version): the
    # stored weight was the band weight.
    _version = 2

    __constants__ = ["spatial_dims", "in_channels", "out_channels", "groups", "num_rings", "padding_mode", "path"]
    # An eager-only cache (dtype and device keys): TorchScript builds the band filters on the fly.
    __jit_ignored_attributes__ = ("_band_filter_cache", "_tap_offset_cache", "_path_choice", "_disk_widths")

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int,
        padding: Sequence[int] | int | str,
        dilation: Sequence[int] | int,
        groups: int,
        bias: bool,
        padding_mode: str,
        num_rings: int | None,
        transposed: bool,
        output_padding: Sequence[int] | int,
        path: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        band_scale_mode: str = "none",
    ) -> None:
        super().__init__()
        size = normalize_kernel_size(kernel_size, spatial_dims)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive int, got {value}.")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}."
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}.")
        if transposed and padding_mode != "zeros":
            raise ValueError(f"transposed SRE convolutions support only padding_mode='zeros', got {padding_mode!r}.")
        if path not in _PATHS:
            raise ValueError(f"path must be one of {_PATHS}, got {path!r}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = size
        self.stride = per_axis(stride, spatial_dims, "stride")
        self.dilation = per_axis(dilation, spatial_dims, "dilation")
        self.output_padding = per_axis(output_padding, spatial_dims, "output_padding")
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = transposed
        self.path = "dense" if transposed else path
        self.padding = self._resolve_padding(padding)

        index = ring_index(size, spatial_dims, num_rings)
        self.num_rings = int(num_rings) if num_rings is not None else num_rings_default(size, spatial_dims)
        # Taps outside the circle read an extra, always-zero weight column.
        self.register_buffer("ring_map", torch.where(index == OUTSIDE, self.num_rings, index), persistent=False)
        masks = torch.stack([(index == b) for b in range(self.num_rings)]).unsqueeze(1)
        self.register_buffer("ring_masks", masks.to(dtype or torch.get_default_dtype()), persistent=False)
        factory = {"device": device, "dtype": dtype}
        w_shape = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        self.weight = nn.Parameter(torch.empty(*w_shape, self.num_rings, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        # Part of the state dict, so a checkpoint says which parameterisation its stored weights are in (see
        # band_weight and _load_from_state_dict); a file from before version 2 has none and stored the band weights.
        self.band_sizes = tuple(int(n) for n in ring_sizes(index, self.num_rings))
        self.band_scale_mode = band_scale_mode
        scale = band_scale(self.band_sizes, band_scale_mode)
        self.register_buffer("band_scale", scale.to(device=device, dtype=dtype or torch.get_default_dtype()))
        # Fan-in of one output: the input channels of its group times the taps inside the circle (for the transposed
        # layout the weight's second axis is the output channels of a group, as in torch).
        self._fan_in = w_shape[1] * taps_inside(size, spatial_dims, num_rings)
        self._band_boxes = band_boxes(index, self.num_rings)
        # the non-empty bands, the only ones the decomposed path sums over
        self._bands = [band for band in range(self.num_rings) if len(self._band_boxes[band]) > 0]
        self._band_filter_cache: dict[tuple, torch.Tensor] = {}
        # the Triton kernels' tap offsets per (padding, device), and the measured path per input key (path="auto")
        self._tap_offset_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._path_choice: dict[tuple, str] = {}
        # the C++ kernel's disk rows (2D/3D square or cubic kernels whose disks are centred runs of columns), else None
        self._disk_widths = disk_widths(index, self._bands) if spatial_dims in (2, 3) and not transposed else None
        depth = in_channels // groups * len(self._bands)
        if spatial_dims == 3:  # only the default maps' compile-time ball sums beat the depthwise filters in 3D
            default_map = self.num_rings == num_rings_default(size, 3) and len(set(size)) == 1 and size[0] <= 9
            self._cpp_pays_off = depth <= CPP_MAX_DEPTH_3D and default_map
        else:
            self._cpp_pays_off = depth <= CPP_MAX_DEPTH
        taps = band_taps(self._band_boxes)
        # The automatic choice, for inference and for training (forward+backward); both paths give the same result.
        costs = (in_channels, out_channels, groups, self.num_rings, math.prod(size))
        self._auto_decomposed_eval = not transposed and decomposition_pays_off(*costs, band_taps=taps)
        self._auto_decomposed_train = not transposed and decomposition_pays_off(*costs, band_taps=taps, training=True)
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None
        self.reset_parameters()

    def _resolve_padding(self, padding: Sequence[int] | int | str) -> tuple[int, ...]:
        if isinstance(padding, str):
            if padding == "valid":
                return (0,) * self.spatial_dims
            if padding != "same" or self.transposed:
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}.")
            if any(s != 1 for s in self.stride):
                raise ValueError(f"padding='same' needs stride 1 (as torch.nn.Conv), got stride={self.stride}.")
            # Odd kernels make 'same' padding symmetric: (k - 1) * d / 2 on both sides.
            return same_padding(self.kernel_size, self.dilation)
        return per_axis(padding, self.spatial_dims, "padding")

    def reset_parameters(self) -> None:
        """Initialise as ``torch.nn.Conv`` does, but with the true fan-in (taps inside the circle): every tap of the
        expanded kernel is uniform in ``+-1/sqrt(fan_in)``, whatever the band scale."""
        bound = 1.0 / math.sqrt(self._fan_in)
        self.init_band_weight_(nn.init.uniform_, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.jit.unused
    def init_band_weight_(self, init: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Initialise the band weights (what :meth:`band_weight` returns) with a ``torch.nn.init`` function.

        ``init(tensor, *args, **kwargs)`` draws the band weights themselves (e.g. ``nn.init.normal_, 0.0, std``); the
        stored parameter becomes them divided by :attr:`band_scale`, so the expanded kernel has the drawn
        distribution under any parameterisation.

        Args:
            init: an in-place initialiser such as :func:`torch.nn.init.normal_`.
            args: its arguments after the tensor.
            kwargs: its keyword arguments.

        Returns:
            the stored weight parameter.
        """
        with torch.no_grad():
            init(self.weight, *args, **kwargs)
            self.weight.div_(self.band_scale)
        return self.weight

    def center_band_weight_(self, keep: float = 0.0) -> torch.Tensor:
        """Shift every kernel's band weights so that its mean over its taps becomes ``keep`` times what it is, then
        rescale them to their former norm over the taps (the dense kernel's L2 norm).

        A kernel's mean ``sum_b n_b w_b / N`` (band ``b`` has ``n_b`` of the ``N`` taps) is its gain on a constant
        input. One band weight is shared by up to 32 taps, so a freshly drawn SRE kernel has a mean 10-22 times the
        size of its white-noise gain (its features start low-pass); ``keep=0`` gives zero-mean kernels, the start
        of :class:`~monai_sre.networks.SREResNet`'s ``zero_mean_init``. A layer with a single band is left as it is.

        Args:
            keep: the share of each kernel's mean that stays (0: none; 1: the kernel is unchanged).

        Returns:
            the stored weight parameter.
        """
        if self.weight.shape[-1] < 2:
            return self.weight
        with torch.no_grad():
            w = self.band_weight()
            n = torch.tensor(self.band_sizes, dtype=w.dtype, device=w.device)
            norm = (w.pow(2) * n).sum(-1, keepdim=True).sqrt()
            mean = (w * n).sum(-1, keepdim=True) / n.sum()
            new = w - (1.0 - keep) * mean
            new_norm = (new.pow(2) * n).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
            self.weight.copy_(new * norm / new_norm / self.band_scale)
        return self.weight

    def band_weight(self) -> torch.Tensor:
        """The weight of each band as the convolution uses it: the stored ``weight`` times :attr:`band_scale`."""
        if self.band_scale_mode == "none":  # the scale is 1: no product, nothing more saved for the backward
            return self.weight
        return self.weight * self.band_scale

    def dense_kernel(self) -> torch.Tensor:
        """Expand the band weights into a dense kernel of shape ``weight.shape[:2] + kernel_size``."""
        return self._expand(self.band_weight())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        """Load weights stored under any band scale into this layer's: ``weight * scale_file / band_scale``.

        A file written before version 2 has no ``band_scale`` entry; its ``weight`` is the band weight itself (scale
        1). The file's scale, not its metadata, decides, so state dicts whose ``_metadata`` was dropped (a prefix
        stripped by a dict comprehension) still load right. The layer keeps its own parameterisation.
        """
        upgrade_band_weights(state_dict, prefix, self.band_scale, local_metadata.get("version"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _expand(self, weight: torch.Tensor) -> torch.Tensor:
        return F.pad(weight, (0, 1))[:, :, self.ring_map]

    @torch.jit.unused
    def _cached_dense_kernel(self) -> torch.Tensor:
        w = self.weight
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and w.requires_grad):
            return self.dense_kernel()
        scale = self.band_scale
        key = (w._version, w.data_ptr(), w.device, w.dtype, self.ring_map.data_ptr(), scale._version, scale.data_ptr())
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.dense_kernel()
            self._cache_key = key
        return self._cache

    def _kernel(self) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.dense_kernel()
        return self._cached_dense_kernel()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "SRE convolution: input must have {} dims (batch, channels, {} spatial), got shape {}.".format(
                    self.spatial_dims + 2, self.spatial_dims, list(x.shape)
                )
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                "SRE convolution: input must have in_channels={} channels (dim 1), got shape {}.".format(
                    self.in_channels, list(x.shape)
                )
            )

    def _pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        if self.padding_mode == "zeros":
            return x, list(self.padding)
        pad: list[int] = []
        for p in self.padding[::-1]:
            pad += [p, p]
        return F.pad(x, pad, mode=self.padding_mode), [0] * self.spatial_dims

    def use_decomposed(self) -> bool:
        """The static choice of the ring-decomposed path (torch operators): ``path``, or for ``"auto"`` the CPU cost
        model's choice for training (autograd enabled) or inference (:func:`decomposition_pays_off`), and the dense
        path on accelerators (where ``"auto"`` measures instead: :meth:`select_path`)."""
        if self.path == "auto":
            if self.weight.device.type != "cpu":
                # Measured on an H100: cuDNN runs the dense kernel on tensor cores 1.5-4x faster than the
                # decomposition's depthwise filters and batched products, at every SRE-ResNet-18 layer shape.
                return False
            return self._auto_decomposed_train if torch.is_grad_enabled() else self._auto_decomposed_eval
        return self.path == "decomposed" or self.path == "cpp"

    @torch.jit.unused
    def triton_supported(self, x: torch.Tensor) -> bool:
        """Whether the Triton path can run on ``x``: CUDA (or Triton's interpreter) with Triton installed, stride 1,
        groups 1, and a float32, float16 or bfloat16 input (under autocast: its dtype)."""
        dtype = autocast_dtype(x.device.type) or x.dtype
        return (
            not self.transposed and self.groups == 1 and all(s == 1 for s in self.stride)
            and dtype in (torch.float32, torch.float16, torch.bfloat16) and triton_available(x.device)
        )  # fmt: skip

    @torch.jit.unused
    def cpp_supported(self, x: torch.Tensor, padding: Sequence[int] | None = None) -> bool:
        """Whether the C++ path can run on ``x``: a 2D or 3D layer with a square (cubic) kernel, stride 1, dilation 1,
        groups 1, zero padding of the kernel radius, a float32 CPU input outside CPU autocast, and the kernel built
        (:func:`~monai_sre.layers.ring_cpp.cpp_available`, which compiles it on the first call)."""
        padding = list(self.padding) if padding is None else list(padding)
        return (
            self._disk_widths is not None and self.groups == 1 and all(s == 1 for s in self.stride)
            and all(d == 1 for d in self.dilation) and self.padding_mode == "zeros"
            and padding == [k // 2 for k in self.kernel_size] and x.device.type == "cpu" and x.dtype == torch.float32
            and autocast_dtype("cpu") is None and cpp_available()
        )  # fmt: skip

    @torch.jit.unused
    def select_path(self, x: torch.Tensor) -> str:
        """The path a forward call on ``x`` runs now (with this layer's weight): ``"dense"``, ``"decomposed"``,
        ``"triton"`` or ``"cpp"``.

        For ``path="auto"`` on a device where measuring is on (CUDA; :data:`AUTOTUNE_ENV`), the first call for an
        input key times every available path on ``x`` (forward, plus backward when autograd is on) and keeps the
        fastest for that key; otherwise the static choice (:meth:`use_decomposed`).

        Raises:
            ValueError: for ``path="triton"`` or ``"cpp"`` where that path cannot run (:meth:`triton_supported`,
                :meth:`cpp_supported`).
        """
        x, padding = self._pad_input(x)
        return self._select_path(x, self.weight, self.bias, padding)

    @torch.jit.unused
    def _measures(self, x: torch.Tensor) -> bool:
        if torch.compiler.is_compiling() or (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            return False
        setting = os.environ.get(AUTOTUNE_ENV, "")
        if setting in ("0", "1"):
            return setting == "1"
        return x.device.type == "cuda"

    @torch.jit.unused
    def _select_path(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]) -> str:
        if self.path == "triton" and not self.triton_supported(x):
            raise ValueError(
                f"SREConv(path='triton') needs Triton, a CUDA input, stride 1, groups 1 and a float32/16 or bfloat16 "
                f"input; got stride={self.stride}, groups={self.groups}, input {x.dtype} on {x.device}."
            )
        if self.path == "cpp" and not self.cpp_supported(x, padding):
            raise ValueError(
                f"SREConv(path='cpp') needs a 2D or 3D layer with a square or cubic kernel, stride 1, dilation 1, "
                f"groups 1, zero padding of the kernel radius, a float32 CPU input outside autocast and the built C++ "
                f"kernel (MONAI_SRE_CPP not 0); got kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, groups={self.groups}, padding={list(padding)} "
                f"({self.padding_mode}), input {x.dtype} on {x.device}."
            )
        if self.path != "auto":
            return self.path
        needs_grad = self._needs_grad(x, weight, bias)
        key = (x.device, tuple(x.shape), x.movedim(1, -1).is_contiguous(), x.dtype, autocast_dtype(x.device.type),
               needs_grad)  # fmt: skip
        choice = self._path_choice.get(key)
        if choice is None:
            if not self._measures(x):
                if not self.use_decomposed():
                    return "dense"
                # the same decomposition, fused, where its one deep product pays (CPP_MAX_DEPTH); an operator, so
                # torch.compile keeps it too
                fused = self._cpp_pays_off and self.cpp_supported(x, padding)
                return "cpp" if fused else "decomposed"
            choice = self._path_choice[key] = self._measure_paths(x, weight, bias, padding, needs_grad)
        return choice

    @torch.jit.unused
    def _measure_paths(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                       needs_grad: bool) -> str:
        """Time every available path on detached copies of the operands (forward, and backward when ``needs_grad``)
        and return the fastest; the layer's parameters and their gradients are untouched."""
        candidates = ["dense", "decomposed"] + (["triton"] if self.triton_supported(x) else [])
        candidates += ["cpp"] if self.cpp_supported(x, padding) else []
        operands = [t.detach().requires_grad_(needs_grad and t.requires_grad) if t is not None else None
                    for t in (x, weight, bias)]  # fmt: skip
        wanted = [t for t in operands if t is not None and t.requires_grad]

        def run(path: str) -> None:
            with torch.set_grad_enabled(needs_grad):
                y = self._run_path(path, operands[0], operands[1], operands[2], padding, False)
                if wanted:
                    torch.autograd.grad(y, wanted, torch.ones_like(y))

        times = {path: time_call(lambda p=path: run(p), x.device) for path in candidates}
        return min(times, key=lambda p: times[p])

    def _band_paddings(self, padding: list[int]) -> list[list[int]]:
        """Signed padding of every non-empty band's filter (:func:`~monai_sre.layers.ring_ops.band_padding`)."""
        kernel_size, dilation = list(self.kernel_size), list(self.dilation)
        return [band_padding(self._band_boxes[band], kernel_size, dilation, padding) for band in self._bands]

    @torch.jit.unused
    def _cached_band_filters(self, band: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
        # The filters are fixed: keep them, so that the convolution need not copy an expanded view on every call
        # (but leave the module untouched while torch.compile / torch.export trace it).
        mask, box = self.ring_masks[band : band + 1], self._band_boxes[band]
        if torch.compiler.is_compiling():
            return band_filters(mask, box, channels, dtype)
        key = (band, channels, dtype, self.ring_masks.device)
        filters = self._band_filter_cache.get(key)
        if filters is None:
            filters = self._band_filter_cache[key] = band_filters(mask, box, channels, dtype)
        return filters

    def _band_filters(self, channels: int, dtype: torch.dtype) -> list[torch.Tensor]:
        """The depthwise filter of every non-empty band for ``channels`` (cached in eager mode)."""
        if torch.jit.is_scripting():
            return [band_filters(self.ring_masks[b : b + 1], self._band_boxes[b], channels, dtype) for b in self._bands]
        return [self._cached_band_filters(band, channels, dtype) for band in self._bands]

    def _needs_grad(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad or weight.requires_grad:
            return True
        if bias is not None:
            return bias.requires_grad
        return False

    @torch.jit.unused
    def _forward_ring_autograd(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]
    ) -> torch.Tensor:
        return RingDecomposedConv.apply(
            x, weight, bias, self._band_filters(x.shape[1], x.dtype), self._band_filters(weight.shape[0], x.dtype),
            self._band_paddings(padding), self._bands, list(self.stride), list(self.dilation), self.groups,
            cpu_chunk_bytes(),
        )

    def _forward_ring(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]
    ) -> torch.Tensor:
        """The decomposed path without autograd (inference)."""
        x = channels_last(x)
        # TorchScript reads neither the thread count nor module constants: scripted inference runs in one chunk.
        budget = 0 if torch.jit.is_scripting() else cpu_chunk_bytes()
        return ring_conv_forward(
            x, weight, bias, self._band_filters(x.shape[1], x.dtype), self._band_paddings(padding), self._bands,
            list(self.stride), list(self.dilation), self.groups, budget,
        )

    @torch.jit.unused
    def _tap_offsets(self, padding: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The Triton kernels' tap offsets and band starts (:func:`band_tap_offsets`), kept per padding and device."""
        key = (tuple(padding), device)
        geometry = self._tap_offset_cache.get(key)
        if geometry is None:
            offsets, starts = band_tap_offsets(self.ring_map.cpu(), self._bands, self.dilation, padding)
            geometry = self._tap_offset_cache[key] = (offsets.to(device), starts.to(device))
        return geometry

    @torch.jit.unused
    def _run_path(self, path: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  padding: list[int], cached_kernel: bool) -> torch.Tensor:
        """Run one path in eager mode (or under torch.compile) on a padded ``x``, under autocast too."""
        stride, dilation = list(self.stride), list(self.dilation)
        if path == "dense":
            kernel = self._kernel() if cached_kernel else self._expand(weight)
            return conv_nd(x, kernel, bias, stride, padding, dilation, self.groups)
        # The custom operators take operands of one dtype: under autocast, the autocast dtype (as a convolution).
        dtype = autocast_dtype(x.device.type)
        if dtype is not None:
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if path == "cpp":
            if self._needs_grad(x, weight, bias):
                return FusedRingConv.apply(channels_last(x), weight, bias, self._disk_widths, self._bands)
            return fused_inference(x, weight, bias, self._disk_widths, self._bands)  # oneDNN's products where large
        if path == "triton":
            offsets, starts = self._tap_offsets(padding, x.device)
            out_spatial = [n + 2 * p - d * (k - 1) for n, p, d, k in zip(x.shape[2:], padding, dilation,
                                                                         self.kernel_size)]  # fmt: skip
            return ring_conv_triton(x, weight, bias, self._bands, offsets, starts, out_spatial)
        if self._needs_grad(x, weight, bias):
            return self._forward_ring_autograd(x, weight, bias, padding)
        with torch.autocast(x.device.type, enabled=False):
            return self._forward_ring(x, weight, bias, padding)

    def _convolve(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cached_kernel: bool
    ) -> torch.Tensor:
        """Convolve a checked ``x`` with band weights ``weight``: the one choice between the execution paths.

        ``cached_kernel`` lets the dense path use the cached dense kernel of the layer's own weight.
        """
        x, padding = self._pad_input(x)
        # Exported graphs (trace, torch.export, ONNX) and TorchScript take standard operators only; the batch-chunked
        # ring path writes into views sized from the batch, which a graph with a dynamic batch cannot keep.
        exporting = False if torch.jit.is_scripting() else _is_exporting()
        if torch.jit.is_scripting() or exporting:
            stride, dilation = list(self.stride), list(self.dilation)
            if self.use_decomposed():
                if exporting or self._needs_grad(x, weight, bias):
                    # exported graphs and scripted training: standard, differentiable operators only
                    return ring_conv_portable(x, self.ring_masks, weight, bias, stride, padding, dilation, self.groups)
                return self._forward_ring(x, weight, bias, padding)
            kernel = self._kernel() if cached_kernel else self._expand(weight)
            return conv_nd(x, kernel, bias, stride, padding, dilation, self.groups)
        path = self._select_path(x, weight, bias, padding)
        return self._run_path(path, x, weight, bias, padding, cached_kernel)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, num_rings={self.num_rings}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.transposed and any(p != 0 for p in self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.path != "auto":
            s += f", path={self.path!r}"
        if self.band_scale_mode != "none":
            s += f", band_scale={self.band_scale_mode!r}"
        return s


class SREConv(_SREConvNd):
    """SRE convolution in MONAI style (``spatial_dims`` first).

    The kernel is radially symmetric: taps at the same rounded distance from the centre share one weight, so the
    layer commutes exactly with 90-degree rotations and flips of the grid (stride 1, symmetric padding) and nearly
    with any rotation.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: odd kernel size, one int or one per axis (anisotropic sizes use a normalised distance).
        stride: convolution stride.
        padding: ints, ``"same"`` or ``"valid"``; ``None`` (default) pads ``(k - 1) / 2 * dilation`` on each side,
            which keeps the size at stride 1 and stays symmetric at any stride.
        dilation: spacing between kernel taps.
        groups: blocked connections from input to output channels.
        bias: add a learnable bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        num_rings: number of distance bands; ``None`` gives ``max(k) // 2 + 1`` one-pixel rings.
        path: ``"auto"`` (the fastest: measured on CUDA, the cost model's choice on CPU, run by the C++ kernel where
            it can; for training and for inference), ``"dense"``, ``"decomposed"``, ``"triton"`` (CUDA, stride 1,
            groups 1) or ``"cpp"`` (CPU, 2D/3D, float32, stride 1, groups 1, dilation 1, zero "same" padding) execution;
            all give the same result to float tolerance.
        device: device of the parameters.
        dtype: dtype of the parameters.
        band_scale: parameterisation of the band weights, one of :data:`BAND_SCALES`: ``"none"`` (the stored weight
            is the band weight; under Adam every tap then steps as a dense tap does) or ``"rsqrt_taps"`` (stored
            weight times ``1/sqrt(n_b)``: under SGD every tap steps as a dense tap does); see :func:`band_scale`.
            Checkpoints convert between the two on loading.

    Raises:
        ValueError: for an even kernel size, ``groups`` not dividing the channels, ``num_rings < 1`` or an unknown
            ``padding_mode``/``path``/``band_scale``; at call time for an input of the wrong rank or channel count.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str | None = None,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        num_rings: int | None = None,
        path: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        band_scale: str = "none",
    ) -> None:
        size = normalize_kernel_size(kernel_size, spatial_dims)
        if padding is None:
            padding = same_padding(size, per_axis(dilation, spatial_dims, "dilation"))
        super().__init__(
            spatial_dims, in_channels, out_channels, size, stride, padding, dilation, groups, bias, padding_mode,
            num_rings, False, 0, path, device, dtype, band_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` of shape ``(batch, in_channels, *spatial)``; a MONAI ``MetaTensor`` is convolved as the plain
        tensor it holds and the result carries its metadata (:func:`plain_tensor`, :func:`like_input`)."""
        self._check_input(x)
        if torch.jit.is_scripting():
            return self._convolve(x, self.band_weight(), self.bias, True)
        else:
            return like_input(self._convolve(plain_tensor(x), self.band_weight(), self.bias, True), x)

    @torch.jit.unused
    def forward_affine(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       residual: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
        """``forward(x) * scale + shift`` per output channel, with the affine folded into the band weights and bias;
        then ``+ residual`` and a ReLU when given (a residual block's ending).

        This is how an inference-mode BatchNorm after the layer costs no pass of its own: the folded weights are
        recomputed on every call, so they always follow the parameters and the running statistics, and gradients
        reach the layer, ``scale``, ``shift`` and ``residual`` as through the unfolded modules. Where the C++ path runs
        without autograd, the scale is folded into its mixing matrix and the residual and ReLU are applied to each
        tile in cache (:func:`~monai_sre.layers.ring_cpp.fused_inference`): SRE-ResNet-18's 2D inference (batch 32
        of 3x32x32) 1.07x as fast at two threads and 1.01x at one (`benchmarks/revision_ab.py`), where the separate
        add and ReLU passes over memory had scaled worst with the threads.

        Args:
            x: input of shape ``(batch, in_channels, *spatial)``.
            scale: per-output-channel factor, shape ``(out_channels,)``.
            shift: per-output-channel offset, shape ``(out_channels,)``.
            residual: tensor added to the shifted output (as ``out += residual``), or None.
            relu: apply ``torch.relu`` last.

        Returns:
            the convolved, scaled and shifted ``x`` (plus ``residual``, through the ReLU).
        """
        self._check_input(x)
        given, x, residual = x, plain_tensor(x), plain_tensor(residual)
        if self._fuses_inference(x, scale, shift, residual):
            bias = shift if self.bias is None else self.bias * scale + shift
            out = fused_inference(x, self.band_weight(), bias, self._disk_widths, self._bands, scale, residual, relu)
            return like_input(out, given)
        weight = self.band_weight() * scale.view(-1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        out = self._convolve(x, weight, bias, False)
        if residual is not None:
            out += residual
        return like_input(torch.relu(out) if relu else out, given)

    @torch.jit.unused
    def _fuses_inference(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                         residual: torch.Tensor | None) -> bool:
        """Whether :meth:`forward_affine` runs as one call of the C++ kernel: the C++ path, no autograd, not exported,
        and a float32 CPU residual of the output's shape (anything else keeps the unfused operators)."""
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (x, self.weight, self.bias, scale, shift, residual)):
            return False
        if residual is not None and (residual.dtype != torch.float32 or residual.device.type != "cpu"
                                     or list(residual.shape) != [x.shape[0], self.out_channels, *x.shape[2:]]):
            return False
        if scale.dtype != torch.float32 or shift.dtype != torch.float32 or _is_exporting():
            return False
        x, padding = self._pad_input(x)
        return self._select_path(x, self.weight, None, padding) == "cpp"


class _TorchStyleSREConv(SREConv):
    """SREConv with the exact argument list of ``torch.nn.ConvNd`` (plus ``num_rings`` and ``path``)."""

    _spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str = 0,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_rings: int | None = None,
        path: str = "auto",
        band_scale: str = "none",
    ) -> None:
        super().__init__(self._spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, num_rings, path, device, dtype, band_scale)


class SREConv1d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv1d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 1


class SREConv2d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv2d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 2


class SREConv3d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv3d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 3


class SREConvTranspose(_SREConvNd):
    """Transposed SRE convolution in MONAI style; output shapes match :class:`torch.nn.ConvTranspose1d/2d/3d`.

    The weight has torch's transposed layout ``(in_channels, out_channels / groups, num_rings)``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: odd kernel size, one int or one per axis.
        stride: stride of the transposed convolution.
        padding: implicit zero padding removed from each side of the output, as in torch.
        output_padding: extra size added to one side of the output, as in torch.
        groups: blocked connections from input to output channels.
        bias: add a learnable bias.
        dilation: spacing between kernel taps.
        padding_mode: only ``"zeros"``, as in torch.
        num_rings: number of distance bands; ``None`` gives ``max(k) // 2 + 1``.
        device: device of the parameters.
        dtype: dtype of the parameters.
        band_scale: parameterisation of the band weights, as :class:`SREConv`'s.

    Raises:
        ValueError: for an even kernel size, ``groups`` not dividing the channels, ``num_rings < 1``, or an input of
            the wrong rank or channel count.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        output_padding: Sequence[int] | int = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Sequence[int] | int = 1,
        padding_mode: str = "zeros",
        num_rings: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        band_scale: str = "none",
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            num_rings, True, output_padding, "dense", device, dtype, band_scale,
        )
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"output_padding={self.output_padding} must be smaller than stride or dilation "
                    f"(stride={self.stride}, dilation={self.dilation})."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the transposed convolution to ``x`` of shape ``(batch, in_channels, *spatial)``."""
        self._check_input(x)
        return conv_transpose_nd(x, self._kernel(), self.bias, list(self.stride), list(self.padding),
                                 list(self.output_padding), self.groups, list(self.dilation))


class _TorchStyleSREConvTranspose(SREConvTranspose):
    """SREConvTranspose with the exact argument list of ``torch.nn.ConvTransposeNd`` (plus ``num_rings``)."""

    _spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        output_padding: Sequence[int] | int = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Sequence[int] | int = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_rings: int | None = None,
        band_scale: str = "none",
    ) -> None:
        super().__init__(self._spatial_dims, in_channels, out_channels, kernel_size, stride, padding, output_padding,
                         groups, bias, dilation, padding_mode, num_rings, device, dtype, band_scale)


class SREConvTranspose1d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose1d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 1


class SREConvTranspose2d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose2d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 2


class SREConvTranspose3d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose3d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 3
