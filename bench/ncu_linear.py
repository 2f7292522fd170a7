#!/usr/bin/env python3
"""Driver for profiling and timing one op of linattn's CUDA backend at one
shape (default: bf16 kernel linear attention, 8,2048,16,128).

    python3 bench/ncu_linear.py --lib L.so [--op lin|sgla] [--dtype bf16]
        [--calls 1] [--time]

--calls n: n forward+backward calls (one warm-up call first; under ncu use
--launch-skip to pass it). --time: median of 30 CUDA-event-timed fwd and
fwd+bwd calls. LINATTN_CUDA_TC=0 selects the FFMA kernels for bf16/fp16."""
import argparse
import ctypes
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import DT, P, Dims, GatedOpts, Lib, LinOpts, timeit  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/liblinattn.so")
    ap.add_argument("--op", default="lin")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--shape", default="8,2048,16,128")
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--time", action="store_true")
    a = ap.parse_args()
    B, T, H, D = (int(x) for x in a.shape.split(","))
    dt = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)[a.dtype]
    dev = torch.device("cuda")
    torch.manual_seed(0)
    L = Lib(a.lib, torch.cuda.current_stream().cuda_stream)
    q = torch.randn(B, T, H, D, device=dev, dtype=dt)
    k = torch.randn(B, T, H, D, device=dev, dtype=dt) / math.sqrt(D)
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    do = torch.randn(B, T, H, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev)).float() / 16
    o, dq, dk, dv, dg = (torch.empty_like(x) for x in (v, q, k, v, g))
    dims = Dims(B, T, H, D, D, 0, None, 0, DT[dt])
    lo, go = LinOpts(0, 1, 2, 0, 1e-6, 0.0, 64), GatedOpts(2, 0.0, 64, 0)
    R = ctypes.byref
    if a.op == "lin":
        fwd = lambda: L.ok(L.l.la_linear_attn_forward(L.ctx, R(lo), R(dims), P(o), None, None,
                                                      P(q), P(k), P(v), None, None))
        bwd = lambda: L.ok(L.l.la_linear_attn_backward(L.ctx, R(lo), R(dims), P(dq), P(dk), P(dv),
                                                       None, None, P(do), None, None, P(q), P(k),
                                                       P(v), None, None))
    else:
        fwd = lambda: L.ok(L.l.la_simple_gla_forward(L.ctx, R(go), R(dims), P(o), None, P(q),
                                                     P(k), P(v), P(g), None, None))
        bwd = lambda: L.ok(L.l.la_simple_gla_backward(L.ctx, R(go), R(dims), P(dq), P(dk), P(dv),
                                                      P(dg), None, None, P(do), None, P(q), P(k),
                                                      P(v), P(g), None, None))
    fb = lambda: (fwd(), bwd())
    fb()
    torch.cuda.synchronize()
    if a.time:
        f, _ = timeit(fwd)
        t, _ = timeit(fb)
        print("%s %s %s TC=%s fwd %.3f ms fwd+bwd %.3f ms (%s)" %
              (a.op, a.dtype, a.shape, os.environ.get("LINATTN_CUDA_TC", "default"), f, t,
               torch.cuda.get_device_name(0)), flush=True)
        return
    for _ in range(a.calls):
        fb()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
