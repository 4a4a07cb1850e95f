# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ring-decomposed SRE convolution as fused Triton kernels (forward, input gradient, weight gradient).

A tile of ``BLOCK_M`` output voxels and ``BLOCK_K`` input channels is summed over each band in registers (the taps
of a band are read straight from the channels-last input, which stays in L1/L2) and fed into one tensor-core matrix
product with that band's ``(BLOCK_K, BLOCK_N)`` block of mixing weights, accumulated in float32 over all bands and
channel blocks. No band-sum map is ever written to memory, so the operator reads the input once per tap from cache
and writes the output once, and it runs ``num_rings * Cin * Cout`` multiply-adds per voxel on tensor cores instead
of the dense kernel's ``k^d * Cin * Cout``.

- forward: ``y[o] = sum_b W_b^T sum_{t in b} x[o + off_t]``;
- input gradient: the same kernel on the output gradient with negated offsets and transposed band weights;
- weight gradient: ``dW_b = (sum_{t in b} x[o + off_t])^T dy[o]`` over all output voxels, split over voxel ranges
  into float32 partial sums (added in a fixed order: deterministic).

The two launches are PyTorch operators (``torch.ops.monai_sre.ring_mix`` and ``ring_weight_grad``, with shape
functions for fake tensors), so ``torch.compile`` keeps each as one node of its graph instead of tracing into the
launch code: the layer compiles without a graph break on this path.

Scope: stride 1, groups 1, zero padding (any padding, dilation and kernel shape, 1D to 3D), float32 / float16 /
bfloat16 inputs. Float32 products follow the convolution TF32 policy (``torch.backends.cudnn.allow_tf32``), as the
dense path's cuDNN call does. This module imports Triton; :mod:`monai_sre.layers.ring_ops` imports it only when the
Triton path runs, so ``import monai_sre`` needs neither Triton nor CUDA. With ``TRITON_INTERPRET=1`` set before
this module is imported, the kernels run on CPU tensors in Triton's interpreter (how the tests check them without a
GPU).
"""

from typing import Any, List, Optional  # the operators' signatures: torch.library reads the annotations

import torch
import triton
import triton.language as tl

from monai_sre.layers.ring_ops import channels_last_strides

__all__ = ["ring_mix", "ring_weight_grad", "RingTritonConv"]


@triton.jit
def _voxels(rows, D_out, H_out, W_out):
    """Batch index and output coordinates ``(n, z, y, x)`` of flat channels-last output rows."""
    xo = rows % W_out
    rest = rows // W_out
    yo = rest % H_out
    rest = rest // H_out
    return rest // D_out, rest % D_out, yo, xo


@triton.jit
def _band_sum_tile(x_ptr, offs_ptr, t, n, zo, yo, xo, row_ok, ks, k_ok, D_in, H_in, W_in, C_in):
    """The tile's input values at tap ``t``: ``x[n, zo + dz, yo + dy, xo + dx, ks]`` (0 outside the input)."""
    dz = tl.load(offs_ptr + 3 * t)
    dy = tl.load(offs_ptr + 3 * t + 1)
    dx = tl.load(offs_ptr + 3 * t + 2)
    zi = zo + dz
    yi = yo + dy
    xi = xo + dx
    ok = row_ok & (zi >= 0) & (zi < D_in) & (yi >= 0) & (yi < H_in) & (xi >= 0) & (xi < W_in)
    voxel = ((n * D_in + zi) * H_in + yi) * W_in + xi
    ptrs = x_ptr + voxel[:, None] * C_in + ks[None, :]
    return tl.load(ptrs, mask=ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _ring_mix_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, offs_ptr, starts_ptr,
    M, D_in, H_in, W_in, D_out, H_out, W_out, C_in, C_out, n_bands,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """``out[o, :] = bias + sum_b (sum_{t in b} x[o + off_t, :]) @ w[b]``, one (BLOCK_M, BLOCK_N) output tile."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    row_ok = rows < M
    n, zo, yo, xo = _voxels(rows, D_out, H_out, W_out)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C_out
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for band in range(n_bands):
        t0 = tl.load(starts_ptr + band)
        t1 = tl.load(starts_ptr + band + 1)
        for k0 in range(0, C_in, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < C_in
            sums = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
            for t in range(t0, t1):
                sums += _band_sum_tile(x_ptr, offs_ptr, t, n, zo, yo, xo, row_ok, ks, k_ok, D_in, H_in, W_in, C_in)
            w_ptrs = w_ptr + (band * C_in + ks[:, None]) * C_out + cols[None, :]
            w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(sums.to(w.dtype), w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rows[:, None] * C_out + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _ring_weight_grad_kernel(
    x_ptr, g_ptr, out_ptr, offs_ptr, starts_ptr,
    M, rows_per_split, D_in, H_in, W_in, D_out, H_out, W_out, C_in, C_out, n_bands,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    """``out[split, b] = sum_{o in split} (sum_{t in b} x[o + off_t, :])^T g[o, :]``, one (BLOCK_K, BLOCK_N) tile."""
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    band = pid_s % n_bands
    split = pid_s // n_bands
    t0 = tl.load(starts_ptr + band)
    t1 = tl.load(starts_ptr + band + 1)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = ks < C_in
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C_out
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    first = split * rows_per_split
    for m0 in range(first, first + rows_per_split, BLOCK_M):
        rows = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_ok = (rows < M) & (rows < first + rows_per_split)
        n, zo, yo, xo = _voxels(rows, D_out, H_out, W_out)
        sums = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for t in range(t0, t1):
            sums += _band_sum_tile(x_ptr, offs_ptr, t, n, zo, yo, xo, row_ok, ks, k_ok, D_in, H_in, W_in, C_in)
        g = tl.load(g_ptr + rows[:, None] * C_out + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(tl.trans(sums.to(g.dtype)), g, acc, input_precision=PRECISION)
    out_ptrs = out_ptr + ((pid_s * C_in) + ks[:, None]) * C_out + cols[None, :]
    tl.store(out_ptrs, acc, mask=k_ok[:, None] & col_ok[None, :])


def _block(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(n)))


def _as_3d(shape: torch.Size | list[int]) -> list[int]:
    """Spatial shape padded to three axes in front (a 2D image is a volume of depth 1)."""
    return [1] * (3 - len(shape)) + list(shape)


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


@torch.library.custom_op("monai_sre::ring_mix", mutates_args=())
def ring_mix(x: torch.Tensor, band_weights: torch.Tensor, bias: Optional[torch.Tensor], offsets: torch.Tensor,
             starts: torch.Tensor, out_spatial: List[int]) -> torch.Tensor:
    """``out[o] = bias + sum_b (sum_{t in b} x[o + offsets[t]]) @ band_weights[b]`` for every output voxel ``o``.

    Args:
        x: input ``(batch, channels, *spatial)``, any layout (made channels-last).
        band_weights: ``(bands, in_channels, out_channels)``, contiguous, the dtype of ``x``.
        bias: ``(out_channels,)`` or None.
        offsets: ``(taps, 3)`` int32 input offsets (depth, height, width) of every tap, grouped by band.
        starts: ``(bands + 1,)`` int32: band ``b`` owns taps ``starts[b]:starts[b + 1]``.
        out_spatial: spatial shape of the output.

    Returns:
        ``(batch, out_channels, *out_spatial)``, stored channels-last.
    """
    batch, c_in = x.shape[0], x.shape[1]
    c_out = band_weights.shape[2]
    rows = x.movedim(1, -1).contiguous()
    size = [batch, c_out] + list(out_spatial)
    # channels-last, and a tensor of its own (not a view), so that callers may update it in place
    out = torch.empty_strided(size, channels_last_strides(size), dtype=x.dtype, device=x.device)
    m = out.numel() // c_out
    if m == 0:
        return out
    d_in, h_in, w_in = _as_3d(x.shape[2:])
    d_out, h_out, w_out = _as_3d(out_spatial)
    block_m, block_n, block_k = 64, _block(c_out, 16, 128), _block(c_in, 16, 32)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c_out, block_n))
    _ring_mix_kernel[grid](
        rows, band_weights, bias if bias is not None else band_weights, out, offsets, starts,
        m, d_in, h_in, w_in, d_out, h_out, w_out, c_in, c_out, band_weights.shape[0],
        HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        PRECISION=_precision(x.dtype),
    )
    return out


@ring_mix.register_fake
def _ring_mix_shape(x: torch.Tensor, band_weights: torch.Tensor, bias: Optional[torch.Tensor], offsets: torch.Tensor,
                    starts: torch.Tensor, out_spatial: List[int]) -> torch.Tensor:
    size = [x.shape[0], band_weights.shape[2]] + list(out_spatial)
    return x.new_empty_strided(size, channels_last_strides(size))


@torch.library.custom_op("monai_sre::ring_weight_grad", mutates_args=())
def ring_weight_grad(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """``dW[b] = sum_o (sum_{t in b} x[o + offsets[t]])^T grad[o]``: the gradient of :func:`ring_mix`'s weights.

    Args:
        x: the input of the forward call ``(batch, in_channels, *spatial)``.
        grad: gradient of its output ``(batch, out_channels, *out_spatial)``.
        offsets: as for :func:`ring_mix`.
        starts: as for :func:`ring_mix`.

    Returns:
        float32 ``(bands, in_channels, out_channels)``.
    """
    c_in, c_out, n_bands = x.shape[1], grad.shape[1], starts.numel() - 1
    rows = x.movedim(1, -1).contiguous()
    g = grad.movedim(1, -1).contiguous()
    m = g.numel() // c_out
    if m == 0:  # an empty batch: no voxel contributes
        return torch.zeros((n_bands, c_in, c_out), dtype=torch.float32, device=x.device)
    block_m, block_n, block_k = 64, _block(c_out, 16, 64), _block(c_in, 16, 64)
    tiles = triton.cdiv(c_in, block_k) * triton.cdiv(c_out, block_n) * n_bands
    # Enough voxel ranges to fill the GPU (a few programs per multiprocessor), each a whole number of row blocks.
    units = 132 * 4 if x.is_cuda else 2
    splits = max(1, min(triton.cdiv(m, block_m), triton.cdiv(units, tiles)))
    rows_per_split = triton.cdiv(triton.cdiv(m, splits), block_m) * block_m
    splits = triton.cdiv(m, rows_per_split)
    partial = torch.empty((splits * n_bands, c_in, c_out), dtype=torch.float32, device=x.device)
    d_in, h_in, w_in = _as_3d(x.shape[2:])
    d_out, h_out, w_out = _as_3d(grad.shape[2:])
    grid = (triton.cdiv(c_in, block_k), triton.cdiv(c_out, block_n), splits * n_bands)
    _ring_weight_grad_kernel[grid](
        rows, g, partial, offsets, starts, m, rows_per_split, d_in, h_in, w_in, d_out, h_out, w_out, c_in, c_out,
        n_bands, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=_precision(x.dtype),
    )
    return partial.view(splits, n_bands, c_in, c_out).sum(0)


@ring_weight_grad.register_fake
def _ring_weight_grad_shape(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor,
                            starts: torch.Tensor) -> torch.Tensor:
    return x.new_empty((starts.shape[0] - 1, x.shape[1], grad.shape[1]), dtype=torch.float32)


class RingTritonConv(torch.autograd.Function):
    """The ring-decomposed convolution (stride 1, groups 1) through the Triton operators; the graph keeps the input,
    the weight and the tap geometry (two small int32 tensors) only.

    ``apply(x, weight, bias, bands, offsets, starts, out_spatial)``: ``weight`` ``(out, in, num_rings)``, ``bands``
    the non-empty bands (indices into its last axis, in the order of ``starts``), ``offsets``/``starts`` the forward
    taps (:func:`~monai_sre.layers.ring_ops.band_tap_offsets`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, bands: list[int],
        offsets: torch.Tensor, starts: torch.Tensor, out_spatial: list[int],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, offsets, starts)
        ctx.bands = bands
        ctx.has_bias = bias is not None
        band_weights = weight[:, :, bands].permute(2, 1, 0).contiguous()  # (bands, in, out)
        return ring_mix(x, band_weights, bias, offsets, starts, out_spatial)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, offsets, starts = ctx.saved_tensors
        bands = ctx.bands
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # the adjoint: the same taps, negated, and the transposed band weights (bands, out, in)
            band_weights = weight[:, :, bands].permute(2, 0, 1).to(grad.dtype).contiguous()
            grad_x = ring_mix(grad, band_weights, None, -offsets, starts, list(x.shape[2:]))
        if ctx.needs_input_grad[1]:
            per_band = ring_weight_grad(x, grad.to(x.dtype), offsets, starts)  # (bands, in, out)
            grad_w = weight.new_zeros(weight.shape)
            grad_w[:, :, bands] = per_band.permute(2, 1, 0).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum([0] + list(range(2, grad.dim()))).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None
