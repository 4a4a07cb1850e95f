# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Other ways to feed the band sums into the mixing product on CPU (issue 17, part 3), beside the layer's own
ring-decomposed inference, each checked against the dense path before it is timed.

- ``layer``: :class:`~monai_sre.layers.SREConv` with ``path="decomposed"`` in inference: every band summed by a
  depthwise convolution cropped to the band's box, then folded into the output rows by one matrix product per band;
- ``one product``: all band sums from one grouped convolution (``groups=C``, one full-size 0/1 mask per band), stored
  as one ``(voxels, bands * C)`` matrix, then a single product with ``K = bands * C`` (what a fused kernel would
  feed its product);
- ``1x1 convolutions``: the layer's band sums, each mixed by oneDNN's 1x1 convolution and added to the output;
- ``C++ kernel``: the layer with ``path="cpp"`` (:mod:`~monai_sre.layers.ring_cpp`: disk sums of a tile of rows fed
  into one product over all bands; ball sums in 3D), where it can run;
- ``C++, oneDNN product`` and ``C++, ATen product``: the kernel called directly
  (:func:`~monai_sre.layers.ring_cpp.fused_inference`), its large products on oneDNN's matmul (where PyTorch has
  oneDNN: :func:`~monai_sre.layers.ring_cpp.product_backend`; what inference runs) or every product on ATen's (MKL
  or OpenBLAS; what a training forward runs).

The two variants run in the layer's batch chunks (:func:`~monai_sre.layers.ring_ops.batch_chunks`, 1 MiB per
thread), so that only the way the band sums reach the product differs.

Prints the median milliseconds of each variant and its ratio to ``layer`` (> 1: slower than the layer). Results and
the machine they came from are in benchmarks/README.md.

``--clock cpu`` times by the process's CPU time (steadier than wall-clock time on a shared machine with one thread).

Usage: ``python benchmarks/band_mixing.py [--threads 2] [--repeats 20] [--clock wall|cpu]``
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Sequence

import torch

from monai_sre.layers import SREConv, ring_cpp
from monai_sre.layers.ring_ops import band_sum, batch_chunks, channels_last_strides, conv_nd, cpu_chunk_bytes
from suite import CLOCKS, interleaved_medians  # this script's own folder

__all__ = ["SHAPES", "variants", "compare", "main"]

#: (spatial dims, batch, channels, size, kernel): SRE-ResNet-18's 2D and 3D stages, at one batch chunk of the layer
#: (1 MiB per thread) and at the network benchmark's CPU batch (32 in 2D, 4 in 3D).
SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    (2, 8, 64, 32, 9), (2, 32, 64, 32, 9), (2, 16, 128, 16, 9), (2, 32, 128, 16, 9), (2, 32, 256, 8, 5),
    (2, 32, 512, 4, 5), (3, 1, 64, 32, 5), (3, 4, 64, 32, 5), (3, 4, 128, 16, 5), (3, 4, 256, 8, 5),
    (3, 4, 512, 4, 5),
)


def variants(conv: SREConv, x: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The variants for ``conv`` (stride 1, groups 1, dilation 1, 'same' padding, no bias) on ``x``; each returns the
    output."""
    dims, channels = x.dim() - 2, x.shape[1]
    weight = conv.band_weight().detach()  # (out, in, rings)
    padding, ones = [k // 2 for k in conv.kernel_size], [1] * dims
    layer = copy.deepcopy(conv)
    layer.path = "decomposed"
    # the layer's own band geometry: the non-empty bands, their cropped depthwise filters and paddings
    bands, filters, pads = conv._bands, conv._band_filters(channels, x.dtype), conv._band_paddings(padding)

    # one grouped convolution for all bands: output channel c * n + i is band bands[i] of input channel c
    n = len(bands)
    masks = torch.stack([(conv.ring_map == b).to(x.dtype) for b in bands])  # (n, *kernel)
    grouped = masks.unsqueeze(1).repeat(channels, 1, *ones)  # (C * n, 1, *kernel)
    mixing = weight[:, :, bands].permute(1, 2, 0).reshape(channels * n, -1).contiguous()  # (C * n, out)
    kernels = [weight[:, :, b].reshape(*weight.shape[:2], *ones).contiguous() for b in bands]

    def run_layer() -> torch.Tensor:
        with torch.no_grad():
            return layer(x)

    def chunked(one_chunk: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        # the layer's batch chunks (band sums of one chunk stay in cache), written into one channels-last output
        out = None
        for start, stop in batch_chunks(x, max(channels, weight.shape[0]), cpu_chunk_bytes()):
            y = one_chunk(x[start:stop])
            if out is None:
                size = [x.shape[0]] + list(y.shape[1:])
                out = torch.empty_strided(size, channels_last_strides(size), dtype=y.dtype)
            out[start:stop].copy_(y)
        return out

    def one_product(xc: torch.Tensor) -> torch.Tensor:
        sums = conv_nd(xc, grouped, None, ones, padding, ones, channels)
        rows = sums.movedim(1, -1).reshape(-1, channels * n) @ mixing
        return rows.view(*sums.shape[:1], *sums.shape[2:], -1).movedim(-1, 1)

    def one_by_one(xc: torch.Tensor) -> torch.Tensor:
        out = None
        for f, p, w in zip(filters, pads, kernels):
            y = conv_nd(band_sum(xc, f, ones, p, ones), w, None, ones, [0] * dims, ones, 1)
            out = y if out is None else out.add_(y)
        return out

    fns = {"layer": run_layer, "one product": lambda: chunked(one_product),
           "1x1 convolutions": lambda: chunked(one_by_one)}
    if conv.cpp_supported(x):
        fused = copy.deepcopy(conv)
        fused.path = "cpp"

        def run_fused() -> torch.Tensor:
            with torch.no_grad():
                return fused(x)

        fns["C++ kernel"] = run_fused
        widths, bands = conv._disk_widths, conv._bands
        for name, onednn in (("C++, oneDNN product", True), ("C++, ATen product", False)):
            fns[name] = lambda onednn=onednn: ring_cpp.fused_inference(x, weight, None, widths, bands, onednn=onednn)
    return fns


def compare(shapes: Sequence[tuple[int, int, int, int, int]] = SHAPES, repeats: int = 20,
            clock: str = "wall") -> list[dict]:
    """Check every variant against the dense path, then time it.

    Args:
        shapes: ``(spatial dims, batch, channels, size, kernel)`` of each layer (stride 1, 'same' padding).
        repeats: timed rounds (the median is reported).
        clock: ``"wall"`` (wall-clock time) or ``"cpu"`` (the process's CPU time).

    Returns:
        one row per shape: ``dims, batch, channels, size, kernel``, ``ms`` (``{variant: median ms}``) and
        ``error`` (``{variant: max |variant - dense| / max |dense|}``).

    Raises:
        AssertionError: when a variant's output differs from the dense path's by more than 1e-4 (relative).
    """
    rows = []
    for dims, batch, channels, size, kernel in shapes:
        torch.manual_seed(0)
        conv = SREConv(dims, channels, channels, kernel, bias=False, path="dense").eval()
        memory = torch.channels_last if dims == 2 else torch.channels_last_3d
        x = torch.randn(batch, channels, *([size] * dims)).contiguous(memory_format=memory)
        with torch.no_grad():
            reference = conv(x)
        row = {"dims": dims, "batch": batch, "channels": channels, "size": size, "kernel": kernel, "ms": {},
               "error": {}}  # fmt: skip
        fns = variants(conv, x)
        with torch.no_grad():
            for name, fn in fns.items():
                error = ((fn() - reference).abs().max() / reference.abs().max()).item()
                row["error"][name] = error
                assert error < 1e-4, f"{name} differs from the dense path by {error:.1e} at {row}"
            medians = interleaved_medians(fns, repeats, warmups=3, clock=CLOCKS[clock])
            row["ms"] = {name: 1000 * t for name, t in medians.items()}
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run :func:`compare` on :data:`SHAPES` and print the Markdown table; 2 for bad arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per variant, median reported (default 20)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall-clock time, or the process's CPU time (steadier with --threads 1 on a shared machine)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        print(f"{p.prog}: error: --threads and --repeats must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = compare(repeats=args.repeats, clock=args.clock)
    names = list(dict.fromkeys(n for r in rows for n in r["ms"]))  # every variant, in order
    print(f"torch {torch.__version__}, {args.threads} threads, {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.clock} clock; median ms (ratio to layer; > 1: slower)")
    print("| layer shape | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for r in rows:
        shape = f"{r['dims']}D {r['channels']}ch@{r['size']}, k={r['kernel']}, batch {r['batch']}"
        base = r["ms"]["layer"]
        cells = [f"{r['ms'][n]:.1f} ({r['ms'][n] / base:.2f}x)" if n in r["ms"] else "–" for n in names]
        print(f"| {shape} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
