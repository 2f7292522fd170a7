/* The options rule shared by the op families (the header's "Options" note):
 * 0 in a numeric field means its default, and an option that has no effect
 * in the chosen configuration is ignored, whatever its value. */
#ifndef LINATTN_OPS_OPTIONS_H
#define LINATTN_OPS_OPTIONS_H

#include "../core/internal.h"

/* la_gated_opts' form and chunk size: LA_FORM_PARALLEL (0, a zeroed
 * struct) selects the default LA_FORM_CHUNK; chunk_size is read (>= 0, 0
 * means LA_DEFAULT_CHUNK_SIZE) only by the chunk form. *chunk is 0 for the
 * recurrent form. */
LA_HIDDEN la_status la__gated_form(const char *op, const la_gated_opts *o, la_form *form,
                                   int64_t *chunk);

#endif
