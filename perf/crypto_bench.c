/* perf/crypto_bench.c: the JOSE side of perf/crypto. For each algorithm named on the
 * command line (rs256, es256, eddsa) it issues an RFC 9068 access token of about 300
 * payload bytes and measures, for `seconds` each:
 *   - verify: jwt_verify with full validation (signature, typ, exp/nbf/iat, iss, aud,
 *     required claims) against a keyset holding the key, one token again and again;
 *   - sign: the issuance path (jwt_access_render of the claims, then jwt_sign).
 * Prints one line per figure on stdout:
 *   "bench <name> ops=<n> secs=<user CPU s> rate=<ops/user s> wall_rate=<ops/wall s>".
 * The rate divides by the process's user CPU time (getrusage), which is what `openssl
 * speed` divides by unless given -elapsed: on a shared machine, time spent descheduled
 * then counts against neither side, and neither does the kernel time of the getpid()
 * that OpenSSL's DRBG makes per ECDSA/RSA signature (both sides make it).
 * Pinning to a CPU is the caller's job (perf/crypto runs it under taskset). Every
 * result is checked, so a benchmark of a failing path aborts instead of measuring it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/buf.h"
#include "core/slice.h"
#include "crypto/jwk.h"
#include "crypto/jwt.h"
#include "crypto/keyset.h"

#include <openssl/evp.h>

/* The clock is read once per this many operations: cheap next to any signature. */
#define BENCH_BATCH 16
/* Token and claims buffers: an RS256 access token is about 800 bytes. */
#define BENCH_TOKEN_CAP 4096
#define BENCH_NOW 1900000000LL
#define BENCH_LIFETIME_S 300
/* Longest run accepted on the command line: the benchmark stays bounded. */
#define BENCH_SECONDS_MAX 60.0

static const struct jwt_access bench_claims = {
    .iss = SLICE_LIT("https://auth.example.com/t/acme"),
    .sub = SLICE_LIT("0192f6a4-5c1e-7b3a-9d2e-4f8a6b1c3d5e"),
    .aud = SLICE_LIT("https://api.example.com"),
    .jti = SLICE_LIT("0192f6a4-5c1e-7b3a-9d2e-aa11bb22cc33"),
    .client_id = SLICE_LIT("orders-web"),
    .scope = SLICE_LIT("openid orders:read orders:write"),
    .tid = SLICE_LIT("acme"),
    .iat = BENCH_NOW - 10,
    .lifetime_s = BENCH_LIFETIME_S,
};

static double bench_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double bench_now(void)
{
    return bench_clock(CLOCK_MONOTONIC);
}

static double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

static void bench_die(const char *what)
{
    fprintf(stderr, "crypto_bench: %s failed\n", what);
    exit(1);
}

/* Renders the claims and signs them: the path a token endpoint takes per token. */
static int bench_issue(const struct jwk_key *key, char *token, size_t cap)
{
    char mem[BENCH_TOKEN_CAP];
    struct buf claims;
    buf_init(&claims, mem, sizeof(mem));
    if (jwt_access_render(&bench_claims, &claims) < 0) {
        bench_die("jwt_access_render");
    }
    return jwt_sign(key, "at+jwt", buf_slice(&claims), token, cap);
}

/* What one timed operation is. RAW_* are the bare EVP primitives, set up once the way
 * `openssl speed` 3.0 does (EVP_PKEY_sign/verify over a digest for RSA and ECDSA,
 * EVP_DigestSign/Verify of a 20-byte message for Ed25519), on a fresh key of the same
 * type in this same process: interleaved with the JWT figures in short slices, they
 * give the JOSE layer's cost without the drift of a shared machine between runs. */
enum bench_what { BENCH_JWT_VERIFY, BENCH_JWT_SIGN, BENCH_RAW_VERIFY, BENCH_RAW_SIGN };

/* Slices per figure: the JWT side and the raw side alternate, seconds / (2 * BENCH_SLICES)
 * at a time, so each gets half of the figure's seconds. */
#define BENCH_SLICES 10
#define BENCH_SPEED_MSG 20 /* openssl speed's Ed25519 message length */

struct bench_ctx {
    const struct keyset *keys;
    const struct jwk_key *key;
    const char *token;
    size_t len;
    struct jwt_expect expect;
    EVP_PKEY *pkey; /* the raw side's own key */
    EVP_PKEY_CTX *vctx, *sctx; /* RSA, ECDSA */
    EVP_MD_CTX *ed_v, *ed_s;   /* Ed25519 */
    uint8_t digest[32];
    uint8_t sig[512];
    size_t sig_len;
};

struct bench_side {
    long ops;
    double cpu;
    double wall;
};

static void bench_once(struct bench_ctx *c, enum bench_what w)
{
    uint8_t scratch[BENCH_TOKEN_CAP];
    char token[BENCH_TOKEN_CAP];
    struct jwt_claims out;
    uint8_t sig[512];
    size_t n = sizeof(sig);
    int ok = 0;
    switch (w) {
    case BENCH_JWT_VERIFY:
        ok = jwt_verify(c->keys, &c->expect, c->token, c->len, scratch, sizeof(scratch), &out) == 0;
        break;
    case BENCH_JWT_SIGN:
        ok = bench_issue(c->key, token, sizeof(token)) > 0;
        break;
    case BENCH_RAW_VERIFY:
        ok = c->ed_v != NULL ? EVP_DigestVerify(c->ed_v, c->sig, c->sig_len, c->digest,
                                                BENCH_SPEED_MSG) == 1
                             : EVP_PKEY_verify(c->vctx, c->sig, c->sig_len, c->digest, 32) == 1;
        break;
    case BENCH_RAW_SIGN:
        ok = c->ed_s != NULL
                 ? EVP_DigestSign(c->ed_s, sig, &n, c->digest, BENCH_SPEED_MSG) == 1
                 : EVP_PKEY_sign(c->sctx, sig, &n, c->digest, 32) == 1;
        break;
    }
    if (!ok) {
        bench_die("an operation");
    }
}

static void bench_slice(struct bench_ctx *c, enum bench_what w, double secs, struct bench_side *s)
{
    double cpu0 = bench_cpu();
    double start = bench_now();
    double t = start;
    while (t - start < secs) {
        for (int i = 0; i < BENCH_BATCH; i++) {
            bench_once(c, w);
        }
        s->ops += BENCH_BATCH;
        t = bench_now();
    }
    s->cpu += bench_cpu() - cpu0;
    s->wall += t - start;
}

/* The JWT figure and its raw primitive, alternating slices (order swapped each time). */
static void bench_pair(struct bench_ctx *c, bool sign, double seconds, const char *alg)
{
    struct bench_side jwt = { 0 };
    struct bench_side raw = { 0 };
    enum bench_what wj = sign ? BENCH_JWT_SIGN : BENCH_JWT_VERIFY;
    enum bench_what wr = sign ? BENCH_RAW_SIGN : BENCH_RAW_VERIFY;
    for (int i = 0; i < BENCH_SLICES; i++) {
        /* The pair shares the seconds: a run takes as long as the openssl speed run. */
        double slice = seconds / (2 * BENCH_SLICES);
        bench_slice(c, i % 2 ? wr : wj, slice, i % 2 ? &raw : &jwt);
        bench_slice(c, i % 2 ? wj : wr, slice, i % 2 ? &jwt : &raw);
    }
    const char *op = sign ? "sign" : "verify";
    printf("bench jwt_%s_%s ops=%ld secs=%.4f rate=%.1f wall_rate=%.1f\n", op, alg, jwt.ops,
           jwt.cpu, jwt.ops / jwt.cpu, jwt.ops / jwt.wall);
    printf("bench raw_%s_%s ops=%ld secs=%.4f rate=%.1f wall_rate=%.1f\n", op, alg, raw.ops,
           raw.cpu, raw.ops / raw.cpu, raw.ops / raw.wall);
    fflush(stdout);
}

/* The raw side: its own key and contexts, set up once. */
static void bench_raw_setup(enum jwk_alg alg, struct bench_ctx *c)
{
    memset(c->digest, 0x5a, sizeof(c->digest));
    c->sig_len = sizeof(c->sig);
    if (alg == JWK_ALG_EDDSA) {
        c->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        c->ed_v = EVP_MD_CTX_new();
        c->ed_s = EVP_MD_CTX_new();
        if (c->pkey == NULL || c->ed_v == NULL || c->ed_s == NULL ||
            EVP_DigestSignInit_ex(c->ed_s, NULL, NULL, NULL, NULL, c->pkey, NULL) != 1 ||
            EVP_DigestVerifyInit_ex(c->ed_v, NULL, NULL, NULL, NULL, c->pkey, NULL) != 1 ||
            EVP_DigestSign(c->ed_s, c->sig, &c->sig_len, c->digest, BENCH_SPEED_MSG) != 1) {
            bench_die("raw Ed25519 setup");
        }
        return;
    }
    c->pkey = alg == JWK_ALG_RS256 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                   : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    c->vctx = c->pkey == NULL ? NULL : EVP_PKEY_CTX_new_from_pkey(NULL, c->pkey, NULL);
    c->sctx = c->pkey == NULL ? NULL : EVP_PKEY_CTX_new_from_pkey(NULL, c->pkey, NULL);
    if (c->vctx == NULL || c->sctx == NULL || EVP_PKEY_verify_init(c->vctx) != 1 ||
        EVP_PKEY_sign_init(c->sctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(c->vctx, EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_signature_md(c->sctx, EVP_sha256()) != 1 ||
        EVP_PKEY_sign(c->sctx, c->sig, &c->sig_len, c->digest, 32) != 1) {
        bench_die("raw EVP setup");
    }
}

static void bench_raw_free(struct bench_ctx *c)
{
    EVP_PKEY_CTX_free(c->vctx);
    EVP_PKEY_CTX_free(c->sctx);
    EVP_MD_CTX_free(c->ed_v);
    EVP_MD_CTX_free(c->ed_s);
    EVP_PKEY_free(c->pkey);
}

static void bench_alg(const char *name, double seconds)
{
    enum jwk_alg alg = !strcmp(name, "rs256")   ? JWK_ALG_RS256
                       : !strcmp(name, "es256") ? JWK_ALG_ES256
                       : !strcmp(name, "eddsa") ? JWK_ALG_EDDSA
                                                : JWK_ALG_UNSET;
    if (alg == JWK_ALG_UNSET) {
        bench_die("algorithm name (rs256, es256, eddsa)");
    }
    struct jwk_key *key;
    struct keyset keys;
    keyset_init(&keys, BENCH_LIFETIME_S);
    if (jwk_generate(alg, 2048, &key) < 0 || keyset_add(&keys, key, KEYSET_ACTIVE, BENCH_NOW) < 0) {
        bench_die("key setup");
    }
    char token[BENCH_TOKEN_CAP];
    int len = bench_issue(key, token, sizeof(token));
    if (len <= 0) {
        bench_die("first token");
    }
    char *dot = strchr(token, '.');
    char *dot2 = dot == NULL ? NULL : strchr(dot + 1, '.');
    if (dot2 == NULL) {
        bench_die("token shape");
    }
    fprintf(stderr, "crypto_bench: %s token %d bytes, payload %zu bytes\n", name, len,
            (size_t)(dot2 - dot - 1) * 3 / 4);
    struct bench_ctx c = {
        .keys = &keys,
        .key = key,
        .token = token,
        .len = (size_t)len,
        .expect = { .kind = JWT_KIND_ACCESS,
                    .issuer = bench_claims.iss,
                    .audience = bench_claims.aud,
                    .tenant = bench_claims.tid,
                    .now = BENCH_NOW,
                    .leeway_s = JWT_LEEWAY_DEFAULT_S },
    };
    bench_raw_setup(alg, &c);
    const char *only = getenv("CRYPTO_BENCH_ONLY"); /* "verify" or "sign": for profiling */
    struct bench_side unused = { 0 };
    if (only != NULL) { /* one figure alone, no raw side: for perf record */
        bench_slice(&c, strcmp(only, "sign") == 0 ? BENCH_JWT_SIGN : BENCH_JWT_VERIFY, seconds,
                    &unused);
        printf("bench jwt_%s_%s ops=%ld secs=%.4f rate=%.1f\n", only, name, unused.ops,
               unused.cpu, unused.ops / unused.cpu);
    } else {
        bench_pair(&c, false, seconds, name);
        bench_pair(&c, true, seconds, name);
    }
    bench_raw_free(&c);
    keyset_clear(&keys);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: crypto_bench SECONDS ALG...  (ALG: rs256 es256 eddsa)\n");
        return 2;
    }
    double seconds = atof(argv[1]);
    if (!(seconds > 0 && seconds <= BENCH_SECONDS_MAX)) {
        bench_die("SECONDS (0 < s <= 60)");
    }
    for (int i = 2; i < argc; i++) {
        bench_alg(argv[i], seconds);
    }
    return 0;
}
