#!/usr/bin/env python3
"""cuda-drsplit18: what a time split of the delta rules' reverse
state-gradient pass (bench/delta_rsplit_check.py) would cost, measured
with the existing reverse kernel before writing one. The split's two
sequential-chunk phases run the same per-chunk step as the unsplit pass on
more, shorter problems:
  phase 1: P - 1 segments' local pass (V columns), P - 2 segments'
           transposed transitions (K columns from the identity) and the last
           segment's true pass (V columns), all from their segment's end:
           (3P - 3) column sets of 128 on T / P tokens each;
  phase 3: the rerun of P - 1 segments (V columns) from their true end.
With K = V = 128 both are the existing backward at B = P - 1 sequences of T
/ P tokens and V = 256 (phase 1; at P = 2: B = 2, V = 128) or V = 128
(phase 3), so the reverse kernel's device time there (torch.profiler,
median of 3 calls) is a LOWER bound on the split's phases: same chunk
steps, same grid (the library's form choice: cluster / wide / one-CTA;
LINATTN_CUDA_DELTA_WIDE, _REV pick others), without the split's segment
bookkeeping and without the scan between them (the forward split's scan
took 96 / 190 us at P = 4 / 8 at GDN, cuda-split9). Prints one row per
shape: the reverse kernel's name (its form), us, and fwd+bwd ms.

    python3 bench/gpu_rsplit_emul.py --lib liblinattn.so [--shapes op:B,T,H,HV,K,V;...]
"""
import argparse
import ctypes
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import DT, Dims, Lib, timeit  # noqa: E402
from gpu_ab_delta import calls  # noqa: E402

SHAPES = ("gdn:1,65536,2,8,128,128;gdn:3,16384,2,8,128,256;gdn:3,16384,2,8,128,128;"
          "gdn:7,8192,2,8,128,256;gdn:7,8192,2,8,128,128;gdn:15,4096,2,8,128,256;"
          "gdn:15,4096,2,8,128,128;delta:1,16384,16,16,128,128;delta:2,8192,16,16,128,128;"
          "delta:1,8192,16,16,128,128;delta:3,4096,16,16,128,256;delta:3,4096,16,16,128,128;"
          "delta:8,2048,16,16,128,128")


def inputs(op, dev, dt, B, T, H, HV, K, V):
    torch.manual_seed(0)
    nq = lambda: torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dt)
    q, k = nq(), nq()
    v = torch.randn(B, T, HV, V, device=dev, dtype=dt)
    do = torch.randn(B, T, HV, V, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
    beta = torch.rand(B, T, HV, device=dev).float()
    dims = Dims(B, T, H, K, V, HV if op == "gdn" else 0, None, 0, DT[dt])
    return dims, q, k, v, do, g, beta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--tag", default=os.environ.get("EMUL_TAG", "default"))
    a = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    L = Lib(a.lib, torch.cuda.current_stream().cuda_stream)
    from torch.profiler import ProfilerActivity, profile
    for spec in a.shapes.split(";"):
        op, rest = spec.split(":")
        B, T, H, HV, K, V = (int(x) for x in rest.split(","))
        dims, q, k, v, do, g, beta = inputs(op, dev, dt, B, T, H, HV, K, V)
        nh = HV if op == "gdn" else H
        sT = torch.full((B, nh, K, V), float("nan"), device=dev)
        t = [q, k, v, do, g, beta, torch.full_like(v, float("nan")), sT] + [
            torch.full_like(x, float("nan")) for x in (q, k, v, g, beta)]
        _, fb = calls(L, op, dims, t)
        fb()
        torch.cuda.synchronize()
        ok = all(bool(torch.isfinite(x).all()) for x in t[6:] if op == "gdn" or x is not t[11])
        ms = timeit(fb, iters=5)[0]
        rev = {}
        for _ in range(3):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fb()
                torch.cuda.synchronize()
            for ev in prof.key_averages():
                us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
                if "dcb_rev" in ev.key and us:
                    rev.setdefault(ev.key, []).append(us)
        for key, us in rev.items():
            nm = key[key.find("la_cu_dcb_rev"):][:60]
            print("emul %-8s %-6s B,T,H,HV,K,V %-24s rev %8.1f us (%s)  fwd+bwd %7.3f ms  finite %s  %s"
                  % (a.tag, op, rest, statistics.median(us), " ".join("%.0f" % x for x in us), ms,
                     ok, nm), flush=True)
        del q, k, v, do, g, beta, t, sT
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
