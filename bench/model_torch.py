#!/usr/bin/python3
"""The model of src/model/ written in PyTorch (CPU), for the speed comparison
in bench/MODEL.md: embedding, pre-norm blocks of RMSNorm -> q/k/v projections
-> short causal depthwise conv + SiLU -> token mixer -> Wo -> residual ->
RMSNorm -> SwiGLU -> residual, final RMSNorm, tied head, cross-entropy; AdamW
with clipping. Mixers in their usual PyTorch forms: softmax as masked
attention, the linear mixers chunkwise (chunk 64) like fla's naive chunk
references, autograd for the backward.

  /usr/bin/python3 bench/model_torch.py --mixer gla --threads 2 --steps 5
  /usr/bin/python3 bench/model_torch.py --check   # chunk forms == recurrences
Prints one JSON object: median seconds per training step and tokens/s.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

CHUNK = 64


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


# ---- mixers: q, k, v [B, H, T, K] -> o [B, H, T, K] -------------------------

def softmax_attn(q, k, v):
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), -1) @ v


def linear_attn_chunk(q, k, v, eps=1e-6, elu1=True):
    """causal normalised linear attention, chunkwise; feature map elu+1, or
    none (elu1=False: q, k are features already, as for the Performer)."""
    if elu1:
        q, k = F.elu(q) + 1, F.elu(k) + 1
    B, H, T, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])
    z = q.new_zeros(B, H, K)
    mask = torch.ones(CHUNK, CHUNK).tril()
    out = []
    for c in range(0, T, CHUNK):
        qc, kc, vc = q[:, :, c:c + CHUNK], k[:, :, c:c + CHUNK], v[:, :, c:c + CHUNK]
        n = qc.shape[2]
        a = (qc @ kc.transpose(-1, -2)) * mask[:n, :n]
        num = qc @ S + a @ vc
        den = (qc * z[:, :, None]).sum(-1) + a.sum(-1)
        out.append(num / (den[..., None] + eps))
        S = S + kc.transpose(-1, -2) @ vc
        z = z + kc.sum(2)
    return torch.cat(out, 2)


def favor_positive(x, W, stabilize):
    """FAVOR+ positive features m^-1/2 exp(w_i.x' - |x'|^2/2), x' = K^-1/4 x;
    W [m, K]. stabilize: subtract each token's largest exponent (queries; a
    per-query factor that cancels in normalised attention)."""
    xs = x * x.shape[-1] ** -0.25
    e = xs @ W.t() - 0.5 * (xs * xs).sum(-1, keepdim=True)
    if stabilize:
        e = e - e.max(-1, keepdim=True)[0].detach()
    return e.exp() * W.shape[0] ** -0.5


def simple_gla_chunk(q, k, v, g_gamma):
    """RetNet: S_t = gamma S_{t-1} + k^T v, o = scale q S; chunkwise."""
    B, H, T, K = q.shape
    q = q * K ** -0.5
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for c in range(0, T, CHUNK):
        qc, kc, vc = q[:, :, c:c + CHUNK], k[:, :, c:c + CHUNK], v[:, :, c:c + CHUNK]
        n = qc.shape[2]
        idx = torch.arange(n, dtype=q.dtype)
        G = g_gamma[:, None] * (idx + 1)                      # [H, n] cumulative log decay
        D = (G[:, :, None] - G[:, None, :]).masked_fill(
            torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).exp()
        o = (qc @ kc.transpose(-1, -2) * D) @ vc + (qc * G.exp()[:, :, None]) @ S
        out.append(o)
        GL = G[:, -1]
        S = S * GL.exp()[:, None, None] + (kc * (GL[:, None] - G).exp()[..., None]).transpose(-1, -2) @ vc
    return torch.cat(out, 2)


def gla_chunk(q, k, v, g):
    """GLA: S_t = diag(exp g_t) S_{t-1} + k^T v; g [B,H,T,K]; chunkwise."""
    B, H, T, K = q.shape
    q = q * K ** -0.5
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for c in range(0, T, CHUNK):
        qc, kc, vc, gc = (x[:, :, c:c + CHUNK] for x in (q, k, v, g))
        n = qc.shape[2]
        G = gc.cumsum(2)
        qg, kg = qc * G.exp(), kc * (-G).exp()
        a = (qg @ kg.transpose(-1, -2)).tril()
        o = a @ vc + qg @ S
        out.append(o)
        GL = G[:, :, -1:]
        S = S * GL.transpose(-1, -2).exp() + (kc * (GL - G).exp()).transpose(-1, -2) @ vc
    return torch.cat(out, 2)


def l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def gated_delta_chunk(q, k, v, beta, g=None):
    """(Gated) DeltaNet, WY chunk form: S_t = exp(g_t)(I - b k k^T) S + b k^T v."""
    B, H, T, K = q.shape
    q, k = l2n(q) * K ** -0.5, l2n(k)
    if g is None:
        g = q.new_zeros(B, H, T)
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for c in range(0, T, CHUNK):
        qc, kc, vc, bc, gc = (x[:, :, c:c + CHUNK] for x in (q, k, v, beta, g))
        n = qc.shape[2]
        G = gc.cumsum(2)                                        # [B,H,n]
        L = (G[..., :, None] - G[..., None, :]).masked_fill(
            torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).exp()
        kb = kc * bc[..., None]
        A = ((kb @ kc.transpose(-1, -2)) * L).tril(-1)
        Tm = torch.linalg.solve_triangular(torch.eye(n) + A, torch.eye(n).expand_as(A), upper=False)
        w = Tm @ (kb * G.exp()[..., None])
        u = Tm @ (vc * bc[..., None])
        vn = u - w @ S
        o = (qc * G.exp()[..., None]) @ S + ((qc @ kc.transpose(-1, -2)) * L) @ vn
        out.append(o)
        GL = G[..., -1:]
        S = S * GL[..., None].exp() + (kc * (GL - G).exp()[..., None]).transpose(-1, -2) @ vn
    return torch.cat(out, 2)


# ---- recurrent references for --check --------------------------------------

def gated_delta_rec(q, k, v, beta, g=None):
    B, H, T, K = q.shape
    q, k = l2n(q) * K ** -0.5, l2n(k)
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for t in range(T):
        if g is not None:
            S = S * g[:, :, t].exp()[..., None, None]
        kt, vt, bt = k[:, :, t], v[:, :, t], beta[:, :, t][..., None]
        S = S + kt[..., :, None] * (bt * (vt - (kt[..., None, :] @ S)[..., 0, :]))[..., None, :]
        out.append((q[:, :, t, None, :] @ S)[..., 0, :])
    return torch.stack(out, 2)


def gla_rec(q, k, v, g):
    B, H, T, K = q.shape
    q = q * K ** -0.5
    S = q.new_zeros(B, H, K, v.shape[-1])
    out = []
    for t in range(T):
        S = S * g[:, :, t].exp()[..., None] + k[:, :, t, :, None] * v[:, :, t, None, :]
        out.append((q[:, :, t, None, :] @ S)[..., 0, :])
    return torch.stack(out, 2)


class Model(torch.nn.Module):
    def __init__(self, mixer, vocab, D, L, H, F_, conv=4, performer_m=32):
        super().__init__()
        self.mixer, self.H, self.K, self.conv = mixer, H, D // H, conv
        HK = H * self.K
        self.embed = torch.nn.Parameter(torch.randn(vocab, D) / math.sqrt(D))
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            m = torch.nn.Module()
            m.n1 = torch.nn.Parameter(torch.ones(D))
            m.n2 = torch.nn.Parameter(torch.ones(D))
            m.wq, m.wk, m.wv = (torch.nn.Linear(D, HK, bias=False) for _ in range(3))
            m.wo = torch.nn.Linear(HK, D, bias=False)
            m.cq, m.ck, m.cv = (torch.nn.Conv1d(HK, HK, conv, groups=HK, bias=False,
                                                padding=conv - 1) for _ in range(3))
            if mixer == "gla":
                m.wg = torch.nn.Linear(D, HK)
            if mixer in ("deltanet", "gdn"):
                m.wb = torch.nn.Linear(D, H)
            if mixer == "gdn":
                m.wa = torch.nn.Linear(D, H)
                m.a_log = torch.nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
                m.dt = torch.nn.Parameter(torch.zeros(H))
            m.w1 = torch.nn.Linear(D, F_, bias=False)
            m.w3 = torch.nn.Linear(D, F_, bias=False)
            m.w2 = torch.nn.Linear(F_, D, bias=False)
            self.layers.append(m)
        self.nf = torch.nn.Parameter(torch.ones(D))
        self.g_gamma = torch.log(1 - 2.0 ** (-5 - torch.arange(H, dtype=torch.float32)))
        # Performer: a fixed projection of performer_m orthogonal rows with
        # chi-distributed norms (the C model's LA_PROJ_ORTHOGONAL draw; the
        # values differ, the cost does not).
        blocks = [torch.linalg.qr(torch.randn(self.K, self.K))[0]
                  for _ in range(-(-performer_m // self.K))]
        self.performer_W = (torch.cat(blocks)[:performer_m] *
                            torch.randn(performer_m, self.K).norm(dim=1, keepdim=True))

    def heads(self, x):  # [B,T,HK] -> [B,H,T,K]
        B, T, _ = x.shape
        return x.view(B, T, self.H, self.K).transpose(1, 2)

    def forward(self, tok, tgt):
        x = self.embed[tok]
        B, T, _ = x.shape
        for m in self.layers:
            n = rmsnorm(x, m.n1)

            def cv(lin, conv):
                y = conv(lin(n).transpose(1, 2))[..., :T]
                return F.silu(y).transpose(1, 2)

            q, k, v = self.heads(cv(m.wq, m.cq)), self.heads(cv(m.wk, m.ck)), self.heads(cv(m.wv, m.cv))
            if self.mixer == "softmax":
                o = softmax_attn(q, k, v)
            elif self.mixer == "linear":
                o = linear_attn_chunk(q, k, v)
            elif self.mixer == "performer":
                W = self.performer_W
                o = linear_attn_chunk(favor_positive(q, W, True), favor_positive(k, W, False), v,
                                      elu1=False)
            elif self.mixer == "retnet":
                o = simple_gla_chunk(q, k, v, self.g_gamma)
            elif self.mixer == "gla":
                g = self.heads(F.logsigmoid(m.wg(n)) / 16)
                o = gla_chunk(q, k, v, g)
            elif self.mixer == "deltanet":
                o = gated_delta_chunk(q, k, v, torch.sigmoid(m.wb(n)).transpose(1, 2))
            elif self.mixer == "gdn":
                g = -m.a_log.exp() * F.softplus(m.wa(n) + m.dt)
                o = gated_delta_chunk(q, k, v, torch.sigmoid(m.wb(n)).transpose(1, 2), g.transpose(1, 2))
            else:
                raise ValueError(self.mixer)
            x = x + m.wo(o.transpose(1, 2).reshape(B, T, -1))
            n2 = rmsnorm(x, m.n2)
            x = x + m.w2(F.silu(m.w1(n2)) * m.w3(n2))
        logits = rmsnorm(x, self.nf) @ self.embed.t()
        return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(-1))


def check():
    torch.manual_seed(0)
    B, H, T, K = 2, 2, 150, 8
    q, k, v = (torch.randn(B, H, T, K, dtype=torch.float64) for _ in range(3))
    beta = torch.rand(B, H, T, dtype=torch.float64)
    g = -torch.rand(B, H, T, dtype=torch.float64) * 0.2
    gk = -torch.rand(B, H, T, K, dtype=torch.float64) * 0.2
    gl = lambda: torch.log(1 - 2.0 ** (-5 - torch.arange(H, dtype=torch.float64)))
    errs = {
        "deltanet": (gated_delta_chunk(q, k, v, beta) - gated_delta_rec(q, k, v, beta)).abs().max(),
        "gdn": (gated_delta_chunk(q, k, v, beta, g) - gated_delta_rec(q, k, v, beta, g)).abs().max(),
        "gla": (gla_chunk(q, k, v, gk) - gla_rec(q, k, v, gk)).abs().max(),
        "retnet": (simple_gla_chunk(q, k, v, gl()) -
                   gla_rec(q, k, v, gl()[None, :, None, None].expand(B, H, T, K))).abs().max(),
    }
    qe, ke = F.elu(q) + 1, F.elu(k) + 1
    a = (qe @ ke.transpose(-1, -2)).tril()
    ref = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    errs["linear"] = (linear_attn_chunk(q, k, v) - ref).abs().max()
    W = torch.randn(6, K, dtype=torch.float64)
    pq, pk = favor_positive(q, W, True), favor_positive(k, W, False)
    a = (pq @ pk.transpose(-1, -2)).tril()
    ref = (a @ v) / (a.sum(-1, keepdim=True) + 1e-6)
    errs["performer"] = (linear_attn_chunk(pq, pk, v, elu1=False) - ref).abs().max()
    for n, e in errs.items():
        print(f"{n:9s} chunk vs recurrent max |diff| = {float(e):.2e}")
        assert e < 1e-9, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixer", default="gla")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.check:
        check()
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Model(a.mixer, a.vocab, a.d_model, a.layers, a.heads, a.d_ff)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times, cpu = [], []
    for s in range(a.warmup + a.steps):
        tok = torch.randint(0, a.vocab, (a.batch, a.seq_len))
        tgt = torch.randint(0, a.vocab, (a.batch, a.seq_len))
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(tok, tgt)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # all threads of the process
    med = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "mixer": a.mixer,
                      "threads": a.threads, "seq_len": a.seq_len, "seconds_per_step": med,
                      "cpu_seconds_per_step": statistics.median(cpu),
                      "tokens_per_s": a.batch * a.seq_len / med, "steps": a.steps,
                      "loss": float(loss)}))


if __name__ == "__main__":
    main()
