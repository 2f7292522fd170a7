/* Shared between the random-feature maps and Performer attention. */
#ifndef LINATTN_RF_INTERNAL_H
#define LINATTN_RF_INTERNAL_H

#include "../../core/internal.h"

/* Reserves the per-thread scratch la_rf_backward needs for K = d and m
 * rows, so that a caller which reserves it first knows the backward cannot
 * fail for lack of memory. */
LA_HIDDEN la_status la__rf_backward_reserve(la_ctx *ctx, const char *op, int64_t d, int64_t m);

#endif
