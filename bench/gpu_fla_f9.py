#!/usr/bin/env python3
"""cuda-fused9: fla's chunk linear attention (fwd, fwd+bwd) and chunk simple
GLA (fwd; fwd+bwd attempted) at given bf16 shapes, inputs as bench/gpu_ab.py
makes them, timed by gpu_bench.timeit (median of 30 CUDA-event calls).

    PYTHONPATH=<fla> python3 bench/gpu_fla_f9.py [--shapes 8,2048,16,128;4,4096,64,128]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.getcwd(), "bench"))  # a copy run from elsewhere
from gpu_ab import lin_inputs  # noqa: E402
from gpu_bench import timeit  # noqa: E402


def make_runs(lin, sgla, q, k, v, do, g):
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    gr = g.clone().requires_grad_()
    return [("linear fwd", lambda: lin(q, k, v, normalize=False)),
            ("linear fwd+bwd", lambda: lin(qr, kr, vr, normalize=False)[0].backward(do)),
            ("simple_gla fwd", lambda: sgla(q, k, v, g=g)),
            ("simple_gla fwd+bwd", lambda: sgla(qr, kr, vr, g=gr)[0].backward(do))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8,2048,16,128;4,4096,64,128")
    ap.add_argument("--modes", default="fwd,fwd+bwd")
    ap.add_argument("--ops", default="linear,simple_gla", help="cuda-fused11: which ops")
    ap.add_argument("--wait-file", default=None,
                    help="compile/autotune everything first, then wait for this file to exist")
    a = ap.parse_args()
    import fla
    from fla.ops.linear_attn import chunk_linear_attn
    from fla.ops.simple_gla import chunk_simple_gla
    dev, dt = torch.device("cuda"), torch.bfloat16
    name = torch.cuda.get_device_name(0)
    print("fla", fla.__version__, name, flush=True)
    allruns = []
    for sh in a.shapes.split(";"):
        B, T, H, D = (int(x) for x in sh.split(","))
        q, k, v, do, g = lin_inputs(B, T, H, D, dev, dt)
        runs = make_runs(chunk_linear_attn, chunk_simple_gla, q, k, v, do, g)
        runs = [(w, f) for w, f in runs if w.split()[1] in a.modes.split(",")]
        runs = [(w, f) for w, f in runs if w.split()[0] in a.ops.split(",")]
        if a.wait_file:
            for what, fn in runs:
                try:
                    fn()
                except Exception:
                    pass
            torch.cuda.synchronize()
            print("fla compiled for %s; waiting" % sh, flush=True)
        allruns.append((sh, runs))
    if a.wait_file:
        import time
        while not os.path.exists(a.wait_file):
            time.sleep(0.5)
    for sh, runs in allruns:
        for what, fn in runs:
            try:
                ms = timeit(fn)[0]
                print("fla %s bf16 %s: %.3f ms (%s)" % (what, sh, ms, name), flush=True)
            except Exception as e:  # fla's Hopper guard on some backward kernels
                print("fla %s bf16 %s: failed: %s" % (what, sh, str(e)[:200]), flush=True)


if __name__ == "__main__":
    main()
