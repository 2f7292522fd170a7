/* STUB — filled in by the gated implementation. */
#include "check.h"

void check_gated(check_report *r) { (void)r; }
