#!/usr/bin/python3
"""Reads a linattn model checkpoint (docs/CHECKPOINT.md, version 1) with numpy.

    from read_checkpoint import read_checkpoint
    ck = read_checkpoint("gla.ckpt")
    ck["config"]["mixer"], ck["tensors"]["l0.wq"].shape, ck["adam_m"].get("embed")

Validates like the C loader (magic, version, size, checksum, table bounds)
and raises ValueError with the reason. Matrices come back as 1-D arrays of
the stored floats; shapes follow from the config (docs/CHECKPOINT.md).
Run as a script to print the config and the tensor table.
"""
import struct
import sys

import numpy as np

MAGIC = b"LAMODEL\x1a"
MIXERS = ["softmax", "linear", "performer", "retnet", "gla", "deltanet", "gdn", "kda"]
CONFIG = ["vocab", "d_model", "n_layers", "n_heads", "head_dim", "d_ff", "mixer",
          "feature_map", "conv", "performer_m"]


def _fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:  # slow but simple; checkpoints of this project are small
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def read_checkpoint(path, verify_checksum=True):
    data = open(path, "rb").read()
    if len(data) < 208:
        raise ValueError(f"{path}: {len(data)} bytes is shorter than the header")
    if data[:8] != MAGIC:
        raise ValueError(f"{path}: wrong magic")
    version, header = struct.unpack_from("<II", data, 8)
    if version != 1:
        raise ValueError(f"{path}: version {version}, this reader knows version 1")
    (size,) = struct.unpack_from("<Q", data, 16)
    if size != len(data):
        raise ValueError(f"{path}: header says {size} bytes, the file has {len(data)}")
    (checksum,) = struct.unpack_from("<Q", data, len(data) - 8)
    if verify_checksum and checksum != _fnv1a(data[:-8]):
        raise ValueError(f"{path}: checksum mismatch")
    cfg = dict(zip(CONFIG, struct.unpack_from("<10i", data, 24)))
    cfg["mixer_name"] = MIXERS[cfg["mixer"]] if 0 <= cfg["mixer"] < len(MIXERS) else "?"
    (cfg["seed"],) = struct.unpack_from("<Q", data, 64)
    (cfg["norm_eps"],) = struct.unpack_from("<f", data, 72)
    (step,) = struct.unpack_from("<q", data, 80)
    (flags,) = struct.unpack_from("<I", data, 132)
    opt = dict(zip(["lr_max", "lr_min", "beta1", "beta2", "eps", "weight_decay", "clip"],
                   struct.unpack_from("<7f", data, 136)))
    opt["warmup"], opt["total_steps"], opt["step"] = struct.unpack_from("<3q", data, 168)
    (n,) = struct.unpack_from("<I", data, 192)
    if header != 200 + 64 * n or header > len(data) - 8:
        raise ValueError(f"{path}: tensor table of {n} entries does not fit")
    out = {"config": cfg, "step": step, "optimizer": opt if flags & 1 else None,
           "tensors": {}, "adam_m": {}, "adam_v": {}}
    kinds = ["tensors", "adam_m", "adam_v"]
    for i in range(n):
        e = 200 + 64 * i
        name = data[e:e + 32].split(b"\0", 1)[0].decode()
        count, off, kind = struct.unpack_from("<QQI", data, e + 32)
        if kind > 2 or off < header or off + 4 * count > len(data) - 8:
            raise ValueError(f"{path}: tensor {name} out of bounds")
        out[kinds[kind]][name] = np.frombuffer(data, dtype="<f4", count=count, offset=off).copy()
    return out


if __name__ == "__main__":
    ck = read_checkpoint(sys.argv[1])
    print("config:", ck["config"])
    print("step:", ck["step"], "optimizer:", ck["optimizer"])
    for k, v in ck["tensors"].items():
        print(f"  {k:16s} {v.size:9d} floats  |x|max {np.abs(v).max():.4g}")
