# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MONAI's bundle export commands on the shipped trained checkpoints: TorchScript and ONNX match the checkpoint.

The commands are called in-process (``python -m monai.bundle <command>`` dispatches to these same functions); the
slow case runs the command line itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, onnx_export, verify_net_in_out
from monai.data import load_net_with_metadata

from monai_sre.data import iter_images

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
FLAGS = {"sre_medmnist_2d": "breastmnist", "sre_medmnist_3d": "adrenalmnist3d"}
RTOL, ATOL = 1e-4, 1e-5
# The README's onnx_export command passes these: named input/output and a dynamic batch dimension.
ONNX_CONVERTER_KWARGS = {
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}},
}
ONNX_CLI = repr(ONNX_CONVERTER_KWARGS)  # Python Fire reads the dict literal of the README command


def _files(name: str) -> dict[str, str]:
    bundle = BUNDLES / name
    return {
        "ckpt_file": str(bundle / "models" / "model.pt"),
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "config_file": str(bundle / "configs" / "inference.json"),
    }


def _checkpoint_network(name: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(_files(name)["config_file"])
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(_files(name)["ckpt_file"], map_location="cpu", weights_only=True))
    return net.eval()


def _real_inputs(name: str, data_root: Path, n: int = 3) -> torch.Tensor:
    """The first ``n`` MedMNIST test images of the bundle's dataset, scaled to [0, 1] as in training: (n, 1, ...)."""
    images = [image for _, image in iter_images(FLAGS[name], "test", root=data_root, stop=n)]
    return torch.as_tensor(np.stack(images)[:, None], dtype=torch.float32) / 255.0


def _reference(name: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _checkpoint_network(name)(x)


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_verify_net_in_out(name):
    files = _files(name)
    verify_net_in_out("network_def", meta_file=files["meta_file"], config_file=files["config_file"])
    meta = json.loads(Path(files["meta_file"]).read_text())["network_data_format"]
    with pytest.raises(ValueError, match="output channel number"):  # the check reads the metadata: it can fail
        verify_net_in_out("network_def", meta_file=files["meta_file"], config_file=files["config_file"],
                          num_classes=meta["outputs"]["pred"]["num_channels"] + 1)  # fmt: skip


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_torchscript_export_parity(tmp_path, data_root, name):
    files = _files(name)
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), **files)
    x = _real_inputs(name, data_root)
    expected = _reference(name, x)
    net, meta, extra = load_net_with_metadata(str(ts), more_extra_files=("inference.json",))
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=RTOL, atol=ATOL)
    assert meta["version"] == json.loads(Path(files["meta_file"]).read_text())["version"]
    assert json.loads(extra["inference.json"]) == json.loads(Path(files["config_file"]).read_text())


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_shipped_torchscript_matches_checkpoint(data_root, name):
    """``models/model.ts`` is the export of the shipped ``models/model.pt`` with the current ``inference.json``."""
    files = _files(name)
    net, meta, extra = load_net_with_metadata(str(BUNDLES / name / "models" / "model.ts"),
                                              more_extra_files=("inference.json",))  # fmt: skip
    x = _real_inputs(name, data_root)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _reference(name, x), rtol=RTOL, atol=ATOL)
    metadata = json.loads(Path(files["meta_file"]).read_text())
    assert {k: meta[k] for k in ("version", "network_data_format")} == {
        k: metadata[k] for k in ("version", "network_data_format")
    }
    assert json.loads(extra["inference.json"]) == json.loads(Path(files["config_file"]).read_text())


def _onnx_outputs(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.name == "image" and not isinstance(model_input.shape[0], int)  # a dynamic batch dimension
    (output,) = session.run(None, {"image": x.numpy()})  # the whole batch in one call
    return torch.as_tensor(output)


@pytest.mark.parametrize(
    "name", [pytest.param("sre_medmnist_2d", marks=pytest.mark.slow), "sre_medmnist_3d"]  # 40 s to 5 min per export
)
def test_onnx_export_parity(tmp_path, data_root, name):
    files = _files(name)
    path = tmp_path / "model.onnx"
    onnx_export("network_def", filepath=str(path), converter_kwargs=dict(ONNX_CONVERTER_KWARGS), **files)
    x = _real_inputs(name, data_root)
    torch.testing.assert_close(_onnx_outputs(path, x), _reference(name, x), rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_export_command_lines(tmp_path, data_root):
    """The documented commands, run from the bundle folder."""
    name = "sre_medmnist_2d"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file",
              "configs/inference.json"]  # fmt: skip
    onnx_args = ["--converter_kwargs", ONNX_CLI]
    exports = (("ckpt_export", tmp_path / "model.ts", []), ("onnx_export", tmp_path / "model.onnx", onnx_args))
    for command, out, extra in exports:
        cmd = [sys.executable, "-m", "monai.bundle", command, "network_def", "--filepath", str(out), *common, *extra]
        proc = subprocess.run(
            cmd, cwd=BUNDLES / name, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    x = _real_inputs(name, data_root)
    expected = _reference(name, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "model.ts"))(x), expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(_onnx_outputs(tmp_path / "model.onnx", x), expected, rtol=RTOL, atol=ATOL)
