#!/usr/bin/env python3
"""cuda-dcg8: gpu_ab_delta.py (same arguments) with LINATTN_CUDA_DCG_TC set per library
(AB_ENV="path=value,..."; the library reads it once, at its first backward,
so two copies of one .so in two folders run two variants in one process):

    AB_ENV="old/liblinattn.so=1" python3 bench/gpu_ab_delta_env.py --libs old/liblinattn.so,new/liblinattn.so --profile
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_ab_delta as g  # noqa: E402

ENV = dict(s.rsplit("=", 1) for s in os.environ.get("AB_ENV", "").split(",") if s)
_init, _calls = g.Lib.__init__, g.calls


def init(self, path, stream):
    _init(self, path, stream)
    self.path = path


def calls(L, *a):
    v = ENV.get(L.path)

    def wrap(f):
        def h():
            if v is None:
                os.environ.pop("LINATTN_CUDA_DCG_TC", None)
            else:
                os.environ["LINATTN_CUDA_DCG_TC"] = v
            return f()
        return h
    fwd, fb = _calls(L, *a)
    return wrap(fwd), wrap(fb)


g.Lib.__init__, g.calls = init, calls
g.main()
