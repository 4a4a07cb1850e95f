# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The MedMNIST recipe of the bundles: the classifier (an SRE-ResNet or, as baseline, MONAI's ResNet with the same
recipe), its checkpoint names and the loading of trained classifiers (through :mod:`monai_sre.io.checkpoints`).

Both follow the MedMNIST v2 ResNet protocol for small images: a stride-1 stem and no max-pool, so 28-px inputs are
not shrunk before the first stage. The SRE model uses SRE kernels and symmetric downsampling; the baseline uses
MONAI's dense ``ResNet`` with a 3x3 stem (MedMNIST's choice).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from monai_sre.io.checkpoints import load_weights
from monai_sre.networks import sre_resnet

__all__ = [
    "MODEL_TYPES",
    "ARCHS",
    "medmnist_classifier",
    "checkpoint_name",
    "last_checkpoint_name",
    "load_trained_classifiers",
]

#: ``model_type`` values: the SRE network or MONAI's dense ResNet baseline.
MODEL_TYPES = ("sre", "resnet")
#: Supported depths, named as MONAI's builders.
ARCHS = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")


def medmnist_classifier(
    model_type: str = "sre",
    arch: str = "resnet18",
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    widen_factor: float = 1.0,
    kernel_size: Sequence[int] | int | None = None,
    conv1_t_size: int | None = None,
    num_rings: int | None = None,
    band_scale: str = "none",
    gradient_fraction: float = 0.0,
    zero_init_residual: bool = False,
    zero_mean_init: bool = False,
) -> nn.Module:
    """Build a MedMNIST classifier.

    Args:
        model_type: ``"sre"`` (SRE-ResNet) or ``"resnet"`` (MONAI's ResNet, the baseline).
        arch: depth, one of :data:`ARCHS`.
        spatial_dims: 2 or 3 (1 also works).
        in_channels: image channels (1 gray, 3 RGB).
        num_classes: number of outputs (labels for multi-label tasks).
        widen_factor: multiplies the stage widths 64/128/256/512.
        kernel_size: SRE kernel size per stage (int or list of 4); ``None`` gives ``[9, 9, 5, 5]`` in 2D and 5 in 3D.
            Ignored by the baseline, whose kernels are 3.
        conv1_t_size: stem kernel size; ``None`` gives 5 (SRE) or 3 (baseline, as MedMNIST's ResNet).
        num_rings: SRE bands per kernel; ``None`` gives ``k // 2 + 1``. Ignored by the baseline.
        band_scale: parameterisation of the SRE band weights (``"none"`` or ``"rsqrt_taps"``, see
            :class:`~monai_sre.networks.SREResNet`; the bundles take :func:`monai_sre.optim.band_scale_for` of their optimizer).
            Ignored by the baseline.
        gradient_fraction: share of the channels after each first SRE convolution that carry their local gradient
            norm (:class:`~monai_sre.networks.SREResNet`); 0 is the plain SRE-ResNet. Ignored by the baseline.
        zero_init_residual: every residual branch starts as its shortcut (:class:`~monai_sre.networks.SREResNet`).
            Ignored by the baseline (MONAI's ResNet has no such option).
        zero_mean_init: every SRE kernel starts with zero mean (:class:`~monai_sre.networks.SREResNet`). Ignored by
            the baseline.

    Returns:
        the network, producing ``(batch, num_classes)`` logits.

    Raises:
        ValueError: for an unknown ``model_type`` or ``arch``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}.")
    common = {
        "spatial_dims": spatial_dims,
        "n_input_channels": in_channels,
        "num_classes": num_classes,
        "widen_factor": widen_factor,
        "conv1_t_stride": 1,
        "no_max_pool": True,
    }
    if model_type == "resnet":
        return getattr(monai_resnet, arch)(conv1_t_size=conv1_t_size or 3, **common)
    builder = getattr(sre_resnet, f"sre_{arch}")
    return builder(conv1_t_size=conv1_t_size or 5, kernel_size=kernel_size, num_rings=num_rings,
                   band_scale=band_scale, gradient_fraction=gradient_fraction,
                   zero_init_residual=zero_init_residual, zero_mean_init=zero_mean_init, **common)


def checkpoint_name(model_type: str) -> str:
    """File name of the best checkpoint of ``model_type``: ``model.pt`` for SRE (the bundle's model), else
    ``model_<type>.pt``, so the baseline trained with the same bundle does not overwrite it.

    Raises:
        ValueError: for an unknown ``model_type``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    return "model.pt" if model_type == "sre" else f"model_{model_type}.pt"


def last_checkpoint_name(model_type: str) -> str:
    """File name of the last-epoch training checkpoint of ``model_type`` (network, optimizer, scheduler, trainer state,
    what ``--resume true`` continues from): ``checkpoint_last.pt`` for SRE, else ``checkpoint_<type>_last.pt``. The
    bundles' ``last_ckpt_name`` and ``benchmarks/medmnist_results.py --resume`` both take it from here.

    Raises:
        ValueError: for an unknown ``model_type``.
    """
    return checkpoint_name(model_type).replace("model", "checkpoint", 1).replace(".pt", "_last.pt")


def load_trained_classifiers(
    ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu", contract: Any | None = None, **kwargs
) -> dict[str, nn.Module]:
    """Every classifier of :data:`MODEL_TYPES` whose best checkpoint exists in ``ckpt_dir``, weights loaded.

    Args:
        ckpt_dir: folder of the checkpoints (``model.pt``, ``model_resnet.pt``).
        device: where to put the networks.
        contract: the input contract the networks will be fed with; a checkpoint trained with another is refused.
        kwargs: arguments of :func:`medmnist_classifier` other than ``model_type`` (the same recipe for all).

    Returns:
        ``{model_type: network in eval mode}``, in the order of :data:`MODEL_TYPES`.

    Raises:
        FileNotFoundError: when no checkpoint exists in ``ckpt_dir``.
        ValueError: when a checkpoint is unreadable, does not fit the architecture given by ``kwargs``, differs
            from its recorded SHA-256 or was trained with another input contract (names the file).
    """
    found = {}
    for model_type in MODEL_TYPES:
        path = Path(ckpt_dir) / checkpoint_name(model_type)
        if not path.is_file():
            continue
        net = medmnist_classifier(model_type=model_type, **kwargs)
        load_weights(net, path, contract=contract)
        found[model_type] = net.to(device).eval()
    if not found:
        names = ", ".join(checkpoint_name(m) for m in MODEL_TYPES)
        raise FileNotFoundError(f"no trained checkpoint ({names}) in {ckpt_dir}; run the bundle's training first.")
    return found
