"""linattn's own API, numpy, Decoder, errors, threads, copies and no-grad."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

import linattn
import linattn.fla as fla
import reference as R
from conftest import assert_close

TOL = 1e-5


@pytest.mark.parametrize("feature_map,causal,normalize,form", [
    ("elu1", True, True, "chunk"), ("relu", True, False, "recurrent"),
    ("elu1", False, True, "chunk"), ("identity", True, False, "parallel")])
def test_kernel_linear_attention(feature_map, causal, normalize, form):
    B, T, H, K, V = 2, 63, 2, 60, 100
    q = torch.randn(B, T, H, K, requires_grad=True)
    k = torch.randn(B, T, H, K, requires_grad=True)
    v = torch.randn(B, T, H, V, requires_grad=True)
    h0 = torch.rand(B, H, K, V, requires_grad=True)
    ins = [q, k, v, h0]
    kw = {}
    if normalize:
        z0 = torch.rand(B, H, K, requires_grad=True)
        ins.append(z0)
        kw["initial_norm"] = z0
    o, st = linattn.linear_attention(q, k, v, feature_map=feature_map, causal=causal,
                                     normalize=normalize, form=form, initial_state=h0,
                                     output_final_state=True, **kw)
    ro, rS, rz = R.kernel_linear(q, k, v, feature_map, causal, normalize, h0=h0,
                                 z0=kw.get("initial_norm"))
    S = st[0] if normalize else st
    assert_close("o", o, ro, TOL)
    assert_close("S", S, rS, TOL)
    do, dS = torch.randn_like(ro), torch.randn_like(rS)
    g1 = torch.autograd.grad((o * do.float()).sum() + (S * dS.float()).sum(), ins)
    g2 = torch.autograd.grad((ro * do).sum() + (rS * dS).sum(), ins)
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert_close("grad %d" % i, a, b, TOL)


@pytest.mark.parametrize("causal,form", [(True, "streaming"), (False, "textbook")])
def test_softmax_attention(causal, form):
    q, k, v = (torch.randn(2, 100, 2, 60, requires_grad=True) for _ in range(3))
    o, lse = linattn.softmax_attention(q, k, v, causal=causal, form=form, return_lse=True)
    ro = R.softmax(q, k, v, causal)
    assert_close("o", o, ro, TOL)
    do = torch.randn_like(ro)
    for a, b in zip(torch.autograd.grad((o * do.float()).sum(), [q, k, v]),
                    torch.autograd.grad((ro * do).sum(), [q, k, v])):
        assert_close("grad", a, b, TOL)


def test_random_features_and_performer():
    """Performer = normalised identity-feature attention over phi(q), phi(k);
    phi matches the FAVOR+ formula; gradients through phi."""
    B, T, H, K, V, m = 1, 40, 2, 16, 8, 32
    W = linattn.draw_projection(m, K, seed=3, like=torch.empty(0))
    assert torch.equal(W, linattn.draw_projection(m, K, seed=3, like=torch.empty(0)))
    q, k = torch.randn(B, T, H, K) * 0.5, torch.randn(B, T, H, K) * 0.5
    v = torch.randn(B, T, H, V)
    phi = linattn.random_features(q, W, stabilize=False)
    xs = q.double() * K ** -0.25
    ref = torch.exp(xs @ W.double().T - (xs * xs).sum(-1, keepdim=True) / 2) * m ** -0.5
    assert_close("phi", phi, ref, TOL)
    # Exactly linear attention over the features where the key stabiliser is
    # one constant per sequence: non-causal (whole-sequence maximum), or no
    # stabiliser. (The causal stabilised form uses the running key maximum,
    # MATH.md section 3, and is checked against its reference in C.)
    for causal, stabilize in ((False, True), (True, False)):
        qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
        o = linattn.performer_attention(qr, kr, vr, W, causal=causal, stabilize=stabilize)
        pq = linattn.random_features(qr, W, role="query", stabilize=stabilize)
        pk = linattn.random_features(kr, W, role="key", stabilize=stabilize)
        o2, _ = linattn.linear_attention(pq, pk, vr, feature_map="identity", normalize=True,
                                         causal=causal)
        assert_close("o", o, o2, 1e-5)
        do = torch.randn_like(o)
        g1 = torch.autograd.grad((o * do).sum(), [qr, kr, vr])
        g2 = torch.autograd.grad((o2 * do).sum(), [qr, kr, vr])
        for a, b in zip(g1, g2):
            assert_close("grad", a, b, 1e-4)


def test_numpy_path_matches_torch():
    """numpy in, numpy out (bit-identical to the tensor path); float64 input
    gives float64 o."""
    x = [np.random.randn(1, 63, 2, 60).astype(np.float32) for _ in range(2)]
    v = np.random.randn(1, 63, 4, 100).astype(np.float32)
    g = -np.random.rand(1, 63, 4).astype(np.float32)
    beta = np.random.rand(1, 63, 4).astype(np.float32)
    o, ht = fla.chunk_gated_delta_rule(x[0], x[1], v, g, beta, output_final_state=True,
                                       use_qk_l2norm_in_kernel=True)
    assert isinstance(o, np.ndarray) and o.dtype == np.float32 and ht.dtype == np.float32
    ot, htt = fla.chunk_gated_delta_rule(*(torch.from_numpy(a) for a in (x[0], x[1], v, g,
                                                                         beta)),
                                         output_final_state=True, use_qk_l2norm_in_kernel=True)
    assert np.array_equal(o, ot.numpy()) and np.array_equal(ht, htt.numpy())
    ro, _ = R.gated(*(torch.from_numpy(a) for a in (x[0], x[1], v)), g=torch.from_numpy(g),
                    beta=torch.from_numpy(beta), use_qk_l2norm=True)
    assert_close("o", torch.from_numpy(o), ro, TOL)
    o64, _ = fla.fused_recurrent_simple_gla(x[0].astype(np.float64), x[1], v[:, :, :2]
                                            .astype(np.float64))
    assert o64.dtype == np.float64
    # reverse and varlen on numpy
    o_r, _ = fla.fused_recurrent_simple_gla(x[0], x[1], v[:, :, :2], reverse=True,
                                            cu_seqlens=np.array([0, 10, 63]))
    ro, _ = R.gated(*(torch.from_numpy(a) for a in (x[0], x[1], v[:, :, :2])), reverse=True,
                    cu_seqlens=[0, 10, 63])
    assert_close("o reverse", torch.from_numpy(o_r), ro, TOL)
    assert linattn.softmax_attention(x[0], x[1], x[1]).shape == (1, 63, 2, 60)


def test_numpy_only_import_works_without_torch():
    """numpy-only use: the package imports and runs with torch unimportable."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, linattn\n"
            "q = np.ones((1, 4, 1, 8), np.float32)\n"
            "o, s = linattn.fla.chunk_simple_gla(q, q, q, output_final_state=True)\n"
            "assert isinstance(o, np.ndarray) and s.shape == (1, 1, 8, 8)\n"
            "d = linattn.Decoder('simple_gla', 1, 1, 8, 8); d.step(q[0, 0:1, :, :][0][None], "
            "q[0, 0:1][0][None], q[0, 0:1][0][None])\n")
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(linattn.__file__)) + os.pathsep + \
        env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_grad_saves_nothing_and_no_copies():
    q, k = torch.randn(1, 50, 2, 60), torch.randn(1, 50, 2, 60)
    v = torch.randn(1, 50, 2, 60)
    g = Fn.logsigmoid(torch.randn(1, 50, 2))
    for t in (q, k, v, g):
        t.requires_grad_()
    with torch.no_grad():
        o, _ = fla.chunk_simple_gla(q, k, v, g)
    assert o.grad_fn is None and not o.requires_grad
    o, _ = fla.chunk_simple_gla(q, k, v, g)
    saved = o.grad_fn.saved_tensors  # contiguous fp32 inputs: saved as they are
    assert [s.data_ptr() for s in saved[:4]] == [t.data_ptr() for t in (q, k, v, g)]
    o.sum().backward()
    # inputs that need no grad: no graph at all
    o2, _ = fla.chunk_simple_gla(q.detach(), k.detach(), v.detach(), g.detach())
    assert o2.grad_fn is None


def test_non_contiguous_inputs():
    base = torch.randn(1, 2, 40, 60)
    q = base.transpose(1, 2)  # [1, 40, 2, 60], not contiguous
    assert not q.is_contiguous()
    o1, _ = fla.chunk_simple_gla(q, q, q)
    o2, _ = fla.chunk_simple_gla(q.contiguous(), q.contiguous(), q.contiguous())
    assert torch.equal(o1, o2)


def test_threads_bitwise_and_concurrent():
    x = [torch.randn(2, 200, 4, 64) for _ in range(3)]
    g = Fn.logsigmoid(torch.randn(2, 200, 4))
    linattn.set_num_threads(1)
    o1, _ = fla.chunk_gated_delta_rule(x[0], R.l2norm(x[1]), x[2], g, torch.rand(2, 200, 4))
    torch.manual_seed(0)
    x = [torch.randn(2, 200, 4, 64) for _ in range(3)]
    g = Fn.logsigmoid(torch.randn(2, 200, 4))
    linattn.set_num_threads(2)
    assert linattn.get_num_threads() == 2
    beta = torch.rand(2, 200, 4)
    ref, _ = fla.chunk_gated_delta_rule(x[0], R.l2norm(x[1]), x[2], g, beta)
    linattn.set_num_threads(1)
    one, _ = fla.chunk_gated_delta_rule(x[0], R.l2norm(x[1]), x[2], g, beta)
    assert torch.equal(ref, one)
    results, errors = [None] * 6, []

    def work(i):
        try:
            results[i] = fla.chunk_gated_delta_rule(x[0], R.l2norm(x[1]), x[2], g, beta)[0]
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert all(torch.equal(r, ref) for r in results)
    linattn.set_num_threads(0)
    with pytest.raises(ValueError):
        linattn.set_num_threads(-1)


def test_decoder_matches_recurrent_and_reset_slot():
    N, H, HV, K, V, T = 3, 1, 2, 16, 8, 12
    q, k = torch.randn(N, T, H, K), R.l2norm(torch.randn(N, T, H, K))
    v = torch.randn(N, T, HV, V)
    g, beta = Fn.logsigmoid(torch.randn(N, T, HV)), torch.rand(N, T, HV)
    o_ref, ht = fla.fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta,
                                                     output_final_state=True)
    dec = linattn.Decoder("gated_delta_rule", N, H, K, V, HV=HV)
    outs = [dec.step(q[:, t], k[:, t], v[:, t], g=g[:, t], beta=beta[:, t]) for t in range(T)]
    assert_close("o", torch.stack(outs, 1), o_ref, 1e-6)
    S, z = dec.get_state(as_torch=True)
    assert z is None
    assert_close("state", S, ht, 1e-6)
    dec.reset_slot(1)
    S2, _ = dec.get_state()
    assert np.all(S2[1] == 0) and np.array_equal(S2[0], S[0].numpy())
    dec.set_state(ht)
    assert np.array_equal(dec.get_state()[0], ht.numpy())
    S1, _ = dec.get_slot_state(2)
    assert np.array_equal(S1, ht[2].numpy())
    dec.set_slot_state(0, ht[1])
    assert np.array_equal(dec.get_state()[0][0], ht[1].numpy())
    assert np.array_equal(dec.get_state()[0][2], ht[2].numpy())
    dec.reset()
    assert not dec.get_state()[0].any()
    with pytest.raises(ValueError):
        dec.step(q[:, 0], k[:, 0], v[:, 0, :1], g=g[:, 0], beta=beta[:, 0])
    with pytest.raises(ValueError):
        dec.reset_slot(3)
    dn = linattn.Decoder("linear_attn", 1, 2, 4, 4, feature_map="elu1", normalize=True)
    dn.step(np.ones((1, 2, 4)), np.ones((1, 2, 4)), np.ones((1, 2, 4)))
    assert dn.get_state()[1].shape == (1, 2, 4)


BAD = [
    ("k shape", lambda q, v, g: fla.chunk_simple_gla(q, q[:, :, :, :3], v, g), ValueError),
    ("v time", lambda q, v, g: fla.chunk_simple_gla(q, q, v[:, :3], g), ValueError),
    ("q 3-D", lambda q, v, g: fla.chunk_simple_gla(q[0], q[0], v[0]), ValueError),
    ("g shape", lambda q, v, g: fla.chunk_simple_gla(q, q, v, g[:, :, :1]), ValueError),
    ("g > 0", lambda q, v, g: fla.chunk_simple_gla(q, q, v, -g), ValueError),
    ("NaN q", lambda q, v, g: fla.chunk_simple_gla(q * float("nan"), q, v, g), ValueError),
    ("Inf v", lambda q, v, g: fla.chunk_simple_gla(q, q, v / 0.0, g), ValueError),
    ("beta > 2", lambda q, v, g: fla.chunk_delta_rule(q, q, v, -g * 0 + 3.0), ValueError),
    ("h0 shape", lambda q, v, g: fla.chunk_simple_gla(q, q, v, g, initial_state=torch.zeros(
        1, 2, 3, 3)), ValueError),
    ("cu not ending at T", lambda q, v, g: fla.chunk_simple_gla(
        q[:1], q[:1], v[:1], g[:1], cu_seqlens=torch.tensor([0, 3, 5])), ValueError),
    ("cu decreasing", lambda q, v, g: fla.chunk_simple_gla(
        q[:1], q[:1], v[:1], g[:1], cu_seqlens=torch.tensor([0, 7, 4, 10])), ValueError),
    ("cu with B > 1", lambda q, v, g: fla.chunk_simple_gla(
        q, q, v, g, cu_seqlens=torch.tensor([0, 10])), ValueError),
    ("cu float", lambda q, v, g: fla.chunk_simple_gla(
        q[:1], q[:1], v[:1], g[:1], cu_seqlens=torch.tensor([0.0, 10.0])), TypeError),
    ("HV != H", lambda q, v, g: fla.chunk_simple_gla(q, q, torch.cat([v, v], 2)), ValueError),
    ("HV not multiple", lambda q, v, g: fla.chunk_gated_delta_rule(
        q, q, v[:, :, :1].expand(2, 10, 3, 4), g[:, :, :1].expand(2, 10, 3),
        g[:, :, :1].expand(2, 10, 3) * 0), ValueError),
    ("scale 0", lambda q, v, g: fla.chunk_simple_gla(q, q, v, g, scale=0.0), ValueError),
    ("unknown kwarg", lambda q, v, g: fla.chunk_simple_gla(q, q, v, g, foo=1), TypeError),
    ("gv", lambda q, v, g: fla.fused_recurrent_gla(q, q, v, gv=v), NotImplementedError),
    ("head_first", lambda q, v, g: fla.chunk_simple_gla(q, q, v, head_first=True),
     NotImplementedError),
    ("complex", lambda q, v, g: fla.chunk_simple_gla(q.to(torch.complex64), q, v), TypeError),
    ("string", lambda q, v, g: linattn.fla.chunk_simple_gla("x", "y", "z"), Exception),
    ("feature map", lambda q, v, g: linattn.linear_attention(q, q, v, feature_map="tanh"),
     ValueError),
    ("form", lambda q, v, g: linattn.gated_attention("gla", q, q, v, form="fast"), ValueError),
    ("meta device", lambda q, v, g: fla.chunk_simple_gla(q.to("meta"), q, v), ValueError),
    ("broadcast view", lambda q, v, g: fla.chunk_simple_gla(q.expand(2, 10, 2, 4), q, v), None),
]


@pytest.mark.parametrize("name,fn,exc", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises(name, fn, exc):
    q = torch.randn(2, 10, 2, 4)
    v = torch.randn(2, 10, 2, 4)
    g = Fn.logsigmoid(torch.randn(2, 10, 2))
    if exc is None:
        fn(q, v, g)  # a broadcast view is copied, not read out of bounds
        return
    with pytest.raises(exc) as info:
        fn(q, v, g)
    if isinstance(info.value, linattn.LinattnError):
        assert info.value.status.startswith("LA_ERR_") and len(str(info.value)) > 20


def test_error_carries_library_message():
    q = torch.randn(1, 5, 1, 4)
    with pytest.raises(linattn.LinattnValueError) as info:
        fla.chunk_simple_gla(q, q, q, torch.ones(1, 5, 1))
    assert info.value.status == "LA_ERR_INVALID_ARGUMENT"
    assert "g[0]" in str(info.value) and "<= 0" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_clear_error_or_backend():
    q = torch.randn(1, 8, 1, 16, device="cuda")
    if linattn.has_symbol("la_ctx_create_cuda"):
        o, _ = fla.chunk_simple_gla(q, q, q)
        assert o.is_cuda
    else:
        with pytest.raises(NotImplementedError, match="CUDA"):
            fla.chunk_simple_gla(q, q, q)


def test_cuda_dispatch_without_device():
    """Without a CUDA device, the dispatch point still names the missing backend."""
    from linattn import _core
    if linattn.has_symbol("la_ctx_create_cuda"):
        pytest.skip("library has a CUDA backend")
    with pytest.raises(NotImplementedError, match="la_ctx_create_cuda"):
        _core.cuda_context(torch.device("cuda", 0))


@pytest.mark.skipif(not linattn.has_symbol("la_kda_forward"), reason="library has KDA")
def test_kda_available():
    q = torch.randn(1, 4, 1, 8)
    fla.chunk_kda(q, R.l2norm(q), q, -torch.rand(1, 4, 1, 8), torch.rand(1, 4, 1))


@pytest.mark.skipif(linattn.has_symbol("la_kda_forward"), reason="library has KDA")
def test_kda_missing_is_clear():
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(NotImplementedError, match="la_kda_forward"):
        fla.chunk_kda(q, q, q, -torch.rand(1, 4, 1, 8), torch.rand(1, 4, 1))


def test_fork_child_gets_fresh_context():
    """Smoke test: an op in a forked child (DataLoader workers) with a
    2-thread context made by the parent completes with the same result."""
    import os
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    linattn.set_num_threads(2)
    q = torch.randn(1, 64, 4, 16)
    ref, _ = fla.chunk_simple_gla(q, q, q)  # parent context exists now
    pid = os.fork()
    if pid == 0:  # child: run an op, exit 0 if it matches
        try:
            o, _ = fla.chunk_simple_gla(q, q, q)
            os._exit(0 if torch.equal(o, ref) else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    linattn.set_num_threads(0)
    assert os.WEXITSTATUS(status) == 0


def test_fork_while_another_thread_holds_a_context():
    """A context made by another Python thread (autograd's device thread, a
    DataLoader's pin thread) that is alive at the fork: the child clears
    that thread's locals, and dropping the context there must not call into
    the library (destroying it joined worker threads that do not exist in
    the child: the child hung). The child must exit promptly."""
    import os
    import time
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    linattn.set_num_threads(2)
    made, done = threading.Event(), threading.Event()

    def holder():
        q = torch.randn(1, 64, 2, 16)
        fla.chunk_simple_gla(q, q, q)  # this thread's context exists now
        made.set()
        done.wait()

    t = threading.Thread(target=holder)
    t.start()
    made.wait()
    pid = os.fork()
    if pid == 0:
        import gc
        gc.collect()
        os._exit(0)
    deadline, status = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        got, st = os.waitpid(pid, os.WNOHANG)
        if got:
            status = st
            break
        time.sleep(0.05)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    done.set()
    t.join()
    linattn.set_num_threads(0)
    assert status is not None, "the forked child hung"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
