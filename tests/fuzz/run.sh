#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang under ASan + UBSan
# and runs each on its seed corpus for a while.
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
# SECONDS (per target) defaults to 15 (the short run of `make test`).
# Targets (FUZZ_TARGETS, default all):
#   registry    fuzz_registry.c: every op registry entry and the decoder;
#               seeds tests/fuzz/corpus/
#   checkpoint  fuzz_checkpoint.c: the model checkpoint loader; seeds
#               tests/fuzz/corpus_checkpoint/ (make_checkpoint_seeds.c)
# New inputs go to build-fuzz/corpus (registry) and build-fuzz/corpus-checkpoint
# (not the repository); crashes to build-fuzz/crash-* and
# build-fuzz/checkpoint-crash-*. A long run: see tests/fuzz/README.md.
# Prints SKIP and exits 0 when clang with libFuzzer is not available.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${FUZZ_BUILD:-$ROOT/build-fuzz}"
SECONDS_TO_RUN="${1:-15}"
shift || true
CC="${FUZZ_CC:-clang}"
TARGETS="${FUZZ_TARGETS:-registry checkpoint}"

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

FLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -ffp-contract=off
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -I"$ROOT/include" -I"$ROOT/src" -DLA_HAVE_KDA=1) # KDA in the model, as CMake does
JOBS="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}"
LIB=$(find "$ROOT/src/core" "$ROOT/src/ops" "$ROOT/src/kernels" "$ROOT/src/cuda" -name '*.c' | sort)
MODEL=$(find "$ROOT/src/model" -name '*.c' | sort)
NEWEST_H=$(ls -t "$ROOT"/src/*/*.h "$ROOT"/src/ops/*/*.h "$ROOT/include/linattn.h" | head -1)

# obj SRC: its object under $OUT/obj (compiled once for every target)
obj() { local rel="${1#"$ROOT"/}"; echo "$OUT/obj/${rel%.c}.o"; }
# build NAME SOURCES...: compiles the sources that changed (or all, when a
# header did), JOBS at a time, then links $OUT/fuzz_NAME.
build() {
    local name="$1" src o stale=() objs=()
    shift
    for src in "$@"; do
        o=$(obj "$src")
        objs+=("$o")
        if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ "$NEWEST_H" -nt "$o" ]; then stale+=("$src"); fi
    done
    if [ ${#stale[@]} -gt 0 ]; then
        echo "compiling ${#stale[@]} files for fuzz_$name"
        export CC OUT ROOT
        printf '%s\n' "${stale[@]}" | xargs -P "$JOBS" -I{} bash -c '
            src="{}"; rel="${src#"$ROOT"/}"; o="$OUT/obj/${rel%.c}.o"
            mkdir -p "$(dirname "$o")" && "$CC" "$@" -c "$src" -o "$o"' _ "${FLAGS[@]}"
    fi
    local bin="$OUT/fuzz_$name" newest
    newest=$(ls -t "${objs[@]}" | head -1)
    if [ ! -x "$bin" ] || [ "$newest" -nt "$bin" ]; then
        "$CC" "${FLAGS[@]}" "${objs[@]}" -lm -lpthread -o "$bin"
    fi
}

for t in $TARGETS; do
    case "$t" in
    registry)
        build registry $LIB "$ROOT/tests/fuzz/fuzz_registry.c"
        corpus_new="$OUT/corpus" seeds="$ROOT/tests/fuzz/corpus" extra=() ;;
    checkpoint)
        build checkpoint $LIB $MODEL "$ROOT/tests/fuzz/fuzz_checkpoint.c"
        corpus_new="$OUT/corpus-checkpoint" seeds="$ROOT/tests/fuzz/corpus_checkpoint"
        # the seeds are 2-12 KB; crashes as build-fuzz/checkpoint-crash-*
        extra=(-max_len=65536 -artifact_prefix="$OUT/checkpoint-") ;;
    *) echo "unknown fuzz target '$t' (registry, checkpoint)"; exit 2 ;;
    esac
    mkdir -p "$corpus_new"
    echo "fuzzing $t for $SECONDS_TO_RUN s"
    (cd "$OUT" && "$OUT/fuzz_$t" -max_total_time="$SECONDS_TO_RUN" -timeout=20 -rss_limit_mb=2048 \
        "${extra[@]}" -print_final_stats=1 "$@" "$corpus_new" "$seeds")
done
