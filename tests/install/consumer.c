/* Built against an installed linattn (pkg-config and CMake package) by
 * tests/install/check.sh: proves the header, libraries and package files work. */
#include <linattn.h>
#include <stdio.h>

int main(void) {
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, 2) != LA_OK) {
        fprintf(stderr, "consumer: %s\n", la_last_error());
        return 1;
    }
    printf("consumer: linattn %s with %d threads\n", la_version(), la_ctx_threads(ctx));
    la_ctx_destroy(ctx);
    return 0;
}
