#!/usr/bin/env python3
"""cuda-occ14: python3 bench/ncu_lf_walk.py A.so,B.so lin:A.so,lin:B.so,sgla:A.so
(run under ncu --kernel-name regex:la_lf_fwd): one forward each (no warm-up) of bf16 linear attention and
simple GLA at 4,4096,64,128 through libs given, in order, for ncu
(--kernel-name regex:la_lf_fwd profiles the four fused walks)."""
import ctypes, math, os, sys
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import DT, P, Dims, GatedOpts, Lib, LinOpts  # noqa: E402

B, T, H, D = 4, 4096, 64, 128
dev = torch.device("cuda")
torch.manual_seed(0)
st = torch.cuda.current_stream().cuda_stream
q = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16)
k = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16) / math.sqrt(D)
v = torch.randn(B, T, H, D, device=dev, dtype=torch.bfloat16)
g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev)).float() / 16
o = torch.empty_like(v)
dims = Dims(B, T, H, D, D, 0, None, 0, DT[torch.bfloat16])
lo, go = LinOpts(0, 1, 2, 0, 1e-6, 0.0, 64), GatedOpts(2, 0.0, 64, 0)
R = ctypes.byref
libs = {p: Lib(p, st) for p in sys.argv[1].split(",")}
for op, p in (x.split(":") for x in sys.argv[2].split(",")):
    L = libs[p]
    if op == "lin":
        L.ok(L.l.la_linear_attn_forward(L.ctx, R(lo), R(dims), P(o), None, None, P(q), P(k), P(v), None, None))
    else:
        L.ok(L.l.la_simple_gla_forward(L.ctx, R(go), R(dims), P(o), None, P(q), P(k), P(v), P(g), None, None))
    torch.cuda.synchronize()
    print("ran", op, os.path.basename(p), flush=True)
