#!/bin/sh
# Model speed comparison (bench/MODEL.md): for each mixer, the C model
# (build/bench_model) and the same model in PyTorch (bench/model_torch.py),
# interleaved in one run so both see the same machine load. PyTorch runs with
# Debian's default BLAS (netlib reference, as installed) for one mixer, and
# with OpenBLAS when OPENBLAS_DIR points at an unpacked libopenblas0-pthread
# (usr/lib/x86_64-linux-gnu/openblas-pthread), loaded through LD_LIBRARY_PATH.
#   sh bench/run_model_bench.sh > bench/model_results.jsonl
set -e
THREADS=${THREADS:-2}
STEPS=${STEPS:-3}
TSTEPS=${TSTEPS:-2}
MIXERS=${MIXERS:-"linear retnet gla deltanet gdn softmax"}
PY=/usr/bin/python3
for m in $MIXERS; do
  ./build/bench_model --mixer $m --threads $THREADS --steps $STEPS --gen-len 2048
  if [ -n "$OPENBLAS_DIR" ]; then
    LD_LIBRARY_PATH=$OPENBLAS_DIR OPENBLAS_NUM_THREADS=$THREADS \
      $PY bench/model_torch.py --mixer $m --threads $THREADS --steps $TSTEPS --warmup 1 \
      | sed 's/"impl": "pytorch"/"impl": "pytorch+openblas"/'
  fi
done
if [ -n "$NETLIB_MIXER" ]; then
  $PY bench/model_torch.py --mixer $NETLIB_MIXER --threads $THREADS --steps 1 --warmup 0 \
    | sed 's/"impl": "pytorch"/"impl": "pytorch+netlib (Debian default)"/'
fi
