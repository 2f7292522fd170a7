"""The output pool (python/linattn/_pool.py): large CPU outputs are views of
blocks the package maps once and reuses after the last view dies. Results
must not change (bitwise against the pool turned off), a block must never be
handed out while any view of it lives, and the limit / release / off
switches must hold."""

import gc
import threading

import numpy as np
import pytest
import torch

import linattn
from linattn import _pool
from linattn._pool import POOL

MB = 1 << 20


@pytest.fixture(autouse=True)
def _pool_state():
    lim, minb = POOL.limit, _pool.MIN_BYTES
    POOL.set_limit(256 * MB)
    _pool.MIN_BYTES = 1 << 20
    POOL.release()
    yield
    _pool.MIN_BYTES = minb
    POOL.set_limit(lim)
    POOL.release()


def _gdn(T=512, H=4, D=128, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(1, T, H, D, generator=g) for _ in range(3)]
    x.append(torch.nn.functional.logsigmoid(torch.randn(1, T, H, generator=g) + 3))
    x.append(torch.rand(1, T, H, generator=g))
    return [t.requires_grad_(grad) for t in x]


def _fwd_bwd(x, seed=1):
    xs = [t.detach().clone().requires_grad_() for t in x]
    o, _ = linattn.gated_delta_rule(*xs, use_qk_l2norm=True)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed))
    o.backward(do)
    return o.detach(), [t.grad for t in xs]


def test_size_class():
    for n in [1, 4095, 65536, 65537, MB, MB + 1, 3 * MB + 5, 32 * MB, 33 * MB + 7,
              (1 << 34) + 3]:
        c = _pool.size_class(n)
        assert c >= n and c % 65536 == 0 and c <= n + max(65536, n // 8), (n, c)
    assert _pool.size_class(32 * MB) == 32 * MB


def test_output_block_reused_after_last_view_dies():
    x = _gdn(grad=False)  # o = [1, 512, 4, 128] float32 = 1 MiB: pooled
    o1, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    p1 = o1.data_ptr()
    ref = o1.clone()
    view = o1[0, 5:]  # a view keeps the block leased
    del o1
    gc.collect()
    o2, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    assert o2.data_ptr() != p1
    assert torch.equal(o2, ref)
    assert torch.equal(view, ref[0, 5:])  # the live view was not overwritten
    p2 = o2.data_ptr()
    del view, o2
    o3, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    assert o3.data_ptr() in (p1, p2)  # a block came back and was reused
    assert torch.equal(o3, ref)


def test_gradients_bitwise_with_and_without_pool():
    x = _gdn()
    POOL.set_limit(0)
    o0, g0 = _fwd_bwd(x)
    assert all(not POOL.idle for _ in [0])
    POOL.set_limit(256 * MB)
    h0 = POOL.stats["hits"]
    for it in range(3):  # the second and third iterations reuse blocks
        o1, g1 = _fwd_bwd(x)
        assert torch.equal(o0, o1)
        for a, b in zip(g0, g1):
            assert torch.equal(a, b)
        del o1, g1
        gc.collect()
    assert POOL.stats["hits"] > h0
    assert POOL.idle_bytes > 0


def test_limit_release_and_off():
    a = POOL.array((MB // 4,))  # 1 MiB
    b = POOL.array((2 * MB // 4,))
    assert a is not None and b is not None
    del a, b
    gc.collect()
    assert POOL.idle_bytes == 3 * MB
    linattn.set_pool_limit(2 * MB)  # the oldest idle block goes
    assert POOL.idle_bytes == 2 * MB and linattn.get_pool_limit() == 2 * MB
    linattn.release_memory()
    assert POOL.idle_bytes == 0
    linattn.set_pool_limit(0)
    assert POOL.array((MB,)) is None  # off: callers fall back to empty()
    x = _gdn(grad=False)
    o, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    del o
    gc.collect()
    assert POOL.idle_bytes == 0
    with pytest.raises(ValueError):
        linattn.set_pool_limit("x")


def test_small_arrays_not_pooled():
    assert POOL.array((100,)) is None
    x = _gdn(T=64, grad=False)  # 128 KiB outputs
    m = POOL.stats["misses"] + POOL.stats["hits"]
    linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    assert POOL.stats["misses"] + POOL.stats["hits"] == m


def test_numpy_outputs_pooled_and_converted_inputs():
    x = [t.detach().numpy() for t in _gdn(grad=False)]
    ref, _ = linattn.gated_delta_rule(*[torch.from_numpy(a) for a in x], use_qk_l2norm=True)
    o, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    assert isinstance(o, np.ndarray) and o.dtype == np.float32
    assert np.array_equal(o, ref.numpy())
    p = o.ctypes.data
    del o
    gc.collect()
    # float64, non-contiguous inputs are converted into pooled copies
    x64 = [np.asfortranarray(a.astype(np.float64)) for a in x]
    o2, _ = linattn.gated_delta_rule(*x64, use_qk_l2norm=True)
    assert o2.ctypes.data == p or POOL.stats["hits"] > 0
    o3, _ = linattn.gated_delta_rule(*[a.astype(np.float32) for a in x64], use_qk_l2norm=True)
    assert np.array_equal(o2, o3)


def test_noncontiguous_and_bf16_torch_inputs():
    x = _gdn(grad=False)
    ref, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    qt = x[0].transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    assert not qt.is_contiguous()
    o, _ = linattn.gated_delta_rule(qt, *x[1:], use_qk_l2norm=True)
    assert torch.equal(o, ref)
    xb = [t.to(torch.bfloat16) for t in x[:3]] + x[3:]
    ob, _ = linattn.gated_delta_rule(*xb, use_qk_l2norm=True)
    rb, _ = linattn.gated_delta_rule(*[t.float() for t in xb], use_qk_l2norm=True)
    assert ob.dtype == torch.bfloat16 and torch.equal(ob, rb.to(torch.bfloat16))


def test_poison_fills_nan():
    old = _pool.POISON
    _pool.POISON = True
    try:
        a = POOL.array((MB,))
        assert np.isnan(a).all()
    finally:
        _pool.POISON = old


def test_threads_share_the_pool():
    x = _gdn(grad=False)
    ref, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
    ref = ref.clone()
    bad = []

    def work():
        for _ in range(4):
            o, _ = linattn.gated_delta_rule(*x, use_qk_l2norm=True)
            if not torch.equal(o, ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_fork_child_writes_stay_in_the_child():
    import os
    a = POOL.array((MB // 4,))
    a.fill(1.0)
    pid = os.fork()
    if pid == 0:  # the child: its writes must not reach the parent's block
        a.fill(2.0)
        b = POOL.array((MB // 4,))  # the child's own pool works
        os._exit(0 if b is not None else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert (a == 1.0).all()


def test_block_returned_while_the_lock_is_held():
    """A GC pass inside the pool's lock (any allocation there may run one)
    can return a block on the same thread: the lock must be reentrant."""
    done = []

    def work():
        a = POOL.array((MB // 4,))
        with POOL.lock:
            del a  # its finalizer runs here, on the thread that holds the lock
        done.append(POOL.idle_bytes)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(10)
    assert done == [MB]
