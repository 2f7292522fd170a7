#!/usr/bin/env python3
"""A/B of two linattn libraries in one process (cuda-delta6): the bf16
DeltaNet / Gated DeltaNet chunk forward at the issue's shapes, the libraries
alternating (A B A B) per shape; median of 30 CUDA-event-timed calls each
(gpu_bench.timeit); per-kernel device times of one forward (torch.profiler);
whether both libraries give bitwise identical o and final state.

    python3 bench/delta_ab.py --libs base.so,new.so [--which gdn,delta] [--reps 2]
"""
import argparse
import ctypes
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import DT, P, Dims, GatedOpts, Lib, timeit  # noqa: E402


def inputs(which, dev):
    dt = torch.bfloat16
    torch.manual_seed(0)
    B, T, H, HV, D = (1, 65536, 2, 8, 128) if which == "gdn" else (8, 2048, 16, 16, 128)
    nrm = torch.nn.functional.normalize
    q = nrm(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    k = nrm(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, HV, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
    beta = torch.rand(B, T, HV, device=dev).float()
    dims = Dims(B, T, H, D, D, HV if which == "gdn" else 0, None, 0, DT[dt])
    return (B, T, H, HV, D), q, k, v, g, beta, dims


def fwd_call(L, which, dims, q, k, v, g, beta, o, sT):
    R = ctypes.byref
    go = GatedOpts(2, 0.0, 64, 1 if which == "delta" else 0)
    if which == "gdn":
        return lambda: L.ok(L.l.la_gated_delta_rule_forward(L.ctx, R(go), R(dims), P(o), P(sT),
                                                            P(q), P(k), P(v), P(g), P(beta), None))
    return lambda: L.ok(L.l.la_delta_rule_forward(L.ctx, R(go), R(dims), P(o), P(sT), P(q), P(k),
                                                  P(v), P(beta), None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--which", default="gdn,delta")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    paths = a.libs.split(",")
    libs = [Lib(p, stream) for p in paths]
    name = torch.cuda.get_device_name(0)
    for which in a.which.split(","):
        shp, q, k, v, g, beta, dims = inputs(which, dev)
        B, T, H, HV, D = shp
        nh = HV if which == "gdn" else H
        outs, fns = [], []
        for L in libs:
            o = torch.full_like(v, float("nan"))
            sT = torch.full((B, nh, D, D), float("nan"), device=dev)
            fn = fwd_call(L, which, dims, q, k, v, g, beta, o, sT)
            fn()
            torch.cuda.synchronize()
            outs.append((o.clone(), sT.clone()))
            fns.append(fn)
        same = all(torch.equal(x.view(torch.int16), y.view(torch.int16)) and
                   torch.equal(xs.view(torch.int32), ys.view(torch.int32))
                   for (x, xs), (y, ys) in zip(outs[:1], outs[-1:]))
        fin = all(bool(torch.isfinite(o.float()).all()) and bool(torch.isfinite(s).all())
                  for o, s in outs)
        ts = [[] for _ in paths]
        for _ in range(a.reps):
            for i, fn in enumerate(fns):
                ts[i].append(timeit(fn)[0])
        for i, p in enumerate(paths):
            print("%s %s bf16 %s fwd %.3f ms (%s; runs %s)" %
                  (os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p), which, shp,
                   statistics.median(ts[i]), name, " ".join("%.3f" % x for x in ts[i])),
                  flush=True)
        print("%s: bitwise identical o + final state: %s; all finite: %s" % (which, same, fin),
              flush=True)
        from torch.profiler import ProfilerActivity, profile
        for p, fn in zip(paths, fns):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            for ev in prof.key_averages():
                us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
                if us:
                    print("  kernel %s %s: %s x%d %.1f us" %
                          (os.path.basename(os.path.dirname(p)), which, ev.key[:50], ev.count, us),
                          flush=True)


if __name__ == "__main__":
    main()
