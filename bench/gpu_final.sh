#!/usr/bin/env bash
# The end-of-session check of the CUDA backend on a lent GPU machine, in one
# device call: the whole test suite, compute-sanitizer memcheck and racecheck
# of it (quick cases, sharded), the Python tests on the GPU, A/B timings
# against a base build, and fla beside us (bench/gpu_bench.py).
#
#   bash bench/gpu_final.sh NEW BASE [FLA]
#
# NEW and BASE: folders holding liblinattn.so and test_cuda_ops (BASE's are
# only timed against, never tested). FLA: an fla checkout for gpu_bench.py
# (skipped if absent). Logs go to $OUT/final (or ./final-logs); a summary is
# printed last. BENCH_ARGS (env): more gpu_bench.py arguments (e.g.
# --no-recurrent, so fla's GDN is reached inside BENCH_TIMEOUT). PHASES (env): "check" (suite, memcheck, racecheck, pytest),
# "time" (A/B, bench), or both (default). With 4 GPUs every job has its own
# GPU (GPU0 suite + memcheck + pytest + A/B, GPU1 bench, GPU2-3 racecheck);
# with fewer the check jobs run together, then the timings alone, so no
# timing runs beside the sanitizers (two calls of PHASES=check and =time fit
# the 600 s limit where one does not).
set -u
NEW=$(readlink -f "$1"); BASE=$(readlink -f "$2"); FLA=${3:-}
[ -n "$FLA" ] && FLA=$(readlink -f "$FLA")
L=${OUT:-$PWD/final-logs}/final
mkdir -p "$L"
PY=${PYTHON:-python3}
T0=$(date +%s)
stamp() { echo "[t=$(( $(date +%s) - T0 ))s] $*" | tee -a "$L/0_progress.txt"; }
NG=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$L/0_gpu.txt"
stamp "GPUs: $NG"
gpu() { echo $(( $1 % NG )); }   # the GPU a job slot runs on
CS=/usr/local/cuda/bin/compute-sanitizer
command -v compute-sanitizer >/dev/null && CS=compute-sanitizer

tests_job() {   # GPU0: full suite in 4 shards, memcheck quick in 4, pytest
    export CUDA_VISIBLE_DEVICES=$(gpu 0)
    for i in 0 1 2 3; do
        LINATTN_CUDA_TEST_SHARD=$i/4 "$NEW/test_cuda_ops" > "$L/1_tests_$i.log" 2>&1 &
    done
    wait
    # the fused linear / simple GLA walks (sfrag, split, gated) at every case of
    # their sections, not only where the grid size picks them
    for i in 0 1; do
        LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=esn LINATTN_CUDA_TEST_SHARD=$i/2 \
            "$NEW/test_cuda_ops" > "$L/1_tests_fused_$i.log" 2>&1 &
    done
    # and the 4-warp layout of those walks (NJ = 4), quick cases of section s
    LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_LIN_FUSED_WARPS=4 LINATTN_CUDA_TEST_ONLY=s \
        LINATTN_CUDA_TEST_QUICK=1 "$NEW/test_cuda_ops" > "$L/1_tests_fused_w4.log" 2>&1 &
    # and (cuda-s2p24) the bf16 walks with three parts (LINATTN_CUDA_LIN_PARTS=3)
    LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_LIN_PARTS=3 LINATTN_CUDA_TEST_ONLY=s \
        LINATTN_CUDA_TEST_QUICK=1 "$NEW/test_cuda_ops" > "$L/1_tests_fused_parts3.log" 2>&1 &
    # and their split walks and 4-warp layout with three parts
    LINATTN_CUDA_LIN_SPLIT=3 LINATTN_CUDA_LIN_FUSED_WARPS=4 LINATTN_CUDA_LIN_PARTS=3 LINATTN_CUDA_TEST_ONLY=s \
        LINATTN_CUDA_TEST_QUICK=1 "$NEW/test_cuda_ops" > "$L/1_tests_split_parts3.log" 2>&1 &
    wait
    # section g (cuda-graph24) provokes a CUDA capture refusal on purpose: its
    # shards run without API-error reports (memory errors still reported)
    for i in 0 1 2 3; do
        LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_ONLY=esndtvp LINATTN_CUDA_TEST_SHARD=$i/4 \
            timeout 400 $CS --tool memcheck --leak-check full "$NEW/test_cuda_ops" \
            > "$L/2_memcheck_$i.log" 2>&1 &
        LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_ONLY=g LINATTN_CUDA_TEST_SHARD=$i/4 \
            timeout 400 $CS --tool memcheck --report-api-errors no --leak-check full \
            "$NEW/test_cuda_ops" > "$L/2_memcheck_g$i.log" 2>&1 &
    done
    wait
    stamp "tests+memcheck done"
    LINATTN_LIBRARY=$NEW/liblinattn.so timeout 200 $PY -m pytest -q python/tests \
        > "$L/3_pytest.log" 2>&1
    stamp "pytest done"
}

ab_job() {      # A/B against BASE, alternating in one process
    export CUDA_VISIBLE_DEVICES=$(gpu 0)
    timeout 120 $PY bench/gpu_ab_delta.py --libs "$BASE/liblinattn.so,$NEW/liblinattn.so" \
        --saved > "$L/4_ab_delta.log" 2>&1
    stamp "ab_delta done"
    timeout 150 $PY bench/gpu_ab.py --libs "$BASE/liblinattn.so,$NEW/liblinattn.so" \
        --shapes "8,2048,16,128;1,16384,16,128;4,4096,64,128" > "$L/4_ab_lin.log" 2>&1
    stamp "ab_lin done"
}

bench_job() {   # GPU1: fla and us in one process, bf16 (fp32's dense shapes are slow)
    export CUDA_VISIBLE_DEVICES=$(gpu 1)
    if [ -n "$FLA" ] && [ -d "$FLA" ]; then
        PYTHONPATH=$FLA timeout ${BENCH_TIMEOUT:-330} $PY bench/gpu_bench.py \
            --lib "$NEW/liblinattn.so" --dtypes bf16 --delta-dtypes bf16 \
            --sections copy,dense,delta,gdn,step ${BENCH_ARGS:-} --out "$L/5_bench.jsonl" \
            > "$L/5_bench.log" 2>&1
    else
        timeout ${BENCH_TIMEOUT:-330} $PY bench/gpu_bench.py --lib "$NEW/liblinattn.so" --skip-fla \
            --dtypes bf16 --delta-dtypes bf16 ${BENCH_ARGS:-} --out "$L/5_bench.jsonl" \
            > "$L/5_bench.log" 2>&1
    fi
    stamp "bench done (rc $?)"
}

# racecheck, quick, unfiltered unless RACE_KNS (a kernel-name substring) is set:
# sections over shards (RACE_A, RACE_B: "section:shards ..."), two GPU slots
race_job() {
    local slot=$1; shift
    export CUDA_VISIBLE_DEVICES=$(gpu "$slot")
    for spec in "$@"; do        # spec = section:shards
        local s=${spec%%:*} n=${spec##*:}
        for ((i = 0; i < n; i++)); do
            LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_ONLY=$s LINATTN_CUDA_TEST_SHARD=$i/$n \
                timeout ${RACE_TIMEOUT:-300} $CS --tool racecheck \
                ${RACE_KNS:+--kernel-name kns=$RACE_KNS} "$NEW/test_cuda_ops" \
                > "$L/6_race_${s}_$i.log" 2>&1 &
        done
    done
    wait
    stamp "racecheck slot $slot done"
}

PHASES=${PHASES:-check,time}
if [ "$NG" -ge 4 ] && [[ $PHASES == *check* && $PHASES == *time* ]]; then
    (tests_job; ab_job) &
    bench_job &
    race_job 2 ${RACE_A:-d:12} &
    race_job 3 ${RACE_B:-v:4 e:2 s:4 n:2 t:2} &
    wait
else
    if [[ $PHASES == *check* ]]; then
        tests_job &
        race_job 0 ${RACE_A:-d:12} &
        race_job 1 ${RACE_B:-v:4 e:2 s:4 n:2 t:2} &
        wait
    fi
    if [[ $PHASES == *time* ]]; then
        ab_job &
        [ "$NG" -ge 2 ] || wait
        bench_job &
        wait
    fi
fi

{
    echo "== GPU"; cat "$L/0_gpu.txt"
    echo "== progress"; cat "$L/0_progress.txt"
    echo "== tests (full, 4 shards; then e, s, n with LINATTN_CUDA_LIN_FUSED=1, 2 shards)"
    for f in $(ls "$L"/1_tests_*.log 2>/dev/null); do echo "$(basename "$f" .log): $(grep -h "^cuda_ops:" "$f")"; done
    grep -h "FAIL" "$L"/1_tests_*.log 2>/dev/null | head -20
    echo "== memcheck (quick, 4 shards)"
    for f in $(ls "$L"/2_memcheck_*.log 2>/dev/null); do
        echo "$(grep -h '^cuda_ops:' "$f") $(grep -h 'ERROR SUMMARY' "$f")"
    done
    echo "== racecheck (quick, unfiltered)"
    for f in $(ls "$L"/6_race_*.log 2>/dev/null); do
        echo "$(basename "$f" .log): $(grep -h '^cuda_ops:' "$f") $(grep -h 'RACECHECK SUMMARY' "$f")"
    done
    echo "== pytest"; tail -3 "$L/3_pytest.log" 2>/dev/null
    echo "== A/B delta"; tail -25 "$L/4_ab_delta.log" 2>/dev/null
    echo "== A/B linear"; tail -30 "$L/4_ab_lin.log" 2>/dev/null
    echo "== bench"; tail -60 "$L/5_bench.log" 2>/dev/null
} | tee "$L/0_summary.txt"
