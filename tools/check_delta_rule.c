/* STUB — filled in by the delta_rule implementation. */
#include "check.h"

void check_delta_rule(check_report *r) { (void)r; }
