# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST ACC/AUC: hand-made cases per task, agreement with sklearn and medmnist, ignite and DDP use."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from medmnist.evaluator import getACC, getAUC
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from sklearn.metrics import accuracy_score, roc_auc_score

from monai_sre.evaluation.metrics import (
    MedMNISTACC,
    MedMNISTAUC,
    medmnist_acc,
    medmnist_auc,
    scores_from_logits,
)
from tests.evaluation.ddp_worker import ddp_worker, sharded_batches


def test_scores_from_logits_activation_per_task():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    soft = scores_from_logits(logits, "multi-class")
    np.testing.assert_allclose(soft.sum(1), [1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(soft[1], [1 / 3] * 3, atol=1e-12)
    np.testing.assert_allclose(soft[0], torch.softmax(logits[0].double(), 0).numpy(), atol=1e-12)
    sig = scores_from_logits(logits, "multi-label, binary-class")
    np.testing.assert_allclose(sig, torch.sigmoid(logits.double()).numpy(), atol=1e-12)
    single = scores_from_logits(np.array([0.0, math.log(3.0)]), "binary-class")  # one logit per sample
    np.testing.assert_allclose(single[:, 0], [0.5, 0.75], atol=1e-12)
    with pytest.raises(ValueError, match="task must be one of"):
        scores_from_logits(logits, "segmentation")


def test_binary_hand_made():
    y = np.array([0, 0, 1, 1])
    positive = np.array([0.1, 0.4, 0.35, 0.8])
    scores = np.stack([1 - positive, positive], 1)
    # Of the 4 (negative, positive) pairs, 3 are ranked right: AUC 0.75. Threshold 0.5 predicts 0,0,0,1: ACC 0.75.
    assert medmnist_auc(y, scores, "binary-class") == pytest.approx(0.75)
    assert medmnist_acc(y[:, None], scores, "binary-class") == pytest.approx(0.75)
    assert medmnist_acc(y, scores, "binary-class", threshold=0.3) == pytest.approx(0.75)  # predicts 0,1,1,1
    assert medmnist_auc(torch.from_numpy(y), torch.from_numpy(positive), "binary-class") == pytest.approx(0.75)


def test_multi_class_and_ordinal_hand_made():
    y = np.array([0, 1, 2, 2, 1, 0])
    scores = np.array(
        [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]
    )
    expected_auc = np.mean([roc_auc_score(y == k, scores[:, k]) for k in range(3)])
    expected_acc = 4 / 6  # rows 3 and 4 are wrong
    for task in ("multi-class", "ordinal-regression"):
        assert medmnist_auc(y, scores, task) == pytest.approx(expected_auc)
        assert medmnist_acc(y, scores, task) == pytest.approx(expected_acc)
        assert medmnist_auc(y, scores, task) == pytest.approx(getAUC(y, scores, task))
        assert medmnist_acc(y, scores, task) == pytest.approx(getACC(y, scores, task))
    assert expected_auc == pytest.approx((7 / 8 + 5.5 / 8 + 7.5 / 8) / 3)  # right-ranked pairs per class, by hand


def test_multi_label_hand_made():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.3, 0.4], [0.6, 0.7], [0.2, 0.6]])
    task = "multi-label, binary-class"
    # Label 0 is perfectly ranked (AUC 1), label 1 has pairs (0.4,0.7) vs (0.2,0.6): 3 of 4 right (AUC 0.75).
    assert medmnist_auc(y, scores, task) == pytest.approx((1.0 + 0.75) / 2)
    # Threshold 0.5: label 0 all right (1.0); label 1 predicts 0,0,1,1 against 0,1,1,0 (0.5).
    assert medmnist_acc(y, scores, task) == pytest.approx(0.75)
    assert medmnist_acc(y, scores, task) == pytest.approx(
        np.mean([accuracy_score(y[:, i], scores[:, i] > 0.5) for i in range(2)])
    )


def test_agrees_with_medmnist_on_random_cases():
    rng = np.random.default_rng(0)
    n = 200
    cases = [
        ("binary-class", rng.integers(0, 2, n), rng.dirichlet(np.ones(2), n)),
        ("multi-class", rng.integers(0, 5, n), rng.dirichlet(np.ones(5), n)),
        ("ordinal-regression", rng.integers(0, 5, n), rng.dirichlet(np.ones(5), n)),
        ("multi-label, binary-class", rng.integers(0, 2, (n, 4)), rng.random((n, 4))),
    ]
    for task, y, s in cases:
        assert medmnist_auc(y, s, task) == pytest.approx(getAUC(y, s, task), abs=1e-12)
        assert medmnist_acc(y, s, task) == pytest.approx(getACC(y, s, task), abs=1e-12)


def test_undefined_auc_is_nan_and_bad_input_is_refused():
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert math.isnan(medmnist_auc([1, 1, 1], np.array([[0.2, 0.8]] * 3), "binary-class"))
    with pytest.warns(RuntimeWarning):  # class 2 absent
        assert math.isnan(medmnist_auc([0, 1, 1], np.full((3, 3), 1 / 3), "multi-class"))
    with pytest.raises(ValueError, match="3 samples but y_score has 2"):
        medmnist_acc([0, 1, 1], np.ones((2, 2)) / 2, "binary-class")
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\]"):
        medmnist_acc([0, 3], np.ones((2, 3)) / 3, "multi-class")
    with pytest.raises(ValueError, match="task must be one of"):
        medmnist_auc([0, 1], np.ones((2, 2)) / 2, "binary")
    assert medmnist_acc([2], np.array([[0.1, 0.2, 0.7]]), "multi-class") == 1.0  # one sample keeps its axis


def _batches(task: str, n: int = 40, k: int = 3, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g)
    if task == "multi-label, binary-class":
        labels = torch.randint(0, 2, (n, k), generator=g)
    else:
        labels = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=g)])
    return logits, labels, [(logits[i : i + batch], labels[i : i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("task", ["multi-class", "binary-class", "multi-label, binary-class"])
def test_ignite_metrics_batched_and_decollated(task):
    k = 2 if task == "binary-class" else 3
    logits, labels, batches = _batches(task, k=k)
    scores = scores_from_logits(logits, task)
    expected_auc, expected_acc = medmnist_auc(labels, scores, task), medmnist_acc(labels, scores, task)

    batched = Engine(lambda engine, batch: batch)
    MedMNISTAUC(task).attach(batched, "auc")
    MedMNISTACC(task).attach(batched, "acc")
    state = batched.run(batches)
    assert state.metrics["auc"] == pytest.approx(expected_auc)
    assert state.metrics["acc"] == pytest.approx(expected_acc)

    # MONAI engines decollate: the output is a list of per-sample dicts with float (B,1)-style labels.
    def decollated(engine, batch):
        y_pred, y = batch
        y = y.float() if y.ndim == 2 else y[:, None].float()
        return [{"pred": p, "label": t} for p, t in zip(y_pred, y, strict=True)]

    listed = Engine(decollated)
    MedMNISTAUC(task, output_transform=from_engine(["pred", "label"])).attach(listed, "auc")
    MedMNISTACC(task, output_transform=from_engine(["pred", "label"])).attach(listed, "acc")
    state = listed.run(batches)
    assert state.metrics["auc"] == pytest.approx(expected_auc)
    assert state.metrics["acc"] == pytest.approx(expected_acc)


def test_metric_with_probabilities_and_in_monai_evaluator():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randn(24, 1, 4, 4)
    labels = torch.tensor([0, 1, 2] * 8)
    data = [{"image": images[i], "label": labels[i]} for i in range(24)]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=5),
        network=net,
        key_val_metric={"val_auc": MedMNISTAUC("multi-class", output_transform=from_engine(["pred", "label"]))},
        additional_metrics={"val_acc": MedMNISTACC("multi-class", output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    with torch.no_grad():
        scores = scores_from_logits(net(images), "multi-class")
    assert evaluator.state.metrics["val_auc"] == pytest.approx(medmnist_auc(labels, scores, "multi-class"))
    assert evaluator.state.metrics["val_acc"] == pytest.approx(medmnist_acc(labels, scores, "multi-class"))

    probs = Engine(lambda engine, batch: batch)
    MedMNISTAUC("multi-class", from_logits=False).attach(probs, "auc")
    probabilities = torch.from_numpy(scores).float()
    state = probs.run([(probabilities[:12], labels[:12]), (probabilities[12:], labels[12:])])
    assert state.metrics["auc"] == pytest.approx(medmnist_auc(labels, scores, "multi-class"), abs=1e-6)


@pytest.mark.slow  # two spawned processes each import torch, ignite and monai: seconds, not milliseconds
def test_ignite_metrics_gather_across_ddp_ranks():
    logits, labels, _ = sharded_batches()
    scores = scores_from_logits(logits, "multi-class")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(ddp_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    results = sorted(queue.get() for _ in range(2))
    for _, auc, acc in results:  # every rank reports the metric of all 40 samples, not of its 20
        assert auc == pytest.approx(medmnist_auc(labels, scores, "multi-class"))
        assert acc == pytest.approx(medmnist_acc(labels, scores, "multi-class"))
