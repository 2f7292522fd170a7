/* STUB — filled in by the feature_maps implementation. */
#include "check.h"

void check_feature_maps(check_report *r) { (void)r; }
