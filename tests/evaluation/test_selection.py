# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Checkpoint selection: turned validation images (``RotatedCopies``, ``val_angles``), the key metric (``val_metric``)."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator, default_prepare_batch
from monai.handlers import from_engine

from monai_sre.evaluation import (
    VAL_METRICS,
    MedMNISTACC,
    MedMNISTAUC,
    RotatedCopies,
    medmnist_acc,
    medmnist_auc,
    rotate,
    validation_metrics,
)
from monai_sre.evaluation.metrics import scores_from_logits


def _batch(spatial_dims: int, n: int = 3, size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(spatial_dims)
    image = torch.rand(n, 1, *([size] * spatial_dims), generator=g)
    return {"image": MetaTensor(image), "label": torch.arange(n)[:, None] % 2}


def test_upright_only_is_monais_default():
    batch = _batch(2)
    image, label = RotatedCopies([0], spatial_dims=2)(batch)
    default_image, default_label = default_prepare_batch(batch)
    assert torch.equal(image, default_image) and torch.equal(label, default_label)
    assert len(RotatedCopies([0], spatial_dims=3)) == 1 and len(RotatedCopies([0, 360], spatial_dims=2)) == 1
    assert RotatedCopies([0, 360], spatial_dims=2).upright_only and not RotatedCopies([360, 45], 2).upright_only
    assert not RotatedCopies([45], spatial_dims=3).upright_only


def test_2d_copies_are_the_rotation_reports_images():
    batch = _batch(2)
    x = batch["image"].as_tensor()
    copies = RotatedCopies([0, 90, 45], spatial_dims=2)
    image, label = copies(batch)
    assert len(copies) == 3 and image.shape == (9, 1, 8, 8) and type(image) is torch.Tensor
    assert torch.equal(image[:3], x)
    assert torch.equal(image[3:6], torch.rot90(x, 1, dims=(2, 3)))  # a quarter turn stays exact
    assert torch.equal(image[6:], rotate(x, 45))  # bilinear, zero fill: the report's resampling
    assert not torch.allclose(image[6:], x)
    assert label.tolist() == [[0], [1], [0]] * 3


def test_3d_copies_turn_about_each_axis_and_score_upright_once():
    batch = _batch(3, n=2)
    x = batch["image"].as_tensor()
    copies = RotatedCopies([30, 0], spatial_dims=3)
    image, label = copies(batch)
    assert [s.name for s in copies.specs] == ["rot_x_000", "rot_x_030", "rot_y_030", "rot_z_030"]
    assert image.shape == (8, 1, 8, 8, 8) and label.shape == (8, 1)
    assert torch.equal(image[:2], x)
    for i, plane in enumerate([(1, 2), (2, 0), (0, 1)], start=1):
        assert torch.equal(image[2 * i : 2 * i + 2], rotate(x, 30, plane))
    assert [s.name for s in RotatedCopies([45], 3, axes=("z",)).specs] == ["rot_z_045"]


def test_refusals():
    with pytest.raises(ValueError, match="at least one angle"):
        RotatedCopies([], spatial_dims=2)
    with pytest.raises(ValueError, match="must not repeat"):
        RotatedCopies([10, 10], spatial_dims=2)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        RotatedCopies([0], spatial_dims=1)
    with pytest.raises(ValueError, match="interpolation"):
        RotatedCopies([0, 10], spatial_dims=2, interpolation="cubic")
    with pytest.raises(ValueError, match="needs labelled batches"):
        RotatedCopies([0, 10], spatial_dims=2)({"image": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ValueError, match=r"2 spatial dims, got shape \(2, 1, 8, 8, 8\)"):
        RotatedCopies([0, 10], spatial_dims=2)({"image": torch.zeros(2, 1, 8, 8, 8), "label": torch.zeros(2, 1)})


def test_evaluator_metrics_pool_the_copies():
    """In a MONAI evaluator the AUC ranks turned and upright images together and the ACC is their mean."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    images = torch.randn(20, 1, 8, 8)
    labels = torch.tensor([0, 1] * 10)[:, None]
    data = [{"image": images[i], "label": labels[i]} for i in range(20)]
    angles = [0, 20, 45]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=6),
        network=net,
        prepare_batch=RotatedCopies(angles, spatial_dims=2),
        key_val_metric={"val_auc": MedMNISTAUC("binary-class", output_transform=from_engine(["pred", "label"]))},
        additional_metrics={"val_acc": MedMNISTACC("binary-class", output_transform=from_engine(["pred", "label"]))},
    )
    evaluator.run()
    with torch.no_grad():
        per_angle = [scores_from_logits(net(rotate(images, a)), "binary-class") for a in angles]
    pooled = torch.cat([torch.from_numpy(s) for s in per_angle]).numpy()
    all_labels = labels.repeat(3, 1)
    auc = medmnist_auc(all_labels, pooled, "binary-class")
    assert evaluator.state.metrics["val_auc"] == pytest.approx(auc)
    mean_acc = sum(medmnist_acc(labels, s, "binary-class") for s in per_angle) / 3
    assert evaluator.state.metrics["val_acc"] == pytest.approx(mean_acc)
    # the pooled AUC is not the mean of the per-angle AUCs: a score shift between angles costs it
    assert auc != pytest.approx(sum(medmnist_auc(labels, s, "binary-class") for s in per_angle) / 3)


def test_validation_metrics_key_choice():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    images, labels = torch.randn(30, 1, 8, 8), (torch.arange(30) % 3 == 0).long()[:, None]
    data = [{"image": images[i], "label": labels[i]} for i in range(30)]
    results = {}
    for key in VAL_METRICS:
        key_metric, additional = validation_metrics("binary-class", key)
        assert not {id(m) for m in key_metric.values()} & {id(m) for m in additional.values()}
        evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=DataLoader(data, batch_size=7),
                                        network=net, key_val_metric=key_metric, additional_metrics=additional)
        evaluator.run()
        results[key] = (evaluator.state.key_metric_name, dict(evaluator.state.metrics))
    with torch.no_grad():
        scores = scores_from_logits(net(images), "binary-class")
    auc, acc = medmnist_auc(labels, scores, "binary-class"), medmnist_acc(labels, scores, "binary-class")
    assert results["auc"][0] == "val_auc" and results["auc"][1] == pytest.approx({"val_auc": auc, "val_acc": acc})
    assert results["auc_acc"][0] == "val_auc_acc"
    assert results["auc_acc"][1] == pytest.approx({"val_auc_acc": (auc + acc) / 2, "val_auc": auc, "val_acc": acc})
    assert list(validation_metrics("multi-class", "auc", prefix="test")[0]) == ["test_auc"]
    with pytest.raises(ValueError, match=r"key must be one of \['auc', 'auc_acc'\].*'acc'"):
        validation_metrics("binary-class", "acc")
