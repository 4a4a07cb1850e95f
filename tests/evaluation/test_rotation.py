# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation-robustness evaluation: transform sets, direction and exactness, metrics rows, CSV, JSON and plot."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import struct

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.transforms import Rotate
from torch import nn

from monai_sre.evaluation import read_csv, read_metrics, rows_from_csv
from monai_sre.evaluation.rotation import (
    AXIS_PLANES,
    CSV_FIELDS,
    VARIANTS,
    cube_rotations,
    evaluate_rotations,
    inscribed_mask,
    plot_robustness,
    rotate,
    rotation_transforms,
    run_rotation_evaluation,
    summarize,
    write_csv,
)


def test_default_2d_set():
    specs = rotation_transforms(2)
    assert len(specs) == 38
    angles = [s for s in specs if s.kind == "angle"]
    assert [s.angle for s in angles] == [float(a) for a in range(0, 360, 10)]
    assert [s.name for s in angles][:3] == ["rot_000", "rot_010", "rot_020"] and angles[-1].name == "rot_350"
    flips = [s for s in specs if s.kind == "flip"]
    assert [(s.name, s.axis, s.angle) for s in flips] == [("flip_vertical", "x", None), ("flip_horizontal", "y", None)]
    assert len({s.name for s in specs}) == len(specs)


def test_default_3d_set():
    specs = rotation_transforms(3)
    assert len(specs) == 63
    for axis in "xyz":
        rows = [s for s in specs if s.kind == "angle" and s.axis == axis]
        assert [s.angle for s in rows] == [float(a) for a in range(0, 360, 30)]
        assert rows[1].name == f"rot_{axis}_030"
    assert sum(s.kind == "cube" for s in specs) == 24
    assert [s.name for s in specs if s.kind == "flip"] == ["flip_x", "flip_y", "flip_z"]
    assert len({s.name for s in specs}) == len(specs)
    custom = rotation_transforms(3, angles=[0, 45], axes=("z",), include_cube=False, include_flips=False)
    assert [s.name for s in custom] == ["rot_z_000", "rot_z_045"]
    with pytest.raises(ValueError, match="axes must be distinct names"):
        rotation_transforms(3, axes=("w",))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        rotation_transforms(2, interpolation="bicubic")


def test_positive_angle_turns_first_axis_towards_second():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 5, 3] = 1  # two rows below the centre (3, 3)
    for mode in ("bilinear", "nearest"):
        y = rotate(x, 90, mode=mode, exact_quarter_turns=False)
        assert torch.nonzero(y[0, 0] > 0.5).tolist() == [[3, 5]]  # now two columns right of it, as np.rot90 does
    np.testing.assert_array_equal(rotate(x, 90).numpy(), np.rot90(x.numpy(), 1, axes=(2, 3)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_quarter_turns_equal_rot90(spatial_dims):
    torch.manual_seed(0)
    x = torch.rand(3, 2, *([9] * spatial_dims))
    planes = [(0, 1)] if spatial_dims == 2 else list(AXIS_PLANES.values())
    for plane, k in itertools.product(planes, (1, 2, 3)):
        expected = torch.rot90(x, k, dims=(2 + plane[0], 2 + plane[1]))
        resampled = rotate(x, 90 * k, plane, mode="nearest", exact_quarter_turns=False)
        assert torch.equal(resampled, expected)  # grid_sample lands on voxel centres: nearest is exact
        bilinear = rotate(x, 90 * k, plane, mode="bilinear", exact_quarter_turns=False)
        torch.testing.assert_close(bilinear, expected, atol=1e-5, rtol=0)
        assert torch.equal(rotate(x, 90 * k, plane), expected)  # the default takes the exact path
    spec_names = {s.name: s for s in rotation_transforms(spatial_dims)}
    name = "rot_090" if spatial_dims == 2 else "rot_z_090"
    assert torch.equal(spec_names[name](x), torch.rot90(x, 1, dims=(2, 3)))


def test_batched_rotation_matches_monai_rotate_2d():
    torch.manual_seed(1)
    x = torch.rand(4, 3, 28, 20)  # not square: the normalised grid must scale each axis by its own size
    for mode, angle in itertools.product(("bilinear", "nearest"), (10.0, 37.0, 90.0, 200.0, 350.0)):
        ours = rotate(x, angle, mode=mode)
        ref = torch.stack([Rotate(-math.radians(angle), padding_mode="zeros", mode=mode)(img) for img in x])
        torch.testing.assert_close(ours, ref.as_tensor(), atol=2e-5, rtol=0)
    # zero fill: the corners of a constant image rotated by 45 degrees are empty, the centre is kept
    ones = rotate(torch.ones(1, 1, 28, 28), 45.0)
    assert ones[0, 0, 0, 0] == 0 and ones[0, 0, 14, 14] == pytest.approx(1.0)
    # other fills, as MONAI's: "border" repeats the edge (a constant image stays constant), "reflection" mirrors it
    for padding in ("border", "reflection"):
        ones = torch.ones(1, 1, 28, 28)
        torch.testing.assert_close(rotate(ones, 45.0, padding_mode=padding), ones)
        ref = torch.stack([Rotate(-math.radians(37.0), padding_mode=padding)(img) for img in x])
        torch.testing.assert_close(rotate(x, 37.0, padding_mode=padding), ref.as_tensor(), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="padding_mode must be one of zeros, border, reflection, got 'wrap'"):
        rotate(x, 37.0, padding_mode="wrap")


def test_batched_rotation_matches_monai_rotate_3d():
    torch.manual_seed(2)
    x = torch.rand(2, 1, 12, 10, 14)
    for axis, index in (("x", 0), ("y", 1), ("z", 2)):
        for angle in (30.0, 90.0, 250.0):
            radians = [0.0, 0.0, 0.0]
            radians[index] = -math.radians(angle)
            ref = torch.stack([Rotate(radians, padding_mode="zeros")(img) for img in x])
            ours = rotate(x, angle, AXIS_PLANES[axis])
            torch.testing.assert_close(ours, ref.as_tensor(), atol=2e-5, rtol=0)


def _moves_as_matrix(spec, spatial_dims: int, size: int = 7) -> bool:
    """Whether each unit voxel offset from the centre goes where ``spec.matrix`` says."""
    c = size // 2
    for offset in itertools.chain(np.eye(spatial_dims, dtype=int), 2 * np.eye(spatial_dims, dtype=int)[:1]):
        x = torch.zeros(1, 1, *([size] * spatial_dims))
        x[(0, 0, *(c + offset))] = 1
        target = c + spec.matrix @ offset
        found = torch.nonzero(spec(x)[0, 0] > 0.5).tolist()
        if found != [np.round(target).astype(int).tolist()]:
            return False
    return True


def test_matrices_describe_the_transforms():
    for spec in rotation_transforms(2) + rotation_transforms(3):
        if spec.kind != "angle" or spec.angle % 90 == 0:
            assert _moves_as_matrix(spec, spec.matrix.shape[0]), spec.name
    flipped = rotation_transforms(2)[-1]
    assert flipped.name == "flip_horizontal"
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert flipped(x)[0, 0].tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]  # columns mirrored


def test_cube_rotations_are_the_rotation_group():
    specs = cube_rotations()
    matrices = [s.matrix for s in specs]
    keys = {m.tobytes() for m in matrices}
    assert len(specs) == 24 and len(keys) == 24
    for m in matrices:
        np.testing.assert_array_equal(m @ m.T, np.eye(3))
        assert round(np.linalg.det(m)) == 1  # proper rotations, no reflections
    for a, b in itertools.product(matrices, repeat=2):
        assert (a @ b).tobytes() in keys  # closed under composition
    assert sorted(s.angle for s in specs) == [0.0] + [90.0] * 6 + [120.0] * 8 + [180.0] * 9
    torch.manual_seed(3)
    x = torch.rand(1, 1, 5, 5, 5)
    outputs = {s(x).numpy().tobytes() for s in specs}
    assert len(outputs) == 24  # 24 different images, not only 24 different names
    for spec in specs:
        assert _moves_as_matrix(spec, 3, size=5), spec.name


class _PooledPointwise(nn.Module):
    """A 1x1 conv then global average pooling: exactly invariant to rot90 and flips (up to summation order)."""

    def __init__(self, spatial_dims: int, in_channels: int = 1, classes: int = 3) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, 8, 1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(2).mean(-1))


class _Corner(nn.Module):
    """Reads three segments of the first image row only: as far from invariant as a classifier gets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = x[:, 0, 0] if x.ndim == 4 else x[:, 0, 0, 0]
        return torch.stack([row[:, :3].mean(1), row[:, 3:-3].mean(1), row[:, -3:].mean(1)], 1)


def _first_row(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0, 0] if images.ndim == 4 else images[:, 0, 0, 0]


def _data(n: int = 48, spatial_dims: int = 2, size: int = 12):
    """Random images, labels 0, 1, 2 in turn; the label also brightens its segment of the first row (see _Corner)."""
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, *([size] * spatial_dims), generator=g)
    segments = (slice(0, 3), slice(3, size - 3), slice(size - 3, size))
    for i, label in enumerate(labels.tolist()):
        _first_row(images)[i, segments[label]] += 5
    return images, labels


def test_invariant_model_scores_the_same_at_quarter_turns():
    torch.manual_seed(5)
    images, labels = _data()
    rows = evaluate_rotations(_PooledPointwise(2), (images, labels), "multi-class", 2, progress=False, batch_size=16)
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == [s.name for s in rotation_transforms(2)]
    assert all(r["n"] == 48 for r in rows)
    ref = by_name["rot_000"]
    for name in ("rot_090", "rot_180", "rot_270", "flip_vertical", "flip_horizontal"):
        assert by_name[name]["acc"] == ref["acc"]
        assert by_name[name]["auc"] == pytest.approx(ref["auc"], abs=1e-9)
    # The same rows for a model that is not invariant differ: the transforms really reach the network.
    corner = evaluate_rotations(_Corner(), (images, labels), "multi-class", 2, progress=False)
    corner = {r["name"]: r for r in corner}
    assert corner["rot_000"]["acc"] > 0.9
    assert corner["rot_090"]["acc"] < 0.8 and corner["rot_180"]["acc"] < 0.8


def test_invariant_3d_model_and_loader_input():
    torch.manual_seed(6)
    images, labels = _data(n=12, spatial_dims=3, size=7)
    model = _PooledPointwise(3)
    model.train()
    loader = DataLoader([{"image": x, "label": y} for x, y in zip(images, labels, strict=True)], batch_size=5)
    specs = rotation_transforms(3, angles=[0, 90, 45], include_flips=True)
    rows = evaluate_rotations(model, loader, "multi-class", 3, transforms=specs, progress=False)
    assert model.training  # eval mode only while evaluating
    assert rows == evaluate_rotations(model, (images, labels), "multi-class", 3, transforms=specs, progress=False)
    exact = [r for r in rows if r["kind"] in ("cube", "flip") or r["angle"] in (0.0, 90.0)]
    assert len(exact) == 3 * 2 + 24 + 3
    assert {r["acc"] for r in exact} == {rows[0]["acc"]}
    with pytest.raises(ValueError, match="2 spatial dims"):
        evaluate_rotations(model, (images, labels), "multi-class", 2, progress=False)


def _rows(acc, auc, names=None, kinds=None, axes=None, angles=None):
    n = len(acc)
    names = names or [f"r{i}" for i in range(n)]
    kinds = kinds or ["angle"] * n
    axes = axes or [""] * n
    angles = angles or [10.0 * i for i in range(n)]
    return [
        {"name": a, "kind": k, "axis": x, "angle": g, "acc": c, "auc": u, "n": 10}
        for a, k, x, g, c, u in zip(names, kinds, axes, angles, acc, auc, strict=True)
    ]


def test_summarize_hand_made():
    rows = _rows(
        [0.9, 0.7, 0.5, 0.8, 0.6],
        [0.95, 0.85, 0.75, 0.9, float("nan")],
        names=["rot_000", "rot_090", "rot_180", "flip_vertical", "flip_horizontal"],
        kinds=["angle", "angle", "angle", "flip", "flip"],
        angles=[0.0, 90.0, 180.0, None, None],
    )
    s = summarize(rows)
    assert s["n_transforms"] == 5 and s["acc_0"] == 0.9 and s["auc_0"] == 0.95
    assert s["rotation"]["mean_acc"] == pytest.approx(0.6)  # the turned copies only: 90° and 180°
    assert s["rotation"]["mean_auc"] == pytest.approx(0.8)
    assert s["rotation"]["worst"] == {"name": "rot_180", "axis": "", "angle": 180.0, "acc": 0.5, "auc": 0.75}
    assert s["rotation"]["drop_acc"] == pytest.approx(0.3)
    assert s["rotation"]["worst_drop_acc"] == pytest.approx(0.4)
    assert s["flip"] == {"n": 2, "mean_acc": pytest.approx(0.7), "mean_auc": pytest.approx(0.9), "min_acc": 0.6}
    assert "cube" not in s and "per_axis" not in s
    s3 = summarize(_rows([0.8, 0.6, 0.8, 0.4], [0.9] * 4, axes=["x", "x", "y", "y"], angles=[0.0, 30.0, 0.0, 30.0]))
    assert s3["per_axis"]["x"]["mean_acc"] == pytest.approx(0.6)
    assert s3["per_axis"]["y"]["mean_acc"] == pytest.approx(0.4)
    assert s3["rotation"]["worst"]["axis"] == "y"
    # the 0° row of every axis is the same upright set: none of them counts in the mean
    assert s3["rotation"]["mean_acc"] == pytest.approx(0.5) and s3["rotation"]["drop_acc"] == pytest.approx(0.3)
    above = summarize(_rows([0.6, 0.7, 0.8], [0.9] * 3, angles=[0.0, 10.0, 20.0]))["rotation"]
    assert above["worst"]["angle"] == 10.0 and above["worst_drop_acc"] == pytest.approx(-0.1)  # the worst turned copy
    upright_only = summarize(_rows([0.8], [0.9], angles=[0.0]))["rotation"]
    assert upright_only["mean_acc"] == 0.8 and upright_only["drop_acc"] == 0.0 and upright_only["first_angle"] is None
    with pytest.raises(ValueError, match="no 'angle' rotations"):
        summarize(_rows([0.5], [0.5], kinds=["flip"]))


def test_write_csv(tmp_path):
    rows = _rows([0.9, 0.5], [0.8, float("nan")], kinds=["angle", "flip"], angles=[0.0, None])
    path = write_csv(rows, tmp_path / "sub" / "rot.csv")
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == list(CSV_FIELDS)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file for the user, not a private temp
    assert len(table) == 3
    assert table[1] == ["r0", "angle", "", "0.0", "0.9", "0.8", "10", "full"]  # rows without a variant: full
    assert float(table[2][4]) == 0.5 and math.isnan(float(table[2][5])) and table[2][3] == ""
    before = path.read_bytes()
    with pytest.raises(ValueError, match="row 0 lacks"):
        write_csv([{"name": "x"}], path)
    assert path.read_bytes() == before  # a failed write leaves the old file whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["rot.csv"]  # no temporary left behind


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_overlays_models(tmp_path):
    a = _rows([0.9, 0.8, 0.7], [0.9, 0.85, 0.8], angles=[0.0, 90.0, 180.0])
    b = _rows([0.8, 0.5, 0.4], [0.85, 0.6, 0.5], angles=[0.0, 90.0, 180.0])
    fig = plot_robustness({"sre": a, "resnet": b}, tmp_path / "plot.png", title="test")
    ax_acc, ax_auc = fig.axes
    assert len(ax_acc.get_lines()) == 2 and len(ax_auc.get_lines()) == 2
    assert [line.get_label() for line in ax_auc.get_lines()] == ["sre", "resnet"]
    assert list(ax_acc.get_lines()[1].get_xdata()) == [0.0, 90.0, 180.0, 360.0]  # the turn closes at 360
    assert list(ax_acc.get_lines()[1].get_ydata()) == [0.8, 0.5, 0.4, 0.8]
    assert ax_acc.get_xlim() == (0, 360) and ax_acc.get_ylim() == (0, 1)
    assert "degrees" in ax_acc.get_xlabel() and ax_acc.get_ylabel() == "ACC"
    width, height = _png_size(tmp_path / "plot.png")
    assert width >= 800 and height >= 300
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    three_d = _rows([0.9] * 4, [0.9] * 4, axes=["x", "x", "y", "z"], angles=[0.0, 30.0, 0.0, 0.0])
    fig3 = plot_robustness({"m1": three_d, "m2": three_d})
    assert len(fig3.axes[0].get_lines()) == 6  # 2 models x 3 axes


def test_run_rotation_evaluation_writes_report(tmp_path):
    torch.manual_seed(7)
    images, labels = _data(n=24)
    models = {"pooled": _PooledPointwise(2), "corner": _Corner()}
    summaries = run_rotation_evaluation(models, (images, labels), "multi-class", 2, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rotation_corner.csv",
        "rotation_pooled.csv",
        "rotation_robustness.png",
        "rotation_summary.json",
    ]
    with open(tmp_path / "rotation_corner.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 38 + 2 * 36 and rows[9]["name"] == "rot_090" and float(rows[9]["angle"]) == 90.0
    assert [r["variant"] for r in rows] == ["full"] * 38 + ["disk"] * 36 + ["control"] * 36  # all three by default
    report = json.loads((tmp_path / "rotation_summary.json").read_text())
    assert report["interpolation"] == "bilinear" and report["spatial_dims"] == 2
    assert report["variants"] == list(VARIANTS)
    for variant in ("disk", "control"):
        block = report["models"]["corner"][variant]
        variant_rows = [r for r in rows if r["variant"] == variant]
        assert block["n"] == 36 and block["acc_0"] == pytest.approx(float(variant_rows[0]["acc"]))
        assert block["mean_acc"] == pytest.approx(np.mean([float(r["acc"]) for r in variant_rows[1:]]))  # not 0°
        assert block["worst"]["acc"] == pytest.approx(min(float(r["acc"]) for r in variant_rows[1:]))
    assert report["models"]["corner"]["acc_0"] == pytest.approx(float(rows[0]["acc"]))
    assert report["models"]["pooled"] == json.loads(json.dumps(summaries["pooled"]))
    turned = [r for r in rows if r["kind"] == "angle" and r["variant"] == "full" and float(r["angle"]) != 0]
    assert summaries["corner"]["rotation"]["mean_acc"] == pytest.approx(np.mean([float(r["acc"]) for r in turned]))
    for name in models:  # the CSV read back gives the summary written beside it, exactly
        assert summarize(read_csv(tmp_path / f"rotation_{name}.csv")) == summaries[name]
    old_report = [",".join(CSV_FIELDS[:-1]), "rot_000,angle,,0.0,0.5,,4", "rot_090,angle,,90.0,0.25,0.5,4"]
    assert rows_from_csv(old_report) == [  # a report of before the variants: every row full, an empty AUC NaN
        {"name": "rot_000", "kind": "angle", "axis": "", "angle": 0.0, "acc": 0.5, "auc": pytest.approx(float("nan"),
         nan_ok=True), "n": 4, "variant": "full"},
        {"name": "rot_090", "kind": "angle", "axis": "", "angle": 90.0, "acc": 0.25, "auc": 0.5, "n": 4,
         "variant": "full"},
    ]  # fmt: skip
    (tmp_path / "wrong.csv").write_text("name,acc\nrot_000,0.5\n")
    with pytest.raises(ValueError, match=r"wrong\.csv: header must be"):
        read_csv(tmp_path / "wrong.csv")
    (tmp_path / "bad.csv").write_text(",".join(CSV_FIELDS) + "\nrot_000,angle,,0.0,high,0.5,3,full\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: .*expected numbers"):
        read_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="model names"):
        run_rotation_evaluation({"a/b": _Corner()}, (images, labels), "multi-class", 2, tmp_path, progress=False)
    # only the rotated set: the report of before the variants (38 rows, no disk/control blocks)
    run_rotation_evaluation({"corner": _Corner()}, (images, labels), "multi-class", 2, tmp_path / "full",
                            progress=False, variants=("full",))  # fmt: skip
    with open(tmp_path / "full" / "rotation_corner.csv", newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == [r["name"] for r in rows[:38]]
    only_full = json.loads((tmp_path / "full" / "rotation_summary.json").read_text())
    assert only_full["variants"] == ["full"] and "disk" not in only_full["models"]["corner"]
    assert only_full["models"]["corner"]["rotation"] == report["models"]["corner"]["rotation"]


# ------------------------------------------------------------------ variants: inscribed disk, turn-and-back control
def test_inscribed_mask():
    assert inscribed_mask((5, 5)).int().tolist() == [
        [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]
    ]  # fmt: skip
    for shape in ((28, 28), (64, 64), (28, 28, 28), (9, 9, 9)):
        mask = inscribed_mask(shape)
        assert mask.shape == shape and mask.dtype == torch.bool
        for dims in [(0, 1)] + ([(1, 2), (0, 2)] if len(shape) == 3 else []):
            assert torch.equal(mask, mask.rot90(1, dims)) and torch.equal(mask, mask.flip(dims[0]))
    assert abs(int(inscribed_mask((28, 28)).sum()) - math.pi * 13.5**2) < 30  # about pi r^2, r = 13.5 at 28 px
    assert abs(int(inscribed_mask((28, 28, 28)).sum()) - 4 / 3 * math.pi * 13.5**3) < 300
    disk = inscribed_mask((28, 28))
    assert not disk[0, 0] and not disk[0, 13] and disk[1, 13] and disk[13, 1] and disk[13, 13]
    wide = inscribed_mask((6, 10))  # the disk of the smaller side, centred
    assert torch.equal(wide[:, 2:8], inscribed_mask((6, 6))) and not wide[:, :2].any() and not wide[:, 8:].any()
    with pytest.raises(ValueError, match="2 or 3 positive sizes"):
        inscribed_mask((5,))


def test_variant_specs_2d():
    specs = rotation_transforms(2, variants=VARIANTS)
    assert len(specs) == 38 + 2 * 36 and len({s.name for s in specs}) == len(specs)
    assert [s.variant for s in specs] == ["full"] * 38 + ["disk"] * 36 + ["control"] * 36
    by_name = {s.name: s for s in specs}
    assert (by_name["rot_030_control"].kind, by_name["rot_030_control"].angle) == ("angle", 30.0)
    torch.manual_seed(0)
    x = torch.rand(3, 2, 28, 28)
    mask = inscribed_mask((28, 28))
    assert torch.equal(by_name["rot_000_disk"](x), x * mask)  # the disk's 0° is the masked upright image
    assert torch.equal(by_name["rot_030_disk"](x), by_name["rot_030"](x) * mask)
    assert torch.equal(by_name["rot_090_disk"](x), torch.rot90(x, 1, (2, 3)) * mask)  # quarter turns stay exact
    for angle in ("000", "090", "180", "270"):
        assert torch.equal(by_name[f"rot_{angle}_control"](x), x)  # turned and back exactly: the upright set
    turned_back = by_name["rot_030_control"](x)
    assert torch.equal(turned_back, rotate(rotate(x, 30.0), -30.0))
    # the orientation is kept: close to x inside the disk (blurred twice), unlike the rotated image; corners lost
    err_back = (turned_back - x)[..., mask].abs().mean()
    err_turned = (by_name["rot_030"](x) - x)[..., mask].abs().mean()
    assert err_back < 0.6 * err_turned
    assert (turned_back[..., 0, 0] == 0).all() and (turned_back[..., 14, 14] != 0).all()
    assert np.array_equal(by_name["rot_030_control"].matrix, np.eye(2))
    assert np.array_equal(by_name["rot_030_disk"].matrix, by_name["rot_030"].matrix)
    assert [s.variant for s in rotation_transforms(2, variants=("control", "full"))].count("disk") == 0
    for bad in (("disk",), ("full", "blur"), ("full", "full")):
        with pytest.raises(ValueError, match="variants must be distinct names"):
            rotation_transforms(2, variants=bad)


def test_variant_specs_3d_turn_about_the_rotation_axis():
    specs = rotation_transforms(3, angles=[0, 45], include_cube=False, include_flips=False, variants=VARIANTS)
    assert [s.name for s in specs][-6:] == [f"rot_{a}_{g}_control" for a in "xyz" for g in ("000", "045")]
    by_name = {s.name: s for s in specs}
    torch.manual_seed(1)
    x = torch.rand(2, 1, 9, 9, 9)
    for axis, plane in AXIS_PLANES.items():
        back = rotate(rotate(x, 45.0, plane), -45.0, plane)
        assert torch.equal(by_name[f"rot_{axis}_045_control"](x), back)
        assert torch.equal(by_name[f"rot_{axis}_000_control"](x), x)
        assert torch.equal(by_name[f"rot_{axis}_045_disk"](x), rotate(x, 45.0, plane) * inscribed_mask((9, 9, 9)))
    # about x only the (y, z) plane is resampled: a volume constant along x stays constant along x
    slab = torch.rand(1, 1, 1, 9, 9).expand(1, 1, 9, 9, 9).contiguous()
    out = by_name["rot_x_045_control"](slab)
    assert torch.allclose(out, out[:, :, :1].expand_as(out)) and not torch.allclose(out, slab)


class _Mean(nn.Module):
    """Logits from the image mean only (above or below ``threshold``): blind to orientation and to fine detail."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1) - self.threshold
        return torch.stack([-m, m], 1) * 100


def test_control_of_a_mean_model_is_close_to_upright_and_disk_masks_upright_too():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(64) % 2
    level = 0.42 + 0.16 * labels.float() + 0.1 * (torch.rand(64, generator=g) - 0.5)  # label 1: brighter
    # a smooth object inside the inscribed disk: interpolation keeps its mean, nearly
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    bump = torch.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 40)
    images = (level[:, None, None] * bump)[:, None]
    model = _Mean(0.5 * float(bump.mean()))
    specs = rotation_transforms(2, angles=range(0, 360, 30), variants=VARIANTS)
    rows = evaluate_rotations(model, (images, labels), "binary-class", 2, specs, progress=False)
    by_name = {r["name"]: r for r in rows}
    summary = summarize(rows)
    assert by_name["rot_000_control"] == {**by_name["rot_000"], "name": "rot_000_control", "variant": "control"}
    assert summary["control"]["acc_0"] == summary["acc_0"] == 1.0  # the control's 0° is the upright set, exactly
    assert summary["control"]["worst"]["acc"] >= 0.98 and summary["rotation"]["worst"]["acc"] >= 0.98
    # the same model on flat images whose corners carry their level: the disk's 0° row is the masked upright set
    flat = level[:, None, None, None].expand(64, 1, 28, 28)
    model = _Mean(0.5)
    rows = evaluate_rotations(model, (flat, labels), "binary-class", 2, specs, progress=False)
    summary = summarize(rows)
    masked = flat * inscribed_mask((28, 28))
    expected = evaluate_rotations(model, (masked, labels), "binary-class", 2, specs[:1], progress=False)[0]["acc"]
    assert summary["disk"]["acc_0"] == expected == 0.5 and summary["acc_0"] == 1.0  # masking darkened every image
    # losing the corners is what the control measures here: turned 30° and back, the flat images darken too
    assert {r["name"]: r for r in rows}["rot_030_control"]["acc"] < 0.8


def test_summary_variants_of_an_invariant_model():
    torch.manual_seed(5)
    images, labels = _data(size=12)
    specs = rotation_transforms(2, angles=[0, 30, 90, 180], variants=VARIANTS)
    rows = evaluate_rotations(_PooledPointwise(2), (images, labels), "multi-class", 2, specs, progress=False)
    by_name = {r["name"]: r for r in rows}
    assert [r["variant"] for r in rows] == ["full"] * 6 + ["disk"] * 4 + ["control"] * 4
    for angle in ("090", "180"):  # exact turns: the disk and the control rows repeat their 0° rows
        assert by_name[f"rot_{angle}_disk"]["auc"] == pytest.approx(by_name["rot_000_disk"]["auc"], abs=1e-12)
        assert by_name[f"rot_{angle}_control"]["auc"] == by_name["rot_000"]["auc"]
    summary = summarize(rows)
    assert summary["disk"]["acc_0"] == by_name["rot_000_disk"]["acc"]
    assert summary["control"]["acc_0"] == by_name["rot_000"]["acc"] and summary["control"]["n"] == 4
    assert summary["rotation"]["n"] == 4 and summary["n_transforms"] == 14  # variants stay out of the headline
    assert summary["rotation"]["first_angle"]["name"] == "rot_030"
    assert summary["disk"]["first_angle"]["drop_acc"] == pytest.approx(
        by_name["rot_000_disk"]["acc"] - by_name["rot_030_disk"]["acc"]
    )
    assert summary["control"]["drop_acc"] == pytest.approx(
        by_name["rot_000"]["acc"] - np.mean([by_name[f"rot_{a}_control"]["acc"] for a in ("030", "090", "180")])
    )


def test_plot_has_a_row_of_panels_per_variant(tmp_path):
    rows = [
        {**r, "variant": v, "name": f"{r['name']}_{v}"}
        for v in VARIANTS
        for r in _rows([0.9, 0.8, 0.7], [0.9, 0.85, 0.8], angles=[0.0, 90.0, 180.0])
    ]
    other = [{**r, "acc": r["acc"] - 0.1} for r in rows]
    fig = plot_robustness({"sre": rows, "resnet": other}, tmp_path / "plot.png")
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "ACC: rotated test set" and "disk" in titles[2] and "control" in titles[5]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    # one legend below the panels names the models, so none covers a curve
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["sre", "resnet"]
    many = plot_robustness({f"m{i}": rows[:3] for i in range(11)})  # more models than the 10 default colours
    assert len({tuple(line.get_color()) for line in many.axes[0].get_lines()}) == 11
    assert list(fig.axes[2].get_lines()[1].get_ydata()) == pytest.approx([0.8, 0.7, 0.6, 0.8])
    width, height = _png_size(tmp_path / "plot.png")
    assert height > 2.5 * 300 and width >= 800
    assert len(plot_robustness({"sre": rows[:3]}).axes) == 2  # only the full rows: one row of panels


def test_read_metrics_reads_monai_metrics_saver_files(tmp_path):
    """The file MONAI's MetricsSaver writes reads back as name -> float; a malformed line names file and line."""
    from monai.handlers.utils import write_metrics_reports

    write_metrics_reports(tmp_path, None, {"test_auc": 0.8125, "test_acc": 0.75}, None, None)
    assert read_metrics(tmp_path / "metrics.csv") == {"test_auc": 0.8125, "test_acc": 0.75}
    assert list(read_metrics(tmp_path / "metrics.csv")) == ["test_auc", "test_acc"]
    (tmp_path / "bad.csv").write_text("test_auc,0.8\ntest_acc,high\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: expected 'name,value'"):
        read_metrics(tmp_path / "bad.csv")
    (tmp_path / "nocomma.csv").write_text("test_auc 0.8\n")
    with pytest.raises(ValueError, match=r"nocomma\.csv, line 1"):
        read_metrics(tmp_path / "nocomma.csv")
