/* tests/crypto/test_jws_rfc.c: the published JOSE examples reproduce exactly.
 * RFC 7515 A.1 (HS256) and A.2 (RS256) and RFC 8037 A.4 (Ed25519) are deterministic:
 * re-signing gives the published token byte for byte. A.3 (ES256) is randomised:
 * the published token verifies, and a fresh signature is 64 bytes r||s and verifies.
 * A.5 (alg none) is rejected with every key. RFC 7638 and RFC 8037 A.3 thumbprints,
 * RFC 7636 B (PKCE S256), and the public export / JWKS never carrying a private member.
 * Also: two ES256 signatures of one input differ (fresh nonce each time), and keys are
 * shared by threads signing and verifying at once (their EVP contexts are copied). */
#include <jansson.h>
#include <pthread.h>
#include <string.h>

#include "core/err.h"
#include "crypto/b64url.h"
#include "crypto/hash.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "tests/crypto/check.h"
#include "tests/crypto/vectors.h"

static char *md;

static struct jwk_key *import(const char *name, enum jwk_alg alg)
{
    const char *json = vectors_md(md, name);
    struct jwk_key *key = NULL;
    int rc = jwk_import(json, strlen(json), alg, &key);
    CHECK(rc == 0 && key != NULL);
    if (key == NULL) {
        fprintf(stderr, "import %s failed: %d\n", name, rc);
        exit(1);
    }
    return key;
}

static bool verifies(const struct jwk_key *key, const char *token)
{
    uint8_t buf[JWS_TOKEN_MAX];
    struct jws_parsed parsed;
    return jws_verify(key, token, strlen(token), buf, sizeof(buf), &parsed) == 0;
}

static void payload_octets(uint8_t *payload, size_t *len)
{
    *len = vectors_octets(vectors_md(md, "rfc7515.payload-octets"), payload, 128);
    CHECK(*len == 70);
}

/* RFC 7515 A.1: the header has CRLF and a space; signing reproduces the token. */
static void test_a1_hs256(struct jwk_key *keys[], size_t *n)
{
    struct jwk_key *key = import("rfc7515.a1.jwk", JWK_ALG_HS256);
    uint8_t header[64];
    uint8_t payload[128];
    size_t payload_len;
    size_t header_len = vectors_octets(vectors_md(md, "rfc7515.a1.header-octets"), header, 64);
    payload_octets(payload, &payload_len);
    char token[1024];
    int t = jws_sign(key, slice_make((const char *)header, header_len), payload, payload_len, token,
                     sizeof(token));
    const char *want = vectors_md(md, "rfc7515.a1.jws");
    CHECK(t == (int)strlen(want) && memcmp(token, want, (size_t)t) == 0);
    CHECK(verifies(key, want));
    uint8_t buf[JWS_TOKEN_MAX];
    struct jws_parsed parsed;
    CHECK(jws_verify(key, want, strlen(want), buf, sizeof(buf), &parsed) == 0);
    CHECK(parsed.payload.len == payload_len && memcmp(parsed.payload.ptr, payload, 70) == 0);
    CHECK(jwk_is_symmetric(key) && jwk_key_alg(key) == JWK_ALG_HS256);
    keys[(*n)++] = key;
}

/* RFC 7515 A.2: PKCS#1 v1.5 is deterministic. */
static void test_a2_rs256(struct jwk_key *keys[], size_t *n)
{
    struct jwk_key *priv = import("rfc7515.a2.jwk", JWK_ALG_RS256);
    struct jwk_key *pub = import("rfc7515.a2.jwk-public", JWK_ALG_RS256);
    uint8_t payload[128];
    size_t payload_len;
    payload_octets(payload, &payload_len);
    char token[2048];
    int t = jws_sign(priv, SLICE_LIT("{\"alg\":\"RS256\"}"), payload, payload_len, token,
                     sizeof(token));
    const char *want = vectors_md(md, "rfc7515.a2.jws");
    CHECK(t == (int)strlen(want) && memcmp(token, want, (size_t)t) == 0);
    CHECK(verifies(pub, want) && verifies(priv, want));
    CHECK(jwk_has_private(priv) && !jwk_has_private(pub));
    CHECK(strcmp(jwk_thumbprint(priv), jwk_thumbprint(pub)) == 0);
    /* The raw signature file t_a2.sig over t_a2.in, byte for byte. */
    size_t in_len;
    size_t sig_len;
    char *in = vectors_read("jose/t_a2.in", &in_len);
    char *sig_file = vectors_read("jose/t_a2.sig", &sig_len);
    uint8_t sig[512];
    int s = jws_sign_bytes(priv, in, in_len, sig, sizeof(sig));
    CHECK(s == 256 && sig_len == 256 && memcmp(sig, sig_file, 256) == 0);
    CHECK(jws_verify_bytes(pub, in, in_len, (const uint8_t *)sig_file, sig_len) == 0);
    free(in);
    free(sig_file);
    keys[(*n)++] = priv;
    keys[(*n)++] = pub;
}

/* RFC 7515 A.3: verify the published token; a fresh signature is r||s and verifies. */
static void test_a3_es256(struct jwk_key *keys[], size_t *n)
{
    struct jwk_key *priv = import("rfc7515.a3.jwk", JWK_ALG_ES256);
    struct jwk_key *pub = import("rfc7515.a3.jwk-public", JWK_ALG_ES256);
    const char *want = vectors_md(md, "rfc7515.a3.jws");
    CHECK(verifies(pub, want) && verifies(priv, want));
    uint8_t r[32];
    uint8_t s[32];
    uint8_t sig[64];
    CHECK(vectors_octets(vectors_md(md, "rfc7515.a3.signature-r-octets"), r, 32) == 32);
    CHECK(vectors_octets(vectors_md(md, "rfc7515.a3.signature-s-octets"), s, 32) == 32);
    int dec = b64url_decode(vectors_md(md, "rfc7515.a3.signature-b64"), 86, sig, sizeof(sig));
    CHECK(dec == 64 && memcmp(sig, r, 32) == 0 && memcmp(sig + 32, s, 32) == 0);
    uint8_t payload[128];
    size_t payload_len;
    payload_octets(payload, &payload_len);
    char token[1024];
    for (int i = 0; i < 20; i++) { /* covers r or s with a high bit or leading zero */
        int t = jws_sign(priv, SLICE_LIT("{\"alg\":\"ES256\"}"), payload, payload_len, token,
                         sizeof(token));
        CHECK(t > 0 && memcmp(token, want, 20) == 0);
        token[t > 0 ? t : 0] = '\0';
        CHECK(strlen(strrchr(token, '.') + 1) == 86); /* 64 bytes, never DER */
        CHECK(verifies(pub, token));
    }
    keys[(*n)++] = priv;
    keys[(*n)++] = pub;
}

/* ECDSA nonces are fresh per signature: equal nonces would reveal the private key. */
static void test_es256_nonce_fresh(const struct jwk_key *priv)
{
    uint8_t a[64];
    uint8_t b[64];
    CHECK(jws_sign_bytes(priv, "same", 4, a, sizeof(a)) == 64);
    CHECK(jws_sign_bytes(priv, "same", 4, b, sizeof(b)) == 64);
    CHECK(memcmp(a, b, 32) != 0 && memcmp(a + 32, b + 32, 32) != 0);
}

struct thread_arg {
    const struct jwk_key *key;
    int ok;
};

static void *thread_main(void *p)
{
    struct thread_arg *arg = p;
    for (int i = 0; i < 200; i++) {
        char msg[32];
        uint8_t sig[JWS_SIGNATURE_MAX];
        int n = snprintf(msg, sizeof(msg), "message %d", i);
        int s = jws_sign_bytes(arg->key, msg, (size_t)n, sig, sizeof(sig));
        arg->ok += s > 0 && jws_verify_bytes(arg->key, msg, (size_t)n, sig, (size_t)s) == 0 &&
                   jws_verify_bytes(arg->key, msg, (size_t)n - 1, sig, (size_t)s) != 0;
    }
    return NULL;
}

static void test_threads(struct jwk_key *keys[], size_t n)
{
    enum { THREADS = 4 };
    for (size_t k = 0; k < n; k++) {
        if (!jwk_has_private(keys[k])) {
            continue;
        }
        pthread_t t[THREADS];
        struct thread_arg args[THREADS];
        for (int i = 0; i < THREADS; i++) {
            args[i] = (struct thread_arg){ .key = keys[k] };
            CHECK(pthread_create(&t[i], NULL, thread_main, &args[i]) == 0);
        }
        for (int i = 0; i < THREADS; i++) {
            pthread_join(t[i], NULL);
            CHECK(args[i].ok == 200);
        }
    }
}

/* RFC 8037 A: Ed25519 is deterministic; thumbprint A.3. */
static void test_rfc8037(struct jwk_key *keys[], size_t *n)
{
    struct jwk_key *priv = import("rfc8037.a1.jwk", JWK_ALG_EDDSA);
    struct jwk_key *pub = import("rfc8037.a2.jwk-public", JWK_ALG_EDDSA);
    const char *payload = vectors_md(md, "rfc8037.a4.payload");
    char token[512];
    int t = jws_sign(priv, SLICE_LIT("{\"alg\":\"EdDSA\"}"), (const uint8_t *)payload,
                     strlen(payload), token, sizeof(token));
    const char *want = vectors_md(md, "rfc8037.a4.jws");
    CHECK(t == (int)strlen(want) && memcmp(token, want, (size_t)t) == 0);
    CHECK(verifies(pub, want)); /* A.5 */
    CHECK(strcmp(jwk_thumbprint(pub), vectors_md(md, "rfc8037.a3.thumbprint")) == 0);
    CHECK(strcmp(jwk_thumbprint(priv), jwk_thumbprint(pub)) == 0);
    CHECK(strcmp(jwk_kid(pub), jwk_thumbprint(pub)) == 0); /* no kid member: kid = thumbprint */
    keys[(*n)++] = priv;
    keys[(*n)++] = pub;
}

static void test_rfc7638(void)
{
    struct jwk_key *key = import("rfc7638.jwk", JWK_ALG_UNSET); /* alg RS256 from the JWK */
    CHECK(jwk_key_alg(key) == JWK_ALG_RS256);
    CHECK(strcmp(jwk_thumbprint(key), vectors_md(md, "rfc7638.thumbprint")) == 0);
    CHECK(strcmp(jwk_kid(key), "2011-04-29") == 0);
    uint8_t want[32];
    uint8_t got[32];
    CHECK(vectors_octets(vectors_md(md, "rfc7638.sha256-octets"), want, 32) == 32);
    const char *input = vectors_md(md, "rfc7638.thumbprint-input");
    CHECK(hash_sha256(input, strlen(input), got) == 0 && memcmp(got, want, 32) == 0);
    jwk_free(key);
}

static void test_rfc7636_b(void)
{
    uint8_t octets[32];
    uint8_t digest[32];
    uint8_t want[32];
    char enc[64];
    CHECK(vectors_octets(vectors_md(md, "rfc7636.b.verifier-octets"), octets, 32) == 32);
    int n = b64url_encode(octets, 32, enc, sizeof(enc));
    const char *verifier = vectors_md(md, "rfc7636.b.code-verifier");
    CHECK(n == 43 && memcmp(enc, verifier, 43) == 0);
    CHECK(hash_sha256(verifier, strlen(verifier), digest) == 0);
    CHECK(vectors_octets(vectors_md(md, "rfc7636.b.sha256-octets"), want, 32) == 32);
    CHECK(memcmp(digest, want, 32) == 0);
    n = b64url_encode(digest, 32, enc, sizeof(enc));
    CHECK(n == 43 && memcmp(enc, vectors_md(md, "rfc7636.b.code-challenge"), 43) == 0);
}

/* A.5 (alg none) never verifies, whatever the key. */
static void test_a5_none(struct jwk_key *keys[], size_t n)
{
    const char *none = vectors_md(md, "rfc7515.a5.jws");
    for (size_t i = 0; i < n; i++) {
        CHECK(!verifies(keys[i], none));
    }
}

/* Public exports hold exactly the public members; re-import gives the same key. */
static void test_export(struct jwk_key *keys[], size_t n)
{
    static const char *const private_members[] = { "d", "p", "q", "dp", "dq", "qi", "k", "oth" };
    const struct jwk_key *published[8];
    size_t pn = 0;
    for (size_t i = 0; i < n; i++) {
        char mem[4096];
        struct buf out;
        buf_init(&out, mem, sizeof(mem));
        int rc = jwk_export_public(keys[i], &out);
        if (jwk_is_symmetric(keys[i])) {
            CHECK(rc == -TE_INVAL);
            continue;
        }
        CHECK(rc == 0);
        json_t *obj = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_object(obj));
        for (size_t m = 0; m < sizeof(private_members) / sizeof(private_members[0]); m++) {
            CHECK(json_object_get(obj, private_members[m]) == NULL);
        }
        CHECK(strcmp(json_string_value(json_object_get(obj, "use")), "sig") == 0);
        json_decref(obj);
        struct jwk_key *again = NULL;
        CHECK(jwk_import(out.data, out.len, JWK_ALG_UNSET, &again) == 0);
        CHECK(again != NULL && !jwk_has_private(again) &&
              strcmp(jwk_thumbprint(again), jwk_thumbprint(keys[i])) == 0);
        jwk_free(again);
        published[pn++] = keys[i];
    }
    char mem[16384];
    struct buf out;
    buf_init(&out, mem, sizeof(mem));
    CHECK(jwk_set_render(published, pn, &out) == 0);
    CHECK(memmem(out.data, out.len, "\"d\"", 3) == NULL &&
          memmem(out.data, out.len, "\"k\"", 3) == NULL);
    json_t *set = json_loadb(out.data, out.len, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_array_size(json_object_get(set, "keys")) == pn);
    json_decref(set);
    buf_init(&out, mem, sizeof(mem));
    CHECK(jwk_set_render((const struct jwk_key *const *)keys, n, &out) ==
          -TE_INVAL); /* has HS256 */
    buf_init(&out, mem, 64);
    CHECK(jwk_set_render(published, pn, &out) == -TE_NOMEM);
}

int main(void)
{
    md = vectors_read("jose/rfc-vectors.md", NULL);
    struct jwk_key *keys[8];
    size_t n = 0;
    test_a1_hs256(keys, &n);
    test_a2_rs256(keys, &n);
    test_a3_es256(keys, &n);
    test_es256_nonce_fresh(keys[n - 2]); /* the A.3 private key */
    test_rfc8037(keys, &n);
    test_rfc7638();
    test_rfc7636_b();
    test_a5_none(keys, n);
    test_export(keys, n);
    test_threads(keys, n);
    for (size_t i = 0; i < n; i++) {
        jwk_free(keys[i]);
    }
    free(md);
    return check_report("test_jws_rfc");
}
