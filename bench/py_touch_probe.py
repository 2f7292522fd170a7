"""The two costs of fresh memory on the shared VMs (bench/PYTHON.md, cpu-py7).

1. First touch: a new 32 MiB torch tensor filled once (page faults of this
   thread, CPU time), plain and with MADV_HUGEPAGE on its 2 MiB-aligned part.
2. Afterwards: the time to read a 184 MB tensor that was already touched
   (no guest page faults), before and after a tensor of the given size was
   allocated, filled and freed (a fresh mapping, unmapped again).
usage: python3 bench/py_touch_probe.py
"""

import ctypes
import resource
import time

import torch

torch.set_num_threads(1)
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_HUGEPAGE = 14


def faults():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def first_touch(huge):
    n = 8 * 8192 * 128
    f, t = faults(), time.thread_time()
    x = torch.empty(n)
    if huge:
        p, e = x.data_ptr(), x.data_ptr() + 4 * n
        a, b = (p + (2 << 20) - 1) & ~((2 << 20) - 1), e & ~((2 << 20) - 1)
        libc.madvise(a, b - a, MADV_HUGEPAGE)
    x.fill_(1.0)
    return (time.thread_time() - t) * 1e3, faults() - f


def main():
    for i in range(3):
        for huge in (False, True):
            ms, fl = first_touch(huge)
            print("first touch of 32 MiB, MADV_HUGEPAGE=%d: %6.1f ms CPU, %5d faults"
                  % (huge, ms, fl))
    warm = torch.ones(46_000_000)

    def read():
        t = time.thread_time()
        warm.sum()
        return (time.thread_time() - t) * 1e3

    read()
    for mb in (8, 33, 134, 268):
        before = read()
        x = torch.empty(mb * (1 << 20) // 4)
        x.fill_(1.0)
        del x
        after, again = read(), read()
        print("read 184 MB: %5.1f ms; after a %3d MB tensor was touched and freed: %5.1f ms, "
              "then %5.1f ms" % (before, mb, after, again))


if __name__ == "__main__":
    main()
