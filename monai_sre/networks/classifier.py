# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The MedMNIST classifiers of the bundles: an SRE-ResNet or, as baseline, MONAI's ResNet with the same recipe.

Both follow the MedMNIST v2 ResNet protocol for small images: a stride-1 stem and no max-pool, so 28-px inputs are
not shrunk before the first stage. The SRE model uses SRE kernels and symmetric downsampling; the baseline uses
MONAI's dense ``ResNet`` with a 3x3 stem (MedMNIST's choice).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from monai_sre.networks import sre_resnet

__all__ = [
    "MODEL_TYPES",
    "ARCHS",
    "medmnist_classifier",
    "checkpoint_name",
    "check_checkpoint",
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
    return builder(conv1_t_size=conv1_t_size or 5, kernel_size=kernel_size, num_rings=num_rings, **common)


def checkpoint_name(model_type: str) -> str:
    """File name of the best checkpoint of ``model_type``: ``model.pt`` for SRE (the bundle's model), else
    ``model_<type>.pt``, so the baseline trained with the same bundle does not overwrite it.

    Raises:
        ValueError: for an unknown ``model_type``.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    return "model.pt" if model_type == "sre" else f"model_{model_type}.pt"


def load_trained_classifiers(
    ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu", **kwargs
) -> dict[str, nn.Module]:
    """Every classifier of :data:`MODEL_TYPES` whose best checkpoint exists in ``ckpt_dir``, weights loaded.

    Args:
        ckpt_dir: folder of the checkpoints (``model.pt``, ``model_resnet.pt``).
        device: where to put the networks.
        kwargs: arguments of :func:`medmnist_classifier` other than ``model_type`` (the same recipe for all).

    Returns:
        ``{model_type: network in eval mode}``, in the order of :data:`MODEL_TYPES`.

    Raises:
        FileNotFoundError: when no checkpoint exists in ``ckpt_dir``.
        RuntimeError: when a checkpoint does not fit the architecture given by ``kwargs`` (names the file).
    """
    found = {}
    for model_type in MODEL_TYPES:
        path = Path(ckpt_dir) / checkpoint_name(model_type)
        if not path.is_file():
            continue
        net = medmnist_classifier(model_type=model_type, **kwargs)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise RuntimeError(f"checkpoint {path} does not fit {model_type} {kwargs}: {e}") from None
        found[model_type] = net.to(device).eval()
    if not found:
        names = ", ".join(checkpoint_name(m) for m in MODEL_TYPES)
        raise FileNotFoundError(f"no trained checkpoint ({names}) in {ckpt_dir}; run the bundle's training first.")
    return found


def check_checkpoint(path: str | os.PathLike, network: nn.Module, key: str = "model") -> Path:
    """Check that ``path`` holds weights that fit ``network``, before a run resumes from it.

    Loading a checkpoint of another architecture (another ``widen_factor``, ``kernel_size``, flag) fails inside
    ``load_state_dict`` with one line per tensor and without the file's name; this names the file and the first
    differences on one line. ``network`` is not modified.

    Args:
        path: a ``torch.save`` file holding a state dict, flat or under ``key`` (as the bundles' checkpoints do).
        network: the network the weights are for; a ``DistributedDataParallel`` wrapper is looked through.
        key: where a full training checkpoint keeps the network's weights.

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not a readable ``weights_only`` checkpoint, holds no state dict, or its tensor
            names and shapes differ from the network's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's message names neither the file nor the likely cause
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {path} is not a readable PyTorch checkpoint (damaged?): {reason}") from e
    if isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} holds no state dict (flat or under {key!r}); expected network weights")
    expected = {k: tuple(v.shape) for k, v in getattr(network, "module", network).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [k for k in expected if k in found and found[k] != expected[k]]
    if not (missing or unexpected or resized):
        return path
    parts = []
    if resized:
        k = resized[0]
        parts.append(f"{len(resized)} tensor(s) of other shapes (e.g. {k}: {found[k]} in the file, {expected[k]} here)")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})")
    raise ValueError(
        f"checkpoint {path} does not fit the {type(getattr(network, 'module', network)).__name__} of this "
        f"configuration: {'; '.join(parts)}; expected a checkpoint of the same architecture and settings"
    )
