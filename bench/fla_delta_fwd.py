#!/usr/bin/env python3
"""fla's chunk_delta_rule / chunk_gated_delta_rule forward at the issue's
shapes (bf16): one compile call, 3 warm-up calls, then the median of 30
CUDA-event-timed calls. Same inputs as bench/gpu_bench.py."""
import json, statistics, sys, time
import torch
from fla.ops.delta_rule import chunk_delta_rule
from fla.ops.gated_delta_rule import chunk_gated_delta_rule


def med(fn, iters=30):
    t0 = time.time(); fn(); torch.cuda.synchronize(); first = time.time() - t0
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    return statistics.median(ts), first


dev, dt = torch.device("cuda"), torch.bfloat16
torch.manual_seed(0)
print("GPU:", torch.cuda.get_device_name(0), flush=True)
which = sys.argv[1:] or ["gdn", "delta"]
if "gdn" in which:
    B, T, H, HV, D = 1, 65536, 2, 8, 128
    q = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, HV, D, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).float() / 16
    beta = torch.rand(B, T, HV, device=dev).float()
    try:  # q, k with H heads and v with HV, as bench/gpu_bench.py calls it
        ms, first = med(lambda: chunk_gated_delta_rule(q, k, v, g, beta))
        print(json.dumps(dict(op="gated_delta", impl="fla", B=B, T=T, H=H, HV=HV, D=D, mode="fwd",
                              ms=round(ms, 4), first_s=round(first, 1))), flush=True)
    except Exception as e:  # noqa: BLE001
        print("fla gdn refused:", str(e).splitlines()[-1][:200], flush=True)
if "delta" in which:
    B, T, H, D = 8, 2048, 16, 128
    q = torch.randn(B, T, H, D, device=dev, dtype=dt)
    k = torch.randn(B, T, H, D, device=dev, dtype=dt)
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    beta = torch.rand(B, T, H, device=dev).to(dt)
    try:
        ms, first = med(lambda: chunk_delta_rule(q, k, v, beta, use_qk_l2norm_in_kernel=True))
        print(json.dumps(dict(op="delta", impl="fla", B=B, T=T, H=H, D=D, mode="fwd",
                              ms=round(ms, 4), first_s=round(first, 1))), flush=True)
    except Exception as e:  # noqa: BLE001
        print("fla delta refused:", str(e).splitlines()[-1][:200], flush=True)
