/* Default options of the op families that share la_gated_opts (simple GLA,
 * GLA, the delta rules). */
#include "../core/internal.h"

la_gated_opts la_gated_opts_default(void) {
    la_gated_opts o = {.form = LA_FORM_CHUNK, .scale = 0, .chunk_size = LA_DEFAULT_CHUNK_SIZE, .use_qk_l2norm = 0};
    return o;
}
