"""Reads the model checkpoints of ``linattn train --ckpt`` (the C library's
src/model/, format docs/CHECKPOINT.md, version 1) with numpy only.

    from linattn.checkpoint import read_checkpoint
    ck = read_checkpoint("gla.ckpt")
    ck.config["mixer_name"], ck.step, ck.tensors["l0.wq"].shape, ck.adam_m["embed"]

The file is checked like the C loader checks it, in the same order, before
anything is built from it: size against the header, magic, version, declared
size against the real one (truncated or extended files), the FNV-1a
checksum, the tensor table's size, the config's ranges, the parameter count
the config implies against the file, every table entry (name, size and kind
that the config implies, in bounds, not overlapping), the optimizer
settings, reserved fields and finite weights. Any failure raises
CheckpointError (a ValueError) whose message names the file and what is
wrong; nothing is read past the file's real size.

Tensors come back as float32 arrays in their model shapes (matrices
row-major ``[in, out]``, ``embed`` ``[vocab, d_model]``, conv filters
``[width, heads*head_dim]``); ``model_table(config)`` lists the names and
shapes a config implies. Run as a script to print a checkpoint:

    python3 -m linattn.checkpoint gla.ckpt
"""
import math
import os
import stat
import struct
import sys

import numpy as np

MAGIC = b"LAMODEL\x1a"
VERSION = 1
MIXERS = ("softmax", "linear", "performer", "retnet", "gla", "deltanet", "gdn", "kda")
CONFIG_FIELDS = ("vocab", "d_model", "n_layers", "n_heads", "head_dim", "d_ff", "mixer",
                 "feature_map", "conv", "performer_m")
# lm_config_validate's ranges (src/model/config.c)
CONFIG_RANGES = {"vocab": (2, 1 << 20), "d_model": (1, 1 << 14), "n_layers": (1, 256),
                 "n_heads": (1, 1024), "head_dim": (1, 1024), "d_ff": (1, 1 << 16),
                 "mixer": (0, len(MIXERS) - 1), "feature_map": (0, 2), "conv": (0, 64),
                 "performer_m": (1, 1 << 14)}
SLOTS = ("attn_norm", "wq", "wk", "wv", "wo", "conv_q", "conv_k", "conv_v", "wg", "bg",
         "a_log", "wb", "bb", "mlp_norm", "w1", "w3", "w2")
OPTIMIZER_FLOATS = ("lr_max", "lr_min", "beta1", "beta2", "eps", "weight_decay", "clip")
KINDS = ("weights", "adam_m", "adam_v")

_FIXED = 200   # bytes before the tensor table
_ENTRY = 64    # bytes per table entry
_FNV_OFFSET, _FNV_PRIME, _M64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


class CheckpointError(ValueError):
    """A file that is not a valid checkpoint. ``path`` is the file, ``reason``
    what is wrong with it (the message is "checkpoint 'PATH': REASON")."""

    def __init__(self, path, reason):
        super().__init__("checkpoint '%s': %s" % (path, reason))
        self.path, self.reason = path, reason


class Checkpoint:
    """What a checkpoint holds.

    config     dict: the CONFIG_FIELDS, mixer_name, seed (int), norm_eps (float)
    step       training steps taken (int)
    data_rng   dict: s (4 ints, la_rng.s), spare (float), has_spare (bool)
    optimizer  dict (OPTIMIZER_FLOATS as floats, warmup, total_steps, step) or
               None for a weights-only file
    tensors    dict name -> float32 array in model shape, in table order
    adam_m, adam_v  the AdamW moments, same names and shapes ({} if absent)
    table      list of (name, n_floats, offset, kind) as stored
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "Checkpoint(%s, mixer %s, step %d, %d tensors%s)" % (
            self.path, self.config["mixer_name"], self.step, len(self.tensors),
            ", with optimizer" if self.optimizer else "")


def fnv1a64(data, h=_FNV_OFFSET):
    """64-bit FNV-1a of bytes (the checkpoint checksum)."""
    p, m = _FNV_PRIME, _M64
    for b in data:
        h = ((h ^ b) * p) & m
    return h


def model_table(config):
    """[(name, shape)] of the model's tensors for a config dict, in the
    order of the parameter buffer (src/model/config.c); tensors of size 0
    (gates of mixers without them) are left out, as in the file."""
    D, H, K = config["d_model"], config["n_heads"], config["head_dim"]
    F, ks, mixer = config["d_ff"], config["conv"], MIXERS[config["mixer"]]
    HK = H * K
    G = HK if mixer in ("gla", "kda") else H if mixer == "gdn" else 0
    has_a = mixer in ("gdn", "kda")
    has_beta = mixer in ("deltanet", "gdn", "kda")
    slot = {"attn_norm": (D,), "wq": (D, HK), "wk": (D, HK), "wv": (D, HK), "wo": (HK, D),
            "conv_q": (ks, HK), "conv_k": (ks, HK), "conv_v": (ks, HK), "wg": (D, G),
            "bg": (G,), "a_log": (H if has_a else 0,), "wb": (D, H if has_beta else 0),
            "bb": (H if has_beta else 0,), "mlp_norm": (D,), "w1": (D, F), "w3": (D, F),
            "w2": (F, D)}
    out = [("embed", (config["vocab"], D))]
    for layer in range(config["n_layers"]):
        out += [("l%d.%s" % (layer, s), slot[s]) for s in SLOTS]
    out.append(("norm_f", (D,)))
    return [(n, s) for n, s in out if math.prod(s) > 0]


def _check_config(bad, cfg):
    for f, (lo, hi) in CONFIG_RANGES.items():
        if not lo <= cfg[f] <= hi:
            bad("bad config: %s = %d is outside [%d, %d]" % (f, cfg[f], lo, hi))
    if not 0.0 < cfg["norm_eps"] < 1.0:
        bad("bad config: norm_eps = %g is outside (0, 1)" % cfg["norm_eps"])
    if cfg["n_heads"] * cfg["head_dim"] > 1 << 16:
        bad("bad config: n_heads * head_dim = %d exceeds 65536"
            % (cfg["n_heads"] * cfg["head_dim"]))


def _check_optimizer(bad, o):
    f32 = lambda x: float(np.float32(x))  # noqa: E731  (the C bounds are float literals)
    ok = (0.0 < o["lr_max"] < f32(1e3) and 0.0 <= o["lr_min"] <= o["lr_max"]
          and 0.0 <= o["beta1"] < 1.0 and 0.0 <= o["beta2"] < 1.0 and 0.0 < o["eps"] < 1.0
          and 0.0 <= o["weight_decay"] < f32(1e3) and 0.0 <= o["clip"] < f32(1e30)
          and o["warmup"] >= 0 and o["total_steps"] >= 1 and o["step"] >= 0)
    if not ok:
        bad("bad optimizer settings (%s)" % ", ".join("%s %g" % kv for kv in o.items()))


def read_checkpoint(path, verify_checksum=True):
    """Reads and validates a checkpoint; returns a Checkpoint or raises
    CheckpointError. verify_checksum=False skips only the checksum (the
    hash is a pure Python loop: 0.2 s per MB on the project's machine)."""
    path = os.fspath(path)

    def bad(reason):
        raise CheckpointError(path, reason)

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            bad("not a regular file")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(path, "cannot open: %s" % (e.strerror or e)) from e
    n = len(data)
    if n < _FIXED + 8:
        bad("%d bytes is shorter than the %d-byte header" % (n, _FIXED + 8))
    if data[:8] != MAGIC:
        bad("wrong magic (not a linattn model checkpoint)")
    version, header = struct.unpack_from("<II", data, 8)
    if version != VERSION:
        bad("version %d, this reader reads version %d" % (version, VERSION))
    (declared,) = struct.unpack_from("<Q", data, 16)
    if declared != n:
        bad("header says %d bytes, the file has %d (truncated or extended)" % (declared, n))
    (checksum,) = struct.unpack_from("<Q", data, n - 8)
    if verify_checksum and checksum != fnv1a64(memoryview(data)[:n - 8]):
        bad("checksum mismatch (file corrupted)")
    (n_entries,) = struct.unpack_from("<I", data, 192)
    if n_entries > n // _ENTRY or header != _FIXED + _ENTRY * n_entries or header > n - 8:
        bad("tensor table of %d entries (%d bytes) does not fit the file" % (n_entries, header))

    cfg = dict(zip(CONFIG_FIELDS, struct.unpack_from("<10i", data, 24)))
    (cfg["seed"],) = struct.unpack_from("<Q", data, 64)
    (cfg["norm_eps"],) = struct.unpack_from("<f", data, 72)
    _check_config(bad, cfg)
    cfg["mixer_name"] = MIXERS[cfg["mixer"]]
    (flags,) = struct.unpack_from("<I", data, 132)
    has_opt = bool(flags & 1)
    kinds = 3 if has_opt else 1
    table = model_table(cfg)
    n_params = sum(math.prod(s) for _, s in table)
    if n_params > n // 4 // kinds:
        bad("config implies %d parameters, more than the file holds" % n_params)
    if n_entries != len(table) * kinds:
        bad("%d tensors, the config needs %d" % (n_entries, len(table) * kinds))
    optimizer = None
    if has_opt:
        optimizer = dict(zip(OPTIMIZER_FLOATS, struct.unpack_from("<7f", data, 136)))
        optimizer.update(zip(("warmup", "total_steps", "step"),
                             struct.unpack_from("<3q", data, 168)))
        _check_optimizer(bad, optimizer)

    out = ({}, {}, {})
    stored = []
    e, prev_end = _FIXED, header
    for kind in range(kinds):
        for want, shape in table:
            name = data[e:e + 32].split(b"\0", 1)[0].decode("latin-1")
            count, off, k = struct.unpack_from("<QQI", data, e + 32)
            if any(data[e + 52:e + 64]):
                bad("tensor entry %d has nonzero reserved bytes" % ((e - _FIXED) // _ENTRY))
            size = math.prod(shape)
            if name != want or count != size or k != kind:
                bad("tensor entry '%s' (%d floats, kind %d) where the config has '%s' "
                    "(%d floats, kind %d)" % (name, count, k, want, size, kind))
            if off < prev_end or off > n - 8 or count > (n - 8 - off) // 4:
                bad("tensor '%s' at offset %d overlaps or runs past the data" % (want, off))
            prev_end = off + 4 * count
            out[kind][want] = np.frombuffer(data, "<f4", count, off).astype(np.float32) \
                .reshape(shape)
            stored.append((name, count, off, KINDS[kind]))
            e += _ENTRY

    (step,) = struct.unpack_from("<q", data, 80)
    (has_spare,) = struct.unpack_from("<I", data, 128)
    reserved = struct.unpack_from("<I", data, 76) + struct.unpack_from("<I", data, 164) \
        + struct.unpack_from("<I", data, 196)
    if step < 0 or has_spare > 1 or flags & ~1 or any(reserved):
        bad("bad training state or nonzero reserved fields")
    for name, t in out[0].items():
        if not np.isfinite(t).all():
            bad("tensor '%s' is not finite" % name)
    return Checkpoint(
        path=path, version=version, config=cfg, step=step,
        data_rng={"s": struct.unpack_from("<4Q", data, 88),
                  "spare": struct.unpack_from("<d", data, 120)[0], "has_spare": bool(has_spare)},
        optimizer=optimizer, tensors=out[0], adam_m=out[1], adam_v=out[2], table=stored)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m linattn.checkpoint FILE", file=sys.stderr)
        return 2
    try:
        ck = read_checkpoint(argv[0])
    except CheckpointError as e:
        print(e, file=sys.stderr)
        return 1
    print("config:", ck.config)
    print("step:", ck.step, "optimizer:", ck.optimizer)
    for name, t in ck.tensors.items():
        print("  %-16s %-12s |x|max %.4g" % (name, "x".join(map(str, t.shape)),
                                             float(np.abs(t).max())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
