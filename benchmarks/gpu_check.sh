#!/usr/bin/env bash
# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The GPU check of the speed issue, in one short run (at most about 9 minutes, each step under its own time limit, the
# most important first, so that a limit hit late still leaves the earlier results):
#   1. the Triton path's correctness tests on CUDA (float32 against the dense path, fp16/bf16 autocast,
#      path="auto"'s measured choice, torch.compile of the Triton path);
#   2. benchmarks/networks.py on CUDA: SRE-ResNet-18 against MONAI ResNet-18, sre-conv 1.0.2 and gmr-conv 1.0.3, 2D
#      3x32x32 (batch 128) and 3D 1x32^3 (batch 16), fp32 and bf16, one run of the script per table;
#   3. the layer table (with the Triton path's column), 2D and 3D.
# Results go to $OUT (default: a new temporary folder): tests.log (machine, versions, test results), bench.log,
# networks_{2d,3d}_{fp32,bf16}.md, layers.md (7 files: a lent GPU machine sends back at most 8).
#
# It needs what `pip install -e ".[bench]"` gives (torch with Triton, MONAI, sre-conv, gmr-conv). On a GPU machine
# without package access, carry the pure-Python wheels in .whl/ (ignored by git), fetched where PyPI is reachable:
#   python -m pip download --no-deps --only-binary=:all: -d .whl monai==1.6.1 sre-conv==1.0.2 gmr-conv==1.0.3
# and this script installs them into a private folder first. sre-conv and gmr-conv import torchio at import time for
# their training transforms only (never called here); where torchio is not installed (its SimpleITK wheel alone is
# 52 MB), an empty torchio module stands in for it, and tests.log says so. Usage, from anywhere:
#   OUT=/path/to/results bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
DEADLINE="${DEADLINE:-560}"  # seconds for the whole script; each step gets what is left, at most its own limit
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null; then
    SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    "$PY" -c "import monai_sre, monai; print('monai_sre', monai_sre.__file__, 'monai', monai.__version__)"
    git log --oneline -1 2>/dev/null || true
} 2>&1 | tee "$OUT/tests.log"

status=0
if ! "$PY" -c "import torchio" 2>/dev/null; then
    STUB="$(mktemp -d)"
    echo '"""Empty stand-in: sre-conv and gmr-conv import torchio for transforms the benchmark never runs."""' \
        >"$STUB/torchio.py"
    export PYTHONPATH="$PYTHONPATH:$STUB"
    echo "torchio is not installed: an empty stand-in module is on the path (the baselines' transforms only)" \
        | tee -a "$OUT/tests.log"
fi

echo "== 1. correctness on CUDA" | tee -a "$OUT/tests.log"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -n 0 tests/layers/test_ring_triton.py -k "not interpreter" \
    2>&1 | tee -a "$OUT/tests.log" || status=1

echo "== 2. benchmark on CUDA" | tee "$OUT/bench.log"
for part in "2:32:fp32:120" "2:32:bf16:90" "3:32:fp32:100" "3:32:bf16:100" "layers:-:-:100"; do
    IFS=: read -r dims size precision limit <<<"$part"
    left=$((DEADLINE - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "skipped ($part): the deadline is reached" | tee -a "$OUT/bench.log"
        status=1
        continue
    fi
    if [ "$dims" = layers ]; then
        args=(--suite layers --dims 2 3 --out "$OUT/layers.md")
    else
        name="networks_${dims}d_$precision"
        args=(--suite networks --dims "$dims" --sizes "$size" --precision "$precision" --repeats 10
              --out "$OUT/$name.md")
    fi
    timeout "$limit" "$PY" benchmarks/networks.py --device "$DEVICE" "${args[@]}" 2>&1 | tee -a "$OUT/bench.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && echo "timed out after ${limit} s ($part)" | tee -a "$OUT/bench.log"
    [ "$rc" -eq 0 ] || status=1
done
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 | tee -a "$OUT/bench.log"
echo "results in $OUT (status $status)"
exit $status
