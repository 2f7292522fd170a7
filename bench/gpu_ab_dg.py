#!/usr/bin/env python3
"""cuda-fused12: simple GLA's gate gradient through the fused backward, on
one GPU, two libraries (base = main, new) in one process.

    python3 bench/gpu_ab_dg.py --libs base.so,new.so [--shape 8,2048,16,128]

1. g (dg required): o bitwise against base, dq, dk, dv, dg against base
   (main's old backward) and, for every library, against a float64 chunk
   recurrence (torch autograd on the GPU), relative RMS;
2. RetNet decay (g_gamma): the last library's dq, dk, dv with dg_gamma
   against the first's without it (main's fused backward), bitwise;
3. time: g with dg (gpu_ab's sgla call) and RetNet decay (g_gamma) with
   dg_gamma, fwd+bwd, the libraries alternating, medians of 2 x 30 calls."""
import argparse
import ctypes
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_ab import lin_inputs  # noqa: E402
from gpu_bench import DT, P, Dims, GatedOpts, Lib, timeit  # noqa: E402

R = ctypes.byref


def ref64(q, k, v, g, do, scale, C=64):
    """float64 o and the gradients of <o, dO> (chunk recurrence, autograd)."""
    q, k, v, g = (x.double().requires_grad_() for x in (q, k, v, g))
    B, T, H, D = q.shape
    S = torch.zeros(B, H, D, v.shape[-1], dtype=torch.float64, device=q.device)
    outs = []
    tri = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    for c0 in range(0, T, C):
        qc, kc, vc = (x[:, c0:c0 + C].transpose(1, 2) for x in (q, k, v))
        G = g[:, c0:c0 + C].transpose(1, 2).cumsum(-1)  # B H L
        L = G.shape[-1]
        d = G[..., :, None] - G[..., None, :]
        d = torch.where(tri[:L, :L], d, torch.full_like(d, -1e30))
        A = (qc @ kc.transpose(-1, -2)) * d.exp()
        o = scale * (A @ vc + G.exp()[..., None] * (qc @ S))
        outs.append(o.transpose(1, 2))
        GL = G[..., -1:]
        S = GL.exp()[..., None] * S + (kc * (GL - G).exp()[..., None]).transpose(-1, -2) @ vc
    o = torch.cat(outs, 1)
    dq, dk, dv, dg = torch.autograd.grad((o * do.double()).sum(), [q, k, v, g])
    return o.detach(), dq, dk, dv, dg


def rel(x, r):
    x, r = x.double(), r.double()
    return ((x - r).norm() / r.norm()).item()


def bits(x, y):
    return torch.equal(x.view(torch.int16) if x.dtype == torch.bfloat16 else x.view(torch.int32),
                       y.view(torch.int16) if y.dtype == torch.bfloat16 else y.view(torch.int32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--shape", default="8,2048,16,128")
    ap.add_argument("--no-ref", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    paths = a.libs.split(",")
    libs = [Lib(p, stream) for p in paths]
    B, T, H, D = (int(x) for x in a.shape.split(","))
    q, k, v, do, g = lin_inputs(B, T, H, D, dev, torch.bfloat16)
    dims = Dims(B, T, H, D, D, 0, None, 0, DT[torch.bfloat16])
    go = GatedOpts(2, 0.0, 64, 0)
    gam = torch.tensor([-(2.0 ** (-5 - 8.0 * i / H)) for i in range(H)], device=dev).log1p()
    nan = lambda x: torch.full_like(x, float("nan"))

    def run(L, with_dg, retnet=False):
        o, dq, dk, dv, dg, dgam = nan(v), nan(q), nan(k), nan(v), nan(g), nan(gam)
        gg, gm = (None, gam) if retnet else (g, None)
        fwd = lambda: L.ok(L.l.la_simple_gla_forward(L.ctx, R(go), R(dims), P(o), None, P(q), P(k),
                                                     P(v), P(gg), P(gm), None))
        bwd = lambda: L.ok(L.l.la_simple_gla_backward(
            L.ctx, R(go), R(dims), P(dq), P(dk), P(dv), None if retnet else P(dg),
            P(dgam) if retnet and with_dg else None, None, P(do), None, P(q), P(k), P(v), P(gg),
            P(gm), None))
        return (o, dq, dk, dv, dg, dgam), fwd, lambda: (fwd(), bwd())

    name = torch.cuda.get_device_name(0)
    res = {}
    for L, p in zip(libs, paths):  # g requires dg: both libraries with dg
        t, _, fb = run(L, True)
        fb()
        torch.cuda.synchronize()
        res[p] = [x.clone() for x in t]
    base, new = paths[0], paths[-1]
    nb = res[new]
    print("g, dg: new o == base o bitwise: %s; new vs base (main's old backward) rel RMS:"
          " dq %.3e dk %.3e dv %.3e dg %.3e" % (bits(nb[0], res[base][0]),
                                              *(rel(x, y) for x, y in zip(nb[1:5], res[base][1:5]))),
          flush=True)
    if not a.no_ref:
        r = ref64(q, k, v, g, do, float(torch.tensor(D ** -0.5, dtype=torch.float32)))
        for p in paths:
            x = res[p]
            print("%s vs float64: o %.3e dq %.3e dk %.3e dv %.3e dg %.3e (rel RMS)" %
                  (p, rel(x[0], r[0]), rel(x[1], r[1]), rel(x[2], r[2]), rel(x[3], r[3]),
                   rel(x[4], r[4])), flush=True)
        del r
    # RetNet decay: new with dg_gamma against base without it (main's fused backward)
    t, _, fb = run(libs[0], False, retnet=True)
    fb()
    torch.cuda.synchronize()
    rb0 = [x.clone() for x in t]
    # RetNet decay with dg_gamma: bits of dq/dk/dv and dg_gamma's difference
    rb = {}
    for L, p in zip(libs, paths):
        t, _, fb = run(L, True, retnet=True)
        fb()
        torch.cuda.synchronize()
        rb[p] = [x.clone() for x in t]
    print("retnet: new (dg_gamma) o, dq, dk, dv == base without dg_gamma (fused) bitwise: %s" %
          [bits(x, y) for x, y in zip(rb[new][:4], rb0[:4])], flush=True)
    print("retnet dg_gamma[:3] base %s new %s (rel diff %.3e)" %
          (rb[base][5][:3].tolist(), rb[new][5][:3].tolist(), rel(rb[new][5], rb[base][5])),
          flush=True)
    for what, kw in (("sgla g+dg", {}), ("retnet g_gamma+dg_gamma", {"retnet": True})):
        fns = {p: run(L, True, **kw) for L, p in zip(libs, paths)}  # dg / dg_gamma asked
        ts = {p: ([], []) for p in paths}
        for _ in range(2):
            for p in paths:
                _, fwd, fb = fns[p]
                ts[p][0].append(timeit(fwd)[0])
                ts[p][1].append(timeit(fb)[0])
        for p in paths:
            print("%s %s bf16 %s fwd %.3f fwd+bwd %.3f ms (%s; runs %s)" %
                  (p, what,
                   a.shape, statistics.median(ts[p][0]), statistics.median(ts[p][1]), name,
                   " ".join("%.3f" % x for x in ts[p][1])), flush=True)


if __name__ == "__main__":
    main()
