/* crypto/jwk.c: see jwk.h. Key material enters through OpenSSL 3's EVP_PKEY_fromdata
 * and is checked before a key object exists; everything after import is formatting. */
#include "crypto/jwk.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>

#include "core/err.h"
#include "crypto/ct.h"
#include "crypto/jwk_int.h"

#define JWK_EC_COORD_BYTES 32 /* P-256 field element, RFC 7518 §6.2.1.2 */
#define JWK_ED25519_BYTES 32  /* RFC 8037 §2 */
#define JWK_RSA_E_BITS_MAX 32 /* e = 65537 in practice; a huge e only slows verification */
/* Thumbprint input: the longest is RSA-4096 ({"e":..,"kty":"RSA","n":..}). */
#define JWK_THUMB_INPUT_MAX (2 * JWK_MEMBER_B64_MAX + 64)

static const char *const jwk_alg_names[] = {
    [JWK_ALG_UNSET] = NULL,    [JWK_ALG_RS256] = "RS256", [JWK_ALG_PS256] = "PS256",
    [JWK_ALG_ES256] = "ES256", [JWK_ALG_EDDSA] = "EdDSA", [JWK_ALG_HS256] = "HS256",
};

const char *jwk_alg_name(enum jwk_alg alg)
{
    assert(alg >= JWK_ALG_UNSET && alg <= JWK_ALG_HS256);
    return jwk_alg_names[alg];
}

enum jwk_alg jwk_alg_parse(struct slice name)
{
    for (int a = JWK_ALG_RS256; a <= JWK_ALG_HS256; a++) {
        if (slice_eq_cstr(name, jwk_alg_names[a])) {
            return (enum jwk_alg)a;
        }
    }
    return JWK_ALG_UNSET;
}

/* A string member: 1 if absent, 0 and *out if a string without NUL, -TE_INVAL else. */
static int jwk_member_string(const json_t *obj, const char *name, struct slice *out)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL) {
        return 1;
    }
    if (!json_is_string(v)) {
        return -TE_INVAL;
    }
    *out = slice_make(json_string_value(v), json_string_length(v));
    if (memchr(out->ptr, '\0', out->len) != NULL) {
        return -TE_INVAL;
    }
    return 0;
}

/* A required base64url member decoded into buf; *len gets its size. */
static int jwk_member_bytes(const json_t *obj, const char *name, uint8_t *buf, size_t cap,
                            size_t *len)
{
    struct slice s;
    if (jwk_member_string(obj, name, &s) != 0) {
        return -TE_INVAL;
    }
    int n = b64url_decode(s.ptr, s.len, buf, cap);
    if (n < 0) {
        return -TE_INVAL;
    }
    *len = (size_t)n;
    return 0;
}

/* kid: printable ASCII, 1..JWK_KID_MAX bytes: it is a map key, and may be logged. */
bool jwk_kid_valid(struct slice kid)
{
    if (kid.len == 0 || kid.len > JWK_KID_MAX) {
        return false;
    }
    for (size_t i = 0; i < kid.len; i++) {
        unsigned char c = (unsigned char)kid.ptr[i];
        if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

/* ROCA (CVE-2017-15361): Infineon moduli satisfy n mod p ∈ <65537> (mod p) for every
 * small prime p; a random modulus fails that for some p with overwhelming probability. */
static bool jwk_rsa_is_roca(const BIGNUM *n)
{
    static const unsigned primes[] = { 3,   5,   7,   11,  13,  17,  19,  23,  29,  31,
                                       37,  41,  43,  47,  53,  59,  61,  67,  71,  73,
                                       79,  83,  89,  97,  101, 103, 107, 109, 113, 127,
                                       131, 137, 139, 149, 151, 157, 163, 167 };
    for (size_t i = 0; i < sizeof(primes) / sizeof(primes[0]); i++) {
        unsigned p = primes[i];
        bool in_group[168] = { false };
        unsigned g = 65537 % p;
        unsigned x = 1;
        do {
            in_group[x] = true;
            x = x * g % p;
        } while (x != 1);
        BN_ULONG r = BN_mod_word(n, p);
        if (r == (BN_ULONG)-1 || !in_group[r]) {
            return false;
        }
    }
    return true;
}

/* Turns an OSSL_PARAM_BLD into a key of the given type; frees nothing of the caller's. */
static int jwk_fromdata(const char *type, OSSL_PARAM_BLD *bld, bool private, EVP_PKEY **out)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    int rc = -TE_INVAL;
    *out = NULL;
    if (params != NULL && ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, out, private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) ==
            1) {
        rc = 0;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return rc;
}

/* Public checks OpenSSL can do (EC point on the curve) and, with a private part, the
 * pairwise check that it belongs to the public part. */
static int jwk_check_pkey(EVP_PKEY *pkey, bool public_check, bool private)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL) {
        return -TE_NOMEM;
    }
    int ok = 1;
    if (public_check) {
        ok = EVP_PKEY_public_check(ctx) == 1;
    }
    if (ok && private) {
        ok = EVP_PKEY_pairwise_check(ctx) == 1;
    }
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : -TE_INVAL;
}

static int jwk_rsa_push(OSSL_PARAM_BLD *bld, const json_t *obj, const char *member,
                        const char *param, BIGNUM **bn)
{
    uint8_t buf[JWK_RSA_BITS_MAX / 8];
    size_t len;
    if (jwk_member_bytes(obj, member, buf, sizeof(buf), &len) < 0 || len == 0) {
        return -TE_INVAL;
    }
    *bn = BN_secure_new();
    if (*bn == NULL || BN_bin2bn(buf, (int)len, *bn) == NULL) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return -TE_NOMEM;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return OSSL_PARAM_BLD_push_BN(bld, param, *bn) == 1 ? 0 : -TE_NOMEM;
}

/* RFC 7518 §6.3: n and e, and for a private key all of d p q dp dq qi. */
static int jwk_rsa_import(const json_t *obj, struct jwk_key *key)
{
    static const char *const members[] = { "n", "e", "d", "p", "q", "dp", "dq", "qi" };
    static const char *const params[] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    BIGNUM *bn[8] = { NULL };
    bool private = json_object_get(obj, "d") != NULL;
    size_t count = private ? 8 : 2;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    int rc = bld == NULL ? -TE_NOMEM : 0;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        rc = jwk_rsa_push(bld, obj, members[i], params[i], &bn[i]);
    }
    if (rc == 0) {
        int bits = BN_num_bits(bn[0]);
        bool e_ok =
            BN_is_odd(bn[1]) && !BN_is_one(bn[1]) && BN_num_bits(bn[1]) <= JWK_RSA_E_BITS_MAX;
        if (bits < JWK_RSA_BITS_MIN || bits > JWK_RSA_BITS_MAX || !BN_is_odd(bn[0]) || !e_ok ||
            jwk_rsa_is_roca(bn[0])) {
            rc = -TE_INVAL;
        }
    }
    if (rc == 0) {
        rc = jwk_fromdata("RSA", bld, private, &key->pkey);
    }
    if (rc == 0 && private) {
        rc = jwk_check_pkey(key->pkey, false, true);
    }
    key->has_private = private;
    OSSL_PARAM_BLD_free(bld);
    for (size_t i = 0; i < 8; i++) {
        BN_clear_free(bn[i]);
    }
    return rc;
}

/* RFC 7518 §6.2: crv P-256 only, x and y exactly 32 bytes, d exactly 32 bytes. */
static int jwk_ec_import(const json_t *obj, struct jwk_key *key)
{
    struct slice crv;
    uint8_t point[1 + 2 * JWK_EC_COORD_BYTES];
    uint8_t d[JWK_EC_COORD_BYTES];
    size_t xl;
    size_t yl;
    size_t dl = 0;
    if (jwk_member_string(obj, "crv", &crv) != 0 || !slice_eq_cstr(crv, "P-256") ||
        jwk_member_bytes(obj, "x", point + 1, JWK_EC_COORD_BYTES, &xl) < 0 ||
        jwk_member_bytes(obj, "y", point + 1 + JWK_EC_COORD_BYTES, JWK_EC_COORD_BYTES, &yl) < 0 ||
        xl != JWK_EC_COORD_BYTES || yl != JWK_EC_COORD_BYTES) {
        return -TE_INVAL;
    }
    bool private = json_object_get(obj, "d") != NULL;
    if (private && (jwk_member_bytes(obj, "d", d, sizeof(d), &dl) < 0 || dl != sizeof(d))) {
        return -TE_INVAL;
    }
    point[0] = 0x04; /* uncompressed, SEC 1 §2.3.3 */
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *dbn = private ? BN_secure_new() : NULL;
    int rc = -TE_NOMEM;
    if (bld != NULL && (!private || (dbn != NULL && BN_bin2bn(d, (int)dl, dbn) != NULL)) &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)) &&
        (!private || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, dbn))) {
        rc = jwk_fromdata("EC", bld, private, &key->pkey);
    }
    if (rc == 0) {
        rc = jwk_check_pkey(key->pkey, true, private);
    }
    key->has_private = private;
    OPENSSL_cleanse(d, sizeof(d));
    BN_clear_free(dbn);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

/* RFC 8037 §2: crv Ed25519, x 32 bytes; with d, x must be d's public key. */
static int jwk_okp_import(const json_t *obj, struct jwk_key *key)
{
    struct slice crv;
    uint8_t x[JWK_ED25519_BYTES];
    uint8_t d[JWK_ED25519_BYTES];
    uint8_t derived[JWK_ED25519_BYTES];
    size_t xl;
    size_t dl;
    size_t derived_len = sizeof(derived);
    if (jwk_member_string(obj, "crv", &crv) != 0 || !slice_eq_cstr(crv, "Ed25519") ||
        jwk_member_bytes(obj, "x", x, sizeof(x), &xl) < 0 || xl != sizeof(x)) {
        return -TE_INVAL;
    }
    key->has_private = json_object_get(obj, "d") != NULL;
    if (!key->has_private) {
        key->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof(x));
        return key->pkey != NULL ? 0 : -TE_INVAL;
    }
    if (jwk_member_bytes(obj, "d", d, sizeof(d), &dl) < 0 || dl != sizeof(d)) {
        return -TE_INVAL;
    }
    key->pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, sizeof(d));
    OPENSSL_cleanse(d, sizeof(d));
    if (key->pkey == NULL || EVP_PKEY_get_raw_public_key(key->pkey, derived, &derived_len) != 1 ||
        derived_len != sizeof(x) || memcmp(derived, x, sizeof(x)) != 0) {
        return -TE_INVAL;
    }
    return 0;
}

/* RFC 7518 §6.4 and §3.2: k of at least 32 bytes. */
static int jwk_oct_import(const json_t *obj, struct jwk_key *key)
{
    size_t len;
    if (jwk_member_bytes(obj, "k", key->secret, sizeof(key->secret), &len) < 0 ||
        len < JWK_HMAC_KEY_MIN) {
        return -TE_INVAL;
    }
    key->secret_len = len;
    key->has_private = true;
    return 0;
}

/* The kty each algorithm needs (RFC 7518 §3.1 with §6.1). */
static const char *jwk_alg_kty(enum jwk_alg alg)
{
    switch (alg) {
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        return "RSA";
    case JWK_ALG_ES256:
        return "EC";
    case JWK_ALG_EDDSA:
        return "OKP";
    case JWK_ALG_HS256:
        return "oct";
    case JWK_ALG_UNSET:
        break;
    }
    return NULL;
}

/* key_ops (RFC 7517 §4.3), when present: a non-empty array of "sign"/"verify". */
static int jwk_check_key_ops(const json_t *obj)
{
    const json_t *ops = json_object_get(obj, "key_ops");
    if (ops == NULL) {
        return 0;
    }
    if (!json_is_array(ops) || json_array_size(ops) == 0) {
        return -TE_INVAL;
    }
    for (size_t i = 0; i < json_array_size(ops); i++) {
        const json_t *op = json_array_get(ops, i);
        if (!json_is_string(op) || (strcmp(json_string_value(op), "sign") != 0 &&
                                    strcmp(json_string_value(op), "verify") != 0)) {
            return -TE_INVAL;
        }
    }
    return 0;
}

/* alg, use, key_ops and kid: the members that decide what the key may do. */
static int jwk_import_policy(const json_t *obj, enum jwk_alg expect, struct jwk_key *key)
{
    struct slice s;
    int rc = jwk_member_string(obj, "alg", &s);
    if (rc < 0) {
        return rc;
    }
    enum jwk_alg alg = expect;
    if (rc == 0) {
        alg = jwk_alg_parse(s);
        if (alg == JWK_ALG_UNSET || (expect != JWK_ALG_UNSET && alg != expect)) {
            return -TE_INVAL;
        }
    }
    if (alg == JWK_ALG_UNSET) {
        return -TE_INVAL; /* a key carries exactly one alg (RFC 8725 §3.1) */
    }
    if (jwk_member_string(obj, "kty", &s) != 0 || !slice_eq_cstr(s, jwk_alg_kty(alg))) {
        return -TE_INVAL;
    }
    rc = jwk_member_string(obj, "use", &s);
    if (rc < 0 || (rc == 0 && !slice_eq_cstr(s, "sig"))) {
        return -TE_INVAL; /* RFC 7517 §4.2: an "enc" key never verifies a signature */
    }
    if (jwk_check_key_ops(obj) < 0) {
        return -TE_INVAL;
    }
    rc = jwk_member_string(obj, "kid", &s);
    if (rc < 0 || (rc == 0 && !jwk_kid_valid(s))) {
        return -TE_INVAL;
    }
    if (rc == 0) {
        memcpy(key->kid, s.ptr, s.len);
        key->kid[s.len] = '\0';
    }
    key->alg = alg;
    return 0;
}

static int jwk_b64_member(const uint8_t *bytes, size_t len, char *out)
{
    int n = b64url_encode(bytes, len, out, JWK_MEMBER_B64_MAX);
    if (n < 0) {
        return n;
    }
    out[n] = '\0';
    return 0;
}

static int jwk_bn_member(const EVP_PKEY *pkey, const char *param, size_t pad, char *out)
{
    uint8_t buf[JWK_RSA_BITS_MAX / 8];
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) {
        return -TE_INVAL;
    }
    int n = pad > 0 ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    if (n < 0 || (size_t)n > sizeof(buf)) {
        return -TE_INVAL;
    }
    return jwk_b64_member(buf, (size_t)n, out);
}

/* pub1/pub2 from what OpenSSL holds (minimal big-endian integers, RFC 7518 §6.3.1.1). */
static int jwk_fill_public(struct jwk_key *key)
{
    uint8_t raw[JWK_ED25519_BYTES];
    size_t raw_len = sizeof(raw);
    key->pub2[0] = '\0';
    switch (key->alg) {
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        if (jwk_bn_member(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0, key->pub1) < 0) {
            return -TE_INVAL;
        }
        return jwk_bn_member(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0, key->pub2);
    case JWK_ALG_ES256:
        if (jwk_bn_member(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, JWK_EC_COORD_BYTES, key->pub1) < 0) {
            return -TE_INVAL;
        }
        return jwk_bn_member(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, JWK_EC_COORD_BYTES, key->pub2);
    case JWK_ALG_EDDSA:
        if (EVP_PKEY_get_raw_public_key(key->pkey, raw, &raw_len) != 1 || raw_len != sizeof(raw)) {
            return -TE_INVAL;
        }
        return jwk_b64_member(raw, raw_len, key->pub1);
    case JWK_ALG_HS256:
        return jwk_b64_member(key->secret, key->secret_len, key->pub1);
    case JWK_ALG_UNSET:
        break;
    }
    return -TE_INVAL;
}

/* RFC 7638 §3.2: required members only, lexicographic order, no whitespace. */
static int jwk_fill_thumbprint(struct jwk_key *key)
{
    char input[JWK_THUMB_INPUT_MAX];
    int n;
    switch (key->alg) {
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        n = snprintf(input, sizeof(input), "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", key->pub2,
                     key->pub1);
        break;
    case JWK_ALG_ES256:
        n = snprintf(input, sizeof(input),
                     "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", key->pub1,
                     key->pub2);
        break;
    case JWK_ALG_EDDSA:
        n = snprintf(input, sizeof(input), "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}",
                     key->pub1);
        break;
    default:
        n = snprintf(input, sizeof(input), "{\"k\":\"%s\",\"kty\":\"oct\"}", key->pub1);
        break;
    }
    assert(n > 0 && (size_t)n < sizeof(input));
    uint8_t digest[32];
    unsigned digest_len = 0;
    int rc = -TE_INVAL;
    if (EVP_Digest(input, (size_t)n, digest, &digest_len, EVP_sha256(), NULL) == 1) {
        rc = b64url_encode(digest, digest_len, key->thumbprint, JWK_THUMBPRINT_LEN);
    }
    OPENSSL_cleanse(input, sizeof(input)); /* an oct key's input holds the secret */
    if (rc != JWK_THUMBPRINT_LEN) {
        return -TE_INVAL;
    }
    key->thumbprint[JWK_THUMBPRINT_LEN] = '\0';
    if (key->kid[0] == '\0') {
        memcpy(key->kid, key->thumbprint, JWK_THUMBPRINT_LEN + 1);
    }
    return 0;
}

/* The contexts every jws_verify_bytes / jws_sign_bytes copies (immutable after import). */
static int jwk_prepare_verify(struct jwk_key *key)
{
    if (key->alg == JWK_ALG_HS256) {
        return 0;
    }
    key->verify_template = jws_md_ctx_new(key, false);
    if (key->has_private) {
        key->sign_template = jws_md_ctx_new(key, true);
    }
    bool ok = key->verify_template != NULL && (!key->has_private || key->sign_template != NULL);
    return ok ? 0 : -TE_IO;
}

/* What every key needs once its material is in place, whether imported or generated:
 * its public JWK, its RFC 7638 thumbprint (the kid), and proof that OpenSSL accepts it. */
static int jwk_complete(struct jwk_key *key)
{
    int rc = jwk_fill_public(key);
    if (rc == 0)
        rc = jwk_fill_thumbprint(key);
    if (rc == 0)
        rc = jwk_prepare_verify(key);
    return rc;
}

static int jwk_import_object(const json_t *obj, enum jwk_alg expect, struct jwk_key *key)
{
    int rc = jwk_import_policy(obj, expect, key);
    if (rc < 0) {
        return rc;
    }
    switch (key->alg) {
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        rc = jwk_rsa_import(obj, key);
        break;
    case JWK_ALG_ES256:
        rc = jwk_ec_import(obj, key);
        break;
    case JWK_ALG_EDDSA:
        rc = jwk_okp_import(obj, key);
        break;
    default:
        rc = jwk_oct_import(obj, key);
        break;
    }
    if (rc == 0)
        rc = jwk_complete(key);
    return rc;
}

int jwk_import(const char *json, size_t len, enum jwk_alg expect, struct jwk_key **out)
{
    assert(json != NULL && out != NULL);
    *out = NULL;
    if (len > JWK_JSON_MAX) {
        return -TE_INVAL;
    }
    json_t *obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return -TE_INVAL;
    }
    struct jwk_key *key = calloc(1, sizeof(*key));
    int rc = key == NULL ? -TE_NOMEM : jwk_import_object(obj, expect, key);
    json_decref(obj);
    if (rc < 0) {
        jwk_free(key);
        return rc;
    }
    *out = key;
    return 0;
}

static EVP_PKEY *jwk_generate_pkey(enum jwk_alg alg, unsigned rsa_bits)
{
    if (alg == JWK_ALG_ES256) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    if (alg == JWK_ALG_EDDSA) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }
    if (rsa_bits < JWK_RSA_BITS_MIN || rsa_bits > JWK_RSA_BITS_MAX) {
        return NULL;
    }
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)rsa_bits);
}

int jwk_generate(enum jwk_alg alg, unsigned rsa_bits, struct jwk_key **out)
{
    assert(out != NULL);
    *out = NULL;
    if (alg == JWK_ALG_UNSET || jwk_alg_name(alg) == NULL) {
        return -TE_INVAL;
    }
    struct jwk_key *key = calloc(1, sizeof(*key));
    if (key == NULL) {
        return -TE_NOMEM;
    }
    key->alg = alg;
    key->has_private = true;
    int rc = 0;
    if (alg == JWK_ALG_HS256) {
        key->secret_len = JWK_HMAC_KEY_MIN;
        rc = ct_random_bytes(key->secret, key->secret_len);
    } else {
        key->pkey = jwk_generate_pkey(alg, rsa_bits);
        rc = key->pkey != NULL ? 0 : -TE_INVAL;
    }
    if (rc == 0)
        rc = jwk_complete(key);
    if (rc < 0) {
        jwk_free(key);
        return rc;
    }
    *out = key;
    return 0;
}

void jwk_free(struct jwk_key *key)
{
    if (key == NULL) {
        return;
    }
    EVP_MD_CTX_free(key->verify_template);
    EVP_MD_CTX_free(key->sign_template);
    EVP_PKEY_free(key->pkey);
    OPENSSL_cleanse(key, sizeof(*key));
    free(key);
}

enum jwk_alg jwk_key_alg(const struct jwk_key *key)
{
    return key->alg;
}

bool jwk_has_private(const struct jwk_key *key)
{
    return key->has_private;
}

bool jwk_is_symmetric(const struct jwk_key *key)
{
    return key->alg == JWK_ALG_HS256;
}

const char *jwk_kid(const struct jwk_key *key)
{
    return key->kid;
}

const char *jwk_thumbprint(const struct jwk_key *key)
{
    return key->thumbprint;
}

static void jwk_append_member(struct buf *out, const char *name, const char *value)
{
    buf_append_cstr(out, ",\"");
    buf_append_cstr(out, name);
    buf_append_cstr(out, "\":");
    buf_append_json_string(out, slice_make(value, strlen(value)));
}

/* kty, use, alg, kid and the public members (for an HS256 key: k). */
static void jwk_append_public(const struct jwk_key *key, struct buf *out)
{
    buf_append_cstr(out, "{\"kty\":");
    buf_append_json_string(out, slice_make(jwk_alg_kty(key->alg), strlen(jwk_alg_kty(key->alg))));
    jwk_append_member(out, "use", "sig");
    jwk_append_member(out, "alg", jwk_alg_name(key->alg));
    jwk_append_member(out, "kid", key->kid);
    if (key->alg == JWK_ALG_RS256 || key->alg == JWK_ALG_PS256) {
        jwk_append_member(out, "n", key->pub1);
        jwk_append_member(out, "e", key->pub2);
    } else if (key->alg == JWK_ALG_ES256) {
        jwk_append_member(out, "crv", "P-256");
        jwk_append_member(out, "x", key->pub1);
        jwk_append_member(out, "y", key->pub2);
    } else if (key->alg == JWK_ALG_EDDSA) {
        jwk_append_member(out, "crv", "Ed25519");
        jwk_append_member(out, "x", key->pub1);
    } else {
        jwk_append_member(out, "k", key->pub1);
    }
}

int jwk_export_public(const struct jwk_key *key, struct buf *out)
{
    assert(key != NULL && out != NULL);
    if (jwk_is_symmetric(key)) {
        return -TE_INVAL; /* an HS256 secret is never published */
    }
    jwk_append_public(key, out);
    buf_append_cstr(out, "}");
    return out->overflow ? -TE_NOMEM : 0;
}

/* Appends one private member from raw bytes; wipes the base64url copy. */
static void jwk_append_secret(struct buf *out, const char *name, const uint8_t *raw, size_t len,
                              bool *ok)
{
    char b64[JWK_MEMBER_B64_MAX + 1];
    int n = b64url_encode(raw, len, b64, JWK_MEMBER_B64_MAX);
    if (n < 0) {
        *ok = false;
        return;
    }
    b64[n] = '\0';
    jwk_append_member(out, name, b64);
    OPENSSL_cleanse(b64, sizeof(b64));
}

/* Appends a private BIGNUM parameter (pad > 0: fixed width), wiping every copy. */
static void jwk_append_private_bn(struct buf *out, const EVP_PKEY *pkey, const char *name,
                                  const char *param, size_t pad, bool *ok)
{
    uint8_t raw[JWK_RSA_BITS_MAX / 8];
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1 || (size_t)BN_num_bytes(bn) > sizeof(raw) ||
        pad > sizeof(raw)) {
        BN_clear_free(bn);
        *ok = false;
        return;
    }
    int n = pad > 0 ? BN_bn2binpad(bn, raw, (int)pad) : BN_bn2bin(bn, raw);
    BN_clear_free(bn);
    if (n < 0) {
        *ok = false;
    } else {
        jwk_append_secret(out, name, raw, (size_t)n, ok);
    }
    OPENSSL_cleanse(raw, sizeof(raw));
}

static void jwk_append_private(const struct jwk_key *key, struct buf *out, bool *ok)
{
    static const char *const rsa_names[] = { "d", "p", "q", "dp", "dq", "qi" };
    static const char *const rsa_params[] = {
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    uint8_t raw[JWK_ED25519_BYTES];
    size_t raw_len = sizeof(raw);
    switch (key->alg) {
    case JWK_ALG_RS256:
    case JWK_ALG_PS256:
        for (size_t i = 0; i < 6; i++) {
            jwk_append_private_bn(out, key->pkey, rsa_names[i], rsa_params[i], 0, ok);
        }
        break;
    case JWK_ALG_ES256:
        jwk_append_private_bn(out, key->pkey, "d", OSSL_PKEY_PARAM_PRIV_KEY, JWK_EC_COORD_BYTES,
                              ok);
        break;
    case JWK_ALG_EDDSA:
        *ok = EVP_PKEY_get_raw_private_key(key->pkey, raw, &raw_len) == 1 && raw_len == sizeof(raw);
        if (*ok) {
            jwk_append_secret(out, "d", raw, raw_len, ok);
        }
        OPENSSL_cleanse(raw, sizeof(raw));
        break;
    default:
        break; /* HS256: k is already among the members */
    }
}

int jwk_export_private(const struct jwk_key *key, struct buf *out)
{
    assert(key != NULL && out != NULL);
    if (!key->has_private) {
        return -TE_INVAL;
    }
    bool ok = true;
    jwk_append_public(key, out);
    jwk_append_private(key, out, &ok);
    buf_append_cstr(out, "}");
    if (!ok) {
        return -TE_IO;
    }
    return out->overflow ? -TE_NOMEM : 0;
}

int jwk_set_render(const struct jwk_key *const *keys, size_t n, struct buf *out)
{
    assert(keys != NULL || n == 0);
    buf_append_cstr(out, "{\"keys\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0) {
            buf_append_cstr(out, ",");
        }
        int rc = jwk_export_public(keys[i], out);
        if (rc < 0) {
            return rc;
        }
    }
    buf_append_cstr(out, "]}");
    return out->overflow ? -TE_NOMEM : 0;
}
