#!/usr/bin/env python3
"""A/B of two linattn libraries in one process (cuda-lin4): bf16 kernel
linear attention and simple GLA, forward and forward+backward, the libraries
alternating (A B A B) per (shape, op); median of 30 CUDA-event-timed calls
each (gpu_bench.timeit). Also reports whether both libraries give bitwise
identical outputs and gradients on the same inputs (every library against
the first). Per-library LINATTN_* switches: AB_ENV (bench/ab_env.py).

    python3 bench/gpu_ab.py --libs base.so,new.so [--shapes 8,2048,16,128;1,16384,16,128]
"""
import argparse
import ctypes
import math
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_env  # noqa: E402
from gpu_bench import DT, P, Dims, GatedOpts, Lib, LinOpts, timeit  # noqa: E402


def lin_inputs(B, T, H, D, dev, dt):
    """q, k, v, dO and log-gates g of one shape (seed 0), the same for every
    harness that times linear attention / simple GLA (also gpu_fla_f9.py)."""
    torch.manual_seed(0)
    q = torch.randn(B, T, H, D, device=dev, dtype=dt)
    k = torch.randn(B, T, H, D, device=dev, dtype=dt) / math.sqrt(D)
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    do = torch.randn(B, T, H, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev)).float() / 16
    return q, k, v, do, g


def calls(L, op, dims, t):
    R = ctypes.byref
    lo, go = LinOpts(0, 1, 2, 0, 1e-6, 0.0, 64), GatedOpts(2, 0.0, 64, 0)
    q, k, v, do, g, o, dq, dk, dv, dg = t
    if op == "lin":
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
    return fwd, lambda: (fwd(), bwd())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--shapes", default="8,2048,16,128;1,16384,16,128")
    ap.add_argument("--ops", default="lin,sgla")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    ap.add_argument("--profile", action="store_true",
                    help="per-kernel device times of one fwd+bwd per library (torch.profiler)")
    a = ap.parse_args()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    paths = a.libs.split(",")
    libs = [Lib(p, stream) for p in paths]
    name = torch.cuda.get_device_name(0)
    for sh in a.shapes.split(";"):
        B, T, H, D = (int(x) for x in sh.split(","))
        dt = torch.bfloat16 if a.dtype == "bf16" else torch.float16
        q, k, v, do, g = lin_inputs(B, T, H, D, dev, dt)
        dims = Dims(B, T, H, D, D, 0, None, 0, DT[dt])
        for op in a.ops.split(","):
            outs, res = [], {p: ([], []) for p in paths}
            for L, p in zip(libs, paths):
                t = [q, k, v, do, g] + [torch.full_like(x, float("nan")) for x in (v, q, k, v, g)]
                fwd, fb = (ab_env.wrap(p, f) for f in calls(L, op, dims, t))
                fb()
                torch.cuda.synchronize()
                outs.append([x.clone() for x in t[5:]])
                res[p] = (fwd, fb, [], [])
            # bitwise, NaN == NaN (outputs an op does not write stay NaN-poisoned),
            # each library against the first
            same = " ".join(
                "%s:%s" % (os.path.basename(os.path.dirname(p)) or p,
                           all(torch.equal(ab_env.bits(x), ab_env.bits(y)) for x, y in zip(outs[0], o)))
                for p, o in zip(paths[1:], outs[1:]))
            for _ in range(a.reps):
                for p in paths:
                    fwd, fb, tf, tb = res[p]
                    tf.append(timeit(fwd)[0])
                    tb.append(timeit(fb)[0])
            for p in paths:
                _, _, tf, tb = res[p]
                print("%s %s %s %s fwd %.3f fwd+bwd %.3f ms (%s; runs %s / %s)" %
                      (os.path.basename(p), op, a.dtype, sh, statistics.median(tf), statistics.median(tb),
                       name, " ".join("%.3f" % x for x in tf), " ".join("%.3f" % x for x in tb)),
                      flush=True)
            print("bitwise identical outputs+gradients (%s): %s" % (op, same), flush=True)
            if a.profile:
                from torch.profiler import ProfilerActivity, profile
                for p in paths:
                    fb = res[p][1]
                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        fb()
                        torch.cuda.synchronize()
                    for ev in prof.key_averages():
                        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
                        if us:
                            print("  kernel %s %s %s: %s x%d %.1f us" % (os.path.basename(p), op, sh,
                                  ev.key[:60], ev.count, us), flush=True)


if __name__ == "__main__":
    main()
