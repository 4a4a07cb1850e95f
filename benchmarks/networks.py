# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Network benchmark: sre_resnet18 vs sre-conv 1.0.2, gmr-conv 1.0.3 and MONAI's resnet18 (2D and 3D), preceded by the
layer table of ``benchmarks/layers.py`` with the path each SRE layer takes.

Prints, in one run and as ratios, training-step and inference throughput and peak training memory; ``--suite
networks`` skips the layer table. The code lives in ``benchmarks/suite.py``; results and the machine they came from
are in benchmarks/README.md.

Usage: ``python benchmarks/networks.py [--suite all|networks|layers] [--dims 2 3] [--sizes 32 28] [--repeats 3]
[--device cpu] [--threads N] [--precision fp32 bf16] [--compile] [--out networks.md] [--json networks.json]``
"""

from __future__ import annotations

import sys

from suite import main  # this script's own folder, benchmarks/, is first on the import path

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
