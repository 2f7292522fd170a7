/* Default options of the op families that share la_gated_opts (simple GLA,
 * GLA, the delta rules) and the rule for their form and chunk size. */
#include "options.h"

#include <inttypes.h>

la_gated_opts la_gated_opts_default(void) {
    la_gated_opts o = {
        .form = LA_FORM_CHUNK, .scale = 0, .chunk_size = LA_DEFAULT_CHUNK_SIZE, .use_qk_l2norm = 0};
    return o;
}

la_status la__gated_form(const char *op, const la_gated_opts *o, la_form *form, int64_t *chunk) {
    if (o->form != LA_FORM_PARALLEL && o->form != LA_FORM_RECURRENT && o->form != LA_FORM_CHUNK)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts.form = %d is not a known la_form (recurrent 1, chunk 2; 0 "
                         "means chunk)",
                         op, (int)o->form);
    *form = o->form == LA_FORM_RECURRENT ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
    *chunk = 0;
    if (*form == LA_FORM_CHUNK) {
        if (o->chunk_size < 0)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: opts.chunk_size = %" PRId64 " (must be >= 0; 0 means %d)", op,
                             o->chunk_size, LA_DEFAULT_CHUNK_SIZE);
        *chunk = o->chunk_size ? o->chunk_size : LA_DEFAULT_CHUNK_SIZE;
    }
    return LA_OK;
}
