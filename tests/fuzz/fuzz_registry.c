/* libFuzzer target over every entry of the op registry and the decoder.
 *
 * The first byte picks an op entry (or the decoder); the next bytes pick
 * sizes (sometimes zero, negative or overflowing), value heads, cu_seqlens
 * (sometimes malformed, sometimes with empty sequences), options (valid,
 * out of range, NaN; for the causal Performer the feature kind, stabiliser,
 * eps and projection rows m), which pointers are NULL, and one NaN / Inf / huge
 * value planted in one input. Tensor contents come from a PRNG seeded by
 * eight bytes. Built with ASan + UBSan (tests/fuzz/run.sh), so any out-of-
 * bounds access or undefined behaviour aborts. The target itself aborts
 * when a call breaks the contract:
 *  - a failing call (any status but LA_OK) must leave every output
 *    untouched (they are filled with a NaN payload before the call) and set
 *    a non-empty la_last_error();
 *  - a successful call must write every element of every output it was
 *    given, and write finite values where the inputs allow it (finite,
 *    moderate inputs; not the unnormalised delta rule with raw keys, whose
 *    state may legitimately grow past float range; not normalised identity
 *    features, whose denominator may vanish). */
#include "linattn.h"
#include "ops/registry.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- input reading ------------------------------------------------------ */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned rd(reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

static uint64_t rd64(reader *r) {
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = x << 8 | rd(r);
    return x;
}

/* A size: mostly small, sometimes 0, negative or overflowing. */
static int64_t rd_size(reader *r, int64_t max) {
    const unsigned b = rd(r);
    switch (b >> 5) {
    case 0: /* 2^62 elements overflow the byte count: must be refused */
        return b == 0 ? 0 : b == 1 ? -1 : b == 2 ? INT64_C(1) << 62 : 1 + (int64_t)(b % max);
    default: return 1 + (int64_t)(b % max);
    }
}

static uint64_t rng_state;
static float rng_float(void) { /* in [-2, 2) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 40) / 16777216.0 * 4.0 - 2.0);
}

/* ---- buffers -------------------------------------------------------------- */

#define POISON_BITS 0x7fc0beefu /* a NaN no computation produces */

static float poison(void) {
    float f;
    const uint32_t b = POISON_BITS;
    memcpy(&f, &b, sizeof f);
    return f;
}

static int is_poison(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b == POISON_BITS;
}

typedef struct buf {
    float *p;
    size_t n;
} buf;

static buf make_out(size_t n) {
    buf b = {malloc((n ? n : 1) * sizeof(float)), n};
    if (!b.p) abort();
    for (size_t i = 0; i < n; i++) b.p[i] = poison();
    return b;
}

enum { FILL_PLAIN, FILL_GATE, FILL_BETA, FILL_POS };

static buf make_in(size_t n, int kind) {
    buf b = {malloc((n ? n : 1) * sizeof(float)), n};
    if (!b.p) abort();
    for (size_t i = 0; i < n; i++) {
        const float x = rng_float();
        b.p[i] = kind == FILL_GATE   ? -fabsf(x)
                 : kind == FILL_BETA ? fabsf(x) * 0.99f
                 : kind == FILL_POS  ? fabsf(x) + 0.1f
                                     : x;
    }
    return b;
}

static void fail(const char *what, const char *name) {
    fprintf(stderr, "fuzz_registry: contract broken: %s (%s); last error: %s\n", what, name,
            la_last_error());
    abort();
}

/* ---- one registry entry ------------------------------------------------- */

enum {
    IN_Q,
    IN_K,
    IN_V,
    IN_G,
    IN_GG,
    IN_BETA,
    IN_S0,
    IN_Z0,
    IN_DO,
    IN_DST,
    IN_DZT,
    IN_W,
    IN_MU0,
    N_IN
};
enum {
    OUT_O,
    OUT_ST,
    OUT_ZT,
    OUT_LSE,
    OUT_DQ,
    OUT_DK,
    OUT_DV,
    OUT_DG,
    OUT_DGG,
    OUT_DB,
    OUT_DS0,
    OUT_DZ0,
    OUT_MU, /* final_key_max (random features) */
    N_OUT
};

static const float SCALES[] = {0, 0.5f, 2, -1, NAN, INFINITY, 0, 0};
static const float EPSS[] = {0, 1e-6f, 1e-3f, -1, NAN, 0, 0, 0};
static const int64_t CHUNKS[] = {0, 1, 2, 3, 5, 16, 64, -1, INT64_C(1) << 40, 7, 4, 0};

static void run_op(reader *r, la_ctx *ctx, int id) {
    const la__op_entry *e = la__op_get(id);
    const unsigned nd = e->needs;
    la_dims d;
    memset(&d, 0, sizeof d);
    d.B = rd_size(r, 3);
    d.T = rd_size(r, 24);
    d.H = rd_size(r, 4);
    d.K = rd_size(r, 9);
    d.V = rd_size(r, 9);
    const unsigned hv = rd(r);
    d.HV = hv % 4 == 0 || d.H < 1 || d.H > 64 ? 0 : hv % 4 == 3 ? d.H + 1 : d.H * (int64_t)(hv % 4);
    int64_t cu[8];
    const unsigned cuf = rd(r);
    if (cuf % 3 == 0) { /* packed sequences, sometimes malformed */
        const int64_t ns = 1 + (int64_t)(cuf / 3 % 6);
        d.n_seqs = ns;
        d.B = (cuf & 0x80) ? 2 : 1;
        cu[0] = 0;
        for (int64_t i = 1; i <= ns; i++) cu[i] = cu[i - 1] + (int64_t)(rd(r) % 7); /* 0 = empty */
        if (cuf & 0x40) cu[rd(r) % (ns + 1)] += (int64_t)(rd(r) % 5) - 2;           /* malformed */
        d.T = cu[ns] > 0 ? cu[ns] : 1;
        if (cuf & 0x20) d.T += 1; /* does not end at T */
        d.cu_seqlens = cu;
    } else if (cuf % 7 == 1) {
        d.n_seqs = 2; /* n_seqs without cu_seqlens */
    }
    la__op_args a;
    memset(&a, 0, sizeof a);
    const unsigned ob = rd(r);
    a.scale = SCALES[ob & 7];
    a.chunk_size = CHUNKS[rd(r) % (sizeof CHUNKS / sizeof CHUNKS[0])];
    const unsigned fb = rd(r);
    a.feature_map = (la_feature_map)(fb % 4 == 3 ? 7 : fb % 4);
    a.normalize = (fb >> 2) & 1;
    a.eps = EPSS[(fb >> 3) & 7];
    a.use_qk_l2norm = (ob >> 3) & 1;
    const uint32_t nulls = rd(r) | (uint32_t)rd(r) << 8;
    const unsigned plant = rd(r), plant_at = rd(r) | rd(r) << 8;
    rng_state = rd64(r) | 1;
    const int rf = (nd & LA__NEED_RF) != 0;
    if (rf) { /* random features: kind (5 is invalid), stabiliser, eps, m */
        const unsigned rb = rd(r);
        a.rf.kind = (la_random_feature)(rb % 6);
        a.rf.role = (la_rf_role)((rb >> 3) & 1);
        a.rf.stabilize = (rb >> 4) & 1 ? 1 : (rb >> 5) & 1 ? 0 : 3; /* 3: invalid */
        a.rf.eps = EPSS[(rb >> 5) & 7];
        a.rf_m = rd_size(r, 6);
    }

    /* Buffer sizes from the dims when they are sane; otherwise tiny (the
     * call must refuse before touching them). */
    int sane = d.B >= 1 && d.B <= 3 && d.T >= 1 && d.T <= 48 && d.H >= 1 && d.H <= 4 && d.K >= 1 &&
               d.K <= 9 && d.V >= 1 && d.V <= 9 && d.HV >= 0 && d.HV <= 16 &&
               (!rf || (a.rf_m >= 1 && a.rf_m <= 6));
    const int64_t HSa = d.HV > d.H ? d.HV : d.H; /* generous for a bad HV */
    const int64_t N = d.cu_seqlens ? (d.n_seqs > 0 ? d.n_seqs : 1) : d.B;
    const size_t BT = sane ? (size_t)(d.B * d.T) : 1, H = sane ? (size_t)d.H : 1;
    const size_t K = sane ? (size_t)d.K : 1, V = sane ? (size_t)d.V : 1;
    const size_t HS = sane ? (size_t)HSa : 1, NN = sane ? (size_t)N : 1;
    const size_t n_qk = BT * H * K, n_v = BT * HS * V, n_hs = BT * HS;
    const size_t n_g = (nd & LA__NEED_GK) ? n_hs * K : n_hs;
    /* state rows: K, or the M features of random features (1 when the
     * kind is invalid: the call must refuse) */
    const int64_t M = rf && sane ? la_rf_num_features(a.rf.kind, a.rf_m) : 0;
    const size_t R = rf ? (M > 0 ? (size_t)M : 1) : K;
    const size_t n_s = NN * HS * R * V, n_z = NN * H * R, n_mu = rf ? NN * H : 0;
    const size_t n_w = rf && sane ? (size_t)a.rf_m * K : (size_t)rf;
    const int has_g = (nd & (LA__NEED_G | LA__NEED_G_OPT | LA__NEED_GK)) != 0;
    const int norm = (nd & LA__NEED_NORMALIZER) && a.normalize;

    buf in[N_IN];
    memset(in, 0, sizeof in);
    const size_t in_n[N_IN] = {n_qk,
                               n_qk,
                               n_v,
                               has_g ? n_g : 0,
                               (nd & LA__NEED_G_GAMMA) ? H : 0,
                               (nd & LA__NEED_BETA) ? n_hs : 0,
                               (nd & LA__HAS_STATE) ? n_s : 0,
                               norm ? n_z : 0,
                               n_v,
                               (nd & LA__HAS_STATE) ? n_s : 0,
                               norm ? n_z : 0,
                               n_w,
                               n_mu};
    const int in_kind[N_IN] = {FILL_PLAIN, FILL_PLAIN, FILL_PLAIN, FILL_GATE,  FILL_GATE,
                               FILL_BETA,  FILL_PLAIN, FILL_POS,   FILL_PLAIN, FILL_PLAIN,
                               FILL_PLAIN, FILL_PLAIN, FILL_POS};
    for (int i = 0; i < N_IN; i++)
        if (in_n[i]) in[i] = make_in(in_n[i], in_kind[i]);
    /* one planted value */
    int planted_bad = 0;
    {
        buf *t = &in[plant % N_IN];
        if (t->p && t->n) {
            static const float vals[] = {NAN,    INFINITY, -INFINITY, 1e30f,
                                         -1e30f, 3.0f,     0.0f,      -1e4f};
            const float x = vals[(plant / N_IN) % 8];
            t->p[plant_at % t->n] = x;
            planted_bad = !(fabsf(x) <= 4.0f);
        }
    }
    buf out[N_OUT];
    memset(out, 0, sizeof out);
    const size_t out_n[N_OUT] = {n_v,
                                 (nd & LA__HAS_STATE) ? n_s : 0,
                                 norm ? n_z : 0,
                                 (nd & LA__HAS_LSE) ? BT * H : 0,
                                 n_qk,
                                 n_qk,
                                 n_v,
                                 has_g ? n_g : 0,
                                 (nd & LA__NEED_G_GAMMA) ? H : 0,
                                 (nd & LA__NEED_BETA) ? n_hs : 0,
                                 (nd & LA__HAS_STATE) ? n_s : 0,
                                 norm ? n_z : 0,
                                 n_mu};
    for (int i = 0; i < N_OUT; i++)
        if (out_n[i]) out[i] = make_out(out_n[i]);

    a.dims = d;
    const float **ip[N_IN] = {&a.q,
                              &a.k,
                              &a.v,
                              &a.g,
                              &a.g_gamma,
                              &a.beta,
                              &a.initial_state,
                              &a.initial_norm,
                              &a.d_o,
                              &a.d_final_state,
                              &a.d_final_norm,
                              &a.rf_W,
                              &a.initial_key_max};
    float **op[N_OUT] = {&a.o,
                         &a.final_state,
                         &a.final_norm,
                         &a.lse,
                         &a.dq,
                         &a.dk,
                         &a.dv,
                         &a.dg,
                         &a.dg_gamma,
                         &a.dbeta,
                         &a.d_initial_state,
                         &a.d_initial_norm,
                         &a.final_key_max};
    for (int i = 0; i < N_IN; i++) *ip[i] = (nulls >> i) & 1 ? NULL : in[i].p;
    for (int i = 0; i < N_OUT; i++) *op[i] = (nulls >> (i % 16)) & 0x10 ? NULL : out[i].p;
    /* the required ones are present most of the time */
    if (!(nulls & 0x8000)) {
        a.q = in[IN_Q].p, a.k = in[IN_K].p, a.v = in[IN_V].p, a.o = out[OUT_O].p;
        a.d_o = in[IN_DO].p, a.dq = out[OUT_DQ].p, a.dk = out[OUT_DK].p, a.dv = out[OUT_DV].p;
        if (nd & (LA__NEED_G | LA__NEED_GK)) a.g = in[IN_G].p;
        if (nd & LA__NEED_BETA) a.beta = in[IN_BETA].p;
        if (a.g && has_g) a.dg = out[OUT_DG].p;
        if (rf) a.rf_W = in[IN_W].p;
        if (a.initial_state && rf) a.initial_key_max = in[IN_MU0].p; /* required with it */
    }

    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N_OUT; i++)
            for (size_t j = 0; j < out[i].n; j++) out[i].p[j] = poison();
        const la_status st = pass ? e->backward(ctx, &a) : e->forward(ctx, &a);
        if ((unsigned)st > LA_ERR_INTERNAL) fail("unknown status", e->name);
        if (st != LA_OK) {
            if (!la_last_error()[0]) fail("error without a message", e->name);
            for (int i = 0; i < N_OUT; i++)
                for (size_t j = 0; j < out[i].n; j++)
                    if (!is_poison(out[i].p[j])) fail("a failing call wrote an output", e->name);
            continue;
        }
        if (!sane) fail("insane dims accepted", e->name);
        /* every given output of this pass fully written; finite if allowed */
        const int fwd_out[N_OUT] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        /* trig features can make the Performer's denominator vanish */
        const int may_blow =
            planted_bad || ((nd & LA__NEED_BETA) && !a.use_qk_l2norm) ||
            (norm && a.feature_map == LA_FEATURE_IDENTITY && !rf) ||
            (rf && (a.rf.kind == LA_RF_TRIG_GAUSSIAN || a.rf.kind == LA_RF_TRIG_SOFTMAX));
        for (int i = 0; i < N_OUT; i++) {
            if (!*op[i] || fwd_out[i] == pass) continue;
            const size_t n = i == OUT_ST || i == OUT_DS0 ? n_s : out[i].n;
            for (size_t j = 0; j < n; j++) {
                if (is_poison(out[i].p[j])) {
                    /* outputs beyond the op's own layout (generous HV) may stay */
                    if (d.HV > 0 && (size_t)d.HV < HS) break;
                    fprintf(stderr, "output %d element %zu of %zu not written\n", i, j, n);
                    fail("an output element was not written", e->name);
                }
                /* -INFINITY is a valid key maximum: no key seen (an empty
                 * sequence without an initial maximum) */
                if (i == OUT_MU && out[i].p[j] == -INFINITY) continue;
                if (!may_blow && !isfinite(out[i].p[j])) {
                    fprintf(stderr, "output %d element %zu = %g\n", i, j, (double)out[i].p[j]);
                    fail("non-finite output from moderate inputs", e->name);
                }
            }
        }
    }
    for (int i = 0; i < N_IN; i++) free(in[i].p);
    for (int i = 0; i < N_OUT; i++) free(out[i].p);
}

/* ---- the decoder ---------------------------------------------------------- */

static void run_decoder(reader *r, la_ctx *ctx) {
    la_decoder_config c;
    memset(&c, 0, sizeof c);
    const unsigned opb = rd(r);
    c.op = (la_op)(opb % 8 < LA__DECODE_COUNT ? opb % 8 : 40 + opb % 3);
    c.N = rd_size(r, 3);
    c.H = rd_size(r, 3);
    const unsigned hv = rd(r);
    c.HV = hv % 3 == 0 || c.H < 1 || c.H > 64 ? 0 : c.H * (int64_t)(hv % 3);
    c.K = rd_size(r, 8);
    c.V = rd_size(r, 8);
    const unsigned fb = rd(r);
    c.feature_map = (la_feature_map)(fb % 4 == 3 ? 9 : fb % 4);
    c.normalize = (fb >> 2) & 1;
    c.eps = EPSS[(fb >> 3) & 7];
    c.scale = SCALES[(fb >> 5) & 7];
    c.use_qk_l2norm = 1;
    const unsigned nulls = rd(r);
    rng_state = rd64(r) | 1;
    la_decoder *dec = (la_decoder *)(uintptr_t)1; /* must stay as is on failure */
    la_decoder *const sentinel = dec;
    const la_status st = la_decoder_create(&dec, &c);
    if (st != LA_OK) {
        if (dec != sentinel) fail("failed create wrote *out", "decoder");
        return;
    }
    const int sane = c.N <= 3 && c.H <= 3 && c.K <= 8 && c.V <= 8;
    if (!sane) fail("insane decoder config accepted", "decoder");
    const int64_t HS = c.HV ? c.HV : c.H;
    const size_t nqk = (size_t)(c.N * c.H * c.K), nv = (size_t)(c.N * HS * c.V);
    const size_t nhs = (size_t)(c.N * HS), ns = (size_t)(c.N * HS * c.K * c.V);
    const size_t nz = (size_t)(c.N * c.H * c.K);
    buf q = make_in(nqk, FILL_PLAIN), k = make_in(nqk, FILL_PLAIN), v = make_in(nv, FILL_PLAIN);
    buf g = make_in(nhs * (size_t)c.K, FILL_GATE), gg = make_in((size_t)c.H, FILL_GATE);
    buf beta = make_in(nhs, FILL_BETA), o = make_out(nv), s = make_out(ns), z = make_out(nz);
    const int steps = 1 + (int)(rd(r) % 4);
    for (int t = 0; t < steps; t++) {
        const unsigned plant = rd(r);
        if (plant % 5 == 0) q.p[plant % q.n] = NAN;
        if (plant % 7 == 1) g.p[plant % g.n] = 0.5f; /* a positive log-gate */
        if (plant % 11 == 2) beta.p[plant % beta.n] = 2.5f;
        for (size_t j = 0; j < o.n; j++) o.p[j] = poison();
        const la_status ss = la_decoder_step(ctx, dec, (nulls & 1) ? NULL : o.p, q.p, k.p, v.p,
                                             (nulls & 2) ? NULL : g.p, (nulls & 4) ? NULL : gg.p,
                                             (nulls & 8) ? NULL : beta.p);
        if (ss != LA_OK) {
            if (!la_last_error()[0]) fail("decoder step error without a message", "decoder");
            for (size_t j = 0; j < o.n; j++)
                if (!is_poison(o.p[j])) fail("a failing decoder step wrote o", "decoder");
        } else {
            for (size_t j = 0; j < o.n; j++)
                if (is_poison(o.p[j])) fail("decoder step left o unwritten", "decoder");
        }
    }
    /* per-slot control with a fuzzed slot */
    const int64_t slot = (int64_t)(rd(r) % 5) - 1;
    const size_t sn = ns / (size_t)c.N, zn = nz / (size_t)c.N;
    buf ss = make_out(sn), zs = make_out(zn);
    const int want_norm = rd(r) & 1;
    const la_status gs = la_decoder_get_slot_state(dec, slot, ss.p, want_norm ? zs.p : NULL);
    if (gs != LA_OK)
        for (size_t j = 0; j < sn; j++)
            if (!is_poison(ss.p[j])) fail("failed get_slot_state wrote", "decoder");
    if (gs == LA_OK && (slot < 0 || slot >= c.N)) fail("bad slot accepted", "decoder");
    (void)la_decoder_reset_slot(dec, slot);
    for (size_t j = 0; j < sn; j++) ss.p[j] = rng_float();
    (void)la_decoder_set_slot_state(dec, slot, ss.p, want_norm ? zs.p : NULL); /* zs: NaN payload */
    const la_status gst = la_decoder_get_state(dec, s.p, (nulls & 16) ? z.p : NULL);
    if (gst == LA_OK)
        for (size_t j = 0; j < s.n; j++)
            if (is_poison(s.p[j])) fail("get_state left the state unwritten", "decoder");
    la_decoder_destroy(dec);
    buf all[] = {q, k, v, g, gg, beta, o, s, z, ss, zs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i].p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static la_ctx *ctx1, *ctx3;
    if (!ctx1 && (la_ctx_create(&ctx1, 1) || la_ctx_create(&ctx3, 3))) abort();
    reader r = {data, size};
    const unsigned sel = rd(&r);
    la_ctx *ctx = (sel & 0x80) ? ctx3 : ctx1;
    const int pick = (int)(sel & 0x7f) % (LA__OP_COUNT + 1);
    if (pick == LA__OP_COUNT)
        run_decoder(&r, ctx);
    else
        run_op(&r, ctx, pick);
    return 0;
}
