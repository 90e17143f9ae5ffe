#!/usr/bin/env bash
# Builds and runs the whole suite and the benchmarks on a machine with an NVIDIA GPU, CUDA's
# compiler, CMake and PyTorch (whose install holds LibTorch with CUDA), and writes the results
# (test logs, benchmark JSON, a summary) to the folder given as argument.
#
#   scripts/gpu_verify.sh RESULTS_DIR [CARRY_DIR] [PHASES]
#
# PHASES: any of build,tests,bench (default: all three), comma-separated.
#
# Without network the machine may lack GoogleTest and Google Benchmark: CARRY_DIR (default
# .device-carry, made by scripts/gpu_carry.sh) holds their sources / library.
set -uo pipefail
out=${1:?usage: gpu_verify.sh RESULTS_DIR [CARRY_DIR] [PHASES]}
carry=$(realpath "${2:-.device-carry}")
phases=",${3:-build,tests,bench},"
want() { [[ $phases == *",$1,"* ]]; }
mkdir -p "$out"
out=$(realpath "$out")
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GPUSAFE_TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
[ -d "$carry/googletest" ] && export GPUSAFE_GTEST_SOURCE_DIR="$carry/googletest"
if [ -d "$carry/bench" ]; then
  export GPUSAFE_BENCHMARK_ROOT="$carry/bench"
  export LD_LIBRARY_PATH="$carry/bench/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
summary="$out/summary.txt"
: >"$summary"
# GPUSAFE_SUMMARY_MIRROR: a second file that receives the summary as it grows (for a caller that
# may be cut off before the end).
note() {
  echo "$*" | tee -a "$summary"
  [ -n "${GPUSAFE_SUMMARY_MIRROR:-}" ] && cp "$summary" "$GPUSAFE_SUMMARY_MIRROR"
  return 0
}
step() {  # step NAME COMMAND...: runs, logs to NAME.log, records pass/fail
  local name=$1; shift
  local t0=$(date +%s)
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  note "$name: $([ $rc -eq 0 ] && echo PASS || echo "FAIL (rc=$rc)") in $(( $(date +%s) - t0 )) s"
  tail -n 5 "$out/$name.log" | sed 's/^/    /' >>"$summary"
  [ -n "${GPUSAFE_SUMMARY_MIRROR:-}" ] && cp "$summary" "$GPUSAFE_SUMMARY_MIRROR"
  return $rc
}

note "date: $(date -u +%Y-%m-%dT%H:%MZ)"
note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
note "nvcc: $(nvcc --version | tail -1)"
note "torch: $(python3 -c 'import torch; print(torch.__version__)')"
jobs=$(nproc)

if want build; then
  step configure cmake --preset gpu || exit 1
  step build cmake --build build/gpu -j "$jobs" || exit 1
fi
if want tests; then
  step tests_gpu ctest --test-dir build/gpu -j "$jobs" --output-on-failure --timeout 600
  CUDA_VISIBLE_DEVICES= step tests_no_visible_device ctest --test-dir build/gpu -j "$jobs" \
    --output-on-failure -LE consumer
  # Every hazard scenario 20 times in a row, the shards in parallel.
  hazards_x20() {  # hazards_x20 BINARY
    local pids=() rc=0 name
    name=$(basename "$1")
    for ((i = 0; i < jobs; i++)); do
      GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$i "$1" --gtest_repeat=20 --gtest_brief=1 \
        >"$out/${name}_shard_$i.txt" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    cat "$out/${name}"_shard_*.txt && rm -f "$out/${name}"_shard_*.txt
    return $rc
  }
  step hazards_x20 hazards_x20 build/gpu/tests/gpusafe_hazards
  step torch_hazards_x20 hazards_x20 build/gpu/tests/gpusafe_torch_hazards
  if command -v compute-sanitizer >/dev/null; then
    for t in build/gpu/tests/gpusafe_gpu_stream_release_test build/gpu/tests/gpusafe_buffer_pool_test \
             build/gpu/tests/gpusafe_torch_test; do
      [ -x "$t" ] && step "sanitizer_$(basename "$t")" timeout 300 compute-sanitizer \
        --tool memcheck --error-exitcode 1 "$t" --gtest_brief=1
    done
  fi
fi
if want bench; then
  mkdir -p "$out/bench"
  for b in build/gpu/benchmarks/*_bench; do
    [ -x "$b" ] || continue
    step "bench_$(basename "$b")" "$b" --benchmark_repetitions=5 \
      --benchmark_report_aggregates_only=true \
      --benchmark_out="$out/bench/$(basename "$b").json" --benchmark_out_format=json
  done
fi
note "done"
