"""Independent float64 references, token by token, written from docs/MATH.md
(and fla's documented conventions); they never call the C library. Every
function is differentiable by torch autograd, so the tests compare gradients
too."""

import torch


def sequences(B, T, cu_seqlens):
    """(batch row, first token, end token, state slot) per sequence."""
    if cu_seqlens is None:
        return [(b, 0, T, b) for b in range(B)]
    cu = [int(x) for x in cu_seqlens]
    return [(0, cu[n], cu[n + 1], n) for n in range(len(cu) - 1)]


def l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _assemble(out, B, T):
    """Stack {(b, t): tensor} into [B, T, ...] keeping autograd."""
    return torch.stack([torch.stack([out[(b, t)] for t in range(T)]) for b in range(B)])


def gated(q, k, v, g=None, gk=None, g_gamma=None, beta=None, scale=None, h0=None,
          cu_seqlens=None, use_qk_l2norm=False, reverse=False):
    """The gated / delta-rule family (MATH.md section 4), one token at a time:
        decay:  S <- exp(g_t) S (g_t per head; + g_gamma), or Diag(exp(gk_t)) S
        write:  S <- S + k_t^T v_t, or with beta the delta rule
                S <- S + beta_t k_t^T (v_t - k_t S)
        read:   o_t = scale q_t S
    q, k [B,T,H,K]; v [B,T,HV,V]; g, beta [B,T,HV]; gk [B,T,HV,K]; h0 [N,HV,K,V].
    reverse: tokens of each sequence visited last to first (fla's reverse scan).
    Returns (o [B,T,HV,V], final states [N,HV,K,V])."""
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    rep = HV // H
    if scale is None:
        scale = K ** -0.5
    seqs = sequences(B, T, cu_seqlens)
    out, finals = {}, []
    for b, s, e, n in seqs:
        S = h0[n].double() if h0 is not None else torch.zeros(HV, K, V, dtype=torch.float64)
        order = range(e - 1, s - 1, -1) if reverse else range(s, e)
        for t in order:
            qt = q[b, t].repeat_interleave(rep, 0)
            kt = k[b, t].repeat_interleave(rep, 0)
            if use_qk_l2norm:
                qt, kt = l2norm(qt), l2norm(kt)
            if g is not None or g_gamma is not None:
                a = torch.zeros(HV, dtype=torch.float64)
                if g is not None:
                    a = a + g[b, t].double()
                if g_gamma is not None:
                    a = a + g_gamma.double()
                S = torch.exp(a)[:, None, None] * S
            if gk is not None:
                S = torch.exp(gk[b, t].double())[:, :, None] * S
            vt = v[b, t]
            if beta is not None:
                pred = torch.einsum("hk,hkv->hv", kt, S)
                S = S + beta[b, t].double()[:, None, None] * kt[:, :, None] * (vt - pred)[:, None, :]
            else:
                S = S + kt[:, :, None] * vt[:, None, :]
            out[(b, t)] = scale * torch.einsum("hk,hkv->hv", qt, S)
        finals.append(S)
    return _assemble(out, B, T), torch.stack(finals)


def fla_normalized_linear(q, k, v, scale=None, h0=None, z0=None, cu_seqlens=None,
                          reverse=False):
    """fla's normalised linear attention: o_t = (scale q_t S_t) / (scale q_t.z_t
    + 1e-10) with z_t the running sum of raw keys (from z0 [N,1,H,K]).
    Returns (o, S_T, z_T [N,1,H,K])."""
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, K = q.shape
    V = v.shape[3]
    if scale is None:
        scale = K ** -0.5
    out, fs, fz = {}, [], []
    for b, s, e, n in sequences(B, T, cu_seqlens):
        S = h0[n].double() if h0 is not None else torch.zeros(H, K, V, dtype=torch.float64)
        z = z0[n, 0].double() if z0 is not None else torch.zeros(H, K, dtype=torch.float64)
        order = range(e - 1, s - 1, -1) if reverse else range(s, e)
        for t in order:
            S = S + k[b, t][:, :, None] * v[b, t][:, None, :]
            z = z + k[b, t]
            num = scale * torch.einsum("hk,hkv->hv", q[b, t], S)
            den = scale * (q[b, t] * z).sum(-1) + 1e-10
            out[(b, t)] = num / den[:, None]
        fs.append(S)
        fz.append(z[None])
    return _assemble(out, B, T), torch.stack(fs), torch.stack(fz)


def feature(x, name):
    if name == "identity":
        return x
    if name == "elu1":
        return torch.nn.functional.elu(x) + 1
    if name == "relu":
        return torch.relu(x)
    raise ValueError(name)


def kernel_linear(q, k, v, feature_map="elu1", causal=True, normalize=True, eps=1e-6,
                  scale=None, h0=None, z0=None, cu_seqlens=None):
    """MATH.md section 2: o_t = phi(q_t) S / (phi(q_t).z + eps) with S, z summed
    over the keys the query sees (all of its sequence when not causal), or
    scale phi(q_t) S without the normaliser."""
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, K = q.shape
    V = v.shape[3]
    if scale is None:
        scale = K ** -0.5
    fq, fk = feature(q, feature_map), feature(k, feature_map)
    out, fs, fz = {}, [], []
    for b, s, e, n in sequences(B, T, cu_seqlens):
        S0 = h0[n].double() if h0 is not None else torch.zeros(H, K, V, dtype=torch.float64)
        Z0 = z0[n].double() if z0 is not None else torch.zeros(H, K, dtype=torch.float64)
        S, z = S0, Z0
        if not causal:
            for t in range(s, e):
                S = S + fk[b, t][:, :, None] * v[b, t][:, None, :]
                z = z + fk[b, t]
        for t in range(s, e):
            if causal:
                S = S + fk[b, t][:, :, None] * v[b, t][:, None, :]
                z = z + fk[b, t]
            num = torch.einsum("hk,hkv->hv", fq[b, t], S)
            if normalize:
                out[(b, t)] = num / ((fq[b, t] * z).sum(-1) + eps)[:, None]
            else:
                out[(b, t)] = scale * num
        fs.append(S)
        fz.append(z)
    return _assemble(out, B, T), torch.stack(fs), torch.stack(fz)


def softmax(q, k, v, causal=True, scale=None):
    q, k, v = q.double(), k.double(), v.double()
    T, K = q.shape[1], q.shape[3]
    if scale is None:
        scale = K ** -0.5
    s = torch.einsum("bthk,bjhk->bhtj", q, k) * scale
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhtj,bjhv->bthv", torch.softmax(s, -1), v)
