# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The one checkpoint module: reading, DDP prefix, shipped-weight hashes, input contracts, promotion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from monai_sre.bundle import format_json
from monai_sre.cli import main
from monai_sre.inference import load_bundle
from monai_sre.io.checkpoints import (
    check_checkpoint,
    checkpoint_to_evaluate,
    file_sha256,
    load_weights,
    read_checkpoint,
)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "sre_medmnist_2d"


@pytest.fixture()
def bundle(tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("data", "eval", "runs", "docs", "*.ts", "*.onnx"))
    return root


def _trained(bundle: Path, seed: int = 0, **contract_changes) -> tuple[Path, dict]:
    """A run checkpoint as the bundle's training writes it: weights and input contract."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    torch.manual_seed(seed)
    state = parser.get_parsed_content("network_def").state_dict()
    contract = {**parser.get_parsed_content("input_contract").to_dict(), **contract_changes}
    path = bundle / "runs" / "default" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "input_contract": contract, "optimizer": {"lr": torch.tensor(1e-4)}}, path)
    return path, state


def test_read_checkpoint_formats(tmp_path):
    net = torch.nn.Linear(3, 2)
    flat, nested, ddp = tmp_path / "flat.pt", tmp_path / "nested.pt", tmp_path / "ddp.pt"
    torch.save(net.state_dict(), flat)
    torch.save({"model": net.state_dict(), "input_contract": {"image_size": 28}}, nested)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, ddp)
    for path in (flat, nested, ddp):
        checkpoint = read_checkpoint(path)
        assert sorted(checkpoint.state) == ["bias", "weight"] and checkpoint.sha256 == file_sha256(path)
    assert read_checkpoint(nested).contract == {"image_size": 28} and read_checkpoint(flat).contract is None
    target = torch.nn.Linear(3, 2)
    load_weights(target, ddp)
    torch.testing.assert_close(target.weight, net.weight)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt is not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"epoch": 3}, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="no_weights.pt holds no state dict"):
        read_checkpoint(tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="flat.pt does not fit the Linear"):
        check_checkpoint(flat, torch.nn.Linear(4, 2))
    with pytest.raises(FileNotFoundError, match="missing.pt not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_shipped_weights_whose_bytes_changed_are_refused(bundle, capsys):
    loaded = load_bundle(bundle)
    assert loaded.shipped and loaded.checkpoint_sha256 == file_sha256(bundle / "models" / "model.pt")
    raw = bytearray((bundle / "models" / "model.pt").read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = bytes(b ^ 0xFF for b in raw[middle : middle + 4096])  # 4 KiB of flipped bits
    (bundle / "models" / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model.pt: its SHA-256 .* differs from the .* recorded for the shipped"):
        load_bundle(bundle)
    image = next((Path(__file__).parent).glob("*.py"))  # predict refuses before reading any input
    assert main(["predict", str(image), "--bundle", str(bundle)]) == 2
    assert "recorded for the shipped weights" in capsys.readouterr().err


def test_checkpoint_of_another_contract_is_refused_naming_both(bundle):
    path, _ = _trained(bundle, image_size=64)
    with pytest.raises(ValueError, match=r"trained with input contract .*image_size: 64 in the checkpoint, 28 here"):
        load_bundle(bundle, checkpoint=path)


def test_training_runs_never_replace_the_shipped_weights_until_promoted(bundle, capsys):
    shipped = (bundle / "models" / "model.pt").read_bytes()
    assert checkpoint_to_evaluate(bundle / "runs" / "default", "model.pt", bundle).endswith("models/model.pt")
    run, state = _trained(bundle, seed=5)
    assert checkpoint_to_evaluate(bundle / "runs" / "default", "model.pt", bundle) == str(run)
    assert (bundle / "models" / "model.pt").read_bytes() == shipped
    with pytest.raises(FileNotFoundError, match="no model_resnet.pt in the run folder"):
        checkpoint_to_evaluate(bundle / "runs" / "default", "model_resnet.pt", bundle)
    loaded = load_bundle(bundle, checkpoint=run)
    assert not loaded.shipped and loaded.checkpoint == str(run)

    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["changelog"]["0.0.1"] = "AUC 0.9 \u00b1 0.1 at 10\u00b0"  # non-ASCII text, as real changelogs hold
    meta_file.write_text(format_json(meta))
    assert main(["promote", "--bundle", str(bundle), "--run", str(run.parent)]) == 0
    # the metadata stays in the model zoo's format (ASCII escapes), with the text unchanged
    text = meta_file.read_text()
    assert text == format_json(json.loads(text)) and "\\u00b1" in text
    assert json.loads(meta_file.read_text())["changelog"]["0.0.1"] == "AUC 0.9 \u00b1 0.1 at 10\u00b0"
    assert "promoted" in capsys.readouterr().out
    promoted = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert sorted(promoted) == sorted(state) and all(torch.equal(promoted[k], state[k]) for k in state)  # flat
    record = json.loads((bundle / "configs" / "metadata.json").read_text())["shipped_weights"]["models/model.pt"]
    assert record["sha256"] == file_sha256(bundle / "models" / "model.pt")
    assert record["promoted_from"] == "runs/default/model.pt" and record["input_contract"]["image_size"] == 28
    assert load_bundle(bundle).shipped
