# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST's ACC and AUC, as plain functions and as ignite metrics for MONAI engines.

The numbers are those of ``medmnist.evaluator.getACC`` / ``getAUC`` (the functions the MedMNIST v2 benchmark
reports), which this module calls after checking its inputs:

- ``"binary-class"``: AUC and ACC (score > threshold) of the positive class score;
- ``"multi-class"`` and ``"ordinal-regression"``: mean one-vs-rest AUC over classes, ACC of the argmax (MedMNIST
  treats ordinal tasks as multi-class for both metrics);
- ``"multi-label, binary-class"``: mean AUC and mean ACC (score > threshold) over labels.

Scores are probabilities: softmax over classes for single-label tasks, a sigmoid per output for multi-label tasks
and for single-logit binary models; :func:`scores_from_logits` applies the right one. Where AUC is undefined (a class
or label column with only one value among the targets, e.g. a small validation subset) it is ``nan`` with a
warning, instead of sklearn's exception, so a training run is not stopped by one unlucky batch of data.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import EpochMetric
from medmnist.evaluator import getACC, getAUC

from monai_sre.transforms.probabilities import class_probabilities

__all__ = [
    "TASKS",
    "check_task",
    "scores_from_logits",
    "medmnist_auc",
    "medmnist_acc",
    "MedMNISTAUC",
    "MedMNISTACC",
]

TASKS: tuple[str, ...] = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")
_MULTI_LABEL = "multi-label, binary-class"


def check_task(task: str) -> str:
    """Check that ``task`` is one of MedMNIST's task names.

    Args:
        task: the ``task`` entry of ``medmnist.INFO[flag]``.

    Returns:
        ``task`` unchanged.

    Raises:
        ValueError: when ``task`` is not one of :data:`TASKS`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)} (the 'task' of medmnist.INFO), got {task!r}")
    return task


def _to_numpy(x: torch.Tensor | np.ndarray | Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # a clear message beats numpy's
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from e


def scores_from_logits(logits: torch.Tensor | np.ndarray, task: str) -> np.ndarray:
    """Turn network outputs into the probabilities MedMNIST's metrics expect.

    Args:
        logits: ``(N, K)`` raw outputs; ``(N,)`` or ``(N, 1)`` for a single-logit binary model.
        task: MedMNIST task name (see :data:`TASKS`).

    Returns:
        float64 ``(N, K)`` scores: softmax over ``K`` for single-label tasks with ``K > 1``, sigmoid otherwise
        (multi-label tasks, single-logit binary models).

    Raises:
        ValueError: for an unknown task or logits that are not 1-D or 2-D.
    """
    check_task(task)
    z = torch.as_tensor(_to_numpy(logits, "logits"), dtype=torch.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (N, K) or (N,), got {tuple(z.shape)}")
    return class_probabilities(z, multi_label=task == _MULTI_LABEL, dim=1).numpy()


def _prepare(y_true: Any, y_score: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Shape-check targets and scores; single-label targets become ``(N,)`` int, scores ``(N, K)``."""
    check_task(task)
    yt = _to_numpy(y_true, "y_true")
    ys = _to_numpy(y_score, "y_score").astype(np.float64)
    if ys.ndim == 1:
        ys = ys[:, None]
    if ys.ndim != 2:
        raise ValueError(f"y_score must have shape (N, K) or (N,), got {ys.shape}")
    n = ys.shape[0]
    if yt.shape[0] != n:
        raise ValueError(f"y_true has {yt.shape[0]} samples but y_score has {n}")
    if n == 0:
        raise ValueError("y_true and y_score are empty: MedMNIST metrics need at least one sample")
    if task == _MULTI_LABEL:
        yt = yt.reshape(n, -1)
        if yt.shape[1] != ys.shape[1]:
            raise ValueError(f"multi-label y_true has {yt.shape[1]} labels but y_score has {ys.shape[1]} columns")
        return yt.astype(np.int64), ys
    if yt.size != n:
        raise ValueError(f"single-label task {task!r} needs y_true of shape (N,) or (N, 1), got {yt.shape}")
    yt = yt.reshape(n).astype(np.int64)
    n_classes = max(ys.shape[1], 2)
    if yt.min() < 0 or yt.max() >= n_classes:
        raise ValueError(f"y_true holds labels outside [0, {n_classes - 1}] for y_score with {ys.shape[1]} columns")
    if task == "binary-class" and ys.shape[1] > 2:
        raise ValueError(f"binary-class y_score must have 1 or 2 columns, got {ys.shape[1]}")
    if task != "binary-class" and ys.shape[1] < 2:
        raise ValueError(f"{task} y_score needs one column per class (K >= 2), got {ys.shape[1]}")
    return yt, ys


def _auc_defined(yt: np.ndarray, ys: np.ndarray, task: str) -> bool:
    """Whether every one-vs-rest AUC that getAUC computes has both classes among the targets."""
    if task == _MULTI_LABEL:
        columns = [yt[:, i] for i in range(yt.shape[1])]
    elif task == "binary-class":
        columns = [yt]
    else:
        columns = [yt == i for i in range(ys.shape[1])]
    return all(np.unique(c).size == 2 for c in columns)


def medmnist_auc(y_true: torch.Tensor | np.ndarray, y_score: torch.Tensor | np.ndarray, task: str) -> float:
    """MedMNIST AUC (``medmnist.evaluator.getAUC``).

    Args:
        y_true: ``(N,)`` or ``(N, 1)`` integer labels; ``(N, L)`` 0/1 labels for multi-label tasks.
        y_score: ``(N, K)`` probabilities (see :func:`scores_from_logits`); ``(N,)`` or ``(N, 1)`` positive-class
            probabilities for binary tasks.
        task: MedMNIST task name (see :data:`TASKS`).

    Returns:
        the AUC, or ``nan`` (with a ``RuntimeWarning``) when a class or label is absent or always present.

    Raises:
        ValueError: for an unknown task, mismatched sample counts or shapes, or out-of-range labels.
    """
    yt, ys = _prepare(y_true, y_score, task)
    if not _auc_defined(yt, ys, task):
        warnings.warn(
            f"AUC is undefined for these {yt.shape[0]} samples (a class or label has only one value); returning nan",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    # getAUC squeezes its inputs, which would drop the sample axis of a single sample; n == 1 is undefined above.
    return float(getAUC(yt, ys, task))


def medmnist_acc(
    y_true: torch.Tensor | np.ndarray, y_score: torch.Tensor | np.ndarray, task: str, threshold: float = 0.5
) -> float:
    """MedMNIST ACC (``medmnist.evaluator.getACC``).

    Args:
        y_true: ``(N,)`` or ``(N, 1)`` integer labels; ``(N, L)`` 0/1 labels for multi-label tasks.
        y_score: ``(N, K)`` probabilities (see :func:`scores_from_logits`); ``(N,)`` or ``(N, 1)`` positive-class
            probabilities for binary tasks.
        task: MedMNIST task name (see :data:`TASKS`).
        threshold: decision threshold on the positive-class score (binary) or on each label (multi-label);
            multi-class and ordinal tasks use the argmax.

    Returns:
        the accuracy in ``[0, 1]``; the mean per-label accuracy for multi-label tasks.

    Raises:
        ValueError: for an unknown task, mismatched sample counts or shapes, or out-of-range labels.
    """
    yt, ys = _prepare(y_true, y_score, task)
    if yt.shape[0] == 1:  # getACC squeezes away the sample axis of a single sample
        yt, ys = np.concatenate([yt, yt]), np.concatenate([ys, ys])
    return float(getACC(yt, ys, task, threshold=threshold))


class _MedMNISTEpochMetric(EpochMetric):
    """Collect ``(pred, label)`` over an epoch (gathered across DDP ranks by ``EpochMetric``), then score them.

    Batched ``(B, K)`` predictions and the per-sample ``(K,)`` predictions that ignite unrolls from MONAI's
    decollated engine output are both accepted.
    """

    def __init__(
        self,
        score_fn: Callable[[np.ndarray, np.ndarray, str], float],
        task: str,
        from_logits: bool,
        output_transform: Callable,
        device: str | torch.device,
    ) -> None:
        self.task = check_task(task)
        self.from_logits = from_logits

        def compute(preds: torch.Tensor, targets: torch.Tensor) -> float:
            scores = scores_from_logits(preds, task) if from_logits else preds.double().cpu().numpy()
            return score_fn(targets.cpu().numpy(), scores, task)

        super().__init__(compute, output_transform=output_transform, check_compute_fn=False, device=device)

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        y_pred, y = (torch.as_tensor(o).as_subclass(torch.Tensor) for o in output[:2])
        if y_pred.ndim == 0:
            y_pred = y_pred.reshape(1)
        one_sample = y_pred.ndim == 1  # (K,) as unrolled from decollated engine output
        if one_sample:
            y_pred = y_pred[None]
        n = y_pred.shape[0]
        # Targets are stored as (N,) for single-label tasks and (N, L) for multi-label tasks, int64 either way, so
        # float labels from a MetaTensor pipeline do not break EpochMetric's dtype check between batches.
        y = y.reshape(n, -1) if self.task == _MULTI_LABEL else y.reshape(n)
        super().update((y_pred.float(), y.long()))

    def compute(self) -> float:
        if not self._predictions:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed.")
        if self._result is None:
            preds, targets = torch.cat(self._predictions), torch.cat(self._targets)
            world_size = idist.get_world_size()
            if world_size > 1:
                preds, targets = _gather_uneven(preds), _gather_uneven(targets)
            result = self.compute_fn(preds, targets) if idist.get_rank() == 0 else 0.0
            self._result = float(idist.broadcast(result, src=0)) if world_size > 1 else result
        return self._result


def _gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 when ranks hold different sample counts.

    ``EpochMetric`` gathers with a plain all-gather, which needs equal shapes on every rank; validation under DDP
    often has uneven shards (MONAI's ``DistributedSampler(even_divisible=False)``, as bundles use so that no sample
    is counted twice), so pad to the largest shard, gather, and cut the padding off again.
    """
    sizes = idist.all_gather(torch.tensor([x.shape[0]], device=x.device)).tolist()
    longest = max(sizes)
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    gathered = idist.all_gather(padded).reshape(len(sizes), longest, *x.shape[1:])
    return torch.cat([gathered[rank, :size] for rank, size in enumerate(sizes)])


class MedMNISTAUC(_MedMNISTEpochMetric):
    """MedMNIST AUC over an epoch, for ``key_val_metric`` / ``additional_metrics`` of MONAI engines.

    Example (bundle config)::

        "key_metric": {"val_auc": {"_target_": "monai_sre.evaluation.MedMNISTAUC", "task": "@task",
                       "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

    Args:
        task: MedMNIST task name (see :data:`TASKS`).
        from_logits: predictions are raw logits and get softmax/sigmoid here (see :func:`scores_from_logits`);
            ``False`` when a post-transform already made them probabilities.
        output_transform: maps the engine output to ``(pred, label)``; preds ``(B, K)`` or lists of ``(K,)``,
            labels ``(B,)``/``(B, 1)`` int (``(B, L)`` for multi-label) or lists of per-sample labels.
        device: where the epoch's predictions are stored.
    """

    def __init__(
        self,
        task: str,
        from_logits: bool = True,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(medmnist_auc, task, from_logits, output_transform, device)


class MedMNISTACC(_MedMNISTEpochMetric):
    """MedMNIST ACC over an epoch, for ``key_val_metric`` / ``additional_metrics`` of MONAI engines.

    Args:
        task: MedMNIST task name (see :data:`TASKS`).
        threshold: decision threshold for binary and multi-label tasks (see :func:`medmnist_acc`).
        from_logits: predictions are raw logits and get softmax/sigmoid here (see :func:`scores_from_logits`);
            ``False`` when a post-transform already made them probabilities.
        output_transform: maps the engine output to ``(pred, label)`` as for :class:`MedMNISTAUC`.
        device: where the epoch's predictions are stored.
    """

    def __init__(
        self,
        task: str,
        threshold: float = 0.5,
        from_logits: bool = True,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        self.threshold = threshold

        def acc(y_true: np.ndarray, y_score: np.ndarray, task_: str) -> float:
            return medmnist_acc(y_true, y_score, task_, threshold=threshold)

        super().__init__(acc, task, from_logits, output_transform, device)
