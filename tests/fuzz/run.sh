#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_registry.c with clang under
# ASan + UBSan and runs it on the seed corpus for a while.
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
# SECONDS defaults to 15 (the short run of `make test`). New inputs go to
# build-fuzz/corpus (not the repository); crashes to build-fuzz/crash-*.
# Prints SKIP and exits 0 when clang with libFuzzer is not available.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${FUZZ_BUILD:-$ROOT/build-fuzz}"
SECONDS_TO_RUN="${1:-15}"
shift || true
CC="${FUZZ_CC:-clang}"

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "SKIP test-fuzz: $CC not found (install clang and libclang-rt-dev)"
    exit 0
fi
mkdir -p "$OUT"
probe="$OUT/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe" -o "$OUT/probe" >/dev/null 2>&1; then
    echo "SKIP test-fuzz: $CC cannot link -fsanitize=fuzzer (install libclang-rt-dev)"
    exit 0
fi

BIN="$OUT/fuzz_registry"
SRCS=$(find "$ROOT/src/core" "$ROOT/src/ops" "$ROOT/src/kernels" "$ROOT/src/cuda" -name '*.c' | sort)
NEWEST=$(ls -t $SRCS "$ROOT"/src/*/*.h "$ROOT"/src/ops/*/*.h "$ROOT/include/linattn.h" \
             "$ROOT/tests/fuzz/fuzz_registry.c" 2>/dev/null | head -1)
if [ ! -x "$BIN" ] || [ "$NEWEST" -nt "$BIN" ]; then
    echo "building $BIN"
    "$CC" -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -ffp-contract=off \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -I"$ROOT/include" -I"$ROOT/src" $SRCS "$ROOT/tests/fuzz/fuzz_registry.c" -lm -lpthread \
        -o "$BIN"
fi
mkdir -p "$OUT/corpus"
cd "$OUT"
exec "$BIN" -max_total_time="$SECONDS_TO_RUN" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    "$@" "$OUT/corpus" "$ROOT/tests/fuzz/corpus"
