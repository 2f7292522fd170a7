"""Shared machinery: the loaded library, errors, per-thread contexts, and the
two array back ends (numpy, torch) every op is written against.

Threads: a la_ctx serves one call at a time, so each Python thread gets its
own context (created on first use with the count set by set_num_threads).
ctypes releases the GIL during every C call, so several Python threads run
ops in parallel, each on its own context and thread pool.
"""

import os
import threading

import numpy as np

from . import _ffi
from ._pool import POOL

lib, library_path = _ffi.load()


def has_symbol(name):
    return _ffi.has(lib, name)


# ---------------------------------------------------------------- errors

class LinattnError(Exception):
    """Base of every error raised from a failing C call. ``status`` is the
    la_status name (e.g. "LA_ERR_SHAPE_MISMATCH"), the message is
    la_last_error()."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class LinattnValueError(LinattnError, ValueError):
    pass


class LinattnMemoryError(LinattnError, MemoryError):
    pass


class LinattnUnsupportedError(LinattnError, NotImplementedError):
    pass


class LinattnRuntimeError(LinattnError, RuntimeError):
    pass


_ERROR_CLASS = {1: LinattnValueError, 2: LinattnValueError, 3: LinattnValueError,
                4: LinattnValueError, 5: LinattnValueError, 6: LinattnValueError,
                7: LinattnMemoryError, 8: LinattnUnsupportedError}


def raise_for(status, fname, hint=""):
    name = _ffi.STATUS_NAMES.get(status, "status %d" % status)
    msg = (lib.la_last_error() or b"").decode("utf-8", "replace")
    cls = _ERROR_CLASS.get(status, LinattnRuntimeError)
    raise cls(name, "%s failed (%s): %s%s" % (fname, name, msg, hint))


_CUDA_HANDLES = set()  # handles made by cuda_context (for error messages)


def _on_cuda(ctx):
    return isinstance(ctx, int) and ctx in _CUDA_HANDLES


def call(fname, *args):
    st = getattr(lib, fname)(*args)
    if st:
        hint = ""
        if st == 8 and args and _on_cuda(args[0]):
            hint = (" [%s on CUDA tensors: the CUDA backend does not serve this op or option; "
                    "move the tensors to the CPU (.cpu()) for it]" % fname)
        raise_for(st, fname, hint)


# ---------------------------------------------------------------- contexts

_settings = {"threads": 0, "generation": 0}
_local = threading.local()


class _Context:
    """Owns one la_ctx; destroyed with the thread-local that holds it. Also
    keeps the idle la_saved objects of this context (SavedForBackward): a
    training loop gets back the same ones, whose memory was touched before
    (a fresh buffer pays a page fault per 4 KiB on first touch)."""

    def __init__(self, n_threads):
        h = _ffi.c_ptr()
        call("la_ctx_create", ctypes_byref(h), int(n_threads))
        self._adopt(h.value)

    def _adopt(self, handle):
        """Takes ownership of a created la_ctx (CPU or CUDA)."""
        self.handle = handle
        self._destroy = lib.la_ctx_destroy
        # a forked child inherits this object but not the context's worker
        # threads or CUDA state: there, dropping it must not call into C (the
        # thread-locals of the parent's other threads, e.g. autograd's device
        # thread, are cleared in the child after the fork; destroying them
        # joined threads that do not exist: a hang, or CUDA calls: a crash)
        self._pid = os.getpid()
        self.saved_idle = []
        self._lock = threading.RLock()  # reentrant: objects come back from GC anywhere

    def saved_acquire(self):
        with self._lock:
            if self.saved_idle:
                return self.saved_idle.pop()
        h = _ffi.c_ptr()
        call("la_saved_create", self.handle, ctypes_byref(h))
        return h.value

    def _foreign(self):
        """True in a process forked after this context was made."""
        return getattr(self, "_pid", None) != os.getpid()

    def saved_release(self, h):
        with self._lock:
            if self.handle is not None:
                self.saved_idle.append(h)
                return
        if not self._foreign():
            lib.la_saved_destroy(h)

    def saved_clear(self):
        """Frees the idle saved objects (their memory)."""
        with self._lock:
            idle, self.saved_idle = self.saved_idle, []
        if self._foreign():
            return  # the parent's objects: left to the parent
        for h in idle:
            lib.la_saved_destroy(h)

    def __del__(self):
        if self._foreign():
            self.handle, self.saved_idle = None, []
            return
        if getattr(self, "saved_idle", None):
            self.saved_clear()
        if getattr(self, "handle", None):
            self._destroy(self.handle)
            self.handle = None


class SavedForBackward:
    """One la_saved borrowed from a CPU context's pool for one forward and
    its backward (the delta rules' autograd functions); goes back to the
    pool on release() or when garbage collected (a forward whose backward
    never runs). It keeps its context alive."""

    def __init__(self, context):
        self.context = context
        self.handle = context.saved_acquire()

    def release(self):
        h, self.handle = self.handle, None
        if h is not None:
            self.context.saved_release(h)

    def __del__(self):
        if getattr(self, "handle", None) is not None:
            self.release()


def cpu_context_object():
    """The calling thread's _Context (cpu_context() returns its handle)."""
    cpu_context()
    return _local.cpu


def saved_available():
    return has_symbol("la_saved_create")


def release_saved_memory():
    """Frees the calling thread's idle saved-for-backward objects."""
    c = getattr(_local, "cpu", None)
    if c is not None:
        c.saved_clear()


def release_memory():
    """Frees the idle memory the package keeps for reuse: the calling
    thread's idle saved-for-backward objects and the output pool's idle
    blocks (see set_pool_limit)."""
    release_saved_memory()
    POOL.release()


def set_pool_limit(nbytes):
    """Most bytes of idle output blocks kept for reuse (default: a quarter
    of physical memory, at most 4 GiB, or $LINATTN_POOL_BYTES); 0 turns the
    pool off: outputs are then plain torch.empty / numpy.empty arrays, whose
    pages fault on first touch in every call (bench/PYTHON.md, cpu-py7)."""
    POOL.set_limit(nbytes)


def get_pool_limit():
    return POOL.limit


def ctypes_byref(x):
    import ctypes
    return ctypes.byref(x)


def cpu_context():
    """The calling thread's CPU context (a handle for the C calls)."""
    c = getattr(_local, "cpu", None)
    if c is None or _local.gen != _settings["generation"]:
        _local.cpu = None  # destroy the old one first
        c = _local.cpu = _Context(_settings["threads"])
        _local.gen = _settings["generation"]
    return c.handle


def _after_fork_in_child():
    """A forked child (e.g. a DataLoader worker) inherits the parent's contexts
    but not their worker threads: drop them without destroying (destroying
    would join threads that do not exist here) and start fresh ones."""
    for attr in ("cpu",):
        c = getattr(_local, attr, None)
        if c is not None:
            c.handle = None
    cache = getattr(_local, "cuda", None)
    if cache:
        for c in cache.values():
            c.handle = None
        cache.clear()
    _settings["generation"] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Worker threads per call (the calling thread counts as one); 0 = every
    online CPU (the default). Applies to each Python thread's next call.
    Results are bitwise identical for any count."""
    n = int(n)
    if n < 0:
        raise ValueError("set_num_threads: n = %d (must be >= 0; 0 = all cores)" % n)
    _settings["threads"] = n
    _settings["generation"] += 1


def get_num_threads():
    return int(lib.la_ctx_threads(cpu_context()))


# ---------------------------------------------------------------- arrays

def _numpy_ptr(a):
    return a.__array_interface__["data"][0]


class NumpyXP:
    """Array back end for numpy inputs (CPU, float32 computation)."""
    is_torch = False
    dtype_code = 0

    def __init__(self):
        self.out_dtype = np.float32

    @staticmethod
    def f32(x, name):
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as e:  # noqa: BLE001 - report which argument
                raise TypeError("%s: cannot convert %r to an array (%s)" % (name, type(x), e))
        if x.dtype.kind not in "fiub":
            raise TypeError("%s: dtype %s is not a real number type" % (name, x.dtype))
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            y = POOL.array(x.shape)
            if y is None:
                return np.ascontiguousarray(x, dtype=np.float32)
            np.copyto(y, x, casting="unsafe")
            x = y
        return x

    @staticmethod
    def i64(x, name):
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError("%s: must hold integers, got dtype %s" % (name, x.dtype))
        return np.ascontiguousarray(x, dtype=np.int64)

    ptr = staticmethod(_numpy_ptr)

    @staticmethod
    def empty(shape):
        a = POOL.array(shape)
        return np.empty(shape, np.float32) if a is None else a

    empty_state = empty

    @staticmethod
    def zeros(shape):
        return np.zeros(shape, np.float32)

    @staticmethod
    def state(x, name):
        return NumpyXP.f32(x, name)

    def out(self, x):
        return x if self.out_dtype == np.float32 else x.astype(self.out_dtype)

    @staticmethod
    def context():
        return cpu_context()


try:  # torch is optional: numpy-only use works without it
    import torch as _torch
except ImportError:  # pragma: no cover - exercised on numpy-only machines
    _torch = None

_CUDA_DTYPES = {}
if _torch is not None:
    _CUDA_DTYPES = {_torch.float32: 0, _torch.bfloat16: 1, _torch.float16: 2}


class TorchXP:
    """Array back end for torch tensors. CPU tensors compute in float32 (other
    dtypes are converted and o comes back in v's dtype). CUDA tensors go to the
    CUDA backend on torch's current stream: this is the single dispatch point
    (see cuda_context)."""
    is_torch = True

    def __init__(self, device, out_dtype):
        self.device = device
        self.out_dtype = out_dtype
        self.cuda = device.type == "cuda"
        if device.type not in ("cpu", "cuda"):
            raise ValueError("linattn: tensors on device %s are not supported (cpu or cuda)"
                             % device)
        # The CUDA backend computes in q/k/v's own dtype (la_dims.dtype);
        # the CPU backend only in float32.
        self.compute_dtype = out_dtype if self.cuda and out_dtype in _CUDA_DTYPES \
            else _torch.float32
        self.dtype_code = _CUDA_DTYPES.get(self.compute_dtype, 0)

    def f32(self, x, name):
        """Tensor in the compute dtype, contiguous; no copy when it already is."""
        if not isinstance(x, _torch.Tensor):
            x = _torch.as_tensor(np.asarray(x), device=self.device)
        if x.device != self.device:
            raise ValueError("%s is on %s but the other tensors are on %s"
                             % (name, x.device, self.device))
        if x.dtype != self.compute_dtype:
            if x.is_complex() or x.dtype == _torch.bool:
                raise TypeError("%s: dtype %s is not a real number type" % (name, x.dtype))
        elif x.is_contiguous():
            return x
        if not self.cuda and not (x.requires_grad and _torch.is_grad_enabled()):
            y = self.empty(x.shape)  # the copy in pooled memory
            y.copy_(x)
            return y
        return x.to(self.compute_dtype).contiguous()

    def state(self, x, name):
        """States are always float32."""
        if not isinstance(x, _torch.Tensor):
            x = _torch.as_tensor(np.asarray(x), device=self.device)
        if x.device != self.device:
            raise ValueError("%s is on %s but the other tensors are on %s"
                             % (name, x.device, self.device))
        if x.dtype != _torch.float32:
            x = x.float()
        return x.contiguous()

    def i64(self, x, name):
        """Offsets (cu_seqlens, kv_lens) as a contiguous int64 CPU tensor: the
        library reads la_dims and its offsets on the host for every backend
        (a CUDA tensor is copied back, which waits for its stream)."""
        if isinstance(x, _torch.Tensor):
            if x.dtype.is_floating_point or x.is_complex() or x.dtype == _torch.bool:
                raise TypeError("%s: must be an integer tensor, got %s" % (name, x.dtype))
            if x.is_cuda and _torch.cuda.is_current_stream_capturing():
                raise ValueError("%s: a CUDA tensor cannot be read on the host inside a CUDA "
                                 "graph capture; pass it as a CPU tensor or a list (the "
                                 "offsets are fixed in the graph)" % name)
            return x.detach().to(device="cpu", dtype=_torch.int64).contiguous()
        return _torch.from_numpy(NumpyXP.i64(x, name))

    @staticmethod
    def ptr(x):
        return x.data_ptr()

    def empty(self, shape):
        if not self.cuda:  # the CPU computes in float32
            a = POOL.array(shape)
            if a is not None:
                return _torch.from_numpy(a)
        return _torch.empty(shape, dtype=self.compute_dtype, device=self.device)

    def empty_state(self, shape):
        if not self.cuda:  # float32 there too: empty's pooled block
            return self.empty(shape)
        return _torch.empty(shape, dtype=_torch.float32, device=self.device)

    def zeros(self, shape):
        return _torch.zeros(shape, dtype=self.compute_dtype, device=self.device)

    def out(self, x):
        return x if x.dtype == self.out_dtype else x.to(self.out_dtype)

    def context(self):
        return cuda_context(self.device) if self.cuda else cpu_context()


class _CudaContext(_Context):
    """A la_ctx bound to one device and stream (la_ctx_create_cuda)."""

    def __init__(self, index, stream):
        h = _ffi.c_ptr()
        call("la_ctx_create_cuda", ctypes_byref(h), int(index), _ffi.c_ptr(stream))
        self._adopt(h.value)  # its la_saved pool too, as a CPU context's (cuda-saved7)
        _CUDA_HANDLES.add(self.handle)
        self.stream = stream

    # The set is bound as a default: at interpreter exit the module's globals
    # may already be None when the last thread-local contexts are collected.
    def __del__(self, _handles=_CUDA_HANDLES):
        if getattr(self, "handle", None):
            _handles.discard(self.handle)
        _Context.__del__(self)


def cuda_context(device):
    """Context for a CUDA device on torch's current stream, one per (Python
    thread, device, stream), created on first use. Calls only enqueue work on
    that stream, so results are ordered with the torch ops around them. Needs
    la_ctx_create_cuda in the loaded library."""
    return cuda_context_object(device).handle


def cuda_context_object(device):
    """The _CudaContext whose handle cuda_context(device) returns."""
    if not has_symbol("la_ctx_create_cuda"):
        raise NotImplementedError(
            "linattn: CUDA tensors need the CUDA backend (la_ctx_create_cuda), which the "
            "loaded library %s does not have; move the tensors to the CPU (.cpu())"
            % library_path)
    index = device.index if device.index is not None else _torch.cuda.current_device()
    stream = _torch.cuda.current_stream(index).cuda_stream
    key = (index, stream)
    cache = getattr(_local, "cuda", None)
    if cache is None:
        cache = _local.cuda = {}
    c = cache.get(key)
    if c is None:
        c = cache[key] = _CudaContext(index, stream)
    return c


class _XPOnContext:
    """cuda-saved7: an xp whose calls go to a given context handle (a CUDA
    backward on autograd's thread reading the forward's la_saved)."""

    def __init__(self, xp, handle):
        self._xp, self._handle = xp, handle

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def context(self):
        return self._handle


def xp_on_context(xp, handle):
    return _XPOnContext(xp, handle)


_NUMPY = NumpyXP()


_XP_CACHE = {}


def torch_xp(device, dtype):
    """A TorchXP per (device, dtype): creating one costs more than a C call."""
    key = (device, dtype)
    xp = _XP_CACHE.get(key)
    if xp is None:
        xp = _XP_CACHE[key] = TorchXP(device, dtype)
    return xp


def backend(x, out_like=None):
    """The array back end for x: torch if it is a tensor, numpy otherwise. o
    comes back in out_like's dtype (the value input), float32 for integers."""
    if out_like is None:
        out_like = x
    if _torch is not None and isinstance(x, _torch.Tensor):
        dt = out_like.dtype if isinstance(out_like, _torch.Tensor) else _torch.float32
        if not dt.is_floating_point:
            dt = _torch.float32
        return torch_xp(x.device, dt)
    xp = NumpyXP()
    dt = getattr(out_like, "dtype", None)
    if dt is not None and np.dtype(dt).kind == "f":
        xp.out_dtype = np.dtype(dt)
    return xp
