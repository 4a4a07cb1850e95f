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
- :class:`WeightEMA` (the ``ema_decay`` override): an exponential moving average of the network's weights, updated
  after every training step (ignite's ``EMAHandler``), its BatchNorm statistics measured again before every
  validation; with a decay above 0 the validator scores the averaged copy and the kept checkpoint holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch.optim.swa_utils import update_bn

__all__ = ["OPTIMIZERS", "LR_SCHEDULES", "band_scale_for", "build_optimizer", "build_lr_scheduler", "WeightEMA"]

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


class WeightEMA:
    """The ``ema_decay`` override: the network the validator scores and the best-checkpoint saver keeps.

    With ``decay`` in (0, 1) this wraps ignite's :class:`~ignite.handlers.EMAHandler`: after every training iteration
    each weight of the averaged copy becomes ``decay * average + (1 - decay) * current`` (ignite's ``momentum`` is
    ``1 - decay``), so the average spans about ``1 / (1 - decay)`` steps (0.99: 100 steps, 5.5 BreastMNIST epochs at
    batch 32). The copy starts equal to the network.

    Its BatchNorm statistics are not averaged: before every validation they are measured again for the averaged
    weights, one pass over ``loader`` (:func:`torch.optim.swa_utils.update_bn`, as for SWA). Averaged statistics do
    not fit averaged weights in SRE-ResNet-18: on BreastMNIST 28 (seed 0, near epoch 40) the averaged copy scored
    validation AUC 0.52-0.56 with them and 0.80-0.82 with statistics measured again (the network itself: 0.77-0.80).
    The pass runs the training transforms after the epoch, and every epoch re-seeds its random draws at its start, so
    the network's own training is bit for bit the one without the option (``tests/reliability/test_resume.py``).

    With ``decay`` 0 there is no copy: :attr:`network` is the network itself, :meth:`attach` does nothing and the
    state is empty.

    What ignite and torch do not do, and this class adds: the off switch, the statistics pass before validation, and
    a ``state_dict``/``load_state_dict`` pair so the averaged copy goes into the last-epoch checkpoint and
    ``--resume`` continues the average.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper is averaged through its ``module``).
        decay: the bundle's ``ema_decay``, from 0 (off) to below 1.
        loader: the training data loader, batches of dicts with the image under ``"image"`` (under DDP each process
            measures on its own share).
        device: where the measuring batches go (the network's device).

    Raises:
        ValueError: for a decay outside [0, 1) (naming the ``ema_decay`` override).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        decay: float = 0.0,
        loader: Iterable[Mapping[str, Any]] = (),
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be a number from 0 (off) to below 1, e.g. 0.99 (bundle override "
                             f"--ema_decay), got {decay!r}.")
        self.decay = float(decay)
        self.loader, self.device = loader, device
        # "ema_train": ignite neither copies nor averages the buffers ("copy" would share the network's tensors,
        # which the statistics pass resets); the evaluator puts the copy in eval mode itself
        self.handler = EMAHandler(network, momentum=1 - self.decay, handle_buffers="ema_train") if decay else None
        #: what the validator scores and the best-checkpoint saver keeps: the averaged copy, or ``network`` itself
        self.network: torch.nn.Module = network if self.handler is None else self.handler.ema_model

    def attach(self, trainer: Engine, validator: Engine) -> None:
        """Update the average after every iteration of ``trainer`` and measure its BatchNorm statistics when
        ``validator`` starts (nothing when the decay is 0)."""
        if self.handler is not None:
            self.handler.attach(trainer, name="ema_momentum", warn_if_exists=False)
            validator.add_event_handler(Events.STARTED, self.measure_statistics)

    @torch.no_grad()
    def measure_statistics(self, _: Engine | None = None) -> None:
        """Set the averaged copy's BatchNorm statistics to those of its weights on one pass over the loader."""
        if self.handler is not None:
            update_bn((batch["image"] for batch in self.loader), self.network, device=self.device)

    def state_dict(self) -> dict[str, Any]:
        """The averaged copy's state dict (empty when the decay is 0)."""
        return {} if self.handler is None else self.network.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the averaged copy from :meth:`state_dict` (a checkpoint written with the same ``ema_decay``).

        Raises:
            ValueError: when the checkpoint was written with the average on and this run has it off, or the reverse.
        """
        if (self.handler is None) != (not state):
            written = "without" if not state else "with"
            raise ValueError(f"the checkpoint was written {written} a weight average; resume with the --ema_decay "
                             f"it was trained with (this run: {self.decay}).")
        if self.handler is not None:
            self.network.load_state_dict(state)
