/* The tables of the op registry (see registry.h for how to add a family). */
#include "registry.h"

#include <string.h>

static const la__op_entry *const OPS[] = {
    &la__entry_softmax_textbook,
    &la__entry_softmax_streaming,
    &la__entry_linear_attn_parallel,
    &la__entry_linear_attn_recurrent,
    &la__entry_linear_attn_chunk,
    &la__entry_linear_attn_noncausal,
    &la__entry_simple_gla_recurrent,
    &la__entry_simple_gla_chunk,
    &la__entry_gla_recurrent,
    &la__entry_gla_chunk,
    &la__entry_delta_rule_recurrent,
    &la__entry_delta_rule_chunk,
    &la__entry_gated_delta_rule_recurrent,
    &la__entry_gated_delta_rule_chunk,
    &la__entry_kda_recurrent,
    &la__entry_kda_chunk,
    &la__entry_performer_recurrent,
    &la__entry_performer_chunk,
};
_Static_assert(sizeof OPS / sizeof OPS[0] == LA__OP_COUNT,
               "the op table must have one entry per la__op_id");

/* Indexed by la_op. */
static const la__decode_entry *const DECODE[] = {
    &la__decode_linear_attn, &la__decode_simple_gla,       &la__decode_gla,
    &la__decode_delta_rule,  &la__decode_gated_delta_rule, &la__decode_kda,
    &la__decode_performer,
};
_Static_assert(sizeof DECODE / sizeof DECODE[0] == LA__DECODE_COUNT,
               "the decoding table must have one entry per la_op");

const la__op_entry *la__op_get(int id) { return id >= 0 && id < LA__OP_COUNT ? OPS[id] : NULL; }

int la__op_find(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < LA__OP_COUNT; i++)
        if (!strcmp(OPS[i]->name, name)) return i;
    return -1;
}

int64_t la__op_state_rows(const la__op_entry *e, const la__op_args *a) {
    if (!(e->needs & LA__NEED_RF)) return a->dims.K;
    return la_rf_num_features(a->rf.kind, a->rf_m);
}

/* Indexed by la_op; NULL for the plain families. */
static const la__decode_ext *const DECODE_EXT[LA__DECODE_COUNT] = {
    [LA_OP_PERFORMER] = &la__decode_ext_performer,
};

const la__decode_entry *la__decode_get(int op) {
    return op >= 0 && op < LA__DECODE_COUNT ? DECODE[op] : NULL;
}

const la__decode_ext *la__decode_ext_get(int op) {
    return op >= 0 && op < LA__DECODE_COUNT ? DECODE_EXT[op] : NULL;
}
