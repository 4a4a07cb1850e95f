# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Support for the bundles in ``bundles/``: checks of their settings (:mod:`.settings`) and the rendering of their
configs from one shared recipe (:mod:`.configs`) and the end of a torchrun run (:mod:`.distributed`). Bundles name
these by full dotted path."""

from __future__ import annotations

from monai_sre.bundle.configs import format_json, render_bundle_configs
from monai_sre.bundle.distributed import end_distributed_run
from monai_sre.bundle.settings import CHECKS, BundleSettingError, as_bool, check_bundle_settings

__all__ = [
    "BundleSettingError",
    "CHECKS",
    "as_bool",
    "check_bundle_settings",
    "end_distributed_run",
    "format_json",
    "render_bundle_configs",
]
