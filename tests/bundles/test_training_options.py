# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The bundles' training options: ``augmentation``, ``optimizer``, ``lr_schedule``, ``val_angles``, ``ema_decay`` (plain
overrides)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.engines import default_prepare_batch
from monai.transforms import Compose, RandAffined, RandFlipd, RandRotated, RandScaleCropd

from monai_sre.bundle import BundleSettingError, as_bool
from monai_sre.evaluation import RotatedCopies
from monai_sre.evaluation.rotated_sets import rotate
from monai_sre.layers import SREConv, band_scale
from monai_sre.optim import WeightEMA, build_lr_scheduler, build_optimizer
from monai_sre.transforms.augmentation import RandCornerMaskd, training_augmentation
from tests.bundles.test_bundles import TINY, _bundle, _run

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DIMS = {"sre_medmnist_2d": 2, "sre_medmnist_3d": 3}


def _parser(name: str, *files: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / name / "configs" / f) for f in (files or ("train.json",))])
    parser.update({"max_samples": 4, "widen_factor": 0.0625, **overrides})
    return parser


def _bar_image(size: int = 28) -> torch.Tensor:
    image = torch.zeros(1, size, size)
    image[0, 12:16, 4:24] = 1.0  # a bar along spatial axis 1
    return image


def _orientation(image: torch.Tensor) -> float:
    """Angle of the principal axis of the intensity in degrees, in [0, 180)."""
    w = image[0].clamp(min=0).numpy()
    ii, jj = np.mgrid[: w.shape[0], : w.shape[1]]
    total = w.sum()
    mi, mj = (w * ii).sum() / total, (w * jj).sum() / total
    cii, cjj, cij = (w * (ii - mi) ** 2).sum(), (w * (jj - mj) ** 2).sum(), (w * (ii - mi) * (jj - mj)).sum()
    return math.degrees(0.5 * math.atan2(2 * cij, cjj - cii)) % 180


def _draws(name: str, n: int = 40) -> list[torch.Tensor]:
    pipeline = Compose(training_augmentation(name, 2, 28)).set_random_state(0)
    return [pipeline({"image": _bar_image()})["image"] for _ in range(n)]


def test_none_is_empty_and_standard_2d_never_rotates():
    assert training_augmentation("none", 2, 28) == [] and training_augmentation("none", 3, 28) == []
    images = _draws("standard")
    assert all(type(x) is torch.Tensor and x.shape == (1, 28, 28) and x.dtype == torch.float32 for x in images)
    angles = [_orientation(x) for x in images]
    assert max(min(a, 180 - a) for a in angles) < 1.0  # crops, shifts and intensity changes keep the bar level
    assert len({round(float(x.sum()), 3) for x in images}) > 30  # and every draw differs


def test_standard_2d_parameters():
    crop, _, affine, bright, contrast, _ = training_augmentation("standard", 2, 64)
    assert isinstance(crop, RandScaleCropd) and crop.cropper.roi_scale == pytest.approx(math.sqrt(0.5))
    assert crop.cropper.max_roi_scale == 1.0 and crop.cropper.random_size and crop.cropper.random_center
    # MONAI draws each axis uniformly in (-r, r) for a range r
    assert isinstance(affine, RandAffined) and affine.rand_affine.rand_affine_grid.translate_range == (6.4, 6.4)
    assert not any(affine.rand_affine.rand_affine_grid.rotate_range)
    assert bright.prob == 0.5 and bright.scaler.factors == (-0.1, 0.1) and not hasattr(bright.scaler, "fixed_mean")
    assert contrast.prob == 0.5 and contrast.scaler.factors == (-0.1, 0.1) and contrast.scaler.fixed_mean


def test_standard_3d_parameters():
    affine, blur, _ = training_augmentation("standard", 3, 28)
    grid = affine.rand_affine.rand_affine_grid
    assert grid.scale_range == (0.2, 0.2, 0.2) and grid.translate_range == (3, 3, 3)
    assert not any(grid.rotate_range)
    assert blur.prob == 0.5 and blur.rand_smooth.sigma_x == (0.0, 1.0)


def test_rotation_covers_the_circle_and_flips():
    angles = [_orientation(x) for x in _draws("rotation", 60)]
    assert np.histogram(angles, bins=6, range=(0, 180))[0].min() >= 3  # every orientation, not a few
    rot, *flips, _ = training_augmentation("rotation", 3, 28)
    assert isinstance(rot, RandRotated) and rot.rand_rotate.range_x == (-math.pi, math.pi)
    assert rot.rand_rotate.range_y == (-math.pi, math.pi) and rot.rand_rotate.range_z == (-math.pi, math.pi)
    assert [f.flipper.spatial_axis for f in flips] == [0, 1, 2] and all(isinstance(f, RandFlipd) for f in flips)


def test_corner_mask_is_a_turned_frame_and_does_not_turn_the_image():
    """The mask is the evaluation's turn of an all-ones image (zero corners with soft edges); inside it the image is
    left as it was, so a bar keeps its direction."""
    mask = RandCornerMaskd("image", prob=1.0).set_random_state(3)
    ones = torch.ones(1, 28, 28)
    for _ in range(10):
        out = mask({"image": ones})["image"]
        degrees = math.degrees(mask.angle)
        assert 0 <= degrees < 90 and out.shape == (1, 28, 28) and out.dtype == torch.float32
        turned = [rotate(ones[None], sign * degrees)[0] for sign in (1, -1)]
        assert min(float((out - t).abs().max()) for t in turned) < 1e-5  # the zero-filled corners of that turn
    mask.angle = math.pi / 4
    frame = mask.mask((28, 28))[0]
    assert type(frame) is torch.Tensor and frame[0, 0] == 0 and frame[-1, -1] == 0
    assert frame[14, 0] == pytest.approx(1) and frame[0, 14] == pytest.approx(1)
    assert float((frame == 0).float().mean()) == pytest.approx(0.16, abs=0.03)  # 45 deg: 17% of a square
    bar = _bar_image()
    masked = []
    for _ in range(20):
        masked.append(mask({"image": bar})["image"])
        assert torch.equal(masked[-1], bar * mask.mask((28, 28)))  # the image times the drawn mask, nothing else
    assert max(min(_orientation(m), 180 - _orientation(m)) for m in masked) < 1.0  # the bar stays level


def test_corner_mask_probability_3d_and_placement():
    mask = RandCornerMaskd(["image", "label"], prob=0.5).set_random_state(0)
    cube = torch.ones(1, 12, 12, 12)
    masked = 0
    for _ in range(60):
        out = mask({"image": cube, "label": 2 * cube})
        assert torch.equal(out["label"], 2 * out["image"])  # every key gets the same mask
        if float(out["image"].min()) < 1:
            masked += 1
            # a turn about one axis: the mask is the same on every slice across that axis
            image = out["image"]
            constant = [bool(torch.allclose(image, image.narrow(a, 0, 1).expand_as(cube), atol=1e-5))
                        for a in (1, 2, 3)]
            assert sum(constant) == 1 and constant.index(True) == mask.axis
    assert 18 <= masked <= 42  # prob 0.5 of 60
    with pytest.raises(ValueError, match="same grid"):
        RandCornerMaskd(["image", "label"], prob=1.0)({"image": cube, "label": torch.ones(1, 8, 12, 12)})
    names = [type(t).__name__ for t in training_augmentation("standard", 2, 28, corner_mask=0.5)]
    assert names == ["RandScaleCropd", "Resized", "RandAffined", "RandCornerMaskd", "RandScaleIntensityd",
                     "RandScaleIntensityFixedMeand", "EnsureTyped"]  # after the geometric transforms
    assert [type(t).__name__ for t in training_augmentation("none", 3, 28, corner_mask=1)] == [
        "RandCornerMaskd", "EnsureTyped"]
    assert training_augmentation("standard", 3, 28, corner_mask=0.25)[1].prob == 0.25
    with pytest.raises(ValueError, match=r"--corner_mask\), got 1.5"):
        training_augmentation("standard", 2, 28, corner_mask=1.5)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_is_a_gaussian_blur_without_a_turn_after_the_geometric_transforms(dims):
    names = [type(t).__name__ for t in training_augmentation("standard", 2, 28, corner_mask=0.5, blur=0.5)]
    assert names == ["RandScaleCropd", "Resized", "RandAffined", "RandCornerMaskd", "RandGaussianSmoothd",
                     "RandScaleIntensityd", "RandScaleIntensityFixedMeand", "EnsureTyped"]
    assert training_augmentation("none", dims, 28) == []  # off by default
    blur = training_augmentation("none", dims, 28, blur=0.75)[0]
    assert blur.prob == 0.75
    blur = blur.rand_smooth
    assert [blur.sigma_x, blur.sigma_y, blur.sigma_z][:dims] == [(0.0, 1.0)] * dims
    # a point blurred where it is: the same mass, the peak in place (no shift, no turn) and lower, but no lower than
    # a Gaussian of sigma 1 in every axis gives, 1 / sqrt(2 pi) per axis
    centre = (0, *(7,) * dims)
    for seed in range(5):
        image = torch.zeros(1, *(15,) * dims)
        image[centre] = 1.0
        out = training_augmentation("none", dims, 15, blur=1.0)[0].set_random_state(seed)({"image": image})["image"]
        assert float(out.sum()) == pytest.approx(1.0, abs=1e-4) and float(out[centre]) == float(out.max())
        assert 0.95 * (2 * math.pi) ** (-dims / 2) <= float(out.max()) < 1
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match=rf"blur must be a probability from 0 to 1 \(bundle override --blur\), "
                                             rf"got {re.escape(repr(bad))}"):
            training_augmentation("standard", dims, 28, blur=bad)


@pytest.mark.parametrize("name", sorted(DIMS))
def test_blur_override_reaches_the_training_pipeline_only(name):
    parser = _parser(name, blur=0.25)
    assert parser.get_parsed_content("train_settings")["blur"] == 0.25 and _parser(name)["blur"] == 0.0
    train = parser.get_parsed_content("train#preprocessing").transforms
    blurs = [t.prob for t in train if type(t).__name__ == "RandGaussianSmoothd"]
    assert blurs == ([0.25] if DIMS[name] == 2 else [0.25, 0.5])  # then 3D standard augmentation's own blur
    assert not any(type(t).__name__ == "RandGaussianSmoothd"
                   for t in parser.get_parsed_content("validate#preprocessing").transforms)


@pytest.mark.parametrize("name", sorted(DIMS))
@pytest.mark.parametrize("augmentation", ["none", "standard", "rotation"])
def test_augmentation_is_in_training_only(name, augmentation):
    parser = _parser(name, augmentation=augmentation)
    train = parser.get_parsed_content("train#preprocessing").transforms
    deterministic = parser.get_parsed_content("train#deterministic_transforms")
    expected = [type(t) for t in training_augmentation(augmentation, DIMS[name], 28, corner_mask=parser["corner_mask"])]
    assert [type(t) for t in train] == [type(t) for t in deterministic] + expected
    masked = _parser(name, augmentation=augmentation, corner_mask=0.75).get_parsed_content("train#preprocessing")
    assert [t.prob for t in masked.transforms if isinstance(t, RandCornerMaskd)] == [0.75]
    validate = parser.get_parsed_content("validate#preprocessing").transforms
    assert [type(t) for t in validate] == [type(t) for t in deterministic]
    evaluation = _parser(name, "train.json", "evaluate.json", augmentation=augmentation)
    for key in ("validate#preprocessing", "test#preprocessing"):
        if key in evaluation:
            assert not any(t.__class__.__name__.startswith("Rand")
                           for t in evaluation.get_parsed_content(key).transforms)


def test_default_augmentation_is_the_measured_choice():
    """2D: ``rotation`` without the corner mask since 0.9.0, at Adam 1e-3 with the gradient channels and the two
    initialisations (chosen on BreastMNIST 28 and RetinaMNIST, 3 seeds per recipe; ``standard`` in 0.5.0-0.8.9, with
    the corner mask at 0.5 since 0.8.0); 3D: ``standard`` since 0.4.0 (AdrenalMNIST3D, seed 0 of each recipe), no
    corner mask. The defaults reach the training pipeline and the network, and each bundle's metadata says which version
    made the change (the current version is that one or a later one)."""
    for name, default, corners in (("sre_medmnist_2d", "rotation", 0.0), ("sre_medmnist_3d", "standard", 0.0)):
        parser = _parser(name)
        assert parser["augmentation"] == default and parser["corner_mask"] == corners
        train = parser.get_parsed_content("train#preprocessing").transforms
        expected = training_augmentation(default, DIMS[name], 28, corner_mask=corners)
        assert [type(t) for t in train[len(train) - len(expected):]] == [type(t) for t in expected]
    # the rest of the 2D recipe of 0.9.0 (benchmarks/README.md, "Random turns for SRE at Adam 1e-3"); 3D keeps its own
    recipe = ("learning_rate", "gradient_fraction", "zero_init_residual", "zero_mean_init")
    assert [_parser("sre_medmnist_2d")[key] for key in recipe] == [0.001, 0.5, True, True]
    assert [_parser("sre_medmnist_3d")[key] for key in recipe] == [0.001, 0.0, False, False]
    for config in ("train.json", "inference.json"):  # the shipped weights have the gradient channels
        parser = ConfigParser()
        parser.read_config(BUNDLES / "sre_medmnist_2d" / "configs" / config)
        assert parser["gradient_fraction"] == 0.5
    meta = json.loads((BUNDLES / "sre_medmnist_2d" / "configs" / "metadata.json").read_text())
    assert "--augmentation rotation, --corner_mask 0" in meta["changelog"]["0.9.0"]
    # the 2D corner mask of 0.8.0-0.8.9: chosen on BreastMNIST 28, 3 seeds (benchmarks/README.md, "Zero-filled corners")
    assert "new setting --corner_mask 0.5" in meta["changelog"]["0.8.0"]
    for name, version in (("sre_medmnist_2d", "0.5.0"), ("sre_medmnist_3d", "0.4.0")):
        meta = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
        assert "default augmentation 'standard'" in meta["changelog"][version]
        current = tuple(int(part) for part in meta["version"].split("."))
        assert current >= tuple(int(part) for part in version.split(".")) and meta["version"] in meta["changelog"]


@pytest.mark.parametrize("name", sorted(DIMS))
def test_optimizer_and_schedule_overrides(name):
    default = _parser(name)
    opt = default.get_parsed_content("train#optimizer")
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == default.get_parsed_content("learning_rate")
    sched = default.get_parsed_content("lr_scheduler")
    assert isinstance(sched, torch.optim.lr_scheduler.MultiStepLR) and sched.optimizer is opt
    parser = _parser(name, optimizer="sgd", lr_schedule="cosine", learning_rate=0.02, weight_decay=1e-3, epochs=100)
    opt = parser.get_parsed_content("train#optimizer")
    assert isinstance(opt, torch.optim.SGD)
    assert (opt.defaults["lr"], opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.02, 0.9, 1e-3)
    sched = parser.get_parsed_content("lr_scheduler")
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.optimizer is opt
    assert (sched.T_max, sched.eta_min) == (100, 1e-6)
    # the trainer and the checkpoint get it through the same id (resolving the trainer would write TensorBoard logs)
    assert parser.get_parsed_content("train#optimizer") is opt
    # the band weights' parameterisation follows the optimizer (band_scale_for), unless overridden
    modes = {m.band_scale_mode for m in default.get_parsed_content("network_def").modules() if isinstance(m, SREConv)}
    assert modes == {"none"} and default.get_parsed_content("band_scale") == "none"
    modes = {m.band_scale_mode for m in parser.get_parsed_content("network_def").modules() if isinstance(m, SREConv)}
    assert modes == {"rsqrt_taps"} and parser.get_parsed_content("train_settings")["band_scale"] == "rsqrt_taps"
    assert _parser(name, optimizer="sgd", band_scale="none").get_parsed_content("band_scale") == "none"


def _kernel_means(net: torch.nn.Module) -> list[torch.Tensor]:
    """Every multi-band SRE kernel's mean over its taps, relative to its largest band weight."""
    return [m.dense_kernel().mean(dim=tuple(range(2, 2 + m.spatial_dims))).abs().max() / m.band_weight().abs().max()
            for m in net.modules() if isinstance(m, SREConv) and m.weight.shape[-1] > 1]  # fmt: skip


@pytest.mark.parametrize("name", sorted(DIMS))
def test_initialisation_overrides_reach_the_network(name):
    # --zero_init_residual / --zero_mean_init (default true in 2D since 0.9.0, false in 3D); the command line gives
    # "true" and "false" as strings
    torch.manual_seed(0)
    plain = _parser(name, zero_init_residual=False, zero_mean_init=False).get_parsed_content("network_def")
    torch.manual_seed(0)
    parser = _parser(name, zero_init_residual="true", zero_mean_init=True)
    both = parser.get_parsed_content("network_def")
    assert min(_kernel_means(plain)) > 1e-3 and max(_kernel_means(both)) < 1e-5
    last_norms = [m.bn2.weight for m in both.modules() if hasattr(m, "bn2")]
    assert len(last_norms) == 8 and all(bool((w == 0).all()) for w in last_norms)
    assert all(bool((m.bn2.weight == 1).all()) for m in plain.modules() if hasattr(m, "bn2"))
    settings = parser.get_parsed_content("train_settings")
    assert (settings["zero_init_residual"], settings["zero_mean_init"]) == ("true", True)
    torch.manual_seed(0)
    off = _parser(name, zero_init_residual="False", zero_mean_init="false").get_parsed_content("network_def")
    assert all(torch.equal(a, b) for a, b in zip(off.state_dict().values(), plain.state_dict().values()))


def test_as_bool_reads_the_command_line_words_and_refuses_the_rest():
    # `--resume false` reaches the config as the string "false", which `if @resume` used to read as true
    for value, expected in ((True, True), (False, False), ("true", True), ("False", False), ("FALSE", False)):
        assert as_bool(value, "resume") is expected
    for bad in ("no", "", 1, 0, None, "0"):
        with pytest.raises(BundleSettingError, match=rf"^bundle setting --resume {re.escape(repr(bad))} refused: "
                                                     r"expected true or false$"):
            as_bool(bad, "resume")


@pytest.mark.parametrize("name", sorted(DIMS))
def test_resume_false_from_the_command_line_does_not_resume(name, tmp_path):
    """The two ``training`` steps guarded by ``--resume`` run for true only: with no last checkpoint in the run
    folder, a resuming run stops at the checkpoint check (naming the file), any spelling of false goes on."""
    steps = [i for i, step in enumerate(_parser(name)["training"]) if "@resume" in step]
    assert len(steps) == 2
    for value in (False, "false", "False", True, "true"):
        parser = _parser(name, resume=value, bundle_root=str(tmp_path), ckpt_dir=str(tmp_path))
        parser["validate#dataloader"] = parser["train#dataloader"] = []  # no data read: only the wiring is checked
        if value in (True, "true"):
            with pytest.raises(RuntimeError) as raised:
                parser.get_parsed_content(f"training#{steps[0]}")
            assert isinstance(raised.value.__cause__, FileNotFoundError)
            assert str(raised.value.__cause__) == f"checkpoint {tmp_path / 'checkpoint_last.pt'} not found"
        else:
            assert [parser.get_parsed_content(f"training#{i}") for i in steps] == [None, None]


@pytest.mark.parametrize("name", sorted(DIMS))
def test_val_angles_select_on_turned_copies_and_test_metrics_stay_upright(name):
    """``val_angles`` reaches the validation evaluator that picks the checkpoint, not the test evaluation."""
    default = _parser(name)
    assert default["val_angles"] == [0] and default["validate"]["evaluator"]["prepare_batch"] == "@validate#prepare_batch"
    upright = default.get_parsed_content("validate#prepare_batch")
    assert isinstance(upright, RotatedCopies) and [s.angle for s in upright.specs] == [0.0]
    turned = _parser(name, val_angles=[0, 10, 45]).get_parsed_content("validate#prepare_batch")
    assert turned.spatial_dims == DIMS[name] and len(turned) == (3 if DIMS[name] == 2 else 7)
    assert _parser(name, val_angles=[0, 10, 45]).get_parsed_content("train_settings")["val_angles"] == [0, 10, 45]
    evaluation = _parser(name, "train.json", "evaluate.json", val_angles=[0, 10, 45], val_metric="auc_acc")
    assert evaluation.get_parsed_content("validate#prepare_batch") is default_prepare_batch
    assert list(evaluation.get_parsed_content("validate#key_metric")) == ["test_auc"]  # test metrics unchanged


@pytest.mark.parametrize("name", sorted(DIMS))
def test_val_metric_is_the_key_metric_that_picks_the_checkpoint(name):
    default = _parser(name)
    assert default["val_metric"] == "auc"
    assert list(default.get_parsed_content("validate#key_metric")) == ["val_auc"]
    assert list(default.get_parsed_content("validate#additional_metrics")) == ["val_acc"]
    both = _parser(name, val_metric="auc_acc")
    assert list(both.get_parsed_content("validate#key_metric")) == ["val_auc_acc"]
    assert list(both.get_parsed_content("validate#additional_metrics")) == ["val_auc", "val_acc"]
    assert both["validate"]["evaluator"]["key_val_metric"].replace("::", "#") == "@validate#key_metric"
    assert "key_metric_name" in both["validate"]["best_model_saver"]["score_function"]  # the saver ranks by it


def test_schedules():
    lrs = {}
    for name in ("step", "cosine"):
        opt = build_optimizer("sgd", [torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        sched = build_lr_scheduler(name, opt, epochs=8)
        lrs[name] = []
        for _ in range(8):
            lrs[name].append(opt.param_groups[0]["lr"])
            opt.step(), sched.step()
    assert lrs["step"] == pytest.approx([0.02] * 4 + [0.002] * 2 + [0.0002] * 2)
    cosine = [1e-6 + (0.02 - 1e-6) * (1 + math.cos(math.pi * e / 8)) / 2 for e in range(8)]
    assert lrs["cosine"] == pytest.approx(cosine)


_EMA_BATCHES = [{"image": torch.randn(5, 3)} for _ in range(6)]


def _ema_run(decay: float) -> tuple[torch.nn.Module, WeightEMA, list[dict[str, torch.Tensor]], Engine]:
    """A Linear + BatchNorm network trained 6 SGD steps by an ignite engine with ``WeightEMA`` attached, then one
    validation run; the network's state before the first step and after every step is recorded."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    average = WeightEMA(network, decay, loader=_EMA_BATCHES)
    states = [{k: v.clone() for k, v in average.network.state_dict().items()}]
    opt = torch.optim.SGD(network.parameters(), lr=0.5)

    def step(engine, batch):
        opt.zero_grad()
        network(batch["image"]).pow(2).sum().backward()
        opt.step()
        states.append({k: v.detach().clone() for k, v in network.state_dict().items()})

    trainer, validator = Engine(step), Engine(lambda engine, batch: None)
    average.attach(trainer, validator)
    trainer.run(_EMA_BATCHES, max_epochs=1)
    validator.run([0], max_epochs=1)
    return network, average, states, validator


def test_weight_average_averages_the_weights_and_measures_batchnorm_statistics_before_validation():
    network, average, (start, *states), _ = _ema_run(0.5)
    assert average.network is not network and len(states) == 6
    expected = {k: start[k].clone() for k in ("0.weight", "0.bias", "1.weight", "1.bias")}  # starts as the network
    for state in states:
        for k in expected:
            expected[k] = 0.5 * expected[k] + 0.5 * state[k]
    got = average.network.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got["0.weight"], states[-1]["0.weight"])  # and not the last step's network
    # the statistics: the mean over the loader's batches of each batch's mean and (unbiased) variance of the averaged
    # weights' features, neither the network's running statistics nor an average of them
    features = [batch["image"] @ expected["0.weight"].T + expected["0.bias"] for batch in _EMA_BATCHES]
    torch.testing.assert_close(got["1.running_mean"], torch.stack([f.mean(0) for f in features]).mean(0))
    torch.testing.assert_close(got["1.running_var"], torch.stack([f.var(0) for f in features]).mean(0))
    assert not torch.allclose(got["1.running_mean"], states[-1]["1.running_mean"])
    assert network[1].momentum == average.network[1].momentum == 0.1 and int(states[-1]["1.num_batches_tracked"]) == 6
    assert average.state_dict().keys() == got.keys()
    # a resumed run restores the copy from the checkpoint's state
    other = WeightEMA(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), 0.5)
    other.load_state_dict(average.state_dict())
    assert all(torch.equal(other.network.state_dict()[k], got[k]) for k in got)
    with pytest.raises(ValueError, match=r"written without a weight average; resume with the --ema_decay"):
        other.load_state_dict({})


def test_weight_average_off_is_the_network_itself():
    network, average, (start, *states), validator = _ema_run(0.0)
    assert average.network is network and average.handler is None and average.state_dict() == {}
    assert all(torch.equal(network.state_dict()[k], states[-1][k]) for k in states[-1])  # no statistics pass either
    assert not validator.has_event_handler(average.measure_statistics, Events.STARTED)
    average.load_state_dict({})
    with pytest.raises(ValueError, match=r"written with a weight average; .* \(this run: 0.0\)"):
        average.load_state_dict({"0.weight": torch.zeros(4, 3)})
    for bad in (1.0, -0.1, True, "0.99"):
        expected = r"\(bundle override --ema_decay\), got " + repr(bad).replace(".", r"\.")
        with pytest.raises(ValueError, match=expected):
            WeightEMA(network, bad)


@pytest.mark.parametrize("name", sorted(DIMS))
def test_ema_decay_reaches_the_validator_the_best_checkpoint_and_the_resumable_state(name, tmp_path):
    """With ``--ema_decay`` the checkpoint is chosen on the averaged copy and model.pt holds it; off by default."""
    default = _parser(name)
    assert default["ema_decay"] == 0.0 and default.get_parsed_content("train_settings")["ema_decay"] == 0.0
    for decay in (0.0, 0.99):
        parser = _parser(name, ema_decay=decay, bundle_root=str(tmp_path), ckpt_dir=str(tmp_path / "runs"))
        parser["validate#dataloader"] = parser["train#dataloader"] = []  # no data read: only the wiring is checked
        network, average = parser.get_parsed_content("network"), parser.get_parsed_content("train#weight_average")
        assert average.decay == decay and (average.network is network) == (decay == 0)
        assert parser.get_parsed_content("validate#evaluator").network is average.network
        assert parser.get_parsed_content("validate#best_model_saver").to_save["model"] is average.network
        assert parser.get_parsed_content("train#checkpoint_state")["weight_average"] is average
        assert parser.get_parsed_content("train#checkpoint_state")["model"] is network  # resume trains the network
        # the evaluation scores the network its CheckpointLoader fills, never a copy made before the loading
        evaluation = _parser(name, "train.json", "evaluate.json", ema_decay=decay, bundle_root=str(tmp_path))
        evaluation["validate#dataloader"] = evaluation["train#dataloader"] = []
        evaluation["eval_ckpt_path"] = str(tmp_path / "model.pt")  # not read: the loader runs when the evaluator does
        evaluator = evaluation.get_parsed_content("validate#evaluator")
        assert evaluator.network is evaluation.get_parsed_content("network")


@pytest.mark.parametrize("override,value", [("augmentation", "rotate"), ("optimizer", "rmsprop"),
                                            ("lr_schedule", "linear")])
def test_bad_values_name_the_override(override, value):
    parser = _parser("sre_medmnist_2d", **{override: value})
    key = {"augmentation": "train#preprocessing", "optimizer": "train#optimizer", "lr_schedule": "lr_scheduler"}
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content(key[override])
    # MONAI wraps it ("Failed to instantiate component ..."); the cause, printed below it, names the override
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, ValueError):
        error = error.__cause__
    assert error is not None and f"--{override}" in str(error) and repr(value) in str(error)
    with pytest.raises(ValueError, match="spatial_dims 2 or 3"):
        training_augmentation("standard", 1, 28)


@pytest.mark.slow
@pytest.mark.parametrize("name,augmentation", [("sre_medmnist_2d", "standard"), ("sre_medmnist_3d", "rotation")])
def test_bundle_trains_with_the_paper_recipe(tmp_path, name, augmentation):
    """A real ``monai.bundle run training`` with SGD, the cosine schedule and augmentation: their state is saved."""
    bundle = _bundle(tmp_path, name)
    assert TINY[name][:2] == ["--epochs", "1"]
    _run(bundle, "run", "training", "--config_file", "configs/train.json", *TINY[name][2:8], "--epochs", "2",
         "--optimizer", "sgd", "--lr_schedule", "cosine", "--learning_rate", "0.02", "--weight_decay", "0.001",
         "--augmentation", augmentation)  # fmt: skip
    final = torch.load(bundle / "runs" / "default" / "model_final.pt", weights_only=True)  # the run folder
    group = final["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"], group["initial_lr"]) == (0.9, 0.001, 0.02)
    assert all("momentum_buffer" in s for s in final["optimizer"]["state"].values())  # SGD's state, not Adam's
    assert (final["lr_scheduler"]["T_max"], final["lr_scheduler"]["eta_min"]) == (2, 1e-6)
    assert final["lr_scheduler"]["last_epoch"] == 2 and group["lr"] == pytest.approx(1e-6)
    # SGD trained the band weights stored times 1/sqrt(taps); the checkpoint says so, and a network built with the
    # inference config (band_scale "none") computes the same function from it
    state = final["model"]
    served = _parser(name).get_parsed_content("network_def")
    trained = _parser(name, optimizer="sgd").get_parsed_content("network_def")
    expected = band_scale(torch.tensor(trained.conv1.band_sizes)).float()
    assert torch.equal(state["conv1.band_scale"], expected) and not torch.equal(expected, torch.ones_like(expected))
    served.load_state_dict(state)
    trained.load_state_dict(state)
    x = torch.rand(2, *([1] + [28] * DIMS[name]))
    with torch.no_grad():
        torch.testing.assert_close(served.eval()(x), trained.eval()(x), rtol=1e-4, atol=1e-5)
    assert {m.band_scale_mode for m in served.modules() if isinstance(m, SREConv)} == {"none"}
