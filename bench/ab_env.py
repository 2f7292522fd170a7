"""Per-library LINATTN_* switches for the A/B harnesses (gpu_ab.py,
gpu_ab_delta.py). A library reads its switches once, at its first call, so
copies of one .so in several folders run several variants in one process,
each compared bitwise with the first library:

    AB_ENV="p4/liblinattn.so=LINATTN_CUDA_LIN_SPLIT:4;m/liblinattn.so=KEY:VAL+KEY2:VAL" \\
        python3 bench/gpu_ab.py --libs base/liblinattn.so,p4/liblinattn.so,m/liblinattn.so

(the paths as given to --libs; `+` joins several switches of one library)."""
import os

ENV = {}
for _item in os.environ.get("AB_ENV", "").split(";"):
    if _item:
        _path, _kvs = _item.split("=", 1)
        ENV[_path] = dict(kv.split(":", 1) for kv in _kvs.split("+"))
KEYS = {k for d in ENV.values() for k in d}


def wrap(path, f):
    """f with library `path`'s switches set (and the others' unset) around each call."""
    if not KEYS:
        return f
    env = ENV.get(path, {})

    def h():
        for k in KEYS:
            if k in env:
                os.environ[k] = env[k]
            else:
                os.environ.pop(k, None)
        return f()
    return h


def bits(x):
    """x's bits as integers (torch.equal on them: bitwise, NaN == NaN)."""
    import torch
    return x.view(torch.int16 if x.element_size() == 2 else torch.int32)
