#!/bin/bash
# cuda-s2p24 call 2 (final build: gate-gradient walks keep three parts): A/B bf16 vs base;
# test_cuda_ops e,s,n default + LIN_FUSED=1 (4 shards each), s with LIN_FUSED_WARPS=4 and with
# LIN_SPLIT=3 (2 shards each); memcheck s,n quick fused (2 shards), racecheck s quick fused (8 shards)
set -u
R=${R:-/tmp}; S=.gpu-cuda-s2p24; L=$R/logs2; mkdir -p $L $R/new $R/base $R/ab
T0=$(date +%s); st() { echo "[t=$(( $(date +%s) - T0 ))s] $*" | tee -a $L/progress.txt; }
tar xJf $S/new.tar.xz -C $R/new & tar xJf .gpu-base/base.tar.xz -C $R/base & wait
cp $R/base/liblinattn.so $R/ab/base.so; cp $R/new/liblinattn.so $R/ab/new.so
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $L/gpu.txt
st "untarred; $(cat $L/gpu.txt)"
B=$R/ab/base.so N=$R/ab/new.so SH="8,2048,16,128;1,16384,16,128;4,4096,64,128"
[ "${SKIP_AB:-0}" = 1 ] || { timeout 30 python3 bench/gpu_ab.py --libs $B,$N --shapes "$SH" > $L/ab_bf16.txt 2>&1; st "ab bf16 rc $?"; }
CS=/usr/local/cuda/bin/compute-sanitizer; command -v compute-sanitizer >/dev/null && CS=compute-sanitizer
TN=$R/new/test_cuda_ops TT=${TEST_T:-90} RT=${RACE_T:-90}
for i in 0 1 2 3; do
  LINATTN_CUDA_TEST_ONLY=esn LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_def_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=esn LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_fu_$i.log 2>&1 &
done
for i in 0 1; do
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_LIN_FUSED_WARPS=4 LINATTN_CUDA_TEST_ONLY=s LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $TT $TN > $L/t_new_w4_$i.log 2>&1 &
  LINATTN_CUDA_LIN_SPLIT=3 LINATTN_CUDA_TEST_ONLY=s LINATTN_CUDA_TEST_SHARD=$i/2 timeout $TT $TN > $L/t_new_sp3_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=sn LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $RT $CS --tool memcheck --kernel-name kns=la_lf_ $TN > $L/mc_$i.log 2>&1 &
done
for i in 0 1 2 3 4 5 6 7; do
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_ONLY=s LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_SHARD=$i/8 \
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
echo "== worst errors vs float64 (new; bound fractions), default + LIN_FUSED=1 + WARPS=4 + SPLIT=3 runs"
python3 $S/err_worst.py --old "$L/none" --new "$L/t_new_*.log" 
echo "== ab bf16"; grep -v "^$" $L/ab_bf16.txt | tail -20
} > $L/summary.txt 2>&1
cd $R && tar cJf $OUT/logs2.tar.xz logs2 && cp $L/summary.txt $OUT/summary2.txt && cat $L/summary.txt
