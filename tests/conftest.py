# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Test-wide settings: where the real MedMNIST files live and a small thread count for 2-core machines."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data" / "medmnist"

# The verified MedMNIST files sit beside the checkout (never inside it); an explicit setting wins.
os.environ.setdefault("MONAI_SRE_DATA_ROOT", str(DEFAULT_DATA_ROOT))
# Under pytest-xdist every worker gets one thread so that workers do not oversubscribe the 2 cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


# The `bench` extra's baselines, by import name. Tests marked `bench` need them.
BENCH_MODULES = {"SRE_Conv": "sre-conv", "GMR_Conv": "gmr-conv"}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``bench`` test, with the reason, when the ``bench`` extra is missing.

    With ``MONAI_SRE_REQUIRE_BENCH=1`` (``.ci/run``'s second step, after installing the extra) a missing baseline
    fails the test instead, so that those tests can never pass by being skipped where they are meant to run.
    """
    if item.get_closest_marker("bench") is None:
        return
    missing = [package for module, package in BENCH_MODULES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    reason = f"needs the bench extra: {', '.join(missing)} not installed (pip install \"monai-sre[bench]\")"
    if os.environ.get("MONAI_SRE_REQUIRE_BENCH") == "1":
        pytest.fail(f"MONAI_SRE_REQUIRE_BENCH=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding the official MedMNIST ``.npz`` files used by the tests."""
    root = Path(os.environ["MONAI_SRE_DATA_ROOT"])
    if not (root / "breastmnist.npz").is_file():
        raise FileNotFoundError(f"MedMNIST test data not found in {root}; set MONAI_SRE_DATA_ROOT to its folder")
    return root
