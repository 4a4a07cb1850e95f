# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Small seeded checkpoints of the 2D bundle's recipe and the metrics they must reach on the MedMNIST npz images.

Shared by the tests of :mod:`monai_sre.evaluation.bundle_evaluation` and of ``monai-sre evaluate-rotation``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_sre.evaluation.metrics import medmnist_acc, medmnist_auc, scores_from_logits

__all__ = ["BUNDLE", "SMALL", "bundle_parser", "expected_metrics", "read_rows", "save_checkpoint"]

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "sre_medmnist_2d"
# a small SRE network of the bundle's recipe, so that 38 rotated test sets take seconds
SMALL = {"arch": "resnet10", "widen_factor": 0.125, "kernel_size": [5, 5, 3, 3]}


def bundle_parser(bundle: Path, overrides: dict, configs: tuple[str, ...] = ("train.json",)) -> ConfigParser:
    """The bundle's ``configs`` with ``bundle_root`` and ``overrides`` set."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in configs])
    parser["bundle_root"] = str(bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def save_checkpoint(bundle: Path, path: Path, overrides: dict, seed: int, nested: bool = True) -> torch.nn.Module:
    """A seeded network of the bundle's recipe saved as the bundle saves it (weights and input contract)."""
    parser = bundle_parser(bundle, overrides)
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    contract = parser.get_parsed_content("input_contract").to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "input_contract": contract} if nested else net.state_dict(), path)
    return net.eval()


def expected_metrics(
    net: torch.nn.Module, images: np.ndarray, labels: np.ndarray, task: str, batch: int = 16
) -> tuple[float, float]:
    """ACC/AUC of the npz images scaled 0-255 to 0-1 (what the training transforms give), in batches of ``batch``."""
    x = torch.from_numpy(images).float() / 255
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    with torch.no_grad():
        scores = scores_from_logits(torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]), task)
    return medmnist_acc(labels, scores, task), medmnist_auc(labels, scores, task)


def read_rows(path: Path) -> list[dict]:
    """The rows of a report CSV as dicts of text."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
