#!/bin/sh
# Builds build/bench_kernels against the static library of a release build
# (run `make all` first). Same warnings and floating-point flags as the
# library. Usage: bench/build.sh [build-dir]
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
${CC:-cc} -O3 -std=c11 -D_POSIX_C_SOURCE=200809L -ffp-contract=off -fno-fast-math \
    -Wall -Wextra -Wpedantic -Wshadow -Wno-unused-function \
    -Iinclude -Isrc bench/bench_kernels.c "$BUILD/liblinattn.a" -lpthread -lm \
    -o "$BUILD/bench_kernels"
echo "built $BUILD/bench_kernels"
