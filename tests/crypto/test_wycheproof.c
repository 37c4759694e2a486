/* tests/crypto/test_wycheproof.c: every applicable Project Wycheproof file, in full
 * (vectors/README.md): RSA PKCS#1 v1.5 2048/SHA-256, RSA-PSS 2048/SHA-256/MGF1/32,
 * ECDSA P-256/SHA-256 in P1363 (JOSE) form, Ed25519, HMAC-SHA-256, and the two JOSE
 * files (JWS attacks, JWK key sets). Each valid case must be accepted, each invalid
 * one rejected; the one acceptable case (RSA tcId 8, DigestInfo without NULL) must be
 * rejected. The JOSE files' label disagreements under Tessera's rules are explicit
 * override tables that must match exactly. AES-GCM (the sealing cipher) runs every
 * case through EVP: valid ones decrypt and re-encrypt to the same ciphertext and tag,
 * invalid ones fail to decrypt; zero-length IVs are refused; the 3 cases with a 2056-bit
 * IV (over OpenSSL's 1024-bit maximum, never used by Tessera) are counted as skipped.
 * Every file must run at least one case. */
#include <jansson.h>
#include <string.h>

#include "core/err.h"
#include "crypto/ct.h"
#include "crypto/hash.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "crypto/keyset.h"
#include "crypto/seal.h"
#include "crypto/b64url.h"
#include "tests/crypto/check.h"
#include "tests/crypto/vectors.h"

struct tally {
    const char *file;
    int run;
    int valid;
    int invalid;
    int acceptable;
    int overridden;
    int failed;
};

static json_t *load(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "wycheproof/%s", name);
    size_t len;
    char *text = vectors_read(rel, &len);
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    free(text);
    if (root == NULL) {
        fprintf(stderr, "%s: %s\n", name, err.text);
        exit(1);
    }
    return root;
}

/* Hex member to a malloc'd buffer (at least 1 byte allocated). */
static uint8_t *hex_member(const json_t *obj, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(obj, name));
    size_t cap = s == NULL ? 0 : strlen(s) / 2;
    uint8_t *out = malloc(cap + 1);
    *len = s == NULL ? 0 : vectors_hex(s, out, cap);
    if (s == NULL || *len == (size_t)-1) {
        fprintf(stderr, "bad hex member %s\n", name);
        exit(1);
    }
    return out;
}

/* A JWK given as an object (or a Python-repr string in older files: not these). */
static struct jwk_key *import_json(const json_t *jwk, enum jwk_alg alg)
{
    char *text = json_dumps(jwk, JSON_COMPACT);
    struct jwk_key *key = NULL;
    if (text != NULL && jwk_import(text, strlen(text), alg, &key) < 0) {
        key = NULL;
    }
    free(text);
    return key;
}

/* Sizes are numbers in some schemas and strings in others. */
static long long num_member(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_integer(v) ? json_integer_value(v) : atoll(json_string_value(v));
}

static void record(struct tally *t, const json_t *test, bool accepted, bool expect)
{
    const char *result = json_string_value(json_object_get(test, "result"));
    t->run++;
    t->valid += strcmp(result, "valid") == 0;
    t->invalid += strcmp(result, "invalid") == 0;
    t->acceptable += strcmp(result, "acceptable") == 0;
    if (accepted != expect) {
        t->failed++;
        fprintf(stderr, "%s tcId %lld (%s, %s): %s\n", t->file,
                json_integer_value(json_object_get(test, "tcId")), result,
                json_string_value(json_object_get(test, "comment")),
                accepted ? "accepted" : "rejected");
    }
}

static void report(struct tally *t)
{
    printf("%-42s %4d cases: %3d valid, %3d invalid, %d acceptable, %2d overridden, %d failed\n",
           t->file, t->run, t->valid, t->invalid, t->acceptable, t->overridden, t->failed);
    CHECK(t->run > 0);
    CHECK(t->failed == 0);
}

/* The group's JWK; a few ECDSA groups carry only the uncompressed point (wx, wy). */
static struct jwk_key *group_public_key(const json_t *group, const char *member, enum jwk_alg alg)
{
    const json_t *jwk = json_object_get(group, member);
    if (jwk != NULL) {
        return import_json(jwk, alg);
    }
    const json_t *pk = json_object_get(group, "publicKey");
    uint8_t coord[2][32];
    char b64[2][44];
    const char *names[2] = { "wx", "wy" };
    for (int i = 0; i < 2; i++) {
        const char *hex = json_string_value(json_object_get(pk, names[i]));
        if (hex == NULL || vectors_hex(hex, coord[i], 32) != 32) {
            return NULL;
        }
        b64[i][b64url_encode(coord[i], 32, b64[i], 43)] = '\0';
    }
    char text[256];
    snprintf(text, sizeof(text), "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
             b64[0], b64[1]);
    struct jwk_key *key = NULL;
    return jwk_import(text, strlen(text), alg, &key) == 0 ? key : NULL;
}

/* RSA, PSS, ECDSA, Ed25519 primitive files: publicKeyJwk (keyJwk for RSA) + msg + sig. */
static void run_signature_file(const char *name, const char *jwk_member, enum jwk_alg alg)
{
    struct tally t = { .file = name };
    json_t *root = load(name);
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(root, "testGroups"), gi, group)
    {
        struct jwk_key *key = group_public_key(group, jwk_member, alg);
        CHECK(key != NULL); /* every group's key is a valid key */
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            size_t msg_len;
            size_t sig_len;
            uint8_t *msg = hex_member(test, "msg", &msg_len);
            uint8_t *sig = hex_member(test, "sig", &sig_len);
            bool ok = key != NULL && jws_verify_bytes(key, msg, msg_len, sig, sig_len) == 0;
            /* valid: accept; invalid and acceptable (RSA tcId 8, OpenSSL 3 rejects): reject */
            record(&t, test, ok,
                   strcmp(json_string_value(json_object_get(test, "result")), "valid") == 0);
            free(msg);
            free(sig);
        }
        jwk_free(key);
    }
    json_decref(root);
    report(&t);
}

/* HMAC-SHA-256 as a primitive: full MAC, first tagSize/8 bytes compared in constant time.
 * Where the key is >= 32 bytes and the tag full-size, the HS256 JWS key must agree; a
 * key under 32 bytes must be refused at import (RFC 7518 §3.2). */
static bool hmac_case(const json_t *test, size_t tag_bytes, int *jws_checked)
{
    size_t key_len;
    size_t msg_len;
    size_t tag_len;
    uint8_t *key = hex_member(test, "key", &key_len);
    uint8_t *msg = hex_member(test, "msg", &msg_len);
    uint8_t *tag = hex_member(test, "tag", &tag_len);
    uint8_t full[HASH_SHA256_BYTES];
    bool ok = tag_len == tag_bytes && tag_bytes <= sizeof(full) &&
              hash_hmac_sha256(key, key_len, msg, msg_len, full) == 0 &&
              ct_memeq(full, tag, tag_len);
    char b64[256];
    char jwk[400];
    int n = key_len <= 128 ? b64url_encode(key, key_len, b64, sizeof(b64) - 1) : -1;
    if (n >= 0) {
        b64[n] = '\0';
        snprintf(jwk, sizeof(jwk), "{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":\"%s\"}", b64);
        struct jwk_key *k = NULL;
        int rc = jwk_import(jwk, strlen(jwk), JWK_ALG_HS256, &k);
        CHECK(key_len >= JWK_HMAC_KEY_MIN ? rc == 0 : rc == -TE_INVAL);
        if (k != NULL && tag_bytes == HASH_SHA256_BYTES) {
            CHECK((jws_verify_bytes(k, msg, msg_len, tag, tag_len) == 0) == ok);
            (*jws_checked)++;
        }
        jwk_free(k);
    }
    free(key);
    free(msg);
    free(tag);
    return ok;
}

static void run_hmac_file(void)
{
    struct tally t = { .file = "hmac_sha256_test.json" };
    json_t *root = load(t.file);
    int jws_checked = 0;
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(root, "testGroups"), gi, group)
    {
        size_t tag_bytes = (size_t)num_member(group, "tagSize") / 8;
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            bool ok = hmac_case(test, tag_bytes, &jws_checked);
            record(&t, test, ok,
                   strcmp(json_string_value(json_object_get(test, "result")), "valid") == 0);
        }
    }
    json_decref(root);
    printf("  (%d of them also through the HS256 JWS key)\n", jws_checked);
    CHECK(jws_checked > 0);
    report(&t);
}

/* json_web_signature_test.json labels that Tessera's rules overturn (vectors/README.md). */
struct override {
    int first;
    int last;
    bool accept;
    const char *why;
};

static const struct override jws_overrides[] = {
    { 264, 271, false, "key alg RS384/RS512: not accepted, key refused at import" },
    { 320, 323, false, "key alg PS384: not accepted, key refused at import" },
    { 325, 328, false, "key alg PS512: not accepted, key refused at import" },
    { 346, 346, false, "key PS256, token PS384: alg bound to the key (RFC 8725 §3.1)" },
    { 350, 350, false, "key PS256, token PS384: alg bound to the key (RFC 8725 §3.1)" },
    { 347, 347, false, "key alg ES521 (unregistered), token ES512" },
    { 351, 351, false, "key alg ES521 (unregistered), token ES512" },
    { 349, 349, false, "key_ops [\"sign, verify\"] is validated: not \"sign\"/\"verify\"" },
    { 367, 367, true, "data defect: byte-identical to valid tcId 357" },
    { 370, 370, true, "data defect: byte-identical to valid tcId 357" },
    { 372, 373, false, "label defect: '?' inside a base64url segment (RFC 7515 §2)" },
};

/* json_web_key_test.json: Tessera signs and verifies with RS256 PS256 ES256 EdDSA HS256
 * only, so HS384/HS512 key sets are refused even when well-formed. */
static const struct override jwk_overrides[] = {
    { 14, 15, false, "key alg HS384/HS512: not accepted, key refused at import" },
};

static const struct override *find_override(const struct override *table, size_t n, int id)
{
    for (size_t i = 0; i < n; i++) {
        if (id >= table[i].first && id <= table[i].last) {
            return &table[i];
        }
    }
    return NULL;
}

/* Count of tcIds a table names, to prove every entry was met exactly once. */
static int override_count(const struct override *table, size_t n)
{
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        count += table[i].last - table[i].first + 1;
    }
    return count;
}

/* Expected outcome after overrides; an override must contradict its label. */
static bool expected(struct tally *t, const json_t *test, const struct override *table, size_t n)
{
    int id = (int)json_integer_value(json_object_get(test, "tcId"));
    bool label = strcmp(json_string_value(json_object_get(test, "result")), "valid") == 0;
    const struct override *o = find_override(table, n, id);
    if (o == NULL) {
        return label;
    }
    CHECK(o->accept != label);
    t->overridden++;
    printf("  override tcId %d: label %s, Tessera %s: %s\n", id, label ? "valid" : "invalid",
           o->accept ? "accepts" : "rejects", o->why);
    return o->accept;
}

/* The group's private JWK, as vectors/README.md says (its public part verifies; the
 * private one also carries the key_ops under test in tcId 349). */
static const json_t *group_key(const json_t *group)
{
    return json_object_get(group, "private");
}

static void run_jws_file(void)
{
    struct tally t = { .file = "json_web_signature_test.json" };
    size_t n_over = sizeof(jws_overrides) / sizeof(jws_overrides[0]);
    json_t *root = load(t.file);
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(root, "testGroups"), gi, group)
    {
        struct jwk_key *key = import_json(group_key(group), JWK_ALG_UNSET);
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            const json_t *jws = json_object_get(test, "jws");
            /* JSON serialization cases carry an object: compact-only Tessera rejects it. */
            bool ok = false;
            if (key != NULL && json_is_string(jws)) {
                uint8_t buf[JWS_TOKEN_MAX];
                struct jws_parsed parsed;
                ok = jws_verify(key, json_string_value(jws), json_string_length(jws), buf,
                                sizeof(buf), &parsed) == 0;
            }
            record(&t, test, ok, expected(&t, test, jws_overrides, n_over));
        }
        jwk_free(key);
    }
    json_decref(root);
    CHECK(t.overridden == override_count(jws_overrides, n_over));
    report(&t);
}

/* json_web_key_test.json: each group's key set through keyset_import_jwks, the token's
 * key chosen by kid; a refused set rejects every token. */
static bool jwk_file_case(const struct keyset *set, bool set_ok, const char *token)
{
    uint8_t buf[JWS_TOKEN_MAX];
    struct jws_parsed parsed;
    struct jws_header header;
    if (!set_ok || jws_parse(token, strlen(token), JWS_TOKEN_MAX, buf, sizeof(buf), &parsed) < 0 ||
        jws_header_parse(parsed.header_json, &header) < 0 || !header.has_kid) {
        return false;
    }
    const struct jwk_key *key = keyset_find(set, slice_make(header.kid, strlen(header.kid)), 1000);
    return key != NULL && jws_verify_parsed(key, &parsed, &header) == 0;
}

static void run_jwk_file(void)
{
    struct tally t = { .file = "json_web_key_test.json" };
    size_t n_over = sizeof(jwk_overrides) / sizeof(jwk_overrides[0]);
    json_t *root = load(t.file);
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(root, "testGroups"), gi, group)
    {
        char *jwks = json_dumps(group_key(group), JSON_COMPACT);
        struct keyset set;
        keyset_init(&set, 600);
        bool set_ok = keyset_import_jwks(&set, jwks, strlen(jwks), 1000) == 0;
        CHECK(set_ok || set.n == 0); /* all or nothing */
        free(jwks);
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            bool ok = jwk_file_case(&set, set_ok, json_string_value(json_object_get(test, "jws")));
            record(&t, test, ok, expected(&t, test, jwk_overrides, n_over));
        }
        keyset_clear(&set);
    }
    json_decref(root);
    CHECK(t.overridden == override_count(jwk_overrides, n_over));
    report(&t);
}

/* One AES-GCM case; *skipped set for IVs over OpenSSL's maximum. */
static bool aes_gcm_case(const json_t *test, size_t iv_bits, bool *skipped)
{
    size_t kl, il, al, ml, cl, tl;
    uint8_t *key = hex_member(test, "key", &kl);
    uint8_t *iv = hex_member(test, "iv", &il);
    uint8_t *aad = hex_member(test, "aad", &al);
    uint8_t *msg = hex_member(test, "msg", &ml);
    uint8_t *ct = hex_member(test, "ct", &cl);
    uint8_t *tag = hex_member(test, "tag", &tl);
    uint8_t *out = malloc(cl + 1);
    *skipped = iv_bits > 1024;
    bool ok = !*skipped && seal_gcm_decrypt(key, kl, iv, il, aad, al, ct, cl, tag, tl, out) == 0 &&
              cl == ml && memcmp(out, msg, ml) == 0;
    if (ok) { /* and encryption reproduces ciphertext and tag */
        uint8_t tag2[SEAL_TAG_BYTES];
        ok = seal_gcm_encrypt(key, kl, iv, il, aad, al, msg, ml, out, tag2) == 0 &&
             memcmp(out, ct, cl) == 0 && tl == SEAL_TAG_BYTES && memcmp(tag2, tag, tl) == 0;
    }
    if (il == 0) { /* a zero-length IV is refused in both directions */
        uint8_t tag2[SEAL_TAG_BYTES];
        CHECK(seal_gcm_encrypt(key, kl, iv, il, aad, al, msg, ml, out, tag2) == -TE_INVAL);
    }
    free(key), free(iv), free(aad), free(msg), free(ct), free(tag), free(out);
    return ok;
}

static void run_aes_gcm_file(void)
{
    struct tally t = { .file = "aes_gcm_test.json" };
    json_t *root = load(t.file);
    int skipped = 0;
    int iv96 = 0;
    int iv96_key256 = 0;
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(root, "testGroups"), gi, group)
    {
        size_t iv_bits = (size_t)num_member(group, "ivSize");
        size_t key_bits = (size_t)num_member(group, "keySize");
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            bool skip;
            bool ok = aes_gcm_case(test, iv_bits, &skip);
            if (skip) {
                skipped++;
                CHECK(strcmp(json_string_value(json_object_get(test, "result")), "valid") == 0);
                continue;
            }
            iv96 += iv_bits == 96;
            iv96_key256 += iv_bits == 96 && key_bits == 256;
            record(&t, test, ok,
                   strcmp(json_string_value(json_object_get(test, "result")), "valid") == 0);
        }
    }
    json_decref(root);
    printf("  (%d with 96-bit IVs, %d of them AES-256; %d skipped: IV over 1024 bits)\n", iv96,
           iv96_key256, skipped);
    CHECK(iv96 == 197 && iv96_key256 == 66 && skipped == 3);
    report(&t);
}

int main(void)
{
    run_signature_file("rsa_signature_2048_sha256_test.json", "keyJwk", JWK_ALG_RS256);
    run_signature_file("rsa_pss_2048_sha256_mgf1_32_test.json", "publicKeyJwk", JWK_ALG_PS256);
    run_signature_file("ecdsa_secp256r1_sha256_p1363_test.json", "publicKeyJwk", JWK_ALG_ES256);
    run_signature_file("ed25519_test.json", "publicKeyJwk", JWK_ALG_EDDSA);
    run_hmac_file();
    run_jws_file();
    run_jwk_file();
    run_aes_gcm_file();
    return check_report("test_wycheproof");
}
