# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Optimizer and learning-rate schedule of the bundles' training, chosen by name (the ``optimizer`` and
``lr_schedule`` overrides).

- ``adam``: :class:`torch.optim.Adam` (the MedMNIST v2 protocol); ``sgd``: :class:`torch.optim.SGD` with Nesterov-free
  momentum (the SRE-Conv paper: lr 2e-2, momentum 0.9, weight decay 1e-3).
- ``step``: the learning rate times 0.1 at 50% and 75% of the epochs (MedMNIST v2); ``cosine``: cosine annealing
  from the learning rate to ``eta_min`` (1e-6) over the epochs (the SRE-Conv paper). Both step once per epoch
  (MONAI's ``LrScheduleHandler``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["OPTIMIZERS", "LR_SCHEDULES", "band_scale_for", "build_optimizer", "build_lr_scheduler"]

#: Values of the bundles' ``optimizer`` override.
OPTIMIZERS = ("adam", "sgd")
#: Values of the bundles' ``lr_schedule`` override.
LR_SCHEDULES = ("step", "cosine")


def _choice(value: Any, choices: tuple[str, ...], override: str) -> str:
    if value not in choices:
        accepted = ", ".join(choices)
        raise ValueError(f"{override} must be one of {accepted} (bundle override --{override}), got {value!r}.")
    return value


def band_scale_for(name: str) -> str:
    """The SRE band-weight parameterisation under which the optimizer ``name`` steps every tap as a dense tap.

    A band weight is shared by its ``n_b`` taps and receives their summed gradient. SGD's step is proportional to
    the gradient, so it needs the stored weight scaled by ``1/sqrt(n_b)`` (``"rsqrt_taps"``) to move each tap by
    the learning rate times the band's mean tap gradient; Adam's step is about the learning rate per parameter
    whatever the gradient's size, so the band weight itself (``"none"``) already moves each tap as far as a dense
    tap. Measured per band size in ``benchmarks/band_parameterisation.py`` (the step table in benchmarks/README).

    Args:
        name: ``"adam"`` or ``"sgd"``; another name gives ``"none"`` and is refused by :func:`build_optimizer` and
            the bundles' settings check, which name the override (this runs while the config is parsed).

    Returns:
        ``"rsqrt_taps"`` for SGD, else ``"none"`` (see :func:`monai_sre.layers.band_scale`).
    """
    return "rsqrt_taps" if name == "sgd" else "none"


def build_optimizer(
    name: str, params: Iterable[Any], lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The optimizer named by the ``optimizer`` override.

    Args:
        name: ``"adam"`` or ``"sgd"``.
        params: the parameters (or parameter groups) to optimize.
        lr: learning rate.
        weight_decay: L2 penalty (coupled, as torch's Adam and SGD apply it).
        momentum: SGD momentum; ignored by Adam.

    Returns:
        a :class:`torch.optim.Adam` or :class:`torch.optim.SGD`.

    Raises:
        ValueError: for another name (the message names the ``optimizer`` override).
    """
    if _choice(name, OPTIMIZERS, "optimizer") == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def build_lr_scheduler(
    name: str, optimizer: torch.optim.Optimizer, epochs: int, eta_min: float = 1e-6
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule named by the ``lr_schedule`` override.

    Args:
        name: ``"step"`` (x0.1 at 50% and 75% of ``epochs``) or ``"cosine"`` (to ``eta_min`` at ``epochs``).
        optimizer: the optimizer whose learning rate is scheduled.
        epochs: number of training epochs.
        eta_min: final learning rate of the cosine schedule.

    Returns:
        a :class:`~torch.optim.lr_scheduler.MultiStepLR` or :class:`~torch.optim.lr_scheduler.CosineAnnealingLR`.

    Raises:
        ValueError: for another name (naming the ``lr_schedule`` override) or ``epochs < 1``.
    """
    name = _choice(name, LR_SCHEDULES, "lr_schedule")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1 for the learning-rate schedule, got {epochs!r}.")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(epochs), eta_min=eta_min)
    milestones = sorted({max(1, int(0.5 * epochs)), max(1, int(0.75 * epochs))})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
