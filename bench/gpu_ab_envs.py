#!/usr/bin/env python3
"""cuda-lsplit14: gpu_ab.py (same arguments) with LINATTN_* switches set per
library, and every library's outputs compared bitwise with the first's. A
library reads its switches once, at its first call, so copies of one .so in
several folders run several variants in one process (as gpu_ab_delta_envs.py
does for the delta rules):

    AB_ENV="p4/liblinattn.so=LINATTN_CUDA_LIN_SPLIT:4;sp/liblinattn.so=LINATTN_CUDA_LIN_SPLIT_LOCAL:0" \\
        python3 bench/gpu_ab_envs.py --libs base/liblinattn.so,p4/liblinattn.so,sp/liblinattn.so
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_ab as g  # noqa: E402

ENV = {}
for item in os.environ.get("AB_ENV", "").split(";"):
    if item:
        path, kvs = item.split("=", 1)
        ENV[path] = dict(kv.split(":", 1) for kv in kvs.split("+"))
KEYS = {k for d in ENV.values() for k in d}
_init, _calls = g.Lib.__init__, g.calls


def init(self, path, stream):
    self.path = path
    _init(self, path, stream)


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


# every library compared with the first: gpu_ab.main's source with its one
# comparison widened, run in that module's namespace
_src = open(g.__file__).read()
_old = "for x, y in zip(outs[0], outs[-1]))"
assert _old in _src
_src = _src.replace(
    "            same = all(", "            same = [all(").replace(
    _old, "for x, y in zip(outs[0], outs[i])) for i in range(1, len(outs))]")
exec(compile(_src.replace('if __name__ == "__main__":', 'if False:'), g.__file__, "exec"), g.__dict__)
g.Lib.__init__, g.calls = init, calls
g.main()
