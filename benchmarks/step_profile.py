# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Where a network step's CPU time goes, and how fast SRE-ResNet-18 could be against MONAI's ResNet-18 (issue 17,
part 3).

Profiles (``torch.profiler``, self CPU time of every operator) a training step and an inference of ``sre_resnet18``
and of MONAI's ``resnet18`` in the configuration of the network benchmark (:func:`suite.build_network`; its first
case of ``--dims``: 2D 3x32x32 at batch 32, 3D 1x32^3 at batch 4), and sorts the time into

- ``products``: the matrix products that fold the bands into the output (``bmm``, ``baddbmm``, ``addmm``, ``mm``);
- ``convolutions``: oneDNN convolutions and their backward: SRE's depthwise band sums (plus its stem and 1x1
  shortcuts), all of MONAI's work;
- ``rest``: everything else (BatchNorm, activations, copies, pooling, autograd and Python).

Then it prints two ceilings of the ratio MONAI / SRE (> 1: SRE faster): with SRE's ``convolutions`` free (what a
kernel that forms the band sums inside the product's packing step would reach at best), and with only its products
left. A target above the first ceiling cannot be met by any faster band sum alone. The profiled times are larger
than un-profiled ones (the profiler's own cost per operator); the ratios use profiled times on both sides.

Usage: ``python benchmarks/step_profile.py [--dims 2] [--threads 2] [--steps 5]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import nn
from torch.profiler import profile

from suite import NETWORK_CASES, build_network  # this script's own folder

__all__ = ["PRODUCTS", "CONVOLUTIONS", "classify", "profile_step", "ceilings", "main"]

PRODUCTS = ("aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::addmm", "aten::addmm_", "aten::mm")
CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                "aten::slow_conv3d_forward", "aten::_convolution_depthwise2d")  # fmt: skip
MODELS = ("monai_sre", "monai")


def classify(name: str) -> str:
    """The share an operator's self time counts towards: ``products``, ``convolutions`` or ``rest``."""
    if name in PRODUCTS:
        return "products"
    return "convolutions" if name in CONVOLUTIONS else "rest"


def profile_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, steps: int) -> dict[str, float]:
    """Milliseconds per step of each share (and ``total``), from the self CPU time of ``steps`` profiled steps after
    two warm-up steps. ``mode`` is ``"train"`` (SGD step on cross-entropy) or ``"infer"`` (``no_grad``, eval mode)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    def infer() -> None:
        with torch.no_grad():
            net(x)

    net.train(mode == "train")
    step = train if mode == "train" else infer
    for _ in range(2):
        step()
    with profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares = {"products": 0.0, "convolutions": 0.0, "rest": 0.0}
    for event in prof.key_averages():
        shares[classify(event.key)] += event.self_cpu_time_total / 1e3 / steps
    shares["total"] = sum(shares.values())
    return shares


def ceilings(sre: dict[str, float], monai: dict[str, float]) -> dict[str, float]:
    """MONAI / SRE step-time ratios: as measured, with SRE's convolutions free, and with only its products left."""
    return {"measured": monai["total"] / sre["total"],
            "convolutions free": monai["total"] / (sre["total"] - sre["convolutions"]),
            "products only": monai["total"] / sre["products"]}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="step_profile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per model and mode (after 2 warm-ups)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        parser.error(f"--steps and --threads must be >= 1, got {args.steps} and {args.threads}")
    torch.set_num_threads(args.threads)
    case = next(c for c in NETWORK_CASES if c.spatial_dims == args.dims)
    torch.manual_seed(0)
    x = torch.randn((case.batch, case.in_channels) + (case.size,) * args.dims)
    y = torch.randint(0, case.num_classes, (case.batch,))
    print(f"{case.name}, batch {case.batch}, {args.threads} threads, {args.steps} profiled steps; ms per step")
    print("| model | mode | products | convolutions | rest | total |\n|---|---|---|---|---|---|")
    results: dict[tuple[str, str], dict[str, float]] = {}
    for model in MODELS:
        for mode in ("train", "infer"):
            net = build_network(model, args.dims, case.in_channels, case.num_classes, case.widen_factor)
            results[model, mode] = r = profile_step(net, x, y, mode, args.steps)
            print(f"| {model} | {mode} | {r['products']:.1f} | {r['convolutions']:.1f} | {r['rest']:.1f} "
                  f"| {r['total']:.1f} |")  # fmt: skip
    print("\nMONAI / SRE (> 1: SRE faster)\n| mode | measured | SRE's convolutions free | only SRE's products |")
    print("|---|---|---|---|")
    for mode in ("train", "infer"):
        c = ceilings(results["monai_sre", mode], results["monai", mode])
        print(f"| {mode} | {c['measured']:.2f}x | {c['convolutions free']:.2f}x | {c['products only']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
