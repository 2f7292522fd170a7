/* Status names and the per-thread last-error message. */
#include "internal.h"

#include <stdio.h>

static _Thread_local char la_error_text[512];

const char *la_version(void) { return LINATTN_VERSION_STRING; }

const char *la_status_string(la_status status) {
    switch (status) {
    case LA_OK: return "LA_OK";
    case LA_ERR_NULL_POINTER: return "LA_ERR_NULL_POINTER";
    case LA_ERR_INVALID_SIZE: return "LA_ERR_INVALID_SIZE";
    case LA_ERR_SHAPE_MISMATCH: return "LA_ERR_SHAPE_MISMATCH";
    case LA_ERR_INVALID_ARGUMENT: return "LA_ERR_INVALID_ARGUMENT";
    case LA_ERR_NON_FINITE: return "LA_ERR_NON_FINITE";
    case LA_ERR_BAD_SEQLENS: return "LA_ERR_BAD_SEQLENS";
    case LA_ERR_OUT_OF_MEMORY: return "LA_ERR_OUT_OF_MEMORY";
    case LA_ERR_UNSUPPORTED: return "LA_ERR_UNSUPPORTED";
    case LA_ERR_IO: return "LA_ERR_IO";
    case LA_ERR_INTERNAL: return "LA_ERR_INTERNAL";
    }
    return "LA_ERR_UNKNOWN_STATUS";
}

const char *la_last_error(void) { return la_error_text; }

la_status la__error(la_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(la_error_text, sizeof la_error_text, fmt, ap);
    va_end(ap);
    return status;
}
