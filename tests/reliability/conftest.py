# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The 2D bundle's tiny training runs that the resume and determinism tests compare, run once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.bundle_runs import TINY, Finished, Job, copy_bundle, load_checkpoints, run_jobs

EPOCHS = 3  # 3 iterations per epoch at the tiny settings
PAUSE_AT_ITERATION = 5  # the middle of epoch 2


@dataclass
class Runs2D:
    """Finished runs of the 2D bundle, all with the same seed and settings.

    Attributes:
        runs: ``reference`` and ``repeat`` (uninterrupted), ``killed_mid_epoch`` (SIGKILL at iteration 5) and
            ``killed_in_save`` (SIGKILL half-way through writing epoch 2's resumable checkpoint), then
            ``resumed_mid_epoch`` and ``resumed_after_save`` (``--resume true`` in the killed runs' folders).
        after_kill: the ``runs/default/`` checkpoints each killed run left, read before the resumed runs started.
    """

    runs: dict[str, Finished]
    after_kill: dict[str, dict[str, Any]]


@pytest.fixture(scope="session")
def runs_2d(tmp_path_factory: pytest.TempPathFactory) -> Runs2D:
    tmp = tmp_path_factory.mktemp("runs_2d")
    opts = ["--epochs", str(EPOCHS), *TINY["sre_medmnist_2d"]]
    bundles = {name: copy_bundle(tmp, "sre_medmnist_2d", name) for name in ("reference", "repeat", "mid", "save")}
    first = run_jobs(
        {
            "reference": Job(bundles["reference"], opts),
            "repeat": Job(bundles["repeat"], opts),
            "killed_mid_epoch": Job(bundles["mid"], opts, {"pause_at_iteration": PAUSE_AT_ITERATION}),
            "killed_in_save": Job(bundles["save"], opts, {"kill_in_save": 2, "kill_save_kind": "last"}),
        },
        parallel=4,
    )
    after_kill = {name: _readable(bundles[b]) for name, b in (("killed_mid_epoch", "mid"), ("killed_in_save", "save"))}
    second = run_jobs(
        {
            "resumed_mid_epoch": Job(bundles["mid"], [*opts, "--resume", "true"]),
            "resumed_after_save": Job(bundles["save"], [*opts, "--resume", "true"]),
        }
    )
    return Runs2D({**first, **second}, after_kill)


def _readable(bundle: Path) -> dict[str, Any]:
    """What a killed run left in ``runs/default/``: every file, and the ``*.pt`` ones loaded (weights_only)."""
    files = sorted(p.name for p in (bundle / "runs" / "default").iterdir())
    return {"files": files, "checkpoints": load_checkpoints(bundle)}
