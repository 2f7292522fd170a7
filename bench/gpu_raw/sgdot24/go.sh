#!/bin/bash
# cuda-sgdot24 (one call): A/B sgla bf16 base (staging16) vs new; test_cuda_ops s full:
# new / base default and LIN_FUSED=1 (4 shards each), new LIN_DOT_MIX=p (S, Vt 2 parts, P 3: the
# measurement of which operand drives dg_gamma), LIN_FUSED=1 + WARPS=4, LIN_SPLIT=3 (2 shards each),
# LIN_PARTS=3 quick; memcheck s quick LIN_FUSED=1 kns=la_lf_ (2 shards); err_worst sgla old vs new
set -u
R=/tmp; S=.gpu-cuda-sgdot24; L=$R/logs; mkdir -p $L $R/new $R/base $R/ab
T0=$(date +%s); st() { echo "[t=$(( $(date +%s) - T0 ))s] $*" | tee -a $L/progress.txt; }
tar xJf $S/new.tar.xz -C $R/new & tar xJf .gpu-s16/stage.tar.xz -C $R/base & wait
NB=$(find $R/base -name liblinattn.so | head -1); TB=$(find $R/base -name test_cuda_ops | head -1)
cp $NB $R/ab/base.so; cp $R/new/liblinattn.so $R/ab/new.so
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $L/gpu.txt
st "untarred; $(cat $L/gpu.txt); base $NB $TB"
B=$R/ab/base.so N=$R/ab/new.so SH="8,2048,16,128;1,16384,16,128;4,4096,64,128"
timeout 35 python3 bench/gpu_ab.py --libs $B,$N --ops sgla --shapes "$SH" > $L/ab_sgla.txt 2>&1
st "ab rc $?"
CS=/usr/local/cuda/bin/compute-sanitizer; command -v compute-sanitizer >/dev/null && CS=compute-sanitizer
TN=$R/new/test_cuda_ops TT=${TEST_T:-70}
export LINATTN_CUDA_TEST_ONLY=s LINATTN_CUDA_TEST_WORST=1
for i in 0 1 2 3; do
  LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_def_$i.log 2>&1 &
  LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TB > $L/t_base_def_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TN > $L/t_new_fu_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_SHARD=$i/4 timeout $TT $TB > $L/t_base_fu_$i.log 2>&1 &
done
for i in 0 1; do
  LINATTN_CUDA_LIN_DOT_MIX=p LINATTN_CUDA_TEST_SHARD=$i/2 timeout $TT $TN > $L/x_mixp_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_LIN_FUSED_WARPS=4 LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $TT $TN > $L/t_new_w4_$i.log 2>&1 &
  LINATTN_CUDA_LIN_SPLIT=3 LINATTN_CUDA_TEST_SHARD=$i/2 timeout $TT $TN > $L/t_new_sp3_$i.log 2>&1 &
  LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_TEST_QUICK=1 LINATTN_CUDA_TEST_SHARD=$i/2 \
    timeout $TT $CS --tool memcheck --kernel-name kns=la_lf_ $TN > $L/mc_$i.log 2>&1 &
done
LINATTN_CUDA_LIN_FUSED=1 LINATTN_CUDA_LIN_PARTS=3 LINATTN_CUDA_TEST_QUICK=1 timeout $TT $TN > $L/x_parts3.log 2>&1 &
wait
st "tests + memcheck done"
{
echo "== GPU: $(cat $L/gpu.txt)"; cat $L/progress.txt
echo "== tests"
for f in $L/t_*.log $L/x_*.log; do echo "$(basename $f .log): $(grep -h '^cuda_ops:' $f | tail -1)"; done
grep -h "FAIL" $L/t_*.log | head -6
echo "== memcheck"
for f in $L/mc_*.log; do echo "$(basename $f .log): $(grep -h '^cuda_ops:' $f) $(grep -h 'SUMMARY' $f)"; done
echo "== worst vs float64 sgla, base vs new (default + LIN_FUSED=1 runs)"
python3 $S/err_worst.py --match sgla --old "$L/t_base_*.log" --new "$L/t_new_[df]*.log"
echo "== sgla new (default mix) vs LIN_DOT_MIX=p (S, Vt 2 parts; P 3), default runs, dg lines"
python3 $S/err_worst.py --match sgla --old "$L/t_new_def_*.log" --new "$L/x_mixp_*.log" | grep -i "dg\|every"
echo "== w4 + split3 new worst (sgla)"
python3 $S/err_worst.py --match sgla --old "$L/t_base_fu_*.log" --new "$L/t_new_[ws]*.log" | grep -i "dg\|every"
echo "== ab sgla"; grep -v "^$" $L/ab_sgla.txt | tail -16
} > $L/summary.txt 2>&1
cd $R && tar cJf $OUT/logs.tar.xz logs && cp $L/summary.txt $OUT/ && cat $L/summary.txt
