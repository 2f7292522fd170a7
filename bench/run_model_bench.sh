#!/bin/sh
# Model speed comparison (bench/MODEL.md): for each mixer the C model
# (build/bench_model, 1 warm-up + STEPS timed steps) and, for the mixers in
# TORCH_MIXERS, the same model in PyTorch (bench/model_torch.py, TWARM
# warm-up + TSTEPS timed steps), interleaved in one run so both see the same
# machine load. PyTorch runs with OpenBLAS when OPENBLAS_DIR points at an
# unpacked libopenblas0-pthread (usr/lib/x86_64-linux-gnu/openblas-pthread,
# loaded through LD_LIBRARY_PATH; nothing installed), and with Debian's
# default BLAS (netlib reference, as installed) for NETLIB_MIXER.
# SEQ_LEN (512) shortens both for a smaller config; GEN_LEN (2048) is the C
# generation curve's length. Each JSON line has wall and process CPU seconds
# per step (all threads; the fairer measure on a loaded machine).
#   OPENBLAS_DIR=... sh bench/run_model_bench.sh > bench/model_results.jsonl
THREADS=${THREADS:-2}
SEQ_LEN=${SEQ_LEN:-512}
GEN_LEN=${GEN_LEN:-2048}
STEPS=${STEPS:-2}
TSTEPS=${TSTEPS:-1}
TWARM=${TWARM:-0}
MIXERS=${MIXERS:-"linear gdn softmax performer retnet gla deltanet"}
TORCH_MIXERS=${TORCH_MIXERS:-"linear gdn softmax"}
PY=/usr/bin/python3
for m in $MIXERS; do
  ./build/bench_model --mixer $m --threads $THREADS --steps $STEPS --gen-len $GEN_LEN --seq-len $SEQ_LEN
  case " $TORCH_MIXERS " in *" $m "*)
    if [ -n "$OPENBLAS_DIR" ]; then
      LD_LIBRARY_PATH=$OPENBLAS_DIR OPENBLAS_NUM_THREADS=$THREADS \
        $PY bench/model_torch.py --mixer $m --threads $THREADS --steps $TSTEPS --warmup $TWARM \
        --seq-len $SEQ_LEN | sed 's/"impl": "pytorch"/"impl": "pytorch+openblas"/'
    fi
    if [ "$m" = "$NETLIB_MIXER" ]; then
      $PY bench/model_torch.py --mixer $m --threads $THREADS --steps $TSTEPS --warmup $TWARM \
        --seq-len $SEQ_LEN | sed 's/"impl": "pytorch"/"impl": "pytorch+netlib (Debian default BLAS)"/'
    fi;;
  esac
done
./build/bench_model --mixer none --threads $THREADS
LD_LIBRARY_PATH=$OPENBLAS_DIR $PY -c "
import torch, time, json
torch.set_num_threads($THREADS)
a = torch.randn(4096, 256); b = torch.randn(256, 1024); c = a @ b
ts = []
for _ in range(5):
    t = time.perf_counter(); c = a @ b; ts.append(time.perf_counter() - t)
ts.sort()
print(json.dumps({'impl': 'pytorch+openblas', 'what': 'gemm 4096x256x1024', 'gflops': 2 * 4096 * 256 * 1024 / ts[2] / 1e9}))"
