#!/usr/bin/env python3
"""cuda-rev11: host emulation of la_cu_dcb_rev_tc9's addressing
(src/cuda/delta_rev_tc.cu) for tensors above 2^31 elements.

Above 2^31 elements (or with LINATTN_CUDA_DELTA_REV=b64) the kernel runs
with CB = 1: every tensor addressed as a 64-bit chunk base (the chunk's
first token times the row stride, or its (chunk, head) block of dh') plus a
32-bit unsigned in-chunk offset that wraps modulo 2^32 in C. This script recomputes
both parts as the kernel does (the in-chunk part masked to 32 bits) for every
thread, copy trip and accumulator slot of sampled CTAs and chunks, and
compares the sum with the plain 64-bit element index (cuda-delta7's kernel's
formula). Shapes: tensors of 2^32 - 2^34 elements (dense and varlen), the
largest HS max(K8, V) that drt_fits admits, and one shape beyond it that
must fail (so the check can fail). cuda-rev12: MT = 2 (two groups of warps,
32 value columns per CTA, at 64 < K <= 128) for the same shapes; its dRo /
dO register loads use the dR slots' offsets (checked as those), it copies
no dRo / dO tiles. Run: python3 bench/drt_index64.py
"""
import sys

import numpy as np

C = 64
M32 = np.int64(0xFFFFFFFF)


def cfg(K, V):
    if K <= 64:
        return 4, 16
    if K <= 128:
        return 4, 32
    return 8, 32


def check(name, lens, H, HS, K, V, expect_ok=True, nchunk_samples=6, rng=None, MT=1):
    NW, KW = cfg(K, V)
    NTH, KP = NW * 32 * MT, NW * KW
    KQ, JW, NT = KP // 8, 8 // NW, KW // 8
    RS, NI = NTH // KQ, 64 * KQ // NTH
    uvec = V % 4 == 0
    RSV, NIV = NTH // 4, 256 // NTH
    RS1, NI1 = NTH // 16, 1024 // NTH
    K8 = (K + 7) & ~7
    HSV, rs, qs, KV = HS * V, HS * K8, H * K8, K * V
    starts = np.cumsum([0] + lens[:-1])
    nchs = [(l + C - 1) // C for l in lens]
    chunk0 = np.cumsum([0] + nchs[:-1])
    nvb = (V + 16 * MT - 1) // (16 * MT)
    t = np.arange(NTH, dtype=np.int64)
    w, mt, lane = (t >> 5) % NW, (t >> 5) // NW, t & 31
    g, q = lane >> 2, lane & 3
    kb = w * KW
    r0, c8 = t // KQ, (t % KQ) * 8
    rv0 = (t >> 2) if uvec else (t >> 4)
    cv = (t & 3) * 4 if uvec else (t & 15)
    bad = 0
    tot = 0
    ctas = set()
    for n in range(len(lens)):
        for hs in {0, HS // 2, HS - 1}:
            for vb in {0, nvb - 1}:
                ctas.add((n, hs, vb))
    for n, hs, vb in sorted(ctas):
        hq = hs // (HS // H)
        v0 = vb * 16 * MT + 16 * mt  # per thread (its group's columns)
        vc = np.minimum(V - v0, 16)
        nch = nchs[n]
        if nch == 0:
            continue
        cs = {0, 1, nch - 2, nch - 1} | set(rng.integers(0, nch, nchunk_samples).tolist())
        cs = sorted(c for c in cs if 0 <= c < nch)
        # kernel's per-thread 32-bit offsets (C: int / unsigned arithmetic)
        ko0 = (r0 * rs + hs * K8 + c8) & M32
        qo0 = (r0 * qs + hq * K8 + c8) & M32
        vo0 = (rv0 * HSV + hs * V + v0 + cv) & M32
        ho0 = ((kb + 2 * q) * V + v0 + g) & M32
        ro0 = ((8 * JW * w + 2 * q) * HSV + hs * V + v0 + g) & M32
        for c in cs:
            tk = int(starts[n]) + c * C  # tokb(c), 64-bit
            chk = int(chunk0[n]) + c  # chkb(c)
            L = min(lens[n] - c * C, C)
            for i in range(NI):
                r = r0 + RS * i
                m = (c8 < K8) & (r < L)
                got = tk * rs + ((ko0 + (RS * i) * rs) & M32)
                ref = (tk * HS + hs) * K8 + r * rs + c8
                gq = tk * qs + ((qo0 + (RS * i) * qs) & M32)
                rq = (tk * H + hq) * K8 + r * qs + c8
                bad += int(np.sum(m & ((got != ref) | (gq != rq))))
                tot += int(np.sum(m)) * 2
            RSx, NIx = (RSV, NIV) if uvec else (RS1, NI1)
            for i in range(NIx if MT == 1 else 0):  # dRo / dO tiles (MT = 1)
                r = rv0 + RSx * i
                m = (cv < vc) & (r < L)
                got = tk * HSV + ((vo0 + (RSx * i) * HSV) & M32)
                ref = (tk * HS + hs) * V + v0 + r * HSV + cv
                bad += int(np.sum(m & (got != ref)))
                tot += int(np.sum(m))
            for j in range(NT):  # dh' slots
                for e in range(4):
                    v, i = g + 8 * (e >> 1), kb + 8 * j + 2 * q + (e & 1)
                    m = (i < K) & (v < vc)
                    got = (chk * HS + hs) * KV + ((ho0 + (8 * j + (e & 1)) * V + 8 * (e >> 1)) & M32)
                    ref = (chk * HS + hs) * K * V + i * V + v0 + v
                    bad += int(np.sum(m & (got != ref)))
                    tot += int(np.sum(m))
            for jw in range(JW):  # dR slots (MT = 2: also its dRo / dO loads)
                for hf in range(2):
                    for d in range(2):
                        tt = 8 * (JW * w + jw) + 2 * q + d
                        v = g + 8 * hf
                        m = (v < vc) & (tt < L)
                        got = tk * HSV + ((ro0 + (8 * jw) * HSV + 8 * hf + d * HSV) & M32)
                        ref = ((tk + tt) * HS + hs) * V + v0 + v
                        bad += int(np.sum(m & (got != ref)))
                        tot += int(np.sum(m))
    T = sum(lens)
    big = max(T * HS * max(K8, V), (sum(nchs) * HS * K * V))
    KM = max(K8, V)
    fits = HS <= (1 << 25) // KM
    ok = bad == 0
    status = "ok" if ok == expect_ok else "UNEXPECTED"
    print(f"{status}: {name}{' MT=2' if MT == 2 else ''}: largest tensor {big} elements (2^{np.log2(big):.2f}), "
          f"drt_fits {int(fits)}, {tot} addresses checked, {bad} differ")
    return ok == expect_ok and fits == expect_ok


def main():
    rng = np.random.default_rng(11)
    res = [
        check("GDN T=2^22+37 H2 HV8 K=V=128", [(1 << 22) + 37], 2, 8, 128, 128, rng=rng, MT=2),
        check("DeltaNet varlen K100 V72 H16", [(1 << 20) + 5, 3, (1 << 20), 64], 16, 16, 100, 72,
              rng=rng, MT=2),
        check("DeltaNet K128 V176 (empty second group) HS 24", [(1 << 21) + 7], 24, 24, 128, 176,
              rng=rng, MT=2),
        check("beyond drt_fits: HS 1048576 K=V=128 (must wrap)", [130], 1, 1048576, 128, 128,
              expect_ok=False, rng=rng, MT=2),
        check("GDN T=2^22+37 H2 HV8 K=V=128", [(1 << 22) + 37], 2, 8, 128, 128, rng=rng),
        check("DeltaNet varlen K100 V72 H16", [(1 << 20) + 5, 3, (1 << 20), 64], 16, 16, 100, 72, rng=rng),
        check("K256 V256 HS4, T 2^21+1 (NW 8)", [(1 << 21) + 1], 4, 4, 256, 256, rng=rng),
        check("K40 V36 HS64, T 2^20+63 (4-byte dO copies)", [(1 << 20) + 63], 64, 64, 40, 36, rng=rng),
        check("drt_fits edge: HS 131071 K=V=256", [130, 7], 1, 131071, 256, 256, rng=rng),
        check("beyond drt_fits: HS 524288 K=V=256 (must wrap)", [130], 1, 524288, 256, 256,
              expect_ok=False, rng=rng),
    ]
    sys.exit(0 if all(res) else 1)


if __name__ == "__main__":
    main()
