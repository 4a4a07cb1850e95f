# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fused CPU path of a 2D or 3D SRE convolution: a C++ kernel (``csrc/ring_cpu.cpp``) compiled on first use.

The ring-decomposed path (:mod:`~monai_sre.layers.ring_ops`) sums every band with a oneDNN depthwise filter, one pass
over memory per band, and folds each band into the output with its own matrix product. The C++ kernel forms, for a
tile of output rows, the sums over *disks* (disk ``b`` = bands ``0..b``; balls in 3D) from horizontal box sums of
the input rows (for the default band maps row by row straight from the input, in L1; a few dozen adds per channel
and pixel for a 9x9 kernel instead of the 164 taps of the bands' boxes, and in 3D about three per channel and voxel
for a 5x5x5 kernel instead of 153) in thread-local buffers, and multiplies them by the disk mixing matrix (``V_b =
W_b - W_{b+1}``, formed by the kernel too) in one product per tile. The backward is the same kernel on the output
gradient: its disk sums, once, give both the input gradient (with the transposed mixing: the disks are symmetric) and
the mixing gradient. The forward's large tile products (depth >= 256, >= 2^23 multiply-adds) run on oneDNN's matmul
in inference where PyTorch has oneDNN (:func:`product_backend`; SRE-ResNet-18's 2D inference 1.09-1.10x as fast as
with MKL's sgemm on the AVX-512 EPYC VM), the others and all of training's on ATen's product (MKL or OpenBLAS);
``MONAI_SRE_ONEDNN=0`` keeps ATen's everywhere. The kernel's two entry points are PyTorch operators
(``torch.ops.monai_sre.disk_conv`` and ``disk_conv_backward``, with shape functions for fake tensors), so
``torch.compile`` keeps the path in its graph.

Scope: 2D and 3D, float32, stride 1, dilation 1, one group, zero padding of the kernel radius, a square or cubic
kernel whose disks are centred runs of columns in every row (every radially symmetric band map). Like MONAI's own C++
extensions (``monai._extensions``), it is built with :func:`torch.utils.cpp_extension.load` into PyTorch's extension
cache the first time it runs (about 40 s; it needs a C++ compiler and ninja) and loaded from there afterwards; if the
build fails the layer warns once and keeps the decomposed path. ``MONAI_SRE_CPP=0`` turns the path off.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple  # the operators' signatures: torch.library reads them

import torch

from monai_sre.layers.ring_ops import channels_last, channels_last_strides

__all__ = ["CPP_ENV", "ONEDNN_ENV", "TILE_PIXELS", "CPP_MAX_DEPTH", "CPP_MAX_DEPTH_3D", "disk_widths", "cpp_extension",
           "cpp_available", "product_backend", "disk_mixing", "fused_inference", "FusedRingConv"]

#: Environment variable: ``0`` turns the C++ path off (``path="auto"`` keeps the decomposed path; ``path="cpp"``
#: raises).
CPP_ENV = "MONAI_SRE_CPP"
#: Environment variable: ``0`` keeps the forward's large tile products on ATen's matrix product (MKL or OpenBLAS)
#: instead of oneDNN's matmul; read on every call, as :data:`CPP_ENV` is.
ONEDNN_ENV = "MONAI_SRE_ONEDNN"
#: Output pixels per tile of the C++ kernel: one product of ``(TILE_PIXELS, bands * C)`` by ``(bands * C, Cout)``.
#: Measured on the 2-vCPU AVX-512 VM, one thread, 64-channel 32x32 layer: 128, 256 and 512 within 10%, 512 the
#: fastest.
TILE_PIXELS = 512

#: ``path="auto"`` takes the C++ path for a layer whose product depth (bands x input channels per group) is at most
#: this, the deepest product measured. Inference of one layer, batch 32, decomposed / C++ (`benchmarks/band_mixing.py`,
#: 2-vCPU AVX-512 EPYC VM), one thread (process CPU time) and two (wall clock): 64 channels 32x32 k=9 (depth 320)
#: 1.21x and 1.71x; 128 channels 16x16 k=9 (640) 1.29x and 1.44x; 256 channels 8x8 k=5 (768) 1.09x and 1.13x;
#: 512 channels 4x4 k=5 (1536) 1.03x and 1.13x; 1024 channels 4x4 k=5 (3072), one thread: 0.99x.
CPP_MAX_DEPTH = 3072
#: The same for 3D layers, which take the C++ path only with the default band maps of k <= 9 (their ball sums come
#: from compile-time tables; the box-sum buffer of other maps was slower than the depthwise filters, 0.49-0.95x in a
#: probe of 16^3 layers). Inference of one layer, batch 4, k=5, decomposed / C++ (`benchmarks/band_mixing.py`, same
#: VM), one thread (CPU time) and two (wall clock): 64 channels 32^3 (depth 192) 1.40x and 1.48x; 128 channels 16^3
#: (384) 1.22x and 1.56x; 256 channels 8^3 (768) 1.15x and 1.21x; 512 channels 4^3 (1536) 1.06x and 1.30x, but
#: 0.92x in one-thread training (the probe), so the 512-channel stage stays on the decomposed path.
CPP_MAX_DEPTH_3D = 768

_SOURCE = Path(__file__).with_name("csrc") / "ring_cpu.cpp"
_lock = threading.Lock()
_state: dict[str, Any] = {}
_MISSING = object()


def disk_widths(ring_map: torch.Tensor, bands: list[int]) -> torch.Tensor | None:
    """Half-width of every disk in every kernel row, the C++ kernel's description of a 2D or 3D band map.

    Disk ``i`` holds the taps of bands ``bands[0..i]`` (a ball in 3D). Each of its rows (along the last axis) must be
    one run of columns centred on the kernel's centre column (``|dx| <= w``), which holds for every band map whose
    bands grow with the distance.

    Args:
        ring_map: band index per tap, shape ``(k, k)`` or ``(k, k, k)`` (negative outside every band).
        bands: the non-empty bands, in increasing order.

    Returns:
        int64 ``(len(bands), k)`` (2D) or ``(len(bands), k, k)`` (3D, row ``(z, y)``): ``w`` per disk and row, ``-1``
        for a row without taps; None when the map is not a square or cube of odd size or a disk row is not a centred
        run (the kernel cannot run it).
    """
    if ring_map.dim() not in (2, 3) or len(set(ring_map.shape)) != 1 or ring_map.shape[0] % 2 == 0:
        return None
    size, centre = ring_map.shape[0], ring_map.shape[0] // 2
    columns = torch.arange(size) - centre
    rows = ring_map.reshape(-1, size)  # every kernel row, (z, y) in 3D
    widths = torch.full((len(bands), rows.shape[0]), -1, dtype=torch.int64)
    inside = torch.zeros_like(rows, dtype=torch.bool)
    for i, band in enumerate(bands):
        inside |= rows == band
        for row in range(rows.shape[0]):
            taken = columns[inside[row]]
            if len(taken) == 0:
                continue
            w = int(taken.abs().max())
            if len(taken) != 2 * w + 1 or int(taken.min()) != -w:
                return None
            widths[i, row] = w
    return widths.view(len(bands), *ring_map.shape[:-1])


def cpp_extension() -> Any | None:
    """The compiled kernel module, built on the first call (None when it is off or cannot be built; a build
    failure warns once with the compiler's reason)."""
    if os.environ.get(CPP_ENV, "") == "0":
        return None
    module = _state.get("module", _MISSING)  # every forward asks: once decided, without the lock
    if module is not _MISSING:
        return module
    with _lock:
        if "module" in _state:
            return _state["module"]
        module = None
        try:
            from torch.utils.cpp_extension import get_default_build_root, load

            capability = torch.backends.cpu.get_cpu_capability().lower()  # "avx512", "avx2", "default", ...
            flags = {"avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
                     "avx2": ["-mavx2", "-mfma"]}.get(capability, [])  # fmt: skip
            # one build per instruction set, so that a cache shared between machines never runs a wrong binary
            name = f"monai_sre_ring_cpu_{capability}"
            # torch's build folder: $TORCH_EXTENSIONS_DIR/<name>, else <cache>/torch_extensions/py3X_<cuda>/<name>
            root = os.environ.get("TORCH_EXTENSIONS_DIR")
            folders = [Path(root) / name] if root else list(Path(get_default_build_root()).glob(f"*/{name}"))
            if not any(any(folder.glob(f"{name}*.so")) for folder in folders):
                # a logger made now, not at import: a bundle's logging.conf disables the loggers that exist before it
                logging.getLogger(__name__).warning(
                    "monai_sre: building the fused CPU kernel of SRE layers (once per machine, about a minute)")
            path = os.environ.get("PATH")
            if shutil.which("ninja") is None:  # the `ninja` dependency's binary, its scripts folder not on PATH
                import ninja

                os.environ["PATH"] = os.pathsep.join(filter(None, [ninja.BIN_DIR, path]))
            try:
                # -fopenmp: at::parallel_for is an OpenMP pragma inlined into the kernel (without it, one thread)
                module = load(name, [str(_SOURCE)], extra_cflags=["-O3", "-fopenmp", *flags],
                              extra_ldflags=["-fopenmp"], verbose=False)  # fmt: skip
            finally:
                if path is None:
                    os.environ.pop("PATH", None)
                else:
                    os.environ["PATH"] = path
        except Exception as error:  # a missing compiler or ninja, a failed build: keep the decomposed path
            warnings.warn(f"monai_sre: the fused CPU kernel ({_SOURCE}) could not be built, so SRE layers keep the "
                          f"ring-decomposed path on CPU ({type(error).__name__}: {error}). Set {CPP_ENV}=0 to skip "
                          f"the attempt.", RuntimeWarning, stacklevel=3)  # fmt: skip
        _state["module"] = module
        return module


# torch.compile takes the answer as a constant of the graph it traces: tracing into the build's lock broke the graph
# at every SRE layer of a network compiled before its first eager call (6 graphs for SRE-ResNet-18's training step).
@torch.compiler.assume_constant_result
def cpp_available() -> bool:
    """Whether the C++ path can run here (building it on the first call)."""
    return cpp_extension() is not None


def product_backend() -> str:
    """Which library takes the C++ kernel's large forward tile products: ``"onednn"`` (oneDNN's matmul, where PyTorch
    has oneDNN, the default, in inference) or ``"aten"`` (ATen's matrix product, which also takes the small products and
    every product of training).

    Raises:
        RuntimeError: when the kernel is not available (:func:`cpp_available`).
    """
    module = _required_extension()
    return module.product_backend() if _onednn_allowed() else "aten"


def _onednn_allowed() -> bool:
    return os.environ.get(ONEDNN_ENV, "") != "0"


def _required_extension() -> Any:
    module = cpp_extension()
    if module is None:
        raise RuntimeError("monai_sre: the fused CPU kernel is not available (see cpp_available()).")
    return module


def disk_mixing(weight: torch.Tensor, bands: list[int], transposed: bool = False,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """The kernel's mixing matrix from float32 band weights ``(Cout, Cin, num_rings)``: ``V_i = W_{bands[i]} -
    W_{bands[i+1]}`` (the last one ``W``), as ``(len(bands) * Cin, Cout)`` rows ``i * Cin + c``; ``transposed`` gives
    ``(len(bands) * Cout, Cin)`` for the input gradient. ``scale`` (``(Cout,)``) multiplies every output channel's
    weights in the same pass (an inference-mode BatchNorm folded in without a scaled copy of the weights).

    Formed by the compiled kernel in one pass over the weights, a contiguous row per band and output channel (the
    forward matrix as the transposed view of a ``(Cout, bands * Cin)`` tensor, which the product reads as it is):
    0.24 ms for 512 channels, one thread, where torch operators took 7 ms with a gather and a transposing copy and
    0.30 ms as a difference of strided views. Not differentiable (the autograd functions call it).

    Raises:
        RuntimeError: when the kernel is not available (:func:`cpp_available`), or for a ``scale`` that is not a
            float32 CPU tensor of ``Cout`` elements.
    """
    return _required_extension().disk_mixing(weight, bands, transposed,
                                             scale if scale is not None else weight.new_empty(0))


def fused_inference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, widths: torch.Tensor,
                    bands: list[int], scale: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                    relu: bool = False, onednn: bool = True) -> torch.Tensor:
    """``relu?(conv(x) * scale + bias + residual)`` by the C++ kernel in one call, without autograd: the per-channel
    ``scale`` folded into the mixing matrix, the bias, residual and ReLU applied to each tile right after its product
    while it is in cache (a residual block's separate add and ReLU passes over memory are gone).

    The kernel runs as the operator ``torch.ops.monai_sre.disk_conv``, so ``torch.compile`` keeps it in its graph (one
    opaque node with its output's shape and layout) instead of breaking the graph at a foreign call.

    Args:
        x: float32 CPU input ``(N, Cin, H, W)`` or ``(N, Cin, D, H, W)`` (made channels-last).
        weight: band weights ``(Cout, Cin, num_rings)``.
        bias: ``(Cout,)``, added after the scale, or None.
        widths: :func:`disk_widths` of the non-empty ``bands``.
        bands: the non-empty bands.
        scale: ``(Cout,)`` factor of the convolution's output, or None.
        residual: float32 of the output's shape, added before the ReLU (made channels-last), or None.
        relu: clamp the result at zero.
        onednn: the large tile products may run on oneDNN's matmul (:func:`product_backend`); False keeps ATen's
            product (a training forward, where it did not pay: see ``csrc/ring_cpu.cpp``). :data:`ONEDNN_ENV` is read
            here, on every call (under ``torch.compile``, when the graph is traced).

    Returns:
        channels-last float32, ``x``'s shape with ``Cout`` channels.

    Raises:
        RuntimeError: when the kernel is not available, or for operands of other shapes or dtypes.
    """
    return _disk_conv(x, weight, bias, widths, list(bands), scale, residual, relu, onednn and _onednn_allowed())


# The kernel's two entry points as PyTorch operators (as ring_triton.py's kernels are), so that torch.compile keeps
# the C++ path in its graph. Before, a compiled network fell back to the decomposed path: a compiled SRE-ResNet-18
# trained and inferred 1.8-1.9x slower than now and 1.7-1.8x slower than eager (2D 3x32x32, batch 32, two threads;
# benchmarks/README.md, "torch.compile on CPU"). In eager mode the dispatch costs about 18 us per call (29 against
# 11 us for a 4x4 input, one thread), 0.3% of that network's inference.
@torch.library.custom_op("monai_sre::disk_conv", mutates_args=())
def _disk_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], widths: torch.Tensor,
               bands: List[int], scale: Optional[torch.Tensor], residual: Optional[torch.Tensor], relu: bool,
               onednn: bool) -> torch.Tensor:
    empty = x.new_empty(0)
    return _required_extension().disk_conv(channels_last(x), widths, disk_mixing(weight, bands, scale=scale),
                                           bias if bias is not None else empty,
                                           channels_last(residual) if residual is not None else empty, relu,
                                           TILE_PIXELS, onednn)


@_disk_conv.register_fake
def _disk_conv_shape(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], widths: torch.Tensor,
                     bands: List[int], scale: Optional[torch.Tensor], residual: Optional[torch.Tensor], relu: bool,
                     onednn: bool) -> torch.Tensor:
    size = [x.shape[0], weight.shape[0], *x.shape[2:]]
    return x.new_empty_strided(size, channels_last_strides(size))


@torch.library.custom_op("monai_sre::disk_conv_backward", mutates_args=())
def _disk_conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, widths: torch.Tensor,
                        bands: List[int], need_x: bool, need_w: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    mixing_t = disk_mixing(weight, bands, transposed=True) if need_x else x.new_empty(0)
    grad_x, grad_v = _required_extension().disk_conv_backward(channels_last(grad), x, widths, mixing_t, need_x, need_w,
                                                              TILE_PIXELS)
    # an operator returns tensors of its own: an empty one for a gradient that was not asked for
    return (grad_x if need_x else x.new_empty(0)), (grad_v if need_w else x.new_empty(0))


@_disk_conv_backward.register_fake
def _disk_conv_backward_shape(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, widths: torch.Tensor,
                              bands: List[int], need_x: bool, need_w: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    size = list(x.shape)
    grad_x = x.new_empty_strided(size, channels_last_strides(size)) if need_x else x.new_empty(0)
    grad_v = x.new_empty((len(bands), weight.shape[0], x.shape[1])) if need_w else x.new_empty(0)
    return grad_x, grad_v


class FusedRingConv(torch.autograd.Function):
    """The C++ kernel with autograd: ``apply(x, weight, bias, widths, bands)``.

    ``x`` is the channels-last float32 input, ``weight`` the band weights ``(Cout, Cin, num_rings)``, ``widths``
    from :func:`disk_widths` for the non-empty ``bands``. The backward sums the output gradient over the disks once
    (they are symmetric: the sum is its own adjoint) and takes both gradients from that: the input gradient with the
    transposed mixing, the mixing gradient ``dV_i = sum D_i(grad)^T x``, and from it the band weights' gradient
    ``dW_{bands[i]} = dV_i - dV_{i-1}``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, widths: torch.Tensor,
        bands: list[int],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.operands = (widths, bands)
        ctx.has_bias = bias is not None
        return fused_inference(x, weight, bias, widths, bands, onednn=False)  # autograd is off inside forward

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        widths, bands = ctx.operands
        grad = grad.to(x.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_v = _disk_conv_backward(grad, x, weight, widths, bands, need_x, need_w)
        grad_w = None
        if need_w:  # V_i = W_i - W_{i+1}, so dW_i = dV_i - dV_{i-1}
            previous = torch.cat([torch.zeros_like(grad_v[:1]), grad_v[:-1]])
            grad_w = torch.zeros_like(weight)
            grad_w.index_copy_(2, torch.tensor(bands, device=weight.device), (grad_v - previous).permute(1, 2, 0))
        grad_b = grad.sum([0, *range(2, grad.dim())]) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return (grad_x if need_x else None), grad_w, grad_b, None, None
