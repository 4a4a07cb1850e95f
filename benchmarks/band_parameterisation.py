# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Which per-band scale makes SRE band weights step like dense taps, under Adam and under SGD? (issue 14, part 1)

An SRE layer uses the band weight ``w_b = c_b * s_b``, ``s_b`` the stored parameter and ``n_b`` the band's tap count.
Candidates: ``c_b = 1`` (``band_scale="none"``), ``1/sqrt(n_b)`` (``"rsqrt_taps"``) and ``1/n_b`` (not offered by
the layer; here for comparison). Every candidate starts from the same band weights, so only the optimizer's
geometry differs. One optimizer step on a 32->32-channel 9x9 layer fed with real BreastMNIST features (a 3x3 conv
and ReLU over 64 training images): per band, the mean |change| of a tap of the expanded kernel, and the relative
change of the layer's output; beside a dense 9x9 ``torch.nn.Conv2d`` with the same initial kernel (taps outside the
circle zero) and a 3x3 one (MONAI ResNet-18's layer, torch's initialisation). The training curves of the same
question are ``benchmarks/early_training.py --band-scale``.

Example (the command recorded in ``benchmarks/README.md``)::

    python benchmarks/band_parameterisation.py --json band_parameterisation.json
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from monai_sre.data.medmnist import load_split
from monai_sre.io.files import write_json
from monai_sre.layers import SREConv, band_scale

CANDIDATES = ("none", "rsqrt_taps", "1/n")
OPTIMIZERS = {
    "adam 1e-3": lambda p: torch.optim.Adam(p, lr=1e-3),
    "sgd 2e-2": lambda p: torch.optim.SGD(p, lr=2e-2, momentum=0.9, weight_decay=1e-3),
}


def _sre_layer(reference: SREConv, candidate: str) -> SREConv:
    """A copy of ``reference`` (same band weights, so the same function) stored under ``candidate``'s scale."""
    layer = SREConv(2, 32, 32, 9, band_scale="none" if candidate == "1/n" else candidate)
    layer.load_state_dict(reference.state_dict())  # converts the stored weights to the layer's scale
    if candidate == "1/n":
        with torch.no_grad():
            scale = 1.0 / torch.tensor(layer.band_sizes, dtype=torch.float64).clamp(min=1)
            layer.weight.div_(scale.to(layer.weight))
            layer.band_scale.copy_(scale)
            layer.band_scale_mode = "1/n"  # any mode but "none" multiplies by the buffer
    return layer


def steps(seed: int = 0) -> list[dict]:
    """Per-band tap step and output change of one step of every optimizer and candidate."""
    torch.manual_seed(seed)
    images = torch.as_tensor(load_split("breastmnist", "train")[0][:64], dtype=torch.float32)[:, None] / 255.0
    stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU())  # real, spatially correlated features
    with torch.no_grad():
        x = stem(images)
        target = torch.randn(64, 32, 1, 1).expand(-1, -1, 28, 28) * x.std()
    rows = []
    for name, make_opt in OPTIMIZERS.items():
        torch.manual_seed(seed + 1)
        reference = SREConv(2, 32, 32, 9)
        index, sizes = reference.ring_map, reference.band_sizes
        for candidate in [*CANDIDATES, "dense 9x9", "dense 3x3"]:
            torch.manual_seed(seed + 1)
            if candidate == "dense 3x3":  # MONAI ResNet-18's layer; its taps are bands 0 and 1
                layer: nn.Module = nn.Conv2d(32, 32, 3, padding=1)
                kernel = lambda: F.pad(layer.weight, (3, 3, 3, 3))  # noqa: E731
            elif candidate == "dense 9x9":
                layer = nn.Conv2d(32, 32, 9, padding=4)
                with torch.no_grad():
                    layer.weight.copy_(reference.dense_kernel())
                    layer.bias.copy_(reference.bias)
                kernel = lambda: layer.weight  # noqa: E731
            else:
                layer = _sre_layer(reference, candidate)
                kernel = layer.dense_kernel
            opt = make_opt(layer.parameters())
            with torch.no_grad():
                before, y0 = kernel().detach().clone(), layer(x)
            F.mse_loss(layer(x), target).backward()
            opt.step()
            with torch.no_grad():
                delta, dy = kernel() - before, layer(x) - y0
            for b, taps_in_band in enumerate(sizes):
                taps = index == b
                step = delta[:, :, taps].abs().mean().item() if candidate != "dense 3x3" or b < 2 else None
                rows.append({"optimizer": name, "scale": candidate, "band": b, "taps": taps_in_band,
                             "tap_step": step, "output_change": (dy.norm() / y0.norm()).item()})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = steps(args.seed)
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["optimizer"], r["scale"]), []).append(r)
    first = next(iter(by.values()))
    print("| optimizer | c_b | " + " | ".join(f"band {r['band']} ({r['taps']} taps)" for r in first) + " | ‖Δy‖/‖y‖ |")
    print("|---" * (len(first) + 3) + "|")
    for (opt, scale), rs in by.items():
        taps = " | ".join("–" if r["tap_step"] is None else f"{r['tap_step']:.1e}" for r in rs)
        print(f"| {opt} | {scale} | {taps} | {rs[0]['output_change']:.3f} |")
    if args.json:
        write_json(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
