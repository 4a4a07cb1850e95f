# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``python -m monai_sre.bundle [--check]``: render the bundles' configs from the shared recipe."""

from __future__ import annotations

import sys

from monai_sre.bundle.configs import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
