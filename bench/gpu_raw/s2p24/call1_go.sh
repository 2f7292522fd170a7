#!/bin/bash
# cuda-s2p24 call 1: A/B (bf16: base, new, new with LINATTN_CUDA_LIN_PARTS=3; fp16: base, new),
# per-kernel profile, error vs float64 at 8,2048; then test_cuda_ops e,s,n new and base (default
# and LINATTN_CUDA_LIN_FUSED=1, 4 shards each), memcheck / racecheck (kns=la_lf_) quick shards
set -u
R=${R:-/tmp}; S=.gpu-cuda-s2p24; L=$R/logs; mkdir -p $L $R/new $R/base $R/ab
T0=$(date +%s); st() { echo "[t=$(( $(date +%s) - T0 ))s] $*" | tee -a $L/progress.txt; }
tar xJf $S/new.tar.xz -C $R/new & tar xJf .gpu-base/base.tar.xz -C $R/base & wait
cp $R/base/liblinattn.so $R/ab/base.so; cp $R/new/liblinattn.so $R/ab/new.so; cp $R/new/liblinattn.so $R/ab/new3.so
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $L/gpu.txt
st "untarred; $(cat $L/gpu.txt)"
B=$R/ab/base.so N=$R/ab/new.so N3=$R/ab/new3.so SH="8,2048,16,128;1,16384,16,128;4,4096,64,128"
if [ "${SKIP_AB:-0}" != 1 ]; then
AB_ENV="$N3=LINATTN_CUDA_LIN_PARTS:3" timeout 50 python3 bench/gpu_ab.py --libs $B,$N,$N3 --shapes "$SH" > $L/ab_bf16.txt 2>&1
st "ab bf16 rc $?"
timeout 30 python3 bench/gpu_ab.py --libs $B,$N --dtype fp16 --reps 1 --shapes "$SH" > $L/ab_fp16.txt 2>&1
st "ab fp16 rc $?"
timeout 20 python3 bench/gpu_ab.py --libs $B,$N --shapes "8,2048,16,128" --reps 1 --profile > $L/prof.txt 2>&1
st "prof rc $?"
timeout 20 python3 bench/gpu_err64.py --libs $B,$N --shapes "8,2048,16,128" > $L/err64.txt 2>&1
st "err64 rc $?"
fi
CS=/usr/local/cuda/bin/compute-sanitizer; command -v compute-sanitizer >/dev/null && CS=compute-sanitizer
TN=$R/new/test_cuda_ops TB=$R/base/test_cuda_ops TT=${TEST_T:-80} RT=${RACE_T:-75}
export LINATTN_CUDA_TEST_ONLY=esn
for i in 0 1 2 3; do
  LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_def_$i.log 2>&1 &
  LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TB > $L/t_base_def_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_fu_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TB > $L/t_base_fu_$i.log 2>&1 &
done
for i in 0 1; do
  LINATTN_CUDA_LIN_PARTS=3 LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=sn LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $TT $TN > $L/t_new3_fu_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=sn LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $RT $CS --tool memcheck --kernel-name kns=la_lf_ $TN > $L/mc_$i.log 2>&1 &
done
for i in 0 1 2 3; do
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=s LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_SHARD=$i/4 \
    timeout $RT $CS --tool racecheck --kernel-name kns=la_lf_ $TN > $L/rc_$i.log 2>&1 &
done
wait
st "tests + sanitizers done"
{
echo "== GPU: $(cat $L/gpu.txt)"; cat $L/progress.txt
echo "== tests"
for f in $L/t_*.log; do echo "$(basename $f .log): $(grep -h '^cuda_ops:' $f)"; done
grep -h "FAIL" $L/t_*.log | head -10
echo "== sanitizers"
for f in $L/mc_*.log $L/rc_*.log; do echo "$(basename $f .log): $(grep -h '^cuda_ops:' $f) $(grep -h 'SUMMARY' $f)"; done
echo "== worst errors vs float64, old (base) vs new, default + LIN_FUSED=1 runs"
python3 $S/err_worst.py --old "$L/t_base_*.log" --new "$L/t_new_[df]*.log"
echo "== LIN_FUSED=1 only"
python3 $S/err_worst.py --old "$L/t_base_fu_*.log" --new "$L/t_new_fu_*.log" | tail -1
python3 - $L <<'PY'
import glob, re, sys
L = sys.argv[1]
def lines(p):
    return sorted(re.sub(r" \(bound \S+\)", "", l) for f in glob.glob(p) for l in open(f, errors="replace") if "rel RMS" in l)
n3, b = lines(L + "/t_new3_fu_*.log"), set(lines(L + "/t_base_fu_*.log"))
print("LIN_PARTS=3 rel RMS lines equal to base's (forced fused): %d of %d" % (sum(x in b for x in n3), len(n3)))
PY
echo "== err64"; cat $L/err64.txt
echo "== prof (la_lf kernels)"; grep -h "la_lf\|la_" $L/prof.txt | grep -v "^\s*$" | head -30
echo "== ab fp16"; grep -v "^$" $L/ab_fp16.txt | tail -20
echo "== ab bf16"; grep -v "^$" $L/ab_bf16.txt | tail -30
} > $L/summary.txt 2>&1
cd $R && tar cJf $OUT/logs.tar.xz logs && cp $L/summary.txt $OUT/ && cat $L/summary.txt
