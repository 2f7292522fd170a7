"""cuda-saved7: save_for_backward on CUDA tensors (la_saved in device memory):
the same output and gradient bits with and without it, fp32 and bf16, and
the backward (which autograd runs on its device thread) really reads the
filled object of the forward's context. Skipped without a CUDA device or a
library with the CUDA backend and la_saved."""

import pytest
import torch

import linattn
from linattn import _ops
from linattn._core import lib

if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)
if not (linattn.has_symbol("la_ctx_create_cuda") and linattn.has_symbol("la_saved_create")):
    pytest.skip("the loaded library %s has no CUDA backend or no la_saved" % linattn.library_path,
                allow_module_level=True)

DEV = torch.device("cuda", 0)


def _inputs(family, dtype, B=1, T=150, H=2, HV=None, K=64, V=48, seed=0, h0=True):
    g = torch.Generator().manual_seed(seed)
    HV = HV or H
    x = {"q": torch.randn(B, T, H, K, generator=g), "k": torch.randn(B, T, H, K, generator=g),
         "v": torch.randn(B, T, HV, V, generator=g), "beta": torch.rand(B, T, HV, generator=g)}
    if family == "gated_delta_rule":
        x["g"] = torch.nn.functional.logsigmoid(2.5 + torch.randn(B, T, HV, generator=g))
    if h0:
        x["initial_state"] = torch.randn(B, HV, K, V, generator=g) * 0.5
    return {n: t.to(DEV, dtype if n in ("q", "k", "v") else torch.float32) for n, t in x.items()}


def _run(family, x, cu=None, **kw):
    x = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    fn = getattr(linattn, family)
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if "g" in x else []) + [x["beta"]]
    o, ht = fn(*args, initial_state=x.get("initial_state"), output_final_state=True,
               use_qk_l2norm=True, cu_seqlens=cu, **kw)
    gen = torch.Generator().manual_seed(9)
    do = torch.randn(o.shape, generator=gen).to(DEV, o.dtype)
    dht = torch.randn(ht.shape, generator=gen).to(DEV, ht.dtype)
    ((o.float() * do.float()).sum() + (ht * dht).sum()).backward()
    torch.cuda.synchronize()
    return o.detach(), {n: t.grad for n, t in x.items()}


@pytest.mark.parametrize("family", ["delta_rule", "gated_delta_rule"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["dense", "varlen", "hv2"])
def test_cuda_bitwise_same_gradients(family, dtype, case, monkeypatch):
    if case == "hv2" and family == "delta_rule":
        pytest.skip("DeltaNet has HV = H")
    seen = []
    real = _ops.gated_backward

    def spy(*a, **kw):
        h = kw.get("saved")
        seen.append(None if h is None else lib.la_saved_filled(h))
        return real(*a, **kw)

    monkeypatch.setattr(_ops, "gated_backward", spy)
    cu = torch.tensor([0, 40, 40, 150], dtype=torch.int64, device=DEV) \
        if case == "varlen" else None
    x = _inputs(family, dtype, B=1 if cu is not None else 2, HV=4 if case == "hv2" else None,
                h0=cu is None, seed=len(case))
    o0, g0 = _run(family, x, cu, save_for_backward=False)
    o1, g1 = _run(family, x, cu, save_for_backward=True)
    assert seen == [None, 1], seen  # the second backward read a filled object
    assert torch.equal(o0, o1)
    for n in g0:
        assert g0[n] is not None and torch.equal(g0[n], g1[n]), n


@pytest.mark.parametrize("family", ["delta_rule", "gated_delta_rule"])
def test_cuda_default_recomputes(family, monkeypatch):
    # the default (None) saves on CPU tensors only: device memory is opt-in
    seen = []
    real = _ops.gated_backward

    def spy(*a, **kw):
        seen.append(kw.get("saved"))
        return real(*a, **kw)

    monkeypatch.setattr(_ops, "gated_backward", spy)
    x = _inputs(family, torch.bfloat16, seed=3)
    _run(family, x)
    _run(family, x, save_for_backward=None)
    assert seen == [None, None], seen
