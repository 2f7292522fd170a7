#!/usr/bin/env python3
"""One Gated DeltaNet forward + backward (bf16, chunk form) at the GDN shape
B=1, T=65536, H=2, HV=8, D=128 through the C API, for ncu:

    ncu --clock-control none -k regex:la_cu_d python3 bench/ncu_delta.py --lib L

(--delta: DeltaNet 8,2048,16,128 instead.) One warm-up call pair first."""
import argparse
import ctypes
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import DT, Dims, GatedOpts, Lib, P  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/liblinattn.so")
    ap.add_argument("--delta", action="store_true")
    a = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    L = Lib(a.lib, torch.cuda.current_stream().cuda_stream)
    B, T, H, HV, D = (8, 2048, 16, 16, 128) if a.delta else (1, 65536, 2, 8, 128)
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, HV, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
    beta = torch.rand(B, T, HV, device=dev).float()
    o, do = torch.empty_like(v), torch.randn_like(v)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg, db = torch.empty_like(g), torch.empty_like(beta)
    dims = Dims(B, T, H, D, D, HV, None, 0, DT[dt])
    go = GatedOpts(2, 0.0, 64, 1 if a.delta else 0)
    for _ in range(2):
        if a.delta:
            L.ok(L.l.la_delta_rule_forward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(o), None,
                                           P(q), P(k), P(v), P(beta), None))
            L.ok(L.l.la_delta_rule_backward(L.ctx, ctypes.byref(go), ctypes.byref(dims), P(dq),
                                            P(dk), P(dv), P(db), None, P(do), None, P(q), P(k),
                                            P(v), P(beta), None))
        else:
            L.ok(L.l.la_gated_delta_rule_forward(L.ctx, ctypes.byref(go), ctypes.byref(dims),
                                                 P(o), None, P(q), P(k), P(v), P(g), P(beta),
                                                 None))
            L.ok(L.l.la_gated_delta_rule_backward(L.ctx, ctypes.byref(go), ctypes.byref(dims),
                                                  P(dq), P(dk), P(dv), P(dg), P(db), None, P(do),
                                                  None, P(q), P(k), P(v), P(g), P(beta), None))
        torch.cuda.synchronize()
    print("ok", torch.cuda.get_device_name(0))


if __name__ == "__main__":
    main()
