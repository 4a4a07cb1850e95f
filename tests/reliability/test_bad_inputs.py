# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The bad-input matrix: every entry point (CLI, bundle overrides, Python API) against what PACS exports and users give.

Each case expects one error line that names the input and says what was expected, a non-zero exit (CLI and bundles),
no traceback on the CLI unless ``--debug``, and nothing written that a later run would trust.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser

from monai_sre import SREConv2d, SREConv3d
from monai_sre.cli import main
from monai_sre.data import ExportError, MedMNISTChecksumError, export_medmnist, load_datalist, load_split
from monai_sre.evaluation import run_rotation_evaluation
from monai_sre.inference import DicomSeriesReader, load_bundle, predict, write_predictions
from monai_sre.io.checkpoints import check_checkpoint
from monai_sre.recipes import medmnist_classifier
from tests.inference.clinical_data import make_bundle
from tests.reliability.bad_inputs import make_bad_inputs
from tests.reliability.bundle_runs import REPO, TINY, Job, copy_bundle, run_jobs

# --------------------------------------------------------------------------------------------------------------
# Shared inputs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything the cases point at (built once per module)."""

    root: Path
    bad: dict[str, Path]
    bundle3d: Path  # tiny 3D bundle, 1 channel, 2 classes
    bundle2d: Path  # tiny 2D bundle, 3 channels, 2 classes
    other_arch_ckpt: Path  # a 3-class network's weights: another architecture for both bundles
    truncated_ckpt: Path
    text_ckpt: Path
    blocker: Path  # a file where a folder is needed
    data_root: Path  # the real MedMNIST files
    corrupt_root: Path  # a data root whose breastmnist.npz is cut in half
    eval_bundle: Path  # train.json with a fixed 1-channel 2D network, flag breastmnist
    eval_ckpt: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Inputs:
    root = tmp_path_factory.mktemp("bad_inputs")
    bundle3d = make_bundle(root / "b3", spatial_dims=3)
    other = make_bundle(root / "b3_three_classes", spatial_dims=3, class_names=("a", "b", "c"))
    raw = (bundle3d / "models" / "model.pt").read_bytes()
    (root / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (root / "text.pt").write_text("weights: see the wiki")
    (root / "blocker").write_text("a file, not a folder")
    corrupt_root = root / "corrupt_root"
    corrupt_root.mkdir()
    npz = (data_root / "breastmnist.npz").read_bytes()
    (corrupt_root / "breastmnist.npz").write_bytes(npz[: len(npz) // 2])
    eval_bundle = root / "eval_bundle"
    (eval_bundle / "configs").mkdir(parents=True)
    net_def = {"_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
               "block_inplanes": [4, 4, 8, 8], "spatial_dims": 2, "n_input_channels": 1, "num_classes": 2,
               "conv1_t_size": 3, "no_max_pool": True}  # fmt: skip
    # the 2D bundle's training config (datalist, validation transforms) with a small network of fixed channels
    config = json.loads((REPO / "bundles" / "sre_medmnist_2d" / "configs" / "train.json").read_text())
    config.update({"network_def": net_def, "dataset_dir": str(root / "eval_data")})
    (eval_bundle / "configs" / "train.json").write_text(json.dumps(config))
    torch.save(ConfigParser({"net": net_def}).get_parsed_content("net").state_dict(), root / "eval.pt")
    return Inputs(
        root=root,
        bad=make_bad_inputs(root / "files"),
        bundle3d=bundle3d,
        bundle2d=make_bundle(root / "b2", spatial_dims=2, in_channels=3, nested_checkpoint=True),
        other_arch_ckpt=other / "models" / "model.pt",
        truncated_ckpt=root / "truncated.pt",
        text_ckpt=root / "text.pt",
        blocker=root / "blocker",
        data_root=data_root,
        corrupt_root=corrupt_root,
        eval_bundle=eval_bundle,
        eval_ckpt=root / "eval.pt",
    )


def _one_clear_line(message: str, *phrases: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"


# --------------------------------------------------------------------------------------------------------------
# Clinical inputs: one result row per input (predict never raises for one bad input), CLI exit code 1
# --------------------------------------------------------------------------------------------------------------

# (case, spatial dims of the bundle, phrases the error must hold besides the input's path)
PER_INPUT = [
    ("corrupt_nifti", 3, ["not a gzip file"]),
    ("corrupt_nifti_header", 3, ["Cannot work out file type"]),
    ("truncated_nifti_gz", 3, ["Compressed file ended before the end-of-stream marker"]),
    ("truncated_nifti", 3, ["Expected 42240 bytes, got 1000 bytes", "damaged"]),
    ("empty_file", 3, ["Empty file"]),
    ("dicom_without_pixels", 3, ["no pixel data", "expected an image file"]),
    ("dicom_rle_claimed", 3, ["cannot decode its pixel data", "RLE Lossless (1.2.840.10008.1.2.5)"]),
    ("dicom_unknown_syntax", 3, ["cannot decode its pixel data", "1.2.840.99999.9.9.9, unknown to pydicom"]),
    ("dicom_truncated", 3, ["the pixel data holds 27906 bytes, less than the 32768 that Rows x Columns"]),
    ("dicom_pixels_longer", 3, ["the pixel data holds 32768 bytes, more than the 16384",
                                "(64 x 128 x 1 x 1 x 16 bits)", "its header does not describe its pixels"]),
    ("dicom_pixels_shorter", 3, ["the pixel data holds 32768 bytes, less than the 65536"]),
    ("mixed_modality", 3, ["have different modalities (CT in slice_0000.dcm, slice_0001.dcm, slice_0003.dcm and 1 "
                           "more; MR in slice_0002.dcm, slice_0004.dcm)", "expected one modality per series"]),
    ("constant_volume", 3, ["every voxel has the value 0", "nothing to classify"]),
    ("constant_slice", 2, ["every voxel has the value 117", "nothing to classify"]),
    ("mixed_orientation", 3, ["slices have different orientations", "not one volume"]),
    ("uneven_slice_spacing", 3, ["uneven slice spacing", "missing slice"]),
    ("inconsistent_pixel_spacing", 3, ["slices differ in PixelSpacing", "[0.5, 0.5]"]),
    ("nan_voxels", 3, ["NaN or infinite"]),
    ("inf_voxels", 3, ["10560 voxel value(s) are NaN or infinite"]),
    ("zero_size", 3, ["no voxels", "expected a non-empty image"]),
    ("huge_spacing", 3, ["resampling [20, 22, 24] voxels of [500.0, 500.0, 500.0] mm", "more than 1073741824",
                         "expected a plausible voxel spacing"]),
    ("rgba_voxels", 3, ["cannot read the image", "expected a readable NIfTI or DICOM image"]),
    ("one_d", 3, ["a 1D signal", "the model takes 3D volumes"]),
    ("four_d", 3, ["a 4D NIfTI image", "holding 3 volumes", "the model takes one 3D image"]),
    ("five_channels", 2, ["holding 5 volumes", "the model takes one 2D image"]),
    ("good_slice", 3, ["a 2D image (shape (28, 28))", "the model takes 3D volumes"]),
    ("good_volume", 2, ["a 3D volume (shape (20, 22, 24))", "the model takes 2D images"]),
    ("not_an_image", 3, ["not a NIfTI (.nii, .nii.gz) or DICOM file"]),
    ("missing", 3, ["no such file or folder"]),
    ("empty_folder", 3, ["no NIfTI or DICOM image found"]),
]


@pytest.fixture(scope="module")
def predicted(inputs: Inputs) -> dict[str, dict[str, Any]]:
    """``predict`` (the Python API) over every per-input case, one call per bundle: ``{case: row}``."""
    rows = {}
    for dims, bundle in ((3, inputs.bundle3d), (2, inputs.bundle2d)):
        cases = [c for c, d, _ in PER_INPUT if d == dims]
        results = predict([inputs.bad[c] for c in cases], bundle)
        assert len(results) == len(cases)
        rows.update(zip(cases, results, strict=True))
    return rows


@pytest.mark.parametrize("case,dims,phrases", PER_INPUT, ids=[c[0] for c in PER_INPUT])
def test_predict_api_reports_each_bad_input_in_its_row(inputs, predicted, case, dims, phrases):
    row = predicted[case]
    assert row["path"] == str(inputs.bad[case])
    assert row["status"] == "error" and row["pred_index"] is None and row["pred_label"] is None
    _one_clear_line(row["error"], str(inputs.bad[case]), *phrases)


def test_predict_cli_reports_every_bad_input_and_exits_1(inputs, tmp_path, capsys):
    cases = [c for c, d, _ in PER_INPUT if d == 3]
    out = tmp_path / "predictions.csv"
    code = main(["predict", *(str(inputs.bad[c]) for c in cases), "--bundle", str(inputs.bundle3d),
                 "--output", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.out + captured.err
    errors = [ln for ln in captured.out.splitlines() if ln.startswith("error")]
    assert len(errors) == len(cases)
    for case, line in zip(cases, errors, strict=True):
        assert line.startswith("error  ") and str(inputs.bad[case]) in line
    assert f"{len(cases)} input(s): 0 predicted, {len(cases)} failed" in captured.err
    report = out.read_text().splitlines()  # a faithful report: every row says it failed
    assert len(report) == len(cases) + 1 and all(",error," in ln for ln in report[1:])


def test_a_folder_mixing_series_gives_one_result_per_series_never_a_merged_volume(inputs):
    rows = predict([inputs.bad["mixed_series"]], inputs.bundle3d)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert len({r["series_uid"] for r in rows}) == 2
    assert sorted(r["original_shape"] for r in rows) == [[16, 16, 4], [16, 16, 6]]
    files = sorted(str(f) for f in inputs.bad["mixed_series"].iterdir())
    with pytest.raises(ValueError, match=r"a_slice_0000.dcm: the files belong to 2 series"):
        DicomSeriesReader().read(files)  # the files of two series are never read as one


# --------------------------------------------------------------------------------------------------------------
# CLI: exit code 2, one line `monai-sre <command>: error: ...`, nothing written
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CliCase:
    """``argv(inputs, out)`` runs a command whose output is ``out``; the error must hold ``phrases(inputs, out)``."""

    name: str
    argv: Callable[[Inputs, Path], list[str]]
    phrases: Callable[[Inputs, Path], list[str]]


def _eval(i: Inputs, out: Path, *extra: str, checkpoint: Path | None = None, bundle: Path | None = None) -> list[str]:
    return ["evaluate-rotation", "--bundle", str(bundle or i.eval_bundle), "--checkpoint",
            str(checkpoint or i.eval_ckpt), "--out", str(out), "--data-root", str(i.data_root), "--limit", "4",
            "--no-progress", *extra]  # fmt: skip


def _predict(i: Inputs, out: Path, *extra: str) -> list[str]:
    return ["predict", str(i.bad["good_volume"]), "--bundle", str(i.bundle3d), "--output", str(out), *extra]


def _prepare(i: Inputs, out: Path, *extra: str) -> list[str]:
    return ["prepare-data", "--out", str(out), "--no-progress", "--no-download", *extra]


CLI_CASES = [
    CliCase("prepare-data unknown flag", lambda i, o: _prepare(i, o, "--flag", "nosuchmnist"),
            lambda i, o: ["unknown MedMNIST flag 'nosuchmnist'", "valid flags: ", "breastmnist"]),
    CliCase("prepare-data size not released", lambda i, o: _prepare(i, o, "--flag", "adrenalmnist3d", "--size", "128"),
            lambda i, o: ["adrenalmnist3d has no size 128", "available sizes: 28, 64"]),
    CliCase("prepare-data unwritable output", lambda i, o: _prepare(i, i.blocker / "out", "--flag", "breastmnist"),
            lambda i, o: ["cannot write to output folder", str(i.blocker / "out")]),
    CliCase("prepare-data truncated npz",
            lambda i, o: _prepare(i, o, "--flag", "breastmnist", "--data-root", str(i.corrupt_root)),
            lambda i, o: [str(i.corrupt_root / "breastmnist.npz"), "expects 750601b1f35ba3300ea97c75c52ff8f6"]),
    CliCase("prepare-data missing npz offline",
            lambda i, o: _prepare(i, o, "--flag", "retinamnist", "--data-root", str(i.corrupt_root)),
            lambda i, o: ["retinamnist.npz", "downloading is disabled", "bd4c0672f1bba3e3a89f0e4e876791e4"]),
    CliCase("prepare-data limit 0", lambda i, o: _prepare(i, o, "--flag", "breastmnist", "--limit", "0"),
            lambda i, o: ["limit must be a positive integer", "got 0"]),
    CliCase("predict checkpoint of another architecture",
            lambda i, o: _predict(i, o, "--checkpoint", str(i.other_arch_ckpt)),
            lambda i, o: [str(i.other_arch_ckpt), "does not fit the ResNet of this configuration", "fc.weight"]),
    CliCase("predict truncated checkpoint", lambda i, o: _predict(i, o, "--checkpoint", str(i.truncated_ckpt)),
            lambda i, o: [str(i.truncated_ckpt), "not a readable PyTorch checkpoint"]),
    CliCase("predict text file as checkpoint", lambda i, o: _predict(i, o, "--checkpoint", str(i.text_ckpt)),
            lambda i, o: [str(i.text_ckpt), "not a readable PyTorch checkpoint"]),
    CliCase("predict unwritable output", lambda i, o: _predict(i, i.blocker / "out.csv"),
            lambda i, o: ["--output", str(i.blocker / "out.csv"), f"({i.blocker} is not a folder)"]),
    CliCase("predict output neither csv nor json", lambda i, o: _predict(i, o.with_suffix(".xlsx")),
            lambda i, o: [str(o.with_suffix(".xlsx")), "must end in .csv or .json"]),
    CliCase("predict missing bundle",
            lambda i, o: ["predict", str(i.bad["good_volume"]), "--bundle", str(i.root / "nobundle")],
            lambda i, o: [str(i.root / "nobundle"), "metadata.json not found"]),
    CliCase("predict zero spacing", lambda i, o: _predict(i, o, "--spacing", "0"),
            lambda i, o: [str(i.bundle3d), "spacing must be positive"]),
    CliCase("evaluate-rotation checkpoint of another architecture",
            lambda i, o: _eval(i, o, checkpoint=i.other_arch_ckpt),
            lambda i, o: [str(i.other_arch_ckpt), "does not fit the ResNet of this configuration"]),
    CliCase("evaluate-rotation truncated checkpoint", lambda i, o: _eval(i, o, checkpoint=i.truncated_ckpt),
            lambda i, o: [str(i.truncated_ckpt), "not a readable PyTorch checkpoint"]),
    CliCase("evaluate-rotation unwritable output", lambda i, o: _eval(i, i.blocker / "report"),
            lambda i, o: ["--out", str(i.blocker / "report"), f"({i.blocker} is not a folder)"]),
    CliCase("evaluate-rotation wrong channels", lambda i, o: _eval(i, o, "--flag", "retinamnist"),
            lambda i, o: ["model 'eval'", "images of shape (4, 3, 28, 28) (3 channel(s), 2D)", "expected input"]),
    CliCase("evaluate-rotation wrong dimensionality", lambda i, o: _eval(i, o, "--flag", "adrenalmnist3d"),
            lambda i, o: ["adrenalmnist3d is a 3D dataset and this bundle is 2D"]),
    CliCase("evaluate-rotation 3D flag for the 2D bundle",
            lambda i, o: _eval(i, o, "--flag", "adrenalmnist3d", "--set", "widen_factor=0.0625",
                               bundle=REPO / "bundles" / "sre_medmnist_2d"),
            lambda i, o: ["adrenalmnist3d is a 3D dataset and this bundle is 2D"]),
    CliCase("evaluate-rotation limit 0", lambda i, o: _eval(i, o, "--limit", "0"),
            lambda i, o: ["--limit must be a positive number", "got 0"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_bad_input_gives_one_line_exit_2_and_writes_nothing(inputs, tmp_path, capsys, case):
    out = tmp_path / "out" / "result.csv" if case.name.startswith("predict") else tmp_path / "out"
    blocker_text = inputs.blocker.read_text()
    code = main(case.argv(inputs, out))
    captured = capsys.readouterr()
    assert code == 2
    command = case.argv(inputs, out)[0]
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("monai-sre")]
    assert len(lines) == 1 and lines[0].startswith(f"monai-sre {command}: error: "), captured.err
    _one_clear_line(lines[0], *case.phrases(inputs, out))
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "out").exists()  # no report, export or predictions file
    assert inputs.blocker.read_text() == blocker_text


def test_cli_process_shows_no_traceback_unless_debug(inputs):
    argv = ["predict", str(inputs.bad["good_volume"]), "--bundle", str(inputs.bundle3d), "--checkpoint",
            str(inputs.truncated_ckpt)]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "monai_sre.cli", *argv], capture_output=True, text=True, timeout=300,
                          cwd=REPO)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert errors == [errors[0]] and errors[0].startswith("monai-sre predict: error: checkpoint ")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):  # --debug: the exception itself
        main(["--debug", *argv])


# --------------------------------------------------------------------------------------------------------------
# Python API: exceptions of a documented type naming the input; nothing written
# --------------------------------------------------------------------------------------------------------------


def _datalist(i: Inputs, tmp: Path, **edit: Any) -> Path:
    """An export of 4 training samples whose datalist gets ``edit``: {"item": (index, key, value)} or raw text."""
    path = export_medmnist("breastmnist", tmp / "data", root=i.data_root, progress=False, limit=4)
    if "text" in edit:
        path.write_text(edit["text"])
    elif "item" in edit:
        datalist = json.loads(path.read_text())
        index, key, value = edit["item"]
        datalist["training"][index][key] = value
        path.write_text(json.dumps(datalist))
    return path


def _rotation(x: torch.Tensor, y: torch.Tensor, spatial_dims: int = 2):
    def run(i: Inputs, tmp: Path):
        net = medmnist_classifier("sre", "resnet10", spatial_dims=2, in_channels=1, num_classes=2, widen_factor=0.0625)
        return run_rotation_evaluation(net, (x, y), "binary-class", spatial_dims, tmp / "out", progress=False,
                                       angles=[0, 90])  # fmt: skip

    return run


def _mismatched_checkpoint(i: Inputs, tmp: Path):
    net = medmnist_classifier("sre", "resnet10", spatial_dims=2, in_channels=1, num_classes=2, widen_factor=0.0625)
    wider = medmnist_classifier("sre", "resnet10", spatial_dims=2, in_channels=1, num_classes=2, widen_factor=0.125)
    torch.save({"model": wider.state_dict()}, tmp / "checkpoint_last.pt")
    return check_checkpoint(tmp / "checkpoint_last.pt", net)


API_CASES = [
    ("export_medmnist unknown flag", lambda i, t: export_medmnist("nosuchmnist", t / "out", root=i.data_root),
     ValueError, lambda i, t: ["'nosuchmnist'", "valid flags"]),
    ("export_medmnist unwritable output",
     lambda i, t: export_medmnist("breastmnist", i.blocker / "out", root=i.data_root, progress=False, limit=2),
     ExportError, lambda i, t: [str(i.blocker / "out"), "cannot write to output folder"]),
    ("load_split unknown split", lambda i, t: load_split("breastmnist", "training", root=i.data_root),
     ValueError, lambda i, t: ["unknown split 'training'", "valid splits: train, val, test"]),
    ("load_split truncated npz", lambda i, t: load_split("breastmnist", "train", root=i.corrupt_root),
     MedMNISTChecksumError, lambda i, t: [str(i.corrupt_root / "breastmnist.npz"), "750601b1f35ba3300ea97c75c52ff8f6"]),
    ("datalist naming a missing file",
     lambda i, t: load_datalist(_datalist(i, t, item=(2, "image", "train/gone.nii.gz")), "training", 2),
     FileNotFoundError, lambda i, t: [str(t / "data" / "datalist.json"), "item 2", "gone.nii.gz", "does not exist"]),
    ("datalist label out of range",
     lambda i, t: load_datalist(_datalist(i, t, item=(1, "label", 7)), "training", 2),
     ValueError, lambda i, t: [str(t / "data" / "datalist.json"), "item 1", "label 7", "class index in [0, 1]"]),
    ("datalist negative label", lambda i, t: load_datalist(_datalist(i, t, item=(0, "label", -1)), "training", 2),
     ValueError, lambda i, t: ["item 0", "label -1", "class index in [0, 1]"]),
    ("datalist multi-label of the wrong width",
     lambda i, t: load_datalist(_datalist(i, t, item=(0, "label", [1, 0])), "training", 3, multi_label=True),
     ValueError, lambda i, t: ["item 0", "label [1, 0]", "list of 3 0/1 flags"]),
    ("datalist not JSON", lambda i, t: load_datalist(_datalist(i, t, text="{training: ["), "training", 2),
     ValueError, lambda i, t: [str(t / "data" / "datalist.json"), "not valid JSON"]),
    ("datalist without the list", lambda i, t: load_datalist(_datalist(i, t), "testing", 2),
     ValueError, lambda i, t: [str(t / "data" / "datalist.json"), "'testing'"]),
    ("checkpoint of another architecture", _mismatched_checkpoint,
     ValueError, lambda i, t: [str(t / "checkpoint_last.pt"), "does not fit the SREResNet", "of other shapes"]),
    ("truncated checkpoint", lambda i, t: check_checkpoint(i.truncated_ckpt, torch.nn.Linear(2, 2)),
     ValueError, lambda i, t: [str(i.truncated_ckpt), "not a readable PyTorch checkpoint"]),
    ("missing checkpoint", lambda i, t: check_checkpoint(t / "none.pt", torch.nn.Linear(2, 2)),
     FileNotFoundError, lambda i, t: [str(t / "none.pt"), "not found"]),
    ("bundle with a checkpoint of another architecture",
     lambda i, t: load_bundle(i.bundle3d, checkpoint=i.other_arch_ckpt),
     ValueError, lambda i, t: [str(i.other_arch_ckpt), "does not fit the ResNet of this configuration"]),
    ("predictions to an unwritable path", lambda i, t: write_predictions([{"path": "a"}], i.blocker / "p.csv"),
     OSError, lambda i, t: [str(i.blocker / "p.csv"), "cannot create a file"]),
    ("rotation evaluation labels out of range", _rotation(torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 5, 0, 1, 0])),
     ValueError, lambda i, t: ["labels outside [0, 1]"]),
    ("rotation evaluation NaN images", _rotation(torch.full((6, 1, 28, 28), float("nan")), torch.zeros(6)),
     ValueError, lambda i, t: ["model 'model'", "NaN or infinite", "expected finite intensities"]),
    ("rotation evaluation wrong channels", _rotation(torch.rand(6, 3, 28, 28), torch.zeros(6)),
     ValueError, lambda i, t: ["model 'model'", "n_input_channels=1", "got shape [6, 3, 28, 28]"]),
    ("rotation evaluation wrong dimensionality", _rotation(torch.rand(6, 1, 28, 28, 28), torch.zeros(6), 3),
     ValueError, lambda i, t: ["model 'model'", "4 dims (batch, channels, 2 spatial)", "[6, 1, 28, 28, 28]"]),
    ("SRE convolution wrong channels", lambda i, t: SREConv2d(1, 4, 5)(torch.rand(2, 3, 16, 16)),
     ValueError, lambda i, t: ["in_channels=1", "got shape [2, 3, 16, 16]"]),
    ("SRE convolution wrong rank", lambda i, t: SREConv3d(1, 4, 5)(torch.rand(2, 1, 16, 16)),
     ValueError, lambda i, t: ["5 dims (batch, channels, 3 spatial)", "got shape [2, 1, 16, 16]"]),
    ("SRE-ResNet image too small",
     lambda i, t: medmnist_classifier("sre", "resnet10", widen_factor=0.0625)(torch.rand(1, 1, 3, 3)),
     ValueError, lambda i, t: ["input spatial shape [3, 3] is too small", "minimum size"]),
]  # fmt: skip


@pytest.mark.parametrize("name,call,error,phrases", API_CASES, ids=[c[0] for c in API_CASES])
def test_python_api_bad_input_raises_a_clear_error_and_writes_nothing(inputs, tmp_path, name, call, error, phrases):
    with pytest.raises(error) as caught:
        call(inputs, tmp_path)
    _one_clear_line(str(caught.value), *phrases(inputs, tmp_path))
    assert not (tmp_path / "out").exists()
    assert inputs.blocker.read_text() == "a file, not a folder"


# --------------------------------------------------------------------------------------------------------------
# Bundle overrides: `python -m monai.bundle run training` fails before training, naming the input
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BundleCase:
    name: str
    overrides: Callable[[Path, Path], list[str]]  # (bundle, shared data folder) -> overrides
    phrases: Callable[[Path, Path], list[str]]
    setup: Callable[[Path, Path], None] | None = None


def _wider_checkpoint(bundle: Path, data: Path) -> None:
    """A resumable checkpoint in the run folder of the network at widen_factor 0.125 (the runs use 0.0625)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"widen_factor": 0.125, "bundle_root": str(bundle)})
    net = parser.get_parsed_content("network_def")
    (bundle / "runs" / "default").mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, bundle / "runs" / "default" / "checkpoint_last.pt")


def _edited_datalist(data: Path, name: str, **edit: Any) -> Path:
    datalist = json.loads((data / "datalist.json").read_text())
    if "item" in edit:
        index, key, value = edit["item"]
        datalist["training"][index][key] = value
    (data / name).write_text(edit.get("text") or json.dumps(datalist))
    return data / name


FAST_BUNDLE_CASES = [
    BundleCase("resume from a checkpoint of another architecture",
               lambda b, d: ["--resume", "true"],
               lambda b, d: ["checkpoint_last.pt", "does not fit the SREResNet", "same architecture"],
               setup=_wider_checkpoint),
    BundleCase("datalist label out of range",
               lambda b, d: ["--datalist_file", str(_edited_datalist(d, "labels.json", item=(5, "label", 7)))],
               lambda b, d: [str(d / "labels.json"), "training item 5", "has label 7", "class index in [0, 1]"]),
    BundleCase("datalist naming a missing file",
               lambda b, d: ["--datalist_file", str(_edited_datalist(d, "gone.json", item=(3, "image", "x.nii.gz")))],
               lambda b, d: [str(d / "gone.json"), "training item 3", "x.nii.gz", "does not exist"]),
]  # fmt: skip

SLOW_BUNDLE_CASES = [
    BundleCase("resume without a checkpoint", lambda b, d: ["--resume", "true"],
               lambda b, d: ["checkpoint runs/default/checkpoint_last.pt not found"]),
    BundleCase("datalist not JSON",
               lambda b, d: ["--datalist_file", str(_edited_datalist(d, "broken.json", text="{\"training\": ["))],
               lambda b, d: [str(d / "broken.json"), "not valid JSON"]),
    BundleCase("unwritable checkpoint folder", lambda b, d: ["--ckpt_dir", str(d / "datalist.json" / "models")],
               lambda b, d: ["Not a directory", str(d / "datalist.json" / "models")]),
    BundleCase("unknown image format", lambda b, d: ["--image_format", "png"],
               lambda b, d: ["--image_format 'png' refused", "expected one of nifti, dicom"]),
]  # fmt: skip


def _run_bundle_cases(tmp: Path, data_root: Path, cases: list[BundleCase]) -> dict[str, tuple[Any, Path, Path]]:
    data = Path(export_medmnist("breastmnist", tmp / "data", root=data_root, progress=False, limit=24)).parent
    jobs, dirs = {}, {}
    for n, case in enumerate(cases):
        bundle = copy_bundle(tmp, "sre_medmnist_2d", f"case{n}")
        if case.setup:
            case.setup(bundle, data)
        run = bundle / "runs" / "default"
        before = {p.name: p.read_bytes() for p in run.glob("*")} if run.is_dir() else {}
        jobs[case.name] = Job(bundle, ["--epochs", "1", *TINY["sre_medmnist_2d"], *case.overrides(bundle, data)])
        dirs[case.name] = (bundle, before)
    finished = run_jobs(jobs, parallel=3)
    return {name: (finished[name], *dirs[name], data) for name in jobs}


@pytest.fixture(scope="module")
def fast_bundle_failures(tmp_path_factory, data_root):
    return _run_bundle_cases(tmp_path_factory.mktemp("bundle_cases"), data_root, FAST_BUNDLE_CASES)


@pytest.fixture(scope="module")
def slow_bundle_failures(tmp_path_factory, data_root):
    return _run_bundle_cases(tmp_path_factory.mktemp("slow_bundle_cases"), data_root, SLOW_BUNDLE_CASES)


def _check_bundle_failure(result, case: BundleCase) -> None:
    run, bundle, before, data = result
    assert run.returncode not in (0, -9), run.output[-3000:]
    _one_clear_line(run.last_error(), *case.phrases(bundle, data))
    assert run.epochs_trained() == []  # it failed before any training
    models = bundle / "runs" / "default"
    after = {p.name: p.read_bytes() for p in models.glob("*")} if models.is_dir() else {}
    assert after == before  # no checkpoint written or changed


@pytest.mark.parametrize("case", FAST_BUNDLE_CASES, ids=[c.name for c in FAST_BUNDLE_CASES])
def test_bundle_override_fails_before_training_naming_the_input(fast_bundle_failures, case):
    _check_bundle_failure(fast_bundle_failures[case.name], case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_BUNDLE_CASES, ids=[c.name for c in SLOW_BUNDLE_CASES])
def test_more_bundle_overrides_fail_before_training(slow_bundle_failures, case):
    _check_bundle_failure(slow_bundle_failures[case.name], case)
