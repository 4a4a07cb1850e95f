# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Is a rotated-test drop the zero-filled corners? Turn the test set with other fills and compare.

The rotation report turns each test image bilinearly with zero fill (:func:`monai_sre.evaluation.rotated_sets.rotate`),
so a turned image differs from the upright one in orientation, in interpolation blur, and in the corners that come
from outside the grid. Its ``disk`` variant removes the corners by masking upright and turned images alike, which also
removes image content. This script keeps the content and changes only the fill: the same turns with ``border`` (the
edge pixel repeated) or ``reflection`` (the image mirrored) padding. Where a model loses accuracy with zeros and not
with the other fills, the loss is the corners. A last column turns each image with border fill and back again
(``border, turned back``): interpolation twice, no corner, no change of orientation; where a model loses accuracy
there, the loss is the blur alone.

Each ``RUN`` is a folder written by ``benchmarks/medmnist_results.py`` (``runs/<dataset>/<model>_seed<k>/``: the
bundle's configs, ``overrides.json`` and ``runs/default/model.pt``); the test split, preprocessing, network and
checkpoint reader are the bundle's own, as in ``run evaluating``. Angles not a multiple of 90°.

Example::

    python benchmarks/corner_padding.py results/runs/breastmnist/sre_gradient_seed{0,1,2} --angles 30 40 45 50 60
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from checkpoint_selection import run_split  # this script's own folder

PADDINGS = ("zeros", "border", "reflection")
#: The column of the images turned with border fill and turned back (the blur of two resamplings, nothing else).
TURNED_BACK = "border_turned_back"


def _load(run: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    from monai_sre.io.checkpoints import load_weights

    parser, x, y = run_split(run, "test")  # the test split, as evaluate.json points the evaluator at it
    net = parser.get_parsed_content("network_def")
    load_weights(net, run / "runs" / "default" / "model.pt", contract=parser.get_parsed_content("input_contract"))
    return net.eval(), x, y, parser.get_parsed_content("task")


def padding_table(run: Path, angles: list[float]) -> dict:
    """Test ACC of ``run``'s model upright, turned by each angle with each fill of :data:`PADDINGS`, and turned and
    turned back with border fill (:data:`TURNED_BACK`)."""
    from monai_sre.evaluation import medmnist_acc, scores_from_logits
    from monai_sre.evaluation.rotated_sets import rotate

    net, x, y, task = _load(run)

    def acc(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float(medmnist_acc(y.numpy(), scores_from_logits(net(images), task), task))

    table = {"run": str(run), "upright": acc(x)}
    for padding in PADDINGS:
        table[padding] = {angle: acc(rotate(x, angle, padding_mode=padding)) for angle in angles}
    back = {angle: rotate(rotate(x, angle, padding_mode="border"), -angle, padding_mode="border") for angle in angles}
    table[TURNED_BACK] = {angle: acc(images) for angle, images in back.items()}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="medmnist_results.py run folders")
    parser.add_argument("--angles", nargs="+", type=float, default=[30.0, 40.0, 45.0, 50.0, 60.0])
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    if any(a % 90 == 0 for a in args.angles):
        parser.error("--angles: quarter turns are exact and have no corners to fill; give other angles")
    tables = []
    columns = (*PADDINGS, TURNED_BACK)
    heads = {**{p: p for p in PADDINGS}, TURNED_BACK: "border, turned back"}
    print("| run | upright ACC | " + " | ".join(f"{heads[c]}: ACC at {', '.join(f'{a:g}' for a in args.angles)}°"
                                             for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for run in args.runs:
        table = padding_table(run, args.angles)
        tables.append(table)
        cells = [" ".join(f"{v:.3f}" for v in table[c].values()) for c in columns]
        print(f"| {run.name} | {table['upright']:.3f} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        from monai_sre.io import files

        files.write_text(args.json, json.dumps(tables, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
