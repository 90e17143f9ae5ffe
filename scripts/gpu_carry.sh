#!/usr/bin/env bash
# Gathers what a GPU machine without network or package manager needs to build the tests and
# benchmarks: GoogleTest's sources and Google Benchmark's headers, library and CMake package.
# Usage: scripts/gpu_carry.sh [DEST]   (default: .device-carry, which git ignores)
set -euo pipefail
dest=${1:-.device-carry}
rm -rf "$dest"
mkdir -p "$dest/bench/include" "$dest/bench/lib/x86_64-linux-gnu/cmake"
cp -r /usr/src/googletest "$dest/googletest"
cp -r /usr/include/benchmark "$dest/bench/include/"
cp -a /usr/lib/x86_64-linux-gnu/libbenchmark.so* /usr/lib/x86_64-linux-gnu/libbenchmark_main.a \
  "$dest/bench/lib/x86_64-linux-gnu/"
cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark "$dest/bench/lib/x86_64-linux-gnu/cmake/"
du -sh "$dest"
