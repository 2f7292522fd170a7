"""fla names against the float64 token-by-token reference: outputs, final
states and every gradient of (o*do).sum() + (ht*dht).sum()."""

import pytest
import torch
import torch.nn.functional as Fn

import linattn
import linattn.fla as fla
import reference as R
from conftest import assert_close

TOL = 1e-5
HAS_KDA = linattn.has_symbol("la_kda_forward")
needs_kda = pytest.mark.skipif(not HAS_KDA, reason="library lacks symbol la_kda_forward")


def _empty_sequences_supported():
    q = torch.randn(1, 3, 1, 4)
    try:
        fla.chunk_simple_gla(q, q, q, cu_seqlens=torch.tensor([0, 0, 3]))
        return True
    except ValueError:
        return False


EMPTY_OK = _empty_sequences_supported()
needs_empty = pytest.mark.skipif(
    not EMPTY_OK, reason="the loaded library rejects zero-length sequences in cu_seqlens "
    "(registry branch not merged)")


def make(B, T, H, HV, K, V, family, n_seqs=None, extreme=False):
    N = n_seqs if n_seqs is not None else B
    q = torch.randn(B, T, H, K)
    k = torch.randn(B, T, H, K)
    if family in ("delta_rule", "gated_delta_rule", "kda"):
        k = R.l2norm(k)  # contractive steps: the delta rule stays bounded
    v = torch.randn(B, T, HV, V)
    x = {"q": q, "k": k, "v": v, "h0": torch.randn(N, HV, K, V)}
    if family in ("simple_gla", "gated_delta_rule"):
        x["g"] = Fn.logsigmoid(torch.randn(B, T, HV))
    if family in ("gla", "kda"):
        x["g"] = Fn.logsigmoid(torch.randn(B, T, HV, K)) / 4
    if family in ("delta_rule", "gated_delta_rule", "kda"):
        x["beta"] = torch.rand(B, T, HV)
    if extreme:
        if "g" in x:  # full resets and no decay at all, side by side
            gx = x["g"].clone()
            gx.view(-1)[::3] = -1e4
            gx.view(-1)[1::3] = 0.0
            x["g"] = gx
        if "beta" in x:
            x["beta"] = torch.tensor([0.0, 1.0, 1.99]).repeat(B * T * HV // 3 + 1)[
                :B * T * HV].reshape(B, T, HV)
    for t in x.values():
        t.requires_grad_()
    return x


def call_ours(fname, x, **kw):
    f = getattr(fla, fname)
    args = [x["q"], x["k"], x["v"]]
    if fname == "fused_recurrent_gla":
        kw["gk"] = x["g"]
    elif fname == "fused_recurrent_gated_delta_rule":  # fla: (q, k, v, g, gk, gv, beta)
        kw["g"], kw["beta"] = x["g"], x["beta"]
        return f(*args, initial_state=x["h0"], output_final_state=True, **kw)
    elif "g" in x:
        args.append(x["g"])
    if "beta" in x:
        args.append(x["beta"])
    return f(*args, initial_state=x["h0"], output_final_state=True, **kw)


def call_ref(family, x, **kw):
    g = x.get("g")
    return R.gated(x["q"], x["k"], x["v"],
                   g=g if family in ("simple_gla", "gated_delta_rule") else None,
                   gk=g if family in ("gla", "kda") else None,
                   beta=x.get("beta"), h0=x["h0"], **kw)


def grads(o, ht, x, do, dht):
    loss = (o * do).sum() + (ht * dht).sum()
    keys = sorted(x)
    return dict(zip(keys, torch.autograd.grad(loss, [x[n] for n in keys])))


def check(fname, family, x, ours_kw=None, ref_kw=None, tol=TOL):
    ours_kw, ref_kw = ours_kw or {}, ref_kw or {}
    o, ht = call_ours(fname, x, **ours_kw)
    ro, rht = call_ref(family, x, **ref_kw)
    assert o.dtype == x["v"].dtype and ht.dtype == torch.float32
    assert_close("o", o, ro, tol)
    assert_close("ht", ht, rht, tol)
    do, dht = torch.randn_like(ro), torch.randn_like(rht)
    g1 = grads(o, ht, x, do.float(), dht.float())
    g2 = grads(ro, rht, x, do, dht)
    for n in g2:
        assert_close("d" + n, g1[n], g2[n], tol)


FAMILY = {"chunk_simple_gla": "simple_gla", "fused_recurrent_simple_gla": "simple_gla",
          "chunk_gla": "gla", "fused_recurrent_gla": "gla",
          "chunk_delta_rule": "delta_rule", "fused_recurrent_delta_rule": "delta_rule",
          "chunk_gated_delta_rule": "gated_delta_rule",
          "fused_recurrent_gated_delta_rule": "gated_delta_rule",
          "chunk_kda": "kda", "fused_recurrent_kda": "kda"}

# (fla name, B, T, H, HV, K, V): T in {1, 63, 100, 500, 1000}, D in {60, 100, 128},
# chosen so every name meets long and short sequences and odd sizes.
CASES = [
    ("chunk_simple_gla", 2, 100, 2, 2, 60, 100),
    ("chunk_simple_gla", 1, 1000, 1, 1, 60, 60),
    ("fused_recurrent_simple_gla", 1, 63, 2, 2, 128, 60),
    ("chunk_gla", 1, 500, 1, 1, 128, 128),
    ("fused_recurrent_gla", 2, 1, 3, 3, 60, 100),
    ("chunk_delta_rule", 1, 100, 2, 2, 128, 60),
    ("fused_recurrent_delta_rule", 2, 63, 1, 1, 60, 128),
    ("chunk_gated_delta_rule", 1, 500, 1, 2, 128, 128),
    ("chunk_gated_delta_rule", 2, 63, 2, 6, 100, 60),
    ("fused_recurrent_gated_delta_rule", 1, 100, 1, 3, 100, 60),
    pytest.param("chunk_kda", 1, 100, 1, 2, 60, 100, marks=needs_kda),
    pytest.param("fused_recurrent_kda", 2, 63, 2, 2, 128, 60, marks=needs_kda),
]


@pytest.mark.parametrize("fname,B,T,H,HV,K,V", CASES)
def test_against_reference(fname, B, T, H, HV, K, V):
    fam = FAMILY[fname]
    check(fname, fam, make(B, T, H, HV, K, V, fam))


@pytest.mark.parametrize("fname", ["chunk_simple_gla", "fused_recurrent_gla",
                                   "chunk_delta_rule", "chunk_gated_delta_rule",
                                   "fused_recurrent_gated_delta_rule",
                                   pytest.param("chunk_kda", marks=needs_kda)])
def test_extreme_gates_and_beta(fname):
    """g = -1e4 (a full reset) and g = 0 (no decay); beta in {0, 1, 1.99}."""
    fam = FAMILY[fname]
    check(fname, fam, make(1, 67, 1, 2 if "gated" in fname else 1, 60, 60, fam, extreme=True))


@pytest.mark.parametrize("fname", ["chunk_delta_rule", "fused_recurrent_gated_delta_rule"])
def test_qk_l2norm_in_kernel_and_scale(fname):
    fam = FAMILY[fname]
    x = make(1, 63, 2, 2, 60, 100, fam)
    check(fname, fam, x, {"use_qk_l2norm_in_kernel": True, "scale": 0.3},
          {"use_qk_l2norm": True, "scale": 0.3})


def test_simple_gla_g_gamma():
    x = make(1, 100, 3, 3, 60, 60, "simple_gla")
    gg = linattn.retnet_decay(3, like=x["q"]).requires_grad_()
    o, ht = fla.chunk_simple_gla(x["q"], x["k"], x["v"], x["g"], g_gamma=gg,
                                 initial_state=x["h0"], output_final_state=True)
    ro, rht = R.gated(x["q"], x["k"], x["v"], g=x["g"], g_gamma=gg, h0=x["h0"])
    assert_close("o", o, ro, TOL)
    do, dht = torch.randn_like(ro), torch.randn_like(rht)
    x["g_gamma"] = gg
    g1 = grads(o, ht, x, do.float(), dht.float())
    g2 = grads(ro, rht, x, do, dht)
    for n in g2:
        assert_close("d" + n, g1[n], g2[n], TOL)


VARLEN = [[0, 5, 37, 100], [0, 1, 2, 63]]


@pytest.mark.parametrize("fname", ["chunk_simple_gla", "chunk_gla", "chunk_gated_delta_rule",
                                   "fused_recurrent_delta_rule"])
@pytest.mark.parametrize("cu", VARLEN)
def test_varlen(fname, cu):
    fam = FAMILY[fname]
    x = make(1, cu[-1], 2, 4 if "gated" in fname else 2, 60, 100, fam, n_seqs=len(cu) - 1)
    cut = torch.tensor(cu)
    check(fname, fam, x, {"cu_seqlens": cut}, {"cu_seqlens": cu})


@needs_empty
@pytest.mark.parametrize("fname", ["chunk_simple_gla", "fused_recurrent_gla",
                                   "chunk_gated_delta_rule", "fused_recurrent_delta_rule"])
def test_varlen_with_empty_sequences(fname):
    """Zero-length sequences: final state = initial state, gradient passes."""
    cu = [0, 0, 30, 30, 71, 71]
    fam = FAMILY[fname]
    x = make(1, 71, 1, 2 if "gated" in fname else 1, 60, 60, fam, n_seqs=5)
    check(fname, fam, x, {"cu_seqlens": torch.tensor(cu)}, {"cu_seqlens": cu})
    _, ht = call_ours(fname, x, cu_seqlens=torch.tensor(cu))
    assert torch.equal(ht[0], x["h0"][0].detach())
    assert torch.equal(ht[4], x["h0"][4].detach())


@pytest.mark.parametrize("fname,cu", [("fused_recurrent_simple_gla", None),
                                      ("fused_recurrent_gla", [0, 17, 40, 41])])
def test_reverse(fname, cu):
    fam = FAMILY[fname]
    B = 2 if cu is None else 1
    T = 41
    x = make(B, T, 2, 2, 60, 100, fam, n_seqs=None if cu is None else len(cu) - 1)
    kw = {"reverse": True}
    rkw = {"reverse": True}
    if cu is not None:
        kw["cu_seqlens"] = torch.tensor(cu)
        rkw["cu_seqlens"] = cu
    check(fname, fam, x, kw, rkw)


def test_state_v_first():
    x = make(1, 30, 1, 1, 60, 100, "simple_gla")
    h0t = x["h0"].detach().transpose(-1, -2).contiguous()
    o1, ht1 = fla.chunk_simple_gla(x["q"], x["k"], x["v"], x["g"], initial_state=h0t,
                                   output_final_state=True, state_v_first=True)
    o2, ht2 = fla.chunk_simple_gla(x["q"], x["k"], x["v"], x["g"], initial_state=x["h0"],
                                   output_final_state=True)
    assert torch.equal(o1, o2)
    assert torch.equal(ht1, ht2.transpose(-1, -2))


@pytest.mark.parametrize("fname", ["chunk_linear_attn", "fused_chunk_linear_attn",
                                   "fused_recurrent_linear_attn"])
def test_linear_attn_normalized(fname):
    """fla's normaliser o = scale q S / (scale q.z + 1e-10), (kv, z) tuples."""
    B, T, H, K, V = 2, 63, 2, 60, 100
    q = torch.rand(B, T, H, K, requires_grad=True)  # positive: q.z away from zero
    k = torch.rand(B, T, H, K, requires_grad=True)
    v = torch.randn(B, T, H, V, requires_grad=True)
    h0 = torch.rand(B, H, K, V, requires_grad=True)
    z0 = torch.rand(B, 1, H, K, requires_grad=True)
    o, (ht, zt) = getattr(fla, fname)(q, k, v, initial_state=(h0, z0), output_final_state=True,
                                      normalize=True)
    ro, rht, rzt = R.fla_normalized_linear(q, k, v, h0=h0, z0=z0)
    assert zt.shape == (B, 1, H, K)
    for n, a, b in (("o", o, ro), ("ht", ht, rht), ("zt", zt, rzt)):
        assert_close(n, a, b, TOL)
    do, dh, dz = torch.randn_like(ro), torch.randn_like(rht), torch.randn_like(rzt)
    ins = [q, k, v, h0, z0]
    g1 = torch.autograd.grad((o * do.float()).sum() + (ht * dh.float()).sum()
                             + (zt * dz.float()).sum(), ins)
    g2 = torch.autograd.grad((ro * do).sum() + (rht * dh).sum() + (rzt * dz).sum(), ins)
    for n, a, b in zip("q k v h0 z0".split(), g1, g2):
        assert_close("d" + n, a, b, TOL)


def test_linear_attn_defaults_and_reverse():
    """fla's defaults: chunk normalises, fused_recurrent does not; reverse."""
    B, T, H, K, V = 1, 50, 1, 60, 60
    q, k, v = torch.rand(B, T, H, K), torch.rand(B, T, H, K), torch.randn(B, T, H, V)
    o, st = fla.chunk_linear_attn(q, k, v)
    assert isinstance(st, tuple) and st[0] is None
    assert_close("o", o, R.fla_normalized_linear(q, k, v)[0], TOL)
    o, st = fla.fused_recurrent_linear_attn(q, k, v, reverse=True, output_final_state=True)
    ro, rst = R.gated(q, k, v, reverse=True)
    assert_close("o", o, ro, TOL)
    assert_close("ht", st, rst, TOL)
    cu = [0, 20, 50]
    o, (ht, zt) = fla.fused_recurrent_linear_attn(q, k, v, reverse=True, normalize=True,
                                                  cu_seqlens=torch.tensor(cu),
                                                  output_final_state=True)
    ro, rht, rzt = R.fla_normalized_linear(q, k, v, cu_seqlens=cu, reverse=True)
    assert_close("o", o, ro, TOL)
    assert_close("zt", zt, rzt, TOL)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_half_inputs(dtype, tol):
    """bf16 / fp16 in: computed in fp32, o in v's dtype, state fp32; compared
    with the reference on the same rounded inputs."""
    x = make(1, 63, 2, 2, 60, 100, "gated_delta_rule")
    xh = {n: t.detach().to(dtype).requires_grad_() for n, t in x.items() if n != "h0"}
    xh["h0"] = x["h0"]
    o, ht = fla.chunk_gated_delta_rule(xh["q"], xh["k"], xh["v"], xh["g"], xh["beta"],
                                       initial_state=xh["h0"], output_final_state=True)
    assert o.dtype == dtype and ht.dtype == torch.float32
    ro, rht = call_ref("gated_delta_rule", xh)
    assert_close("o", o, ro, tol)
    assert_close("ht", ht, rht, 1e-5)
    do, dht = torch.randn_like(ro), torch.randn_like(rht)
    g1 = grads(o, ht, xh, do.to(dtype), dht.float())
    g2 = grads(ro, rht, xh, do.to(dtype).double(), dht)
    for n in g2:
        assert g1[n].dtype == xh[n].dtype
        assert_close("d" + n, g1[n], g2[n], tol)


def test_reference_gradients_vs_finite_differences():
    """The oracle's own gradients (autograd of the loop) against gradcheck."""
    x = {n: t.detach().double().requires_grad_()
         for n, t in make(1, 5, 1, 2, 3, 4, "gated_delta_rule").items()}

    def f(q, k, v, g, beta, h0):
        o, ht = R.gated(q, k, v, g=g, beta=beta, h0=h0)
        return o, ht
    assert torch.autograd.gradcheck(f, (x["q"], x["k"], x["v"], x["g"], x["beta"], x["h0"]))


def test_directional_derivative_of_ours():
    """Our fp32 gradient against a central difference of our own forward."""
    x = make(1, 20, 1, 1, 8, 8, "gated_delta_rule")
    do = torch.randn(1, 20, 1, 8)
    o, _ = call_ours("chunk_gated_delta_rule", x)
    gr = torch.autograd.grad((o * do).sum(), [x["q"], x["v"], x["g"]])
    eps = 1e-2
    with torch.no_grad():
        for t, gt in zip(["q", "v", "g"], gr):
            d = torch.randn_like(x[t])
            if t == "g":
                d = -d.abs() * 0.1  # keep gates <= 0 on both sides
            xp = dict(x)
            xm = dict(x)
            xp[t] = x[t] + eps * d
            xm[t] = x[t] - eps * d if t != "g" else x[t] + eps * d * 0  # one-sided for g
            fp = (call_ours("chunk_gated_delta_rule", xp)[0] * do).sum()
            fm = (call_ours("chunk_gated_delta_rule", xm)[0] * do).sum()
            fd = (fp - fm) / (2 * eps if t != "g" else eps)
            an = (gt * d).sum()
            assert abs(fd - an) <= 2e-2 * max(1.0, abs(an)), (t, float(fd), float(an))


def test_in_kernel_gate_and_beta_sigmoid():
    """use_gate_in_kernel: g = -exp(A_log) * softplus(g + dt_bias);
    use_beta_sigmoid_in_kernel: beta = sigmoid(beta) (x2 with allow_neg_eigval);
    gradients reach A_log and dt_bias."""
    B, T, H, HV, K, V = 1, 40, 1, 2, 16, 8
    q, k = torch.randn(B, T, H, K), R.l2norm(torch.randn(B, T, H, K))
    v = torch.randn(B, T, HV, V)
    a = torch.randn(B, T, HV)
    b = torch.randn(B, T, HV)
    A_log = torch.randn(HV, requires_grad=True)
    dt_bias = torch.randn(HV, requires_grad=True)
    o, _ = fla.chunk_gated_delta_rule(q, k, v, a, b, use_gate_in_kernel=True, A_log=A_log,
                                      dt_bias=dt_bias, use_beta_sigmoid_in_kernel=True,
                                      allow_neg_eigval=True)
    g = -A_log.double().exp() * Fn.softplus(a.double() + dt_bias.double())
    ro, _ = R.gated(q, k, v, g=g, beta=2 * torch.sigmoid(b.double()))
    assert_close("o", o, ro, TOL)
    do = torch.randn_like(ro)
    g1 = torch.autograd.grad((o * do.float()).sum(), [A_log, dt_bias])
    g2 = torch.autograd.grad((ro * do).sum(), [A_log, dt_bias])
    for n, x, y in zip(("A_log", "dt_bias"), g1, g2):
        assert_close("d" + n, x, y, TOL)
    with pytest.raises(ValueError):
        fla.chunk_gated_delta_rule(q, k, v, a, b, allow_neg_eigval=True)


@needs_kda
def test_kda_in_kernel_gate_and_gdn_gk():
    """KDA's gate -exp(A_log) * softplus(g + dt_bias) (dt_bias [HV*K]), and
    fused_recurrent_gated_delta_rule(gk=...) routed to KDA."""
    B, T, H, HV, K, V = 1, 30, 1, 2, 16, 8
    q, k = torch.randn(B, T, H, K), R.l2norm(torch.randn(B, T, H, K))
    v, a = torch.randn(B, T, HV, V), torch.randn(B, T, HV, K)
    beta = torch.rand(B, T, HV)
    A_log, dt_bias = torch.randn(HV), torch.randn(HV * K)
    o, _ = fla.chunk_kda(q, k, v, a, beta, use_gate_in_kernel=True, A_log=A_log,
                         dt_bias=dt_bias)
    gk = -A_log.double().exp()[:, None] * Fn.softplus(a.double() + dt_bias.double().view(HV, K))
    ro, _ = R.gated(q, k, v, gk=gk, beta=beta)
    assert_close("o", o, ro, TOL)
    o2, _ = fla.fused_recurrent_gated_delta_rule(q, k, v, gk=gk.float(), beta=beta)
    assert_close("o gk", o2, ro, TOL)
