"""linattn.checkpoint against the C library: checkpoints written by the C
model (src/model/, through python/tests/ckpt_helper.c) are read in Python
and every tensor, moment and field is compared bit for bit with what the C
loader reads from the same file; malformed files are refused by both, each
with its reason. The helper comes from LINATTN_CKPT_HELPER (ctest passes
it) or the build tree next to python/."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

from linattn.checkpoint import (MIXERS, Checkpoint, CheckpointError, fnv1a64, main,
                                model_table, read_checkpoint)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _helper():
    path = os.environ.get("LINATTN_CKPT_HELPER")
    if path:
        assert os.access(path, os.X_OK), "LINATTN_CKPT_HELPER=%s is not executable" % path
        return path
    path = os.path.join(_HERE, "..", "..", "build", "ckpt_helper")
    if not os.access(path, os.X_OK):
        pytest.skip("no ckpt_helper: build it (cmake --build build --target ckpt_helper) or "
                    "set LINATTN_CKPT_HELPER")
    return path


def c_save(path, mixer, steps=3, weights_only=False):
    args = [_helper(), "save", str(path), mixer, str(steps)] + (["weights"] if weights_only else [])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode == 2 and "not in this build" in r.stderr:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr


def c_dump(path, out):
    """What the C loader reads: (returncode, stderr, report or None)."""
    r = subprocess.run([_helper(), "dump", str(path), str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        return r.returncode, r.stderr, None
    with open(str(out) + ".json") as f:
        rep = json.load(f)
    for k in ("params", "m1", "m2"):
        p = "%s.%s" % (out, k)
        rep[k] = np.fromfile(p, dtype="<u4") if os.path.exists(p) else None
    return 0, r.stderr, rep


def bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).ravel()


def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint with optimizer state, written once for the corruption tests."""
    path = tmp_path_factory.mktemp("ck") / "gdn.ckpt"
    c_save(path, "gdn", steps=4)
    return path


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("weights_only", [False, True])
def test_same_as_c_loader(tmp_path, mixer, weights_only):
    path = tmp_path / ("%s.ckpt" % mixer)
    c_save(path, mixer, steps=3, weights_only=weights_only)
    ck = read_checkpoint(path)
    rc, err, c = c_dump(path, tmp_path / "c")
    assert rc == 0, err
    assert isinstance(ck, Checkpoint) and ck.version == 1
    for k, v in c["config"].items():
        if k == "norm_eps_bits":
            assert f32bits(ck.config["norm_eps"]) == v
        else:
            assert ck.config[k] == v, k
    assert ck.config["mixer_name"] == c["mixer_name"] == mixer
    assert ck.step == c["step"] == 3
    assert list(ck.data_rng["s"]) == c["data_rng"]
    assert struct.unpack("<Q", struct.pack("<d", ck.data_rng["spare"]))[0] == c["spare_bits"]
    assert ck.data_rng["has_spare"] == bool(c["has_spare"])
    # Tensors: the C table (zero-size slots included) against ours.
    c_table = [(t["name"], t["size"], t["offset"]) for t in c["table"] if t["size"]]
    assert [n for n, _, _ in c_table] == list(ck.tensors) == [n for n, _ in model_table(ck.config)]
    assert sum(s for _, s, _ in c_table) == c["n_params"] == c["params"].size
    assert c["params"].size > 1000
    moments = [("params", ck.tensors)]
    if weights_only:
        assert c["has_opt"] == 0 and ck.optimizer is None and c["m1"] is None
        assert ck.adam_m == {} and ck.adam_v == {}
    else:
        assert c["has_opt"] == 1 and ck.optimizer is not None
        for k, v in c["optimizer"].items():
            got = ck.optimizer[k]
            assert (f32bits(got) if isinstance(got, float) else got) == v, k
        assert ck.optimizer["step"] == 3
        moments += [("m1", ck.adam_m), ("m2", ck.adam_v)]
    for which, ours in moments:
        assert list(ours) == [n for n, _, _ in c_table]
        for name, size, off in c_table:
            t = ours[name]
            assert t.dtype == np.float32 and t.size == size, (which, name)
            assert np.array_equal(bits(t), c[which][off:off + size]), (which, name)
        # trained weights and moments, not a buffer of zeros
        assert np.count_nonzero(c[which]) > c[which].size // 2, which
    # Shapes follow the model: embed [vocab, d_model], matrices [in, out].
    D, HK = ck.config["d_model"], ck.config["n_heads"] * ck.config["head_dim"]
    assert ck.tensors["embed"].shape == (ck.config["vocab"], D)
    assert ck.tensors["l0.wq"].shape == (D, HK) and ck.tensors["l1.wo"].shape == (HK, D)
    assert ck.tensors["l0.w2"].shape == (ck.config["d_ff"], D)


def test_checksum_is_fnv1a():
    # FNV-1a 64 test vectors
    assert fnv1a64(b"") == 0xcbf29ce484222325
    assert fnv1a64(b"a") == 0xaf63dc4c8601ec8c
    assert fnv1a64(b"foobar") == 0x85944171f73967e8


def _reseal(b):
    """Recomputes the checksum so that a deeper check is the one that fails."""
    b[-8:] = struct.pack("<Q", fnv1a64(bytes(b[:-8])))
    return b


def _entry(b, i):
    return 200 + 64 * i


def _mutations(b):
    """(label, bytes, reason substring) for the file b (gdn, with optimizer)."""
    n = len(b)
    n_entries = struct.unpack_from("<I", b, 192)[0]
    data0 = struct.unpack_from("<Q", b, _entry(b, 0) + 40)[0]
    out = []

    def edit(label, reason, fn, reseal=True):
        c = bytearray(b)
        fn(c)
        out.append((label, bytes(_reseal(c) if reseal else c), reason))

    out.append(("empty", b"", "shorter than"))
    out.append(("cut to 207", b[:207], "shorter than"))
    out.append(("cut to 208", b[:208], "header says"))
    out.append(("cut in half", b[:n // 2], "header says"))
    out.append(("last byte cut", b[:-1], "header says"))
    out.append(("one byte added", b + b"\0", "header says"))
    edit("magic", "wrong magic", lambda c: c.__setitem__(slice(0, 1), b"M"), reseal=False)
    edit("version 2", "version 2", lambda c: struct.pack_into("<I", c, 8, 2), reseal=False)
    for label, pos in [("config", 30), ("table", _entry(b, 3) + 5), ("first weight", data0 + 1),
                       ("last moment", n - 9), ("checksum", n - 3)]:
        edit("flipped byte in " + label, "checksum mismatch",
             lambda c, p=pos: c.__setitem__(p, c[p] ^ 0x10), reseal=False)
    edit("n_entries 2^32-1", "does not fit",
         lambda c: struct.pack_into("<I", c, 192, 0xFFFFFFFF))
    edit("header size off by 64", "does not fit",
         lambda c: struct.pack_into("<I", c, 12, 200 + 64 * (n_entries + 1)))
    edit("d_model 0", "d_model = 0", lambda c: struct.pack_into("<i", c, 28, 0))
    edit("mixer 99", "mixer = 99", lambda c: struct.pack_into("<i", c, 48, 99))
    edit("norm_eps NaN", "norm_eps", lambda c: struct.pack_into("<f", c, 72, float("nan")))
    edit("absurd vocab and d_model", "more than the file holds",
         lambda c: struct.pack_into("<ii", c, 24, 1 << 20, 1 << 14))
    edit("one layer fewer", "the config needs",
         lambda c: struct.pack_into("<i", c, 32, 1))
    edit("entry renamed", "where the config has",
         lambda c: c.__setitem__(slice(_entry(b, 1), _entry(b, 1) + 3), b"xyz"))
    edit("entry size", "where the config has",
         lambda c: struct.pack_into("<Q", c, _entry(b, 2) + 32,
                                    struct.unpack_from("<Q", c, _entry(b, 2) + 32)[0] + 1))
    edit("entry kind", "where the config has", lambda c: struct.pack_into("<I", c, _entry(b, 0) + 48, 1))
    edit("entry offset past the end", "runs past the data",
         lambda c: struct.pack_into("<Q", c, _entry(b, 4) + 40, n + 4096))
    edit("entry offset 2^64-1", "runs past the data",
         lambda c: struct.pack_into("<Q", c, _entry(b, 4) + 40, (1 << 64) - 1))
    edit("entry overlapping the table", "overlaps",
         lambda c: struct.pack_into("<Q", c, _entry(b, 0) + 40, 64))
    edit("entry reserved bytes", "reserved bytes", lambda c: c.__setitem__(_entry(b, 2) + 60, 1))
    edit("weight inf", "not finite", lambda c: struct.pack_into("<f", c, data0 + 8, float("inf")))
    edit("weight NaN", "not finite", lambda c: struct.pack_into("<f", c, data0, float("nan")))
    edit("lr 0", "bad optimizer", lambda c: struct.pack_into("<f", c, 136, 0.0))
    edit("beta2 1", "bad optimizer", lambda c: struct.pack_into("<f", c, 148, 1.0))
    edit("total steps 0", "bad optimizer", lambda c: struct.pack_into("<q", c, 176, 0))
    edit("negative step", "bad training state", lambda c: struct.pack_into("<q", c, 80, -1))
    edit("unknown flag", "bad training state", lambda c: struct.pack_into("<I", c, 132, 3))
    edit("reserved field", "reserved fields", lambda c: struct.pack_into("<I", c, 196, 7))
    return out


def test_malformed_files_refused_by_both(saved, tmp_path):
    good = saved.read_bytes()
    read_checkpoint(saved)  # the unmodified file reads
    cases = _mutations(good)
    assert len(cases) > 30
    for i, (label, data, reason) in enumerate(cases):
        p = tmp_path / ("bad%d.ckpt" % i)
        p.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(p)
        assert reason in str(e.value), (label, str(e.value))
        assert str(p) in str(e.value) and e.value.path == str(p)
        assert isinstance(e.value, ValueError)
        rc, err, _ = c_dump(p, tmp_path / "c")
        assert rc == 3, (label, "the C loader accepted it", err)
        assert "checkpoint" in err, (label, err)


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open"):
        read_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(tmp_path)


def test_skip_checksum(saved, tmp_path):
    b = bytearray(saved.read_bytes())
    b[-1] ^= 1  # only the stored checksum is wrong
    p = tmp_path / "sum.ckpt"
    p.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(p)
    a, c = read_checkpoint(saved), read_checkpoint(p, verify_checksum=False)
    for name in a.tensors:
        assert np.array_equal(bits(a.tensors[name]), bits(c.tensors[name]))


def test_script(saved, capsys):
    assert main([str(saved)]) == 0
    out = capsys.readouterr().out
    assert "'mixer_name': 'gdn'" in out and "l1.a_log" in out
    assert main([str(saved) + ".none"]) == 1
    assert "cannot open" in capsys.readouterr().err
