#!/usr/bin/env python3
"""cuda-gdn12: gpu_ab_delta.py (same arguments) with any LINATTN_* switches set
per library, and every library's outputs compared bitwise with the first's
(gpu_ab_delta.py compares the first and the last). A library reads its
switches once, at its first call, so copies of one .so in several folders run
several variants in one process:

    AB_ENV="p1/liblinattn.so=LINATTN_CUDA_DELTA_TC_PARTS:1;m/liblinattn.so=LINATTN_CUDA_DELTA_CL:3m" \\
        python3 bench/gpu_ab_delta_envs.py --libs base/liblinattn.so,p1/liblinattn.so,m/liblinattn.so --fwd-only
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_ab_delta as g  # noqa: E402

ENV = {}
for item in os.environ.get("AB_ENV", "").split(";"):
    if item:
        path, kvs = item.split("=", 1)
        ENV[path] = dict(kv.split(":", 1) for kv in kvs.split("+"))
KEYS = {k for d in ENV.values() for k in d}
_init, _calls, _equal = g.Lib.__init__, g.calls, torch.equal


def init(self, path, stream):
    _init(self, path, stream)
    self.path = path


def calls(L, *a):
    env = ENV.get(L.path, {})

    def wrap(f):
        def h():
            for k in KEYS:
                if k in env:
                    os.environ[k] = env[k]
                else:
                    os.environ.pop(k, None)
            return f()
        return h
    fwd, fb = _calls(L, *a)
    return wrap(fwd), wrap(fb)


# every library compared with the first: gpu_ab_delta.main's source with its
# one pair widened, run in that module's namespace
_main_src = open(g.__file__).read().replace(
    'pairs = [("A", "B", outs[0], outs[len(libpaths) - 1])]',
    'pairs = [("A", os.path.basename(os.path.dirname(libpaths[i])), outs[0], outs[i])'
    ' for i in range(1, len(libpaths))]')
exec(compile(_main_src.replace('if __name__ == "__main__":', 'if False:'), g.__file__, "exec"),
     g.__dict__)
g.Lib.__init__, g.calls = init, calls
g.main()
