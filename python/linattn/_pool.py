"""Reused memory for the package's large CPU outputs (bench/PYTHON.md, cpu-py7).

Every op returns new arrays (o; dq, dk, dv, ... in the backward). Above
glibc's mmap threshold (at most 32 MiB) each one is a fresh mapping, whose
pages fault on first touch inside the C call (~13 us per 4 KiB page on the
shared VMs: 0.1 s for one [1, 8192, 8, 128] float32 tensor) and is unmapped
again when freed; on those VMs the churn also made the other memory the
call touches (a la_saved object, the inputs) slower to reach afterwards.
So arrays of at least MIN_BYTES are views of blocks this module maps once:
when the last view of an array dies (torch storage or numpy base), its
block goes back to an idle list and the next request of the same size
class gets it, already touched. Blocks are private anonymous mappings of
our own. LINATTN_POOL_HUGEPAGE=1 marks them MADV_HUGEPAGE (only this
package's memory is advised, never the caller's): the first touch of four
32 MiB blocks took 12-267 ms instead of ~500 ms, but on the shared VMs
the process's other, 4 KiB-page memory (a la_saved object, torch's
tensors) then ran 1.3-2.2x slower under load, so it is off by default
(bench/PYTHON.md, cpu-py7).

Idle blocks are kept up to a limit (default: a quarter of physical memory,
at most 4 GiB; LINATTN_POOL_BYTES in the environment, or set_limit());
beyond it the oldest idle blocks are freed. release() frees them all;
limit 0 turns the pool off (plain torch.empty / numpy.empty).
"""

import mmap
import os
import threading
import weakref

import numpy as np

MIN_BYTES = int(os.environ.get("LINATTN_POOL_MIN_BYTES", 1 << 20))
# tests: every array taken is filled with NaN first (an element the library
# fails to write then shows, instead of an earlier call's value)
POISON = os.environ.get("LINATTN_POOL_POISON", "") not in ("", "0")
_HUGE = 2 << 20
HUGEPAGE = os.environ.get("LINATTN_POOL_HUGEPAGE", "0") not in ("", "0")


def _default_limit():
    env = os.environ.get("LINATTN_POOL_BYTES")
    if env is not None:
        return max(0, int(env))
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        phys = 4 << 30
    return min(4 << 30, phys // 4)


def size_class(nbytes):
    """Block size serving a request of nbytes: rounded up to 1/8 of the
    power of two below it (at most 12.5% more), a multiple of 64 KiB."""
    step = max(64 << 10, (1 << (int(nbytes).bit_length() - 1)) // 8)
    return -(-int(nbytes) // step) * step


class _Block:
    __slots__ = ("cap", "mm", "addr", "__weakref__")

    def __init__(self, cap):
        self.cap = cap
        huge = HUGEPAGE and cap >= 2 * _HUGE and hasattr(mmap, "MADV_HUGEPAGE")
        self.mm = mmap.mmap(-1, cap + (_HUGE if huge else 0),  # private: not shared on fork
                            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = np.frombuffer(self.mm, np.uint8, count=1).ctypes.data
        self.addr = (-base) % _HUGE if huge else 0  # offset of the 2 MiB-aligned start
        if huge:
            try:
                self.mm.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # kernels without THP: a plain mapping
                pass


class Pool:
    def __init__(self, limit=None):
        self.limit = _default_limit() if limit is None else int(limit)
        self.idle = {}  # size class -> [blocks], most recent last
        self.order = []  # idle blocks, oldest first (for the limit)
        self.idle_bytes = 0
        self.lock = threading.RLock()  # reentrant: a GC pass inside the lock may return a block
        self.stats = {"hits": 0, "misses": 0}

    def _take(self, cap):
        with self.lock:
            lst = self.idle.get(cap)
            if lst:
                b = lst.pop()
                self.order.remove(b)
                self.idle_bytes -= cap
                self.stats["hits"] += 1
                return b
            self.stats["misses"] += 1
        return _Block(cap)

    def _give(self, b):
        with self.lock:
            if b.cap > self.limit:
                return
            self.idle.setdefault(b.cap, []).append(b)
            self.order.append(b)
            self.idle_bytes += b.cap
            while self.idle_bytes > self.limit:
                old = self.order.pop(0)
                self.idle[old.cap].remove(old)
                self.idle_bytes -= old.cap

    def array(self, shape, dtype=np.float32):
        """An uninitialised C-contiguous numpy array from the pool, or None
        when it is below MIN_BYTES or the pool is off."""
        dtype = np.dtype(dtype)
        n = 1
        for s in shape:
            n *= int(s)
        nbytes = n * dtype.itemsize
        if nbytes < MIN_BYTES or self.limit <= 0 or nbytes == 0:
            return None
        b = self._take(size_class(nbytes))
        flat = np.frombuffer(b.mm, np.uint8, count=nbytes, offset=b.addr)
        weakref.finalize(flat, self._give, b).atexit = False  # when the last view dies
        a = flat.view(dtype).reshape(shape)
        if POISON:
            a.fill(np.nan)
        return a

    def release(self):
        """Frees the idle blocks."""
        with self.lock:
            self.idle, self.order, self.idle_bytes = {}, [], 0

    def set_limit(self, nbytes):
        with self.lock:
            self.limit = max(0, int(nbytes))
            while self.idle_bytes > self.limit:
                old = self.order.pop(0)
                self.idle[old.cap].remove(old)
                self.idle_bytes -= old.cap


POOL = Pool()


def _after_fork_in_child():
    # a lock held by another thread at the fork would never be released
    POOL.lock = threading.RLock()
    POOL.idle, POOL.order, POOL.idle_bytes = {}, [], 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
