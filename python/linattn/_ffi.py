"""The C ABI of liblinattn as ctypes sees it: finding the library, the
struct mirrors and the function signatures.

Every struct of include/linattn.h that Python fills lives here and only here,
field for field and in the header's order, so a field appended to the header
is appended here once. Structs that grow at the end are passed by pointer,
so a mirror with a trailing field the loaded library does not know yet (the
``dtype`` of la_dims, zero = fp32) is harmless.
"""

import ctypes
import ctypes.util
import os

c_i64 = ctypes.c_int64
c_int = ctypes.c_int
c_float = ctypes.c_float
c_ptr = ctypes.c_void_p


class la_dims(ctypes.Structure):
    _fields_ = [
        ("B", c_i64), ("T", c_i64), ("H", c_i64), ("K", c_i64), ("V", c_i64),
        ("HV", c_i64),          # 0 means HV = H
        ("cu_seqlens", c_ptr),  # const int64_t * or NULL
        ("n_seqs", c_i64),
        ("dtype", c_int),       # la_dtype, appended by the CUDA work: 0 = fp32
    ]


class la_softmax_opts(ctypes.Structure):
    _fields_ = [("causal", c_int), ("form", c_int), ("scale", c_float),
                ("block_size", c_i64), ("kv_lens", c_ptr)]


class la_linear_attn_opts(ctypes.Structure):
    _fields_ = [("feature_map", c_int), ("causal", c_int), ("form", c_int),
                ("normalize", c_int), ("eps", c_float), ("scale", c_float),
                ("chunk_size", c_i64),
                ("saved", c_ptr)]  # la_saved * or NULL (cpu-saved16)


class la_rf_opts(ctypes.Structure):
    _fields_ = [("kind", c_int), ("role", c_int), ("stabilize", c_int), ("eps", c_float)]


class la_gated_opts(ctypes.Structure):
    _fields_ = [("form", c_int), ("scale", c_float), ("chunk_size", c_i64),
                ("use_qk_l2norm", c_int),
                ("saved", c_ptr)]  # la_saved * or NULL (cpu-save6)


class la_decoder_config(ctypes.Structure):
    _fields_ = [("op", c_int), ("N", c_i64), ("H", c_i64), ("HV", c_i64), ("K", c_i64),
                ("V", c_i64), ("feature_map", c_int), ("normalize", c_int),
                ("eps", c_float), ("scale", c_float), ("use_qk_l2norm", c_int)]


# Enum values (stable: enums only grow at the end).
LA_OK = 0
STATUS_NAMES = {0: "LA_OK", 1: "LA_ERR_NULL_POINTER", 2: "LA_ERR_INVALID_SIZE",
                3: "LA_ERR_SHAPE_MISMATCH", 4: "LA_ERR_INVALID_ARGUMENT",
                5: "LA_ERR_NON_FINITE", 6: "LA_ERR_BAD_SEQLENS", 7: "LA_ERR_OUT_OF_MEMORY",
                8: "LA_ERR_UNSUPPORTED", 9: "LA_ERR_IO", 10: "LA_ERR_INTERNAL"}
FORM = {"parallel": 0, "recurrent": 1, "chunk": 2}
SOFTMAX_FORM = {"textbook": 0, "streaming": 1}
FEATURE_MAP = {"identity": 0, "elu1": 1, "relu": 2}
PROJ_KIND = {"iid": 0, "orthogonal": 1}
PROJ_SCALING = {"chi": 0, "sqrt_d": 1}
RANDOM_FEATURE = {"favor_positive": 0, "favor_hyperbolic": 1, "trig_gaussian": 2,
                  "trig_softmax": 3, "relu": 4}
RF_ROLE = {"query": 0, "key": 1}
OP = {"linear_attn": 0, "simple_gla": 1, "gla": 2, "delta_rule": 3, "gated_delta_rule": 4,
      "kda": 5, "performer": 6}
DTYPE = {"float32": 0, "bfloat16": 1, "float16": 2}

P = c_ptr
_D = ctypes.POINTER(la_dims)
_SIGNATURES = {
    "la_version": (ctypes.c_char_p, []),
    "la_status_string": (ctypes.c_char_p, [c_int]),
    "la_last_error": (ctypes.c_char_p, []),
    "la_ctx_create": (c_int, [P, c_int]),
    "la_ctx_destroy": (None, [P]),
    "la_ctx_threads": (c_int, [P]),
    "la_softmax_opts_default": (la_softmax_opts, []),
    "la_softmax_attn_forward": (c_int, [P, P, _D, P, P, P, P, P]),
    "la_softmax_attn_backward": (c_int, [P, P, _D, P, P, P, P, P, P, P]),
    "la_linear_attn_opts_default": (la_linear_attn_opts, []),
    "la_linear_attn_forward": (c_int, [P, P, _D] + [P] * 8),
    "la_linear_attn_backward": (c_int, [P, P, _D] + [P] * 13),
    "la_projection_draw": (c_int, [P, c_i64, c_i64, c_int, c_int, ctypes.c_uint64]),
    "la_rf_opts_default": (la_rf_opts, []),
    "la_rf_num_features": (c_i64, [c_int, c_i64]),
    "la_rf_forward": (c_int, [P, P, _D, P, P, P, P, c_i64]),
    "la_rf_backward": (c_int, [P, P, _D, P, P, P, P, c_i64]),
    "la_performer_attn_forward": (c_int, [P, P, P, _D, P, P, P, P, P, c_i64]),
    "la_performer_attn_backward": (c_int, [P, P, P, _D] + [P] * 8 + [c_i64]),
    "la_gated_opts_default": (la_gated_opts, []),
    "la_retnet_decay": (c_int, [P, c_i64]),
    "la_simple_gla_forward": (c_int, [P, P, _D] + [P] * 8),
    "la_simple_gla_backward": (c_int, [P, P, _D] + [P] * 14),
    "la_gla_forward": (c_int, [P, P, _D] + [P] * 7),
    "la_gla_backward": (c_int, [P, P, _D] + [P] * 12),
    "la_delta_rule_forward": (c_int, [P, P, _D] + [P] * 7),
    "la_delta_rule_backward": (c_int, [P, P, _D] + [P] * 12),
    "la_gated_delta_rule_forward": (c_int, [P, P, _D] + [P] * 8),
    "la_gated_delta_rule_backward": (c_int, [P, P, _D] + [P] * 14),
    "la_kda_forward": (c_int, [P, P, _D] + [P] * 8),
    "la_kda_backward": (c_int, [P, P, _D] + [P] * 14),
    "la_decoder_create": (c_int, [P, P]),
    "la_decoder_destroy": (None, [P]),
    "la_decoder_reset": (c_int, [P]),
    "la_decoder_reset_slot": (c_int, [P, c_i64]),
    "la_decoder_set_state": (c_int, [P, P, P]),
    "la_decoder_get_state": (c_int, [P, P, P]),
    "la_decoder_set_slot_state": (c_int, [P, c_i64, P, P]),
    "la_decoder_get_slot_state": (c_int, [P, c_i64, P, P]),
    "la_decoder_step": (c_int, [P, P] + [P] * 7),
    "la_ctx_create_cuda": (c_int, [P, c_int, P]),
    "la_ctx_is_cuda": (c_int, [P]),
    "la_isa_active": (c_int, []),
    "la_isa_name": (ctypes.c_char_p, [c_int]),
    "la_saved_create": (c_int, [P, P]),
    "la_saved_destroy": (None, [P]),
    "la_saved_bytes": (ctypes.c_size_t, [P]),
    "la_saved_filled": (c_int, [P]),
}
# Symbols other branches add; everything else must be present.
OPTIONAL = {"la_kda_forward", "la_kda_backward", "la_decoder_reset_slot",
            "la_decoder_set_slot_state", "la_decoder_get_slot_state",
            "la_ctx_create_cuda", "la_ctx_is_cuda",
            "la_saved_create", "la_saved_destroy", "la_saved_bytes", "la_saved_filled"}


def _candidates():
    env = os.environ.get("LINATTN_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))  # python/linattn -> repo root
    names = ["liblinattn.so", "liblinattn.dylib", "linattn.dll"]
    paths = [os.path.join(repo, "build", n) for n in names]
    found = ctypes.util.find_library("linattn")
    if found:
        paths.append(found)
    for d in ("/usr/local/lib", "/usr/local/lib64", "/usr/lib", "/usr/lib64",
              "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"):
        paths.append(os.path.join(d, "liblinattn.so"))
    return paths, False


def load():
    """Open liblinattn: $LINATTN_LIBRARY, else the CMake build tree next to this
    package (build/liblinattn.so), else an installed copy."""
    paths, explicit = _candidates()
    errors = []
    for path in paths:
        if not explicit and os.sep in path and not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path)  # CDLL releases the GIL during every call
        except OSError as e:
            errors.append("%s: %s" % (path, e))
            continue
        _declare(lib, path)
        return lib, path
    raise ImportError(
        "linattn: cannot load the C library liblinattn (set LINATTN_LIBRARY to its "
        "path, build it with `make` in the repository, or `make install` it). Tried: "
        + ("; ".join(errors) if errors else ", ".join(paths)))


def _declare(lib, path):
    for name, (res, args) in _SIGNATURES.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            if name in OPTIONAL:
                continue
            raise ImportError("linattn: %s lacks the symbol %s (an older build?)" % (path, name))
        f.restype = res
        f.argtypes = args


def has(lib, name):
    try:
        getattr(lib, name)
        return True
    except AttributeError:
        return False
