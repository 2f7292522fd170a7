"""linattn: linear attention on the CPU through the C library liblinattn.

    import linattn
    from linattn.fla import chunk_gated_delta_rule   # fla's names and shapes
    ck = linattn.read_checkpoint("gla.ckpt")          # model checkpoints (numpy)

numpy arrays and torch tensors both work; tensors get autograd through the C
backward. See README.md ("Python") for the table of fla names.
"""

from ._core import (LinattnError, LinattnMemoryError, LinattnRuntimeError,
                    LinattnUnsupportedError, LinattnValueError, get_num_threads,
                    get_pool_limit, has_symbol, library_path, release_memory,
                    release_saved_memory, set_num_threads, set_pool_limit)
from ._core import lib as _lib
from .decoder import Decoder
from .functional import (delta_rule, draw_projection, gated_attention, gated_delta_rule, gla,
                         isa, kda, linear_attention, num_features, performer_attention,
                         random_features, retnet_decay, simple_gla, softmax_attention)
from . import checkpoint, fla
from .checkpoint import Checkpoint, CheckpointError, read_checkpoint
from .fla import (chunk_delta_rule, chunk_gated_delta_rule, chunk_gla, chunk_kda,
                  chunk_linear_attn, chunk_simple_gla, fused_chunk_linear_attn,
                  fused_recurrent_delta_rule, fused_recurrent_gated_delta_rule,
                  fused_recurrent_gla, fused_recurrent_kda, fused_recurrent_linear_attn,
                  fused_recurrent_simple_gla)

__version__ = "0.1.0"


def library_version():
    """Version string of the loaded C library."""
    return _lib.la_version().decode()
