/* A driver for fuzz_registry.c without libFuzzer (for compilers that lack
 * it, e.g. gcc): replays the files given on the command line, or, with
 * "--random N SEED", runs N random inputs (or until FUZZ_SECONDS elapse) (random bytes, and random
 * byte mutations of the seed corpus files listed after them). Not coverage guided; build with
 * -fsanitize=address,undefined like run.sh does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t s = 88172645463325252ull;
static uint64_t next(void) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static size_t load(const char *path, uint8_t *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    static uint8_t buf[1 << 16]; /* checkpoint seeds are up to 12 KB */
    if (argc >= 4 && !strcmp(argv[1], "--random")) {
        const long long n = atoll(argv[2]);
        s ^= strtoull(argv[3], NULL, 10) * 0x9E3779B97F4A7C15ull;
        const int nseeds = argc - 4;
        const char *lim = getenv("FUZZ_SECONDS");
        const double limit = lim ? atof(lim) : 1e30;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long long i = 0;
        for (; i < n; i++) {
            if (i % 1000 == 0) {
                clock_gettime(CLOCK_MONOTONIC, &t1);
                if ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec) >
                    limit)
                    break;
            }
            size_t len;
            if (nseeds > 0 && next() % 2) {
                len = load(argv[4 + next() % (uint64_t)nseeds], buf, sizeof buf);
                const int flips = 1 + (int)(next() % 4);
                for (int f = 0; f < flips && len; f++) buf[next() % len] = (uint8_t)next();
            } else {
                len = 1 + next() % 64;
                for (size_t j = 0; j < len; j++) buf[j] = (uint8_t)next();
            }
            LLVMFuzzerTestOneInput(buf, len);
        }
        printf("standalone: %lld inputs run\n", i);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const size_t len = load(argv[i], buf, sizeof buf);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("standalone: %d files replayed\n", argc - 1);
    return 0;
}
