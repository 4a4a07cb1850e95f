# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The README tells the truth: its usage example runs and its tables match what the code computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monai_sre import SREConv
from monai_sre.layers.rings import OUTSIDE, ring_index

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _table(marker: str) -> list[list[str]]:
    block = README.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    rows = [r.strip().strip("|").split("|") for r in block.strip().splitlines()[2:]]
    return [[c.strip() for c in r] for r in rows]


def test_usage_example_runs():
    code = re.search(r"## Usage\n\n```python\n(.*?)```", README, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})


def test_segmentation_example_runs():
    code = re.search(r"## Drop-in for MONAI's networks\n.*?```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["seg"].shape == (1, 3, 64, 64)
    from monai.bundle import ConfigParser

    assert ConfigParser(scope["config"]).get_parsed_content("network_def").__class__.__name__ == "BasicUNet"


def test_two_setup_commands_match_ci():
    ci_lines = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().splitlines()
    setup = re.search(r"## Set-up on a fresh machine.*?\n## ", README, re.S).group(0)
    main_job, test_command = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert test_command == 'pip install -e ".[test]" && python -m pytest -n 2'
    assert test_command in ci_lines  # CI runs the README's test command as written, as a line of its own
    assert main_job.startswith("pip install -e . && cd bundles/sre_medmnist_2d && ")
    assert "python -m monai.bundle run training --config_file configs/train.json" in main_job


def test_weights_table():
    rows = _table("weights-table")
    assert len(rows) == 5
    for kernel, dense, bands, inside, saving in rows:
        sizes = [int(k) for k in kernel.split("×")]
        dims, k = len(sizes), sizes[0]
        idx = ring_index(k, dims)
        layer = SREConv(dims, 1, 1, k, bias=False)
        assert int(dense) == k**dims
        assert int(bands) == layer.weight.numel() == k // 2 + 1
        assert int(inside) == int((idx != OUTSIDE).sum())
        assert float(saving.rstrip("×")) == pytest.approx(k**dims / (k // 2 + 1), abs=0.05)


def test_parameter_table():
    from monai.networks.nets import resnet

    import monai_sre

    rows = {r[0]: r[1:] for r in _table("params-table")}
    builders = {
        "SREResNet-18": monai_sre.sre_resnet18,
        "MONAI resnet18": resnet.resnet18,
        "SREResNet-50": monai_sre.sre_resnet50,
        "MONAI resnet50": resnet.resnet50,
    }
    assert set(rows) == set(builders)
    for name, build in builders.items():
        for dims, text in zip((2, 3), rows[name]):
            net = build(spatial_dims=dims, n_input_channels=1, num_classes=3)
            assert sum(p.numel() for p in net.parameters()) == int(text.replace(",", "")), (name, dims)
