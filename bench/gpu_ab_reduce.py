#!/usr/bin/env python3
"""bench/gpu_ab_delta.py with LINATTN_CUDA_DELTA_REDUCE set per library before
every call (cuda-red8: the library reads it at each launch of the delta rules'
backward reduce): AB_ENVS=v1,v2,.. ('-' unset) in --libs order. Two copies of
one library with AB_ENVS=old,- give the old and the warp reduce kernel side
by side, bitwise compared (dq, dk, dg, dbeta) and per-kernel profiled."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_ab_delta as g  # noqa: E402

envs = os.environ["AB_ENVS"].split(",")
libs = os.environ.get("AB_LIBS", "")
orig, order = g.calls, []


def calls(L, op, dims, t, saved=None):
    fwd, fb = orig(L, op, dims, t, saved)
    if id(L) not in order:
        order.append(id(L))
    v = envs[order.index(id(L))]

    def wrap(f):
        def h():
            if v == "-":
                os.environ.pop("LINATTN_CUDA_DELTA_REDUCE", None)
            else:
                os.environ["LINATTN_CUDA_DELTA_REDUCE"] = v
            return f()
        return h
    return wrap(fwd), wrap(fb)


g.calls = calls
g.main()
