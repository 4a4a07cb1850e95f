# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark tooling of the source checkout (never installed): run the scripts in this folder, e.g.
``python benchmarks/networks.py``; the tests import :mod:`benchmarks.suite`."""
