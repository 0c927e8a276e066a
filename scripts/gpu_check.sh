#!/usr/bin/env bash
# The GPU check in one command, sized for one H200 and at most 540 s of its own timeouts:
#   0. setup: wheels from .whl/ (when present), then torchao, torchdata and tyro must import
#      (else one line and exit 3: the .whl folder was not carried);
#   1. the CUDA tests, the pass/fail gate (tests/gpu, --durations=0): pinned pools and batches,
#      index copies against the plain-loop reference, compiled bf16 switching without
#      recompiles, float8 on tensor cores, resume;
#   2. the benchmark, one case per process so that every finished case is kept: llama1b_switch
#      and llama1b_full in bf16, then both in float8 (tokens/s, MFU, peak memory, compile,
#      recompiles, the switch's share of the step).
#
#   scripts/gpu_check.sh                         # on the GPU machine, from the repository root
#   OUT=/tmp/gc scripts/gpu_check.sh --smoke     # the same parts on the tiny configs, on a CPU
#
# Environment: OUT (default outputs/gpu_check), PYTHON (default python3), LAYERS=12 halves
# the model, GATE=0 runs the benchmark even when the tests fail.
# Writes to $OUT: env.txt, tests.log, bench.log, bench.json, bench.md, times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
: >"$OUT/times.txt"
START=$SECONDS

# Timeouts of every part (seconds); their sum stays at or below 540.
T_WHEELS=40 T_IMPORT=45 T_ENV=5 T_TESTS=130 T_CASE=72 T_MERGE=25
# 40 + 45 + 2 * 5 + 130 + 4 * 72 + 25 = 538

part_start=$SECONDS
mark() {  # mark PART EXIT: record how long the part took
  local line
  line=$(printf 'gpu_check: %-22s %4d s (exit %s)' "$1" $((SECONDS - part_start)) "$2")
  echo "$line" | tee -a "$OUT/times.txt"
  part_start=$SECONDS
}

if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  timeout "$T_WHEELS" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl
  rc=$?
  mark wheels "$rc"
  [ "$rc" -eq 0 ] || { echo "gpu_check: installing .whl/*.whl failed (exit $rc)"; exit 3; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# Found without importing them (torchao's import alone takes seconds): a missing wheel is
# named at once instead of failing every test and case later.
missing=$(timeout "$T_IMPORT" "$PY" -c '
import importlib.util
print(" ".join(n for n in ("torchao", "torchdata", "tyro") if importlib.util.find_spec(n) is None))
' 2>&1)
rc=$?
if [ "$rc" -ne 0 ] || [ -n "$missing" ]; then
  echo "gpu_check: cannot import ${missing:-torchao, torchdata, tyro (python exit $rc)}: carry the .whl folder (README, 'GPU check')"
  exit 3
fi
mark imports 0

{
  date
  timeout "$T_ENV" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 \
    || echo "nvidia-smi: not found"
  # Versions from the package metadata: no second torch import.
  timeout "$T_ENV" "$PY" -c '
import importlib.metadata as md
for name in ("torch", "torchao", "torchdata", "tyro", "numpy"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "missing")
'
} >"$OUT/env.txt" 2>&1
mark env $?
cat "$OUT/env.txt"

if [ "${1:-}" = "--smoke" ]; then
  switch_config=configs/tiny_switch.toml
  full_config=configs/tiny_full.toml
  model=(--model.flavor debug --training.seq_len 32)
  steps=(--warmup 1 --steps 2)
  export SWITCHLORA_GPU_TESTS=cpu
  # A CPU compiles Triton-free C++ kernels slowly: the smoke runs the uncompiled tests.
  tests_select=(-k "library_matches_reference or offloaded_pools")
else
  switch_config=configs/llama1b_switch.toml
  full_config=configs/llama1b_full.toml
  model=(${LAYERS:+--model.n_layers "$LAYERS"})
  tests_select=()
  steps=(--warmup 3 --steps 6)
fi

timeout "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider --durations=0 tests/gpu \
  ${tests_select[@]+"${tests_select[@]}"} 2>&1 \
  | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
mark tests "$tests"
if [ "$tests" -ne 0 ] && [ "${GATE:-1}" != 0 ]; then
  echo "gpu_check: the CUDA tests failed (exit $tests); no benchmark (GATE=0 runs it anyway)"
  exit 1
fi

cases=$(mktemp -d)
bench=0
: >"$OUT/bench.log"
for precision in bf16 float8; do
  for method in switchlora full; do
    config=$switch_config
    [ "$method" = full ] && config=$full_config
    timeout "$T_CASE" "$PY" scripts/bench.py --config "$config" \
      --methods "$method" --precisions "$precision" --layouts fsdp \
      "${steps[@]}" --out "$cases/$method-$precision" \
      --data.source embedded:shakespeare --data.tokenizer byte --data.num_workers 0 \
      --training.global_batch_size 16 --training.local_batch_size 8 \
      ${model[@]+"${model[@]}"} 2>&1 | tee -a "$OUT/bench.log"
    rc=${PIPESTATUS[0]}
    mark "bench $method/$precision" "$rc"
    [ "$rc" -eq 0 ] || bench=$rc
  done
done
# Every case wrote its own results.json as it finished: a case cut off by its timeout loses
# only itself, and the merge (within the 540 s) reports the others.
timeout "$T_MERGE" "$PY" scripts/bench_merge.py "$OUT" "$cases"/*/results.json >/dev/null
mark merge $?

echo "gpu_check: tests exit $tests, bench exit $bench, $((SECONDS - START)) s in all (results in $OUT)" \
  | tee -a "$OUT/times.txt"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
