# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The MONAI model zoo's own checks of a bundle, offline, for each bundle.

Reproduces ``ci/verify_bundle.py`` of Project-MONAI/model-zoo (required and preferred files, version and changelog,
``verify_metadata``, ``verify_net_in_out``) and its ``pretty-format-json`` pre-commit hook, plus the model zoo's
bundle conventions: the configs are the rendering of the shared recipe, the README has the zoo's sections. The
schema file cannot be downloaded here, so ``verify_metadata`` runs against a pre-placed schema holding the required
fields of ``meta_schema_20240725.json`` (MONAI's ``DEFAULT_METADATA`` keys; ``required_packages_version`` replaced
``optional_packages_version`` of the 20220324 schema). Export parity with a batch of 3 is in ``test_export.py``,
``check_properties()`` and the evaluate-only ``run`` in ``test_bundles.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata
from monai.bundle.utils import DEFAULT_METADATA

from monai_sre.bundle import format_json, render_bundle_configs
from tests.bundles.test_export import ONNX_CONVERTER_KWARGS

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
NAMES = ["sre_medmnist_2d", "sre_medmnist_3d"]
SCHEMA_NAME = "meta_schema_20240725.json"

# ci/verify_bundle.py: necessary_files_list + preferred_files_list; the rest are the zoo's conventions for a bundle
# with training, evaluation and multi-GPU configs.
REQUIRED_FILES = [
    "LICENSE",
    "configs/metadata.json",
    "models/model.pt",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/multi_gpu_evaluate.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
]
README_SECTIONS = [
    "Model Overview",
    "Data",
    "Training configuration",
    "Input/Output",
    "Performance",
    "MONAI Bundle Commands",
    "References",
    "License",
]
PACKAGES = ["monai-sre", "medmnist", "nibabel", "pydicom", "SimpleITK", "pytorch-ignite", "tensorboard", "fire",
            "matplotlib", "scikit-learn", "tqdm"]  # fmt: skip

_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "modality": {"type": "string"},
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array", "items": {"type": ["integer", "string"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": list(DEFAULT_METADATA),
    "properties": {
        "schema": {"type": "string"},
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "changelog": {"type": "object", "additionalProperties": {"type": "string"}},
        "monai_version": {"type": "string"},
        "pytorch_version": {"type": "string"},
        "numpy_version": {"type": "string"},
        "required_packages_version": {"type": "object", "additionalProperties": {"type": "string"}},
        "task": {"type": "string"},
        "description": {"type": "string"},
        "authors": {"type": "string"},
        "copyright": {"type": "string"},
        "eval_metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "references": {"type": "array", "items": {"type": "string"}},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "additionalProperties": _TENSOR},
                "outputs": {"type": "object", "additionalProperties": _TENSOR},
            },
        },
    },
}


def _metadata(name: str) -> dict:
    return json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())


def _place_schema(bundle_dir: Path) -> Path:
    """What the zoo's ``ci/prepare_schema.py`` does: the schema file at ``eval/schema.json``."""
    path = bundle_dir / "eval" / "schema.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(SCHEMA))
    return path


@pytest.mark.parametrize("name", NAMES)
def test_required_files(name):
    missing = [f for f in REQUIRED_FILES if not (BUNDLES / name / f).is_file()]
    assert not missing, missing
    assert not (BUNDLES / name / "scripts").exists()  # code lives in the package, named by full dotted path


@pytest.mark.parametrize("name", NAMES)
def test_metadata_schema_20240725(tmp_path, name):
    meta = _metadata(name)
    assert meta["schema"].endswith("/" + SCHEMA_NAME)
    assert "optional_packages_version" not in meta
    schema = _place_schema(tmp_path)
    verify_metadata(meta_file=str(BUNDLES / name / "configs" / "metadata.json"), filepath=str(schema))
    # the pre-placed schema is really applied: a metadata file without a required key fails
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in meta.items() if k != "required_packages_version"}))
    with pytest.raises(Exception, match="required_packages_version"):
        verify_metadata(meta_file=str(broken), filepath=str(schema))


@pytest.mark.parametrize("name", NAMES)
def test_version_and_changelog(name):
    """``verify_version_changes``: the version is in the changelog; versions only grow."""
    meta = _metadata(name)
    assert meta["version"] in meta["changelog"]
    versions = [tuple(map(int, v.split("."))) for v in meta["changelog"]]
    assert versions == sorted(versions, reverse=True) and versions[0] == tuple(map(int, meta["version"].split(".")))
    assert set(PACKAGES) <= set(meta["required_packages_version"])
    assert meta["required_packages_version"]["monai-sre"] == __import__("monai_sre").__version__


@pytest.mark.parametrize("name", NAMES)
def test_metadata_describes_the_network(name):
    """Logits with the full shape; the input shape of the default flag; eval_metrics are the model card's."""
    meta = _metadata(name)
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    parser = ConfigParser()
    parser.read_config(BUNDLES / name / "configs" / "inference.json")
    dims, size = parser.get_parsed_content("spatial_dims"), parser.get_parsed_content("image_size")
    assert image["spatial_shape"] == [size] * dims and image["num_channels"] == parser.get_parsed_content("in_channels")
    assert pred["type"] == "logits" and pred["value_range"] == []
    assert pred["spatial_shape"] == [1, pred["num_channels"]] == [1, parser.get_parsed_content("num_classes")]
    names = parser.get_parsed_content("class_names")
    assert [pred["channel_def"][str(i)] for i in range(pred["num_channels"])] == names
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(BUNDLES / name / "models" / "model.pt", map_location="cpu", weights_only=True))
    with torch.no_grad():
        out = net(torch.rand(2, image["num_channels"], *image["spatial_shape"]))
    assert out.shape == (2, pred["num_channels"]) and out.dtype == getattr(torch, pred["dtype"])
    assert out.min() < 0 or out.max() > 1 or not torch.allclose(out.sum(1), torch.ones(2))  # not probabilities
    metrics = meta["eval_metrics"]
    assert {"test_auc", "test_acc", "rotated_mean_acc"} <= set(metrics)
    assert all(isinstance(v, float) and 0.0 < v <= 1.0 for v in metrics.values())
    card = (BUNDLES / name / "docs" / "README.md").read_text()
    for key, value in metrics.items():
        assert f"{value:.3f}" in card, (key, value)  # the model card reports the same measured numbers


@pytest.mark.parametrize("name", NAMES)
def test_json_format_hook(name):
    """The zoo's ``pretty-format-json --autofix --no-sort-keys --indent=4`` would leave every JSON file as it is."""
    for path in sorted((BUNDLES / name).rglob("*.json")):
        text = path.read_text()
        assert text == format_json(json.loads(text)), f"{path} is not formatted as the model zoo requires"


def test_configs_are_the_rendered_recipe(tmp_path):
    """Each bundle's configs are ``bundles/shared`` plus its overlay: a recipe change is made once."""
    assert render_bundle_configs(BUNDLES / "shared", BUNDLES, check=True) == []
    # the check can fail: a hand edit in one bundle is reported
    copy = tmp_path / "bundles"
    for name in NAMES:
        (copy / name / "configs").mkdir(parents=True)
        for f in (BUNDLES / name / "configs").iterdir():
            (copy / name / "configs" / f.name).write_text(f.read_text())
        for rel in ("docs/data_license.txt", "LICENSE"):
            (copy / name / rel).parent.mkdir(exist_ok=True)
            (copy / name / rel).write_text((BUNDLES / name / rel).read_text())
    train = copy / "sre_medmnist_3d" / "configs" / "train.json"
    train.write_text(train.read_text().replace('"batch_size": 32', '"batch_size": 64'))
    assert render_bundle_configs(BUNDLES / "shared", copy, check=True) == [train]


@pytest.mark.parametrize("name", NAMES)
def test_config_shape(name):
    """initialize/run/finalize everywhere, the run ids of the README, one network definition, handlers by name."""
    configs = {p.name: json.loads(p.read_text()) for p in (BUNDLES / name / "configs").glob("*.json")}
    for config in ("train.json", "inference.json"):
        assert {"initialize", "run", "finalize"} <= set(configs[config]), config
        assert configs[config]["initialize"][0].startswith("$monai_sre.bundle.check_bundle_settings(")
    for config in ("evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json"):
        assert {"+initialize", "finalize"} <= set(configs[config]), config
    assert configs["train.json"]["run"] == "%training" and configs["evaluate.json"]["run"] == "%evaluating"
    assert configs["inference.json"]["inferring"] == "%run"
    assert configs["train.json"]["network_def"] == configs["inference.json"]["network_def"]
    assert configs["inference.json"]["dataset"]["transform"] == "@preprocessing"
    assert configs["inference.json"]["handlers"][0]["_target_"] == "CheckpointLoader"
    assert configs["inference.json"]["handlers"][0]["load_path"] == "@ckpt_path"
    assert "export_medmnist" not in configs["train.json"]["datalist_file"]  # resolving an id exports nothing
    assert any("export_medmnist" in step for step in configs["train.json"]["initialize"])
    text = json.dumps(configs)
    assert not re.search(r"handlers\[[-\d: ]+\]", text)  # no handler picked by position


@pytest.mark.parametrize("name", NAMES)
def test_readme_sections(name):
    card = (BUNDLES / name / "docs" / "README.md").read_text()
    headings = re.findall(r"^## (.+?)\s*$", card, flags=re.M)
    positions = [next((i for i, h in enumerate(headings) if h.startswith(s)), None) for s in README_SECTIONS]
    assert None not in positions, dict(zip(README_SECTIONS, positions))
    assert positions == sorted(positions)
    for command in ("run training", "run evaluating", "run inferring", "multi_gpu_evaluate.json", "onnx_export",
                    "ckpt_export", "verify_metadata"):  # fmt: skip
        assert command in card, command
    assert f'--converter_kwargs "{ONNX_CONVERTER_KWARGS!r}"' in card  # the dynamic batch that test_export checks
    for png in re.findall(r"\]\(([^)]+\.png)\)", card):
        assert (BUNDLES / name / "docs" / png).is_file(), png
