#!/usr/bin/env python3
"""fla's kernel linear attention (chunk form, bf16) forward and forward+backward
at one shape, for the side-by-side numbers of bench/GPU.md (cuda-lin5). The
first calls (Triton compile / autotune) are timed apart; the timed calls wait
until the file named by --wait exists (another job's end) or --deadline
seconds have passed since start, so they do not overlap other GPU work.

    PYTHONPATH=<fla checkout> python3 bench/fla_lin_time.py [--shape 8,2048,16,128]
"""
import argparse
import math
import os
import statistics
import time

import torch


def timed(fn, iters):
    out = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8,2048,16,128")
    ap.add_argument("--wait", default=None)
    ap.add_argument("--deadline", type=float, default=1e9)
    ap.add_argument("--iters", type=int, default=30)
    a = ap.parse_args()
    t_start = time.time()
    import fla
    from fla.ops.linear_attn import chunk_linear_attn
    B, T, H, D = (int(x) for x in a.shape.split(","))
    dev, dt = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    q = torch.randn(B, T, H, D, device=dev, dtype=dt)
    k = torch.randn(B, T, H, D, device=dev, dtype=dt) / math.sqrt(D)
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    do = torch.randn(B, T, H, D, device=dev, dtype=dt)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    fwd = lambda: chunk_linear_attn(q, k, v, normalize=False)
    fb = lambda: chunk_linear_attn(qr, kr, vr, normalize=False)[0].backward(do)
    print("fla", fla.__version__, torch.cuda.get_device_name(0), a.shape, flush=True)
    for name, fn in (("fwd", fwd), ("fwd+bwd", fb)):
        t0 = time.time()
        fn()
        torch.cuda.synchronize()
        print("first %s call %.1f s" % (name, time.time() - t0), flush=True)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
    while a.wait and not os.path.exists(a.wait) and time.time() - t_start < a.deadline:
        time.sleep(0.5)
    alone = not a.wait or os.path.exists(a.wait)
    print("timing at %.0f s (%s)" % (time.time() - t_start,
          "GPU otherwise idle" if alone else "OVERLAPS other GPU work"), flush=True)
    for name, fn in (("fwd", fwd), ("fwd+bwd", fb)):
        print("fla lin bf16 %s %s %.3f ms (median of %d; %s)" %
              (a.shape, name, timed(fn, a.iters), a.iters, torch.cuda.get_device_name(0)),
              flush=True)


if __name__ == "__main__":
    main()
