# dg_gamma of simple GLA: autograd truth (float64) vs (a) fla identity and
# (b) the chunk-local formula, each evaluated with fp32 ingredients.
import torch, math
torch.manual_seed(0)
T, K, V, C = 1000, 128, 128, 64
scale = K ** -0.5
dt = torch.float64
q, k, v, do = (torch.randn(T, K, dtype=dt), torch.randn(T, K, dtype=dt), torch.randn(T, V, dtype=dt), torch.randn(T, V, dtype=dt))
g = -torch.rand(T, dtype=dt)
r = torch.randint(0, 16, (T,))
g[r == 0] = -1e4
g[(r == 1) | (r == 2)] = 0.0
gam = torch.tensor(math.log(1 - 2 ** -5), dtype=dt, requires_grad=True)
S0 = 0.5 * torch.randn(K, V, dtype=dt); dST = torch.randn(K, V, dtype=dt)
def fwd(gam):
    S = S0.clone(); os = []
    for t in range(T):
        S = torch.exp(g[t] + gam) * S + k[t, :, None] * v[t, None, :]
        os.append(scale * q[t] @ S)
    return torch.stack(os), S
o, ST = fwd(gam)
L = (o * do).sum() + (ST * dST).sum()
truth = torch.autograd.grad(L, gam)[0].item()

def chunk_formula(fp):
    # states before each chunk and gradients after each chunk, float64
    gt = (g + gam.detach())
    tot = 0.0
    Sb = S0.clone(); starts = []
    for a in range(0, T, C):
        starts.append(Sb.clone())
        b = min(a + C, T)
        for t in range(a, b):
            Sb = torch.exp(gt[t]) * Sb + k[t, :, None] * v[t, None, :]
    dS = dST.clone(); ends = [None] * len(starts)
    for ci in reversed(range(len(starts))):
        a = ci * C; b = min(a + C, T)
        ends[ci] = dS.clone()
        for t in reversed(range(a, b)):
            dS = dS + scale * q[t, :, None] * do[t, None, :]
            dS = torch.exp(gt[t]) * dS
    for ci, a in enumerate(range(0, T, C)):
        b = min(a + C, T); Lc = b - a
        G = torch.cumsum(gt[a:b], 0)
        Sp, dE = starts[ci].to(fp), ends[ci].to(fp)
        qq, kk, vv, dd = (x[a:b].to(fp) for x in (q, k, v, do))
        eG = torch.exp(G).to(fp); eL = torch.exp(G[-1] - G).to(fp)
        dec = torch.exp((G[:, None] - G[None, :]).clamp(max=0)).to(fp)
        P = (scale * qq @ kk.T) * dec          # fp32 products
        D = dd @ vv.T
        i = torch.arange(Lc)
        W = (i[:, None] - i[None, :]).clamp(min=0).double()
        t4 = (W * P.double() * D.double()).tril(-1).sum().item()
        a3 = ((scale * qq @ Sp) * dd).sum(1) * eG   # per token, fp32 dots
        t3 = ((i + 1).double() * a3.double()).sum().item()
        a2 = ((vv @ dE.T) * kk).sum(1) * eL
        t2 = ((Lc - 1 - i).double() * a2.double()).sum().item()
        t1 = Lc * math.exp(G[-1].item()) * (dE.double() * Sp.double()).sum().item()
        tot += t1 + t2 + t3 + t4
    return tot

def identity(fp):
    # dg_t = sum_{u>=t} (q_u.dq_u - k_u.dk_u) + <dS_T, S_T>; dq, dk from autograd in float64 then rounded
    qq = q.clone().requires_grad_(); kk = k.clone().requires_grad_()
    def f2():
        S = S0.clone(); os = []
        for t in range(T):
            S = torch.exp(g[t] + gam.detach()) * S + kk[t, :, None] * v[t, None, :]
            os.append(scale * qq[t] @ S)
        return torch.stack(os), S
    o2, S2 = f2()
    dq, dk = torch.autograd.grad((o2 * do).sum() + (S2 * dST).sum(), [qq, kk])
    rq = (q.to(fp) * dq.to(fp)).sum(1).double(); rk = (k.to(fp) * dk.to(fp)).sum(1).double()
    rr = rq - rk
    dg = torch.flip(torch.cumsum(torch.flip(rr, [0]), 0), [0]) + (dST * ST.detach()).sum()
    return dg.sum().item()

for name, fn in (("identity", identity), ("chunk formula", chunk_formula)):
    e64 = fn(torch.float64); e32 = fn(torch.float32)
    print("%-14s f64 %.10e (rel %.1e)  fp32-ingredients rel err %.2e" % (name, e64, abs(e64 - truth) / abs(truth), abs(e32 - truth) / abs(truth)))
print("truth", truth)
