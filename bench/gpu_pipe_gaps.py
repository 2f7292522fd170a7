#!/usr/bin/env python3
"""Where the pipelined delta-rule forward loses time between its kernels
(cuda-pdl21): one bf16 Gated DeltaNet forward per library (AB_ENV switches,
bench/ab_env.py) under torch.profiler, its kernels' device start / end times
printed as a timeline (us from the first copy; stream ids tell the state
pass's high-priority stream from the prep / output one), then the state
pass's segments: their device times, the gap from one segment's end to the
next one's first CTA (negative where they overlap), the span from the first
segment's start to the last one's end, and the wall from the first kernel
(not the first copy: under the profiler the host takes ~1 ms between the
chunk table's copy and the launches) to the last one's end. --graph: also
try to capture one forward in a CUDA graph (a context bound to the capture
stream) and replay it, bits compared (cuda-pdl21: GDN 1,16384 was not
captured, a CUDA error during the capture).

    python3 bench/gpu_pipe_gaps.py --libs a.so,b.so [--shape-gdn 1,65536,2,8,128] [--graph]
"""
import argparse
import ctypes
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_env  # noqa: E402
from gpu_ab_delta import calls, inputs  # noqa: E402
from gpu_bench import Lib  # noqa: E402


def short(name):
    for k in ("state_cl", "prep", "out_tc", "dc_state", "memcpy", "Memcpy"):
        if k in name:
            return k
    return name[:24]


def timeline(fwd, label):
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fwd()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    prof.export_chrome_trace(path)
    with open(path) as f:
        tr = json.load(f)
    os.unlink(path)
    evs = [e for e in tr.get("traceEvents", []) if e.get("cat") in ("kernel", "gpu_memcpy")
           and "dur" in e]
    evs.sort(key=lambda e: e["ts"])
    if not evs:
        print("%s: no kernel events" % label)
        return
    t0 = evs[0]["ts"]
    print("%s timeline (us: start, end, dur, stream, kernel)" % label)
    for e in evs:
        print("  %8.1f %8.1f %7.1f s%-3s %s" % (e["ts"] - t0, e["ts"] + e["dur"] - t0, e["dur"],
                                               e.get("args", {}).get("stream", "?"),
                                               short(e["name"])))
    st = [e for e in evs if "state" in e["name"]]
    gaps = [st[i + 1]["ts"] - (st[i]["ts"] + st[i]["dur"]) for i in range(len(st) - 1)]
    span = st[-1]["ts"] + st[-1]["dur"] - st[0]["ts"]
    wall = max(e["ts"] + e["dur"] for e in evs) - min(
        e["ts"] for e in evs if e.get("cat") == "kernel")
    print("%s: %d state segments, sum %.1f us, span %.1f us (span - sum %.1f), gaps %s us; "
          "wall %.1f us" % (label, len(st), sum(e["dur"] for e in st), span,
                            span - sum(e["dur"] for e in st),
                            " ".join("%.1f" % g for g in gaps), wall), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--libs", required=True)
    ap.add_argument("--shape-gdn", default=None)
    ap.add_argument("--graph", action="store_true")
    a = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    stream = torch.cuda.current_stream().cuda_stream
    paths = a.libs.split(",")
    shape, dims, q, k, v, do, g, beta = inputs(
        "gdn", dev, dt, tuple(int(x) for x in a.shape_gdn.split(",")) if a.shape_gdn else None)
    B, T, H, HV, D = shape
    ref = None
    for p in paths:
        L = Lib(p, stream)
        sT = torch.full((B, HV, D, D), float("nan"), device=dev)
        t = [q, k, v, do, g, beta, torch.full_like(v, float("nan")), sT] + [
            torch.full_like(x, float("nan")) for x in (q, k, v, g, beta)]
        fwd = ab_env.wrap(p, calls(L, "gdn", dims, t)[0])
        label = os.path.basename(os.path.dirname(p)) or p
        timeline(fwd, label)
        if ref is None:
            ref = (t[6].clone(), t[7].clone())
        if not a.graph:
            continue
        try:  # the forward captured in a graph (a context bound to the capture stream)
            s2 = torch.cuda.Stream()
            L2 = Lib(p, s2.cuda_stream)
            o2 = torch.full_like(v, float("nan"))
            s2T = torch.full((B, HV, D, D), float("nan"), device=dev)
            t2 = t[:6] + [o2, s2T] + t[8:]
            f2 = ab_env.wrap(p, calls(L2, "gdn", dims, t2)[0])
            torch.cuda.synchronize()
            gr = torch.cuda.CUDAGraph()
            with torch.cuda.graph(gr, stream=s2):
                f2()
            gr.replay()
            torch.cuda.synchronize()
            same = all(torch.equal(ab_env.bits(x), ab_env.bits(y))
                       for x, y in zip(ref, (o2, s2T)))
            print("%s graph: captured and replayed; o, final state bitwise the first "
                  "library's eager call: %s" % (label, same), flush=True)
        except Exception as e:  # noqa: BLE001 - a refusal is a result
            print("%s graph: not captured: %s" % (label, str(e)[-300:]), flush=True)
            torch.cuda.synchronize()


if __name__ == "__main__":
    main()
