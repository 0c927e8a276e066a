#!/usr/bin/env bash
# The GPU check in one command, sized for one H200 and about 9 minutes:
#   1. the benchmark of llama1b_switch against full-rank in bf16 and float8 (tokens/s, MFU,
#      memory, the switch's share of the step and its parts), as in README "GPU benchmark";
#   2. the CUDA tests (tests/gpu: pinned pools and index copies against the plain-loop
#      reference, compiled bf16 switching without recompiles, float8 on tensor cores, resume).
#
#   OUT=results/ scripts/gpu_check.sh            # on the GPU machine, from the repository root
#   OUT=/tmp/gc scripts/gpu_check.sh --smoke     # the same steps on the tiny config (CPU is fine)
#
# Wheels for packages the machine lacks (torchao, torchdata, tyro) are installed from .whl/
# when it exists (../shared/gpu/fetch_wheels.sh fills it). Environment: LAYERS=12 halves the
# model; BENCH_TIMEOUT and TEST_TIMEOUT (seconds) bound the two parts.
# Writes to $OUT: env.txt, bench.log, bench/results.md, bench/results.json, tests.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  date
  nvidia-smi 2>&1 || echo "nvidia-smi: not found"
  "$PY" - <<'EOF'
import importlib.metadata as md
import torch
for name in ("torch", "torchao", "torchdata", "tyro", "numpy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "missing")
print("cuda", torch.cuda.is_available() and torch.cuda.get_device_name())
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${1:-}" = "--smoke" ]; then
  config=configs/tiny_switch.toml
  model=()
  export SWITCHLORA_GPU_TESTS=cpu
else
  config=configs/llama1b_switch.toml
  model=(${LAYERS:+--model.n_layers "$LAYERS"})
fi

timeout "${BENCH_TIMEOUT:-420}" "$PY" scripts/bench.py --config "$config" \
  --methods full,switchlora --precisions bf16,float8 --layouts fsdp \
  --warmup 3 --steps 6 --out "$OUT/bench" \
  --data.source embedded:shakespeare --data.tokenizer byte --data.num_workers 0 \
  --training.global_batch_size 16 --training.local_batch_size 8 ${model[@]+"${model[@]}"} \
  2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}

timeout "${TEST_TIMEOUT:-240}" "$PY" -m pytest -q -p no:cacheprovider tests/gpu 2>&1 \
  | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}

echo "gpu_check: bench exit $bench, tests exit $tests (results in $OUT)"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
