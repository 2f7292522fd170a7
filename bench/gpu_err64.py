#!/usr/bin/env python3
"""Error against float64 of bf16 kernel linear attention's forward and
backward (identity feature map, default scale 1/sqrt(K), no states) on
gpu_ab.py's inputs, per library (cuda-bsplit16): rel RMS = RMS(out - ref) /
RMS(ref) for o, dq, dk, dv; the reference is the chunked recurrence in
float64 on the GPU, differentiated by torch.autograd.
    python3 bench/gpu_err64.py --libs base.so,new.so [--shapes 1,16384,16,128]
"""
import argparse
import math
import os
import sys
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_env  # noqa: E402
from gpu_ab import calls, lin_inputs  # noqa: E402
from gpu_bench import DT, Dims, Lib  # noqa: E402


def reference(q, k, v, do, C=256):
    q, k, v = (x.double().transpose(1, 2).requires_grad_() for x in (q, k, v))  # B H T D
    s = 1.0 / math.sqrt(q.shape[-1])
    B, H, T, D = q.shape
    S = torch.zeros(B, H, D, v.shape[-1], dtype=torch.float64, device=q.device)
    outs = []
    for c0 in range(0, T, C):
        qc, kc, vc = q[:, :, c0:c0 + C], k[:, :, c0:c0 + C], v[:, :, c0:c0 + C]
        A = (qc @ kc.transpose(-1, -2)).tril()
        outs.append(s * (qc @ S + A @ vc))
        S = S + kc.transpose(-1, -2) @ vc
    o = torch.cat(outs, 2)
    o.backward(do.double().transpose(1, 2))
    return [x.transpose(1, 2).detach() for x in (o, q.grad, k.grad, v.grad)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--shapes", default="1,16384,16,128")
    a = ap.parse_args()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    paths = a.libs.split(",")
    libs = [Lib(p, stream) for p in paths]
    for sh in a.shapes.split(";"):
        B, T, H, D = (int(x) for x in sh.split(","))
        q, k, v, do, g = lin_inputs(B, T, H, D, dev, torch.bfloat16)
        dims = Dims(B, T, H, D, D, 0, None, 0, DT[torch.bfloat16])
        ref = reference(q, k, v, do)
        for L, p in zip(libs, paths):
            t = [q, k, v, do, g] + [torch.full_like(x, float("nan")) for x in (v, q, k, v, g)]
            _, fb = (ab_env.wrap(p, f) for f in calls(L, "lin", dims, t))
            fb()
            torch.cuda.synchronize()
            errs = [((x.double() - r).pow(2).mean().sqrt() / r.pow(2).mean().sqrt()).item()
                    for x, r in zip(t[5:9], ref)]
            print("%s lin bf16 %s rel RMS vs float64: o %.3e dq %.3e dk %.3e dv %.3e" %
                  ((os.path.basename(p), sh) + tuple(errs)), flush=True)


if __name__ == "__main__":
    main()
