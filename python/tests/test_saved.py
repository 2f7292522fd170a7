"""Saved for backward (la_saved) through the torch autograd functions of the
delta rules and, on CPU tensors, (cpu-sgsaved13) simple GLA, (cpu-glsaved17)
GLA, (cpu-kdasaved19) KDA and (py-linsaved17) causal kernel linear attention:
the same gradients bit
for bit with and without it, the object borrowed from the context's pool in
the forward, read by the backward and
returned after it (or when the graph is freed without a backward)."""

import gc

import pytest
import torch

import linattn
from linattn import _core, _ffi, _ops
from linattn._core import lib

pytestmark = pytest.mark.skipif(not linattn.has_symbol("la_saved_create"),
                                reason="library without la_saved")


def _inputs(family, B=1, T=150, H=2, HV=None, K=24, V=20, seed=0, h0=True):
    g = torch.Generator().manual_seed(seed)
    HV = HV or H
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, HV, V, generator=g)
    beta = torch.rand(B, T, HV, generator=g)
    x = {"q": q, "k": k, "v": v, "beta": beta}
    if family == "gated_delta_rule":
        x["g"] = torch.nn.functional.logsigmoid(2.5 + torch.randn(B, T, HV, generator=g))
    if h0:
        x["initial_state"] = torch.randn(B, HV, K, V, generator=g) * 0.5
    return {n: t.requires_grad_() for n, t in x.items()}


def _run(family, x, cu=None, **kw):
    x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    fn = getattr(linattn, family)
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if "g" in x else []) + [x["beta"]]
    o, ht = fn(*args, initial_state=x.get("initial_state"), output_final_state=True,
               use_qk_l2norm=True, cu_seqlens=cu, **kw)
    gen = torch.Generator().manual_seed(9)
    do = torch.randn(o.shape, generator=gen)
    dht = torch.randn(ht.shape, generator=gen)
    ((o * do).sum() + (ht * dht).sum()).backward()
    return o.detach(), {n: t.grad for n, t in x.items()}


@pytest.mark.parametrize("family", ["delta_rule", "gated_delta_rule"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ["dense", "varlen", "hv2", "chunk16"])
def test_bitwise_same_gradients(family, threads, case):
    if case == "hv2" and family == "delta_rule":
        pytest.skip("DeltaNet has HV = H")
    linattn.set_num_threads(threads)
    try:
        cu = torch.tensor([0, 40, 40, 150], dtype=torch.int64) if case == "varlen" else None
        x = _inputs(family, B=1 if cu is not None else 2, HV=4 if case == "hv2" else None,
                    h0=cu is None, seed=hash(case) % 1000)
        kw = {"chunk_size": 16} if case == "chunk16" else {}
        o0, g0 = _run(family, x, cu, save_for_backward=False, **kw)
        o1, g1 = _run(family, x, cu, save_for_backward=True, **kw)
        assert torch.equal(o0, o1)
        for n in g0:
            assert g0[n] is not None and torch.equal(g0[n], g1[n]), n
    finally:
        linattn.set_num_threads(0)


def _spy(monkeypatch, name="gated_backward"):
    """Records, per call of _ops.<name>, (la_saved_filled, la_saved_bytes) of
    the saved handle it was given, or None."""
    seen = []
    real = getattr(_ops, name)

    def spy(*a, **kw):
        h = kw.get("saved")
        seen.append(None if h is None else (lib.la_saved_filled(h), lib.la_saved_bytes(h)))
        return real(*a, **kw)

    monkeypatch.setattr(_ops, name, spy)
    return seen


@pytest.mark.parametrize("family", ["delta_rule", "gated_delta_rule"])
def test_backward_reads_a_filled_object(family, monkeypatch):
    seen = _spy(monkeypatch)
    _run(family, _inputs(family), save_for_backward=True)
    assert len(seen) == 1 and seen[0] is not None, seen
    filled, nbytes = seen[0]
    assert filled == 1 and nbytes > 0
    # save_for_backward=False, the recurrent form: nothing
    _run(family, _inputs(family), save_for_backward=False)
    _run(family, _inputs(family), form="recurrent", save_for_backward=True)
    assert seen[1:] == [None, None], seen
    # the default (cpu-py7: on), through linattn's and fla's names
    _run(family, _inputs(family))
    x = {n: t.detach().clone().requires_grad_() for n, t in _inputs(family).items()}
    fn = getattr(linattn.fla, "chunk_" + family)
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if "g" in x else []) + [x["beta"]]
    o, _ = fn(*args, use_qk_l2norm_in_kernel=True)
    o.sum().backward()
    assert len(seen) == 5 and all(s is not None and s[0] == 1 for s in seen[3:]), seen


def test_pool_reuse_and_release():
    linattn.release_saved_memory()
    ctxo = _core.cpu_context_object()
    assert ctxo.saved_idle == []
    x = _inputs("gated_delta_rule")
    _run("gated_delta_rule", x, save_for_backward=True)
    assert len(ctxo.saved_idle) == 1  # back after the backward
    h = ctxo.saved_idle[0]
    _run("gated_delta_rule", x, save_for_backward=True)
    assert ctxo.saved_idle == [h]  # the same object again
    # a forward whose graph is freed without a backward returns it too
    y = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    o, _ = linattn.gated_delta_rule(y["q"], y["k"], y["v"], y["g"], y["beta"],
                                    save_for_backward=True)
    assert ctxo.saved_idle == [] and o.grad_fn.saved_products.handle == h
    del o
    gc.collect()
    assert ctxo.saved_idle == [h]
    # two graphs alive at once: two objects
    o1, _ = linattn.delta_rule(y["q"], y["k"], y["v"], y["beta"], save_for_backward=True)
    o2, _ = linattn.delta_rule(y["q"], y["k"], y["v"], y["beta"], save_for_backward=True)
    assert o1.grad_fn.saved_products.handle != o2.grad_fn.saved_products.handle
    del o1, o2
    gc.collect()
    assert len(ctxo.saved_idle) == 2
    linattn.release_saved_memory()
    assert ctxo.saved_idle == []


def test_no_graph_borrows_nothing():
    linattn.release_saved_memory()
    ctxo = _core.cpu_context_object()
    x = _inputs("delta_rule")
    with torch.no_grad():
        linattn.delta_rule(x["q"], x["k"], x["v"], x["beta"], save_for_backward=True)
    o, _ = linattn.gla(x["q"], x["k"], x["v"][..., :24].contiguous(),
                       torch.zeros(1, 150, 2, 24))
    assert ctxo.saved_idle == []


def test_c_errors_reach_python():
    """A saved object filled by one call and given to another backward is
    refused by name (LinattnValueError from LA_ERR_INVALID_ARGUMENT)."""
    x = {n: t.detach() for n, t in _inputs("delta_rule", h0=False).items()}
    ctxo = _core.cpu_context_object()
    sv = _core.SavedForBackward(ctxo)
    xp = _core.torch_xp(x["q"].device, torch.float32)
    _ops.gated_forward("delta_rule", x["q"], x["k"], x["v"], beta=x["beta"], xp=xp,
                       saved=sv.handle)
    assert lib.la_saved_filled(sv.handle) == 1
    do = torch.randn_like(x["v"])
    with pytest.raises(linattn.LinattnError, match="chunk length"):
        _ops.gated_backward("delta_rule", do, None, x["q"], x["k"], x["v"], beta=x["beta"],
                            chunk_size=16, xp=xp, saved=sv.handle)
    sv.release()


def _sgla_inputs(T=150, H=2, K=24, V=20, seed=0, g=True, gamma=True, h0=True):
    gen = torch.Generator().manual_seed(seed)
    x = {"q": torch.randn(1, T, H, K, generator=gen), "k": torch.randn(1, T, H, K, generator=gen),
         "v": torch.randn(1, T, H, V, generator=gen)}
    if g:
        x["g"] = torch.nn.functional.logsigmoid(2.5 + torch.randn(1, T, H, generator=gen))
    if gamma:
        x["g_gamma"] = -torch.rand(H, generator=gen) * 0.1
    if h0:
        x["initial_state"] = torch.randn(1, H, K, V, generator=gen) * 0.5
    return x


def _sgla_run(x, cu=None, **kw):
    x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    o, ht = linattn.simple_gla(x["q"], x["k"], x["v"], g=x.get("g"), g_gamma=x.get("g_gamma"),
                               initial_state=x.get("initial_state"), output_final_state=True,
                               cu_seqlens=cu, **kw)
    gen = torch.Generator().manual_seed(9)
    ((o * torch.randn(o.shape, generator=gen)).sum() +
     (ht * torch.randn(ht.shape, generator=gen)).sum()).backward()
    return o.detach(), {n: t.grad for n, t in x.items()}


@pytest.mark.parametrize("case", ["g", "g_gamma", "both", "varlen", "chunk16"])
def test_simple_gla_bitwise_same_gradients(case, monkeypatch):
    """cpu-sgsaved13: the backward reads a filled object; the same bits."""
    seen = _spy(monkeypatch)
    cu = torch.tensor([0, 0, 40, 40, 150], dtype=torch.int64) if case == "varlen" else None
    x = _sgla_inputs(g=case != "g_gamma", gamma=case != "g", h0=cu is None,
                     seed=hash(case) % 1000, H=8 if case == "varlen" else 4)
    kw = {"chunk_size": 16} if case == "chunk16" else {}
    o0, g0 = _sgla_run(x, cu, save_for_backward=False, **kw)
    o1, g1 = _sgla_run(x, cu, **kw)  # the default: on for CPU tensors
    assert seen[0] is None and seen[1] is not None and seen[1][0] == 1, seen
    assert torch.equal(o0, o1)
    for n in g0:
        assert g0[n] is not None and torch.equal(g0[n], g1[n]), n


@pytest.mark.parametrize("case", ["plain", "varlen", "chunk16"])
def test_gla_bitwise_same_gradients(case, monkeypatch):
    """cpu-glsaved17: GLA (per-key gates) the same way."""
    seen = _spy(monkeypatch)
    cu = torch.tensor([0, 0, 40, 40, 150], dtype=torch.int64) if case == "varlen" else None
    H, K = (8 if cu is not None else 4), 24
    gen = torch.Generator().manual_seed(17)
    x = _sgla_inputs(g=False, gamma=False, h0=cu is None, seed=hash(case) % 1000, H=H, K=K)
    x["g"] = torch.nn.functional.logsigmoid(2.5 + torch.randn(1, 150, H, K, generator=gen))
    kw = {"chunk_size": 16} if case == "chunk16" else {}

    def run(**k2):
        y = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
        o, ht = linattn.gla(y["q"], y["k"], y["v"], y["g"],
                            initial_state=y.get("initial_state"), output_final_state=True,
                            cu_seqlens=cu, **kw, **k2)
        gd = torch.Generator().manual_seed(9)
        ((o * torch.randn(o.shape, generator=gd)).sum() +
         (ht * torch.randn(ht.shape, generator=gd)).sum()).backward()
        return o.detach(), {n: t.grad for n, t in y.items()}

    o0, g0 = run(save_for_backward=False)
    o1, g1 = run()  # the default: on for CPU tensors
    assert seen[0] is None and seen[1] is not None and seen[1][0] == 1, seen
    assert torch.equal(o0, o1)
    for n in g0:
        assert g0[n] is not None and torch.equal(g0[n], g1[n]), n


@pytest.mark.parametrize("case", ["plain", "varlen", "chunk16", "hv2"])
def test_kda_bitwise_same_gradients(case, monkeypatch):
    """cpu-kdasaved19: KDA (per-key gates, delta rule) the same way."""
    seen = _spy(monkeypatch)
    cu = torch.tensor([0, 0, 40, 40, 150], dtype=torch.int64) if case == "varlen" else None
    H, HV, K = 2, (4 if case == "hv2" else 2), 24
    gen = torch.Generator().manual_seed(23)
    x = _inputs("delta_rule", H=H, HV=HV, K=K, h0=cu is None, seed=hash(case) % 1000)
    x = {n: t.detach() for n, t in x.items()}
    x["g"] = torch.nn.functional.logsigmoid(2.5 + torch.randn(1, 150, HV, K, generator=gen))
    kw = {"chunk_size": 16} if case == "chunk16" else {}

    def run(**k2):
        y = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
        o, ht = linattn.kda(y["q"], y["k"], y["v"], y["g"], y["beta"],
                            initial_state=y.get("initial_state"), output_final_state=True,
                            use_qk_l2norm=True, cu_seqlens=cu, **kw, **k2)
        gd = torch.Generator().manual_seed(9)
        ((o * torch.randn(o.shape, generator=gd)).sum() +
         (ht * torch.randn(ht.shape, generator=gd)).sum()).backward()
        return o.detach(), {n: t.grad for n, t in y.items()}

    o0, g0 = run(save_for_backward=False)
    o1, g1 = run()  # the default: on for CPU tensors
    assert seen[0] is None and seen[1] is not None and seen[1][0] == 1, seen
    assert torch.equal(o0, o1)
    for n in g0:
        assert g0[n] is not None and torch.equal(g0[n], g1[n]), n
# py-linsaved17: causal kernel linear attention (chunk start states)

def _linear_spy(monkeypatch):
    return _spy(monkeypatch, "linear_backward")


def _la_inputs(B=1, T=150, H=3, K=24, V=20, seed=0, h0=True, normalize=True):
    gen = torch.Generator().manual_seed(seed)
    x = {"q": torch.randn(B, T, H, K, generator=gen), "k": torch.randn(B, T, H, K, generator=gen),
         "v": torch.randn(B, T, H, V, generator=gen)}
    if h0:
        x["initial_state"] = torch.randn(B, H, K, V, generator=gen) * 0.5
        if normalize:
            x["initial_norm"] = torch.rand(B, H, K, generator=gen) + 0.5
    return x


def _la_run(x, cu=None, **kw):
    x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    o, fin = linattn.linear_attention(x["q"], x["k"], x["v"],
                                      initial_state=x.get("initial_state"),
                                      initial_norm=x.get("initial_norm"),
                                      output_final_state=True, cu_seqlens=cu, **kw)
    gen = torch.Generator().manual_seed(9)
    loss = (o * torch.randn(o.shape, generator=gen)).sum()
    for t in (fin if isinstance(fin, tuple) else (fin,)):
        loss = loss + (t * torch.randn(t.shape, generator=gen)).sum()
    loss.backward()
    return o.detach(), {n: t.grad for n, t in x.items()}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ["elu1", "relu_plain", "identity", "varlen", "chunk16"])
def test_linear_attn_bitwise_same_gradients(case, threads, monkeypatch):
    """The backward reads a filled object (the default: on for CPU tensors);
    the same output and gradient bits as without it."""
    seen = _linear_spy(monkeypatch)
    linattn.set_num_threads(threads)
    try:
        cu = torch.tensor([0, 0, 40, 40, 150], dtype=torch.int64) if case == "varlen" else None
        fm = {"relu_plain": "relu", "identity": "identity"}.get(case, "elu1")
        normalize = case != "relu_plain"
        # >= 8 (sequence, head) pairs: the forward does not split a sequence
        # over time (which leaves the object empty, include/linattn.h)
        x = _la_inputs(B=1 if cu is not None else 3, H=8 if cu is not None else 3,
                       h0=cu is None, normalize=normalize, seed=hash(case) % 1000)
        kw = {"feature_map": fm, "normalize": normalize}
        if case == "chunk16":
            kw["chunk_size"] = 16
        o0, g0 = _la_run(x, cu, save_for_backward=False, **kw)
        o1, g1 = _la_run(x, cu, **kw)
        assert seen[0] is None and seen[1] is not None, seen
        assert seen[1][0] == 1 and seen[1][1] > 0, seen
        assert torch.equal(o0, o1)
        for n in g0:
            assert g0[n] is not None and torch.equal(g0[n], g1[n]), n
    finally:
        linattn.set_num_threads(0)


def test_linear_attn_what_borrows(monkeypatch):
    """Non-causal, recurrent form and no graph borrow nothing; fla's
    chunk_linear_attn / fused_chunk_linear_attn do; the object goes back."""
    seen = _linear_spy(monkeypatch)
    linattn.release_saved_memory()
    ctxo = _core.cpu_context_object()
    x = _la_inputs(B=3, h0=False)
    _la_run(x, causal=False)
    _la_run(x, form="recurrent", save_for_backward=True)
    assert seen == [None, None], seen
    with torch.no_grad():
        linattn.linear_attention(x["q"], x["k"], x["v"])
    assert ctxo.saved_idle == []
    for fn in (linattn.fla.chunk_linear_attn, linattn.fla.fused_chunk_linear_attn):
        y = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
        o, _ = fn(y["q"], y["k"], y["v"])
        o.sum().backward()
    assert len(seen) == 4 and all(s is not None and s[0] == 1 for s in seen[2:]), seen
    assert len(ctxo.saved_idle) == 1  # the same object, back after each backward
    linattn.release_saved_memory()
