/* crypto/jws.c: see jws.h. */
#include "crypto/jws.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rsa.h>

#include "core/err.h"
#include "crypto/b64url.h"
#include "crypto/hash.h"
#include "crypto/jscan.h"
#include "crypto/jwk_int.h"

#define JWS_ES256_BYTES 64 /* r||s, 32 bytes each: RFC 7518 §3.4 */
#define JWS_ES256_COORD 32
#define JWS_ES256_DER_MAX 72     /* SEQUENCE of two INTEGERs of at most 33 bytes */
#define JWS_ED25519_SIG_BYTES 64 /* RFC 8032 §5.1.6 */
#define JWS_PSS_SALT_BYTES 32    /* RFC 7518 §3.5: salt = hash size, set explicitly */
/* Longest alg name of ours ("RS256", "EdDSA"): a longer one is unknown, not copied. */
#define JWS_ALG_NAME_MAX 15

/* One DER INTEGER for a 32-byte unsigned big-endian value (X.690 §8.3: minimal,
 * a 0x00 prefix when the top bit is set). Returns bytes written. */
static size_t jws_der_integer(const uint8_t v[JWS_ES256_COORD], uint8_t *out)
{
    size_t skip = 0;
    while (skip < JWS_ES256_COORD - 1 && v[skip] == 0) {
        skip++;
    }
    size_t len = JWS_ES256_COORD - skip;
    bool pad = (v[skip] & 0x80) != 0;
    out[0] = 0x02;
    out[1] = (uint8_t)(len + pad);
    out[2] = 0x00;
    memcpy(out + 2 + pad, v + skip, len);
    return 2 + pad + len;
}

/* JOSE r||s to DER for EVP (the caller checked the length is exactly 64 first). */
static size_t jws_es256_to_der(const uint8_t rs[JWS_ES256_BYTES], uint8_t der[JWS_ES256_DER_MAX])
{
    size_t n = 2;
    n += jws_der_integer(rs, der + n);
    n += jws_der_integer(rs + JWS_ES256_COORD, der + n);
    assert(n <= JWS_ES256_DER_MAX);
    der[0] = 0x30;
    der[1] = (uint8_t)(n - 2); /* at most 70: short-form length */
    return n;
}

/* One INTEGER from OpenSSL's DER signature into a left-padded 32-byte field. */
static int jws_der_read_integer(const uint8_t *der, size_t len, size_t *pos, uint8_t out[32])
{
    if (*pos + 2 > len || der[*pos] != 0x02) {
        return -TE_INVAL;
    }
    size_t n = der[*pos + 1];
    const uint8_t *v = der + *pos + 2;
    if (n == 0 || n > JWS_ES256_COORD + 1 || *pos + 2 + n > len) {
        return -TE_INVAL;
    }
    *pos += 2 + n;
    while (n > 0 && v[0] == 0) {
        v++;
        n--;
    }
    if (n > JWS_ES256_COORD) {
        return -TE_INVAL;
    }
    memset(out, 0, JWS_ES256_COORD);
    memcpy(out + JWS_ES256_COORD - n, v, n);
    return 0;
}

static int jws_der_to_es256(const uint8_t *der, size_t len, uint8_t rs[JWS_ES256_BYTES])
{
    if (len < 2 || der[0] != 0x30 || der[1] != len - 2) {
        return -TE_INVAL;
    }
    size_t pos = 2;
    if (jws_der_read_integer(der, len, &pos, rs) < 0 ||
        jws_der_read_integer(der, len, &pos, rs + JWS_ES256_COORD) < 0 || pos != len) {
        return -TE_INVAL;
    }
    return 0;
}

/* Digest-sign/verify context for the key's alg: SHA-256 (none for Ed25519), PSS
 * with MGF1-SHA-256 and a 32-byte salt for PS256 (never "auto" or "max"). */
EVP_MD_CTX *jws_md_ctx_new(const struct jwk_key *key, bool sign)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = key->alg == JWK_ALG_EDDSA ? NULL : EVP_sha256();
    if (ctx == NULL) {
        return NULL;
    }
    int ok = sign ? EVP_DigestSignInit(ctx, &pctx, md, NULL, key->pkey)
                  : EVP_DigestVerifyInit(ctx, &pctx, md, NULL, key->pkey);
    if (ok == 1 && key->alg == JWK_ALG_PS256) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, JWS_PSS_SALT_BYTES) == 1;
    } else if (ok == 1 && key->alg == JWK_ALG_RS256) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    }
    if (ok != 1) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Per-thread signature contexts. OpenSSL 3 spends about as long fetching algorithms in
 * EVP_DigestVerifyInit as verifying an ES256 signature, and copying a per-key template
 * per call (EVP_MD_CTX_copy_ex, then a second EVP_PKEY_CTX_dup inside
 * EVP_DigestVerifyFinal) still cost about 3% of an RS256 jwt_verify (perf/crypto). So
 * each thread keeps, per key, a context set up once and used again and again the way
 * `openssl speed` does: an EVP_PKEY_CTX for EVP_PKEY_sign/verify over a SHA-256 digest
 * computed with the thread's reused EVP_MD_CTX (RSA, ECDSA), or an EVP_MD_CTX for the
 * one-shot EVP_DigestSign/Verify of PureEdDSA (RFC 8032 §5.1). A context is never
 * shared between threads. A slot holds a reference to the key's EVP_PKEY, so while
 * it lives no other key can have that address: (pkey, alg, sign) identifies its key
 * even after the jwk_key is freed. Slots are freed when the thread exits. */
#define JWS_THREAD_SLOTS 16 /* a keyset's KEYSET_KEYS_MAX (8) keys, each to sign and verify */

struct jws_slot {
    const EVP_PKEY *pkey; /* NULL: empty */
    enum jwk_alg alg;
    bool sign;
    EVP_PKEY_CTX *pctx; /* RS256, PS256, ES256 */
    EVP_MD_CTX *mctx;   /* EdDSA */
};

struct jws_thread {
    EVP_MD_CTX *sha256;
    struct jws_slot slots[JWS_THREAD_SLOTS];
    size_t victim; /* round-robin replacement when every slot is taken */
};

static pthread_once_t jws_once = PTHREAD_ONCE_INIT;
static pthread_key_t jws_thread_key;
static EVP_MD *jws_sha256_md; /* fetched once per process; immutable, shared */
static __thread struct jws_thread *jws_thread;

static void jws_slot_clear(struct jws_slot *s)
{
    EVP_PKEY_CTX_free(s->pctx);
    EVP_MD_CTX_free(s->mctx);
    *s = (struct jws_slot){ 0 };
}

static void jws_thread_free(void *arg)
{
    struct jws_thread *t = arg;
    for (size_t i = 0; i < JWS_THREAD_SLOTS; i++) {
        jws_slot_clear(&t->slots[i]);
    }
    EVP_MD_CTX_free(t->sha256);
    free(t);
    jws_thread = NULL;
}

static void jws_init_once(void)
{
    jws_sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&jws_thread_key, jws_thread_free) != 0) {
        EVP_MD_free(jws_sha256_md);
        jws_sha256_md = NULL;
    }
}

static struct jws_thread *jws_thread_get(void)
{
    pthread_once(&jws_once, jws_init_once);
    if (jws_thread != NULL || jws_sha256_md == NULL) {
        return jws_thread;
    }
    struct jws_thread *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->sha256 = EVP_MD_CTX_new()) == NULL ||
        pthread_setspecific(jws_thread_key, t) != 0) {
        if (t != NULL) {
            EVP_MD_CTX_free(t->sha256);
        }
        free(t);
        return NULL;
    }
    jws_thread = t;
    return t;
}

static int jws_slot_init_pkey(const struct jwk_key *key, bool sign, struct jws_slot *s)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    s->pctx = c;
    int ok = c != NULL && (sign ? EVP_PKEY_sign_init(c) : EVP_PKEY_verify_init(c)) == 1;
    if (ok && key->alg == JWK_ALG_PS256) {
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(c, jws_sha256_md) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(c, JWS_PSS_SALT_BYTES) == 1;
    } else if (ok && key->alg == JWK_ALG_RS256) {
        ok = EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1;
    }
    /* The digest is SHA-256 (RFC 7518 §3.3-3.5): RSA checks the DigestInfo, ECDSA the length. */
    ok = ok && EVP_PKEY_CTX_set_signature_md(c, jws_sha256_md) == 1;
    return ok ? 0 : -TE_IO;
}

/* The calling thread's context for key (sign or verify), set up on first use. */
static struct jws_slot *jws_slot_get(const struct jwk_key *key, bool sign)
{
    struct jws_thread *t = jws_thread_get();
    if (t == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < JWS_THREAD_SLOTS; i++) {
        struct jws_slot *s = &t->slots[i];
        if (s->pkey == key->pkey && s->alg == key->alg && s->sign == sign) {
            return s;
        }
    }
    struct jws_slot *s = &t->slots[t->victim];
    t->victim = (t->victim + 1) % JWS_THREAD_SLOTS;
    jws_slot_clear(s);
    int rc;
    if (key->alg == JWK_ALG_EDDSA) {
        s->mctx = EVP_MD_CTX_new();
        rc = s->mctx != NULL &&
                     (sign ? EVP_DigestSignInit_ex(s->mctx, NULL, NULL, NULL, NULL, key->pkey, NULL)
                           : EVP_DigestVerifyInit_ex(s->mctx, NULL, NULL, NULL, NULL, key->pkey,
                                                     NULL)) == 1
                 ? 0
                 : -TE_IO;
    } else {
        rc = jws_slot_init_pkey(key, sign, s);
    }
    if (rc < 0) {
        jws_slot_clear(s);
        return NULL;
    }
    *s = (struct jws_slot){ .pkey = key->pkey, .alg = key->alg, .sign = sign, .pctx = s->pctx,
                            .mctx = s->mctx };
    return s;
}

/* SHA-256 of the signing input with the thread's context (re-initialising a context
 * that already holds the same digest reuses its provider state). */
static int jws_sha256(const void *msg, size_t len, uint8_t out[HASH_SHA256_BYTES])
{
    struct jws_thread *t = jws_thread_get();
    unsigned n = 0;
    if (t == NULL || EVP_DigestInit_ex(t->sha256, jws_sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(t->sha256, msg, len) != 1 || EVP_DigestFinal_ex(t->sha256, out, &n) != 1 ||
        n != HASH_SHA256_BYTES) {
        return -TE_IO;
    }
    return 0;
}

/* Signature check with the thread's context for key; sig as EVP wants it (DER for ECDSA). */
static int jws_verify_evp(const struct jwk_key *key, const void *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len)
{
    struct jws_slot *s = jws_slot_get(key, false);
    uint8_t digest[HASH_SHA256_BYTES];
    if (s == NULL) {
        return -TE_IO;
    }
    if (s->mctx != NULL) {
        return EVP_DigestVerify(s->mctx, sig, sig_len, msg, msg_len) == 1 ? 0 : -TE_INVAL;
    }
    if (jws_sha256(msg, msg_len, digest) < 0) {
        return -TE_IO;
    }
    return EVP_PKEY_verify(s->pctx, sig, sig_len, digest, sizeof(digest)) == 1 ? 0 : -TE_INVAL;
}

static int jws_sign_evp(const struct jwk_key *key, const void *msg, size_t msg_len, uint8_t *sig,
                        size_t *sig_len)
{
    struct jws_slot *s = jws_slot_get(key, true);
    uint8_t digest[HASH_SHA256_BYTES];
    if (s == NULL) {
        return -TE_IO;
    }
    if (s->mctx != NULL) {
        return EVP_DigestSign(s->mctx, sig, sig_len, msg, msg_len) == 1 ? 0 : -TE_IO;
    }
    if (jws_sha256(msg, msg_len, digest) < 0 ||
        EVP_PKEY_sign(s->pctx, sig, sig_len, digest, sizeof(digest)) != 1) {
        return -TE_IO;
    }
    return 0;
}

static int jws_verify_hmac(const struct jwk_key *key, const void *msg, size_t msg_len,
                           const uint8_t *sig, size_t sig_len)
{
    uint8_t tag[HASH_SHA256_BYTES];
    if (sig_len != HASH_SHA256_BYTES) {
        return -TE_INVAL; /* a truncated HS256 tag is never accepted */
    }
    if (hash_hmac_sha256(key->secret, key->secret_len, msg, msg_len, tag) < 0) {
        return -TE_IO;
    }
    return CRYPTO_memcmp(tag, sig, sizeof(tag)) == 0 ? 0 : -TE_INVAL;
}

int jws_verify_bytes(const struct jwk_key *key, const void *msg, size_t msg_len, const uint8_t *sig,
                     size_t sig_len)
{
    assert(key != NULL && (msg != NULL || msg_len == 0) && (sig != NULL || sig_len == 0));
    uint8_t der[JWS_ES256_DER_MAX];
    switch (key->alg) {
    case JWK_ALG_HS256:
        return jws_verify_hmac(key, msg, msg_len, sig, sig_len);
    case JWK_ALG_ES256:
        if (sig_len != JWS_ES256_BYTES) {
            return -TE_INVAL; /* DER or any other length: RFC 7518 §3.4, before conversion */
        }
        sig_len = jws_es256_to_der(sig, der);
        sig = der;
        break;
    case JWK_ALG_EDDSA:
        if (sig_len != JWS_ED25519_SIG_BYTES) {
            return -TE_INVAL;
        }
        break;
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        if (sig_len != (size_t)EVP_PKEY_get_size(key->pkey)) {
            return -TE_INVAL;
        }
        break;
    case JWK_ALG_UNSET:
        return -TE_INVAL;
    }
    return jws_verify_evp(key, msg, msg_len, sig, sig_len);
}

int jws_sign_bytes(const struct jwk_key *key, const void *msg, size_t msg_len, uint8_t *sig,
                   size_t cap)
{
    assert(key != NULL && sig != NULL && (msg != NULL || msg_len == 0));
    if (!key->has_private) {
        return -TE_INVAL;
    }
    if (key->alg == JWK_ALG_HS256) {
        if (cap < HASH_SHA256_BYTES) {
            return -TE_NOMEM;
        }
        int rc = hash_hmac_sha256(key->secret, key->secret_len, msg, msg_len, sig);
        return rc < 0 ? rc : HASH_SHA256_BYTES;
    }
    uint8_t buf[JWS_SIGNATURE_MAX];
    size_t len = sizeof(buf);
    if (jws_sign_evp(key, msg, msg_len, buf, &len) < 0) {
        return -TE_IO;
    }
    if (key->alg == JWK_ALG_ES256) {
        if (cap < JWS_ES256_BYTES) {
            return -TE_NOMEM;
        }
        return jws_der_to_es256(buf, len, sig) < 0 ? -TE_IO : JWS_ES256_BYTES;
    }
    if (cap < len) {
        return -TE_NOMEM;
    }
    memcpy(sig, buf, len);
    return (int)len;
}

int jws_parse(const char *token, size_t len, size_t max_len, uint8_t *buf, size_t cap,
              struct jws_parsed *out)
{
    assert(token != NULL && buf != NULL && out != NULL);
    if (len > max_len) {
        return -TE_INVAL; /* before any decoding or hashing (SECURITY J24) */
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 =
        dot1 == NULL ? NULL : memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        return -TE_INVAL; /* exactly three segments: not JWE (five), not JSON */
    }
    size_t header_b64 = (size_t)(dot1 - token);
    size_t payload_b64 = (size_t)(dot2 - dot1 - 1);
    size_t sig_b64 = len - (size_t)(dot2 + 1 - token);
    if (header_b64 == 0 || sig_b64 == 0) {
        return -TE_INVAL; /* RFC 7515 §5.2: a header is required; "none"-style empty sig */
    }
    int h = b64url_decode(token, header_b64, buf, cap);
    if (h < 0 || h > JWS_HEADER_MAX) {
        return h == -TE_NOMEM ? -TE_NOMEM : -TE_INVAL;
    }
    int p = b64url_decode(dot1 + 1, payload_b64, buf + h, cap - (size_t)h);
    if (p < 0) {
        return p;
    }
    int s = b64url_decode(dot2 + 1, sig_b64, out->signature, sizeof(out->signature));
    if (s < 0) {
        return -TE_INVAL; /* malformed, or longer than any key we hold can produce */
    }
    out->signing_input = slice_make(token, header_b64 + 1 + payload_b64);
    out->header_json = slice_make((const char *)buf, (size_t)h);
    out->payload = slice_make((const char *)buf + h, (size_t)p);
    out->signature_len = (size_t)s;
    return 0;
}

/* An optional bounded string member copied into dst; -TE_INVAL if not a string or
 * too long (jscan refuses \u0000, so no NUL can hide inside). */
static int jws_header_string(const struct jscan_object *obj, const char *name, char *dst,
                             size_t max, bool *present)
{
    const struct jscan_value *v = jscan_get(obj, name);
    size_t n;
    *present = v != NULL;
    if (v == NULL) {
        return 0;
    }
    return jscan_string_copy(v, dst, max, &n);
}

static int jws_header_fields(const struct jscan_object *obj, struct jws_header *out)
{
    const struct jscan_value *alg = jscan_get(obj, "alg");
    char name[JWS_ALG_NAME_MAX + 1];
    size_t n;
    if (alg == NULL || alg->type != JSCAN_STRING) {
        return -TE_INVAL;
    }
    /* Byte-exact, length included: "HS256\u0000" is not "HS256" (RFC 7515 §4.1.1); a
     * longer name is none of ours and stays JWK_ALG_UNSET. */
    if (jscan_string_copy(alg, name, JWS_ALG_NAME_MAX, &n) == 0) {
        out->alg = jwk_alg_parse(slice_make(name, n));
    }
    if (jscan_get(obj, "crit") != NULL || jscan_get(obj, "b64") != NULL ||
        jscan_get(obj, "zip") != NULL) {
        return -TE_INVAL;
    }
    if (jws_header_string(obj, "kid", out->kid, JWK_KID_MAX, &out->has_kid) < 0 ||
        (out->has_kid && !jwk_kid_valid(slice_make(out->kid, strlen(out->kid))))) {
        return -TE_INVAL;
    }
    if (jws_header_string(obj, "typ", out->typ, JWS_TYP_MAX, &out->has_typ) < 0 ||
        jws_header_string(obj, "cty", out->cty, JWS_TYP_MAX, &out->has_cty) < 0) {
        return -TE_INVAL;
    }
    return 0;
}

int jws_header_parse(struct slice header_json, struct jws_header *out)
{
    assert(out != NULL);
    memset(out, 0, sizeof(*out));
    if (header_json.len == 0 || header_json.len > JWS_HEADER_MAX) {
        return -TE_INVAL;
    }
    struct jscan_object obj;
    if (jscan_object(header_json.ptr, header_json.len, &obj) < 0) {
        return -TE_INVAL; /* duplicates, malformed JSON, not an object (SECURITY J20, J21) */
    }
    return jws_header_fields(&obj, out);
}

int jws_verify_parsed(const struct jwk_key *key, const struct jws_parsed *parsed,
                      const struct jws_header *header)
{
    assert(key != NULL && parsed != NULL && header != NULL);
    if (header->alg == JWK_ALG_UNSET || header->alg != key->alg) {
        return -TE_INVAL; /* the key decides the algorithm (RFC 8725 §3.1) */
    }
    return jws_verify_bytes(key, parsed->signing_input.ptr, parsed->signing_input.len,
                            parsed->signature, parsed->signature_len);
}

int jws_verify(const struct jwk_key *key, const char *token, size_t len, uint8_t *buf, size_t cap,
               struct jws_parsed *out)
{
    struct jws_header header;
    int rc = jws_parse(token, len, JWS_TOKEN_MAX, buf, cap, out);
    if (rc == 0) {
        rc = jws_header_parse(out->header_json, &header);
    }
    if (rc == 0) {
        rc = jws_verify_parsed(key, out, &header);
    }
    return rc;
}

int jws_sign(const struct jwk_key *key, struct slice header_json, const uint8_t *payload,
             size_t payload_len, char *out, size_t cap)
{
    assert(key != NULL && out != NULL && (payload != NULL || payload_len == 0));
    struct jws_header header;
    if (jws_header_parse(header_json, &header) < 0 || header.alg != key->alg) {
        return -TE_INVAL;
    }
    return jws_sign_built(key, header_json, payload, payload_len, out, cap);
}

int jws_sign_built(const struct jwk_key *key, struct slice header_json, const uint8_t *payload,
                   size_t payload_len, char *out, size_t cap)
{
    assert(key != NULL && out != NULL && (payload != NULL || payload_len == 0));
    int h = b64url_encode((const uint8_t *)header_json.ptr, header_json.len, out, cap);
    if (h < 0 || (size_t)h + 1 >= cap) {
        return -TE_NOMEM;
    }
    out[h] = '.';
    size_t n = (size_t)h + 1;
    int p = b64url_encode(payload, payload_len, out + n, cap - n);
    if (p < 0 || n + (size_t)p + 1 >= cap) {
        return p == -TE_INVAL ? p : -TE_NOMEM;
    }
    n += (size_t)p;
    uint8_t sig[JWS_SIGNATURE_MAX];
    int s = jws_sign_bytes(key, out, n, sig, sizeof(sig));
    if (s < 0) {
        return s;
    }
    out[n++] = '.';
    int e = b64url_encode(sig, (size_t)s, out + n, cap - n);
    if (e < 0) {
        return -TE_NOMEM;
    }
    return (int)(n + (size_t)e);
}
