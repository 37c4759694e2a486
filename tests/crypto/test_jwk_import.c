/* tests/crypto/test_jwk_import.c: SECURITY.md J29 (key import refusals) and J31 (key
 * lifecycle: which key signs, which verify, when a retired key goes), plus key
 * generation for every algorithm. Bad keys come from Wycheproof json_web_key_test.json
 * (tcId 7 ROCA, 8 RSA-1024, 9 e = 1, 10 short HS256, 19-24 EC defects); each refusal
 * has a control showing the same key without the defect is accepted. Private keys
 * survive export, sealing (seal.h), opening and re-import unchanged. */
#include <jansson.h>
#include <string.h>

#include "core/err.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "crypto/keyset.h"
#include "crypto/seal.h"
#include "tests/crypto/check.h"
#include "tests/crypto/vectors.h"

static json_t *jwk_file;

/* The first key of the group whose tests include tcId id, as compact JSON (malloc'd). */
static char *wycheproof_key(int id)
{
    size_t gi;
    json_t *group;
    json_array_foreach(json_object_get(jwk_file, "testGroups"), gi, group)
    {
        size_t ti;
        json_t *test;
        json_array_foreach(json_object_get(group, "tests"), ti, test)
        {
            if (json_integer_value(json_object_get(test, "tcId")) == id) {
                const json_t *set = json_object_get(group, "public");
                set = set != NULL ? set : json_object_get(group, "private");
                return json_dumps(json_array_get(json_object_get(set, "keys"), 0), JSON_COMPACT);
            }
        }
    }
    fprintf(stderr, "tcId %d not found\n", id);
    exit(1);
}

static int import_rc(const char *json, enum jwk_alg alg)
{
    struct jwk_key *key = NULL;
    int rc = jwk_import(json, strlen(json), alg, &key);
    CHECK((rc == 0) == (key != NULL));
    jwk_free(key);
    return rc;
}

/* Replaces the first occurrence of from by to in a malloc'd string. */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    if (at == NULL) {
        fprintf(stderr, "replace: %s not found\n", from);
        exit(1);
    }
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *out = malloc(n + 1);
    size_t head = (size_t)(at - s);
    memcpy(out, s, head);
    strcpy(out + head, to);
    strcat(out, at + strlen(from));
    return out;
}

static void test_j29_wycheproof_keys(void)
{
    static const int refused[] = { 7, 8, 9, 10, 19, 20, 21, 22, 23, 24, 25, 26 };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char *key = wycheproof_key(refused[i]);
        int rc = import_rc(key, JWK_ALG_UNSET);
        if (rc != -TE_INVAL) {
            fprintf(stderr, "tcId %d key was not refused\n", refused[i]);
        }
        CHECK(rc == -TE_INVAL);
        free(key);
    }
    /* Controls: the valid RS256 key (tcId 5) and HS256 long key (13) import. */
    char *rsa = wycheproof_key(5);
    CHECK(import_rc(rsa, JWK_ALG_UNSET) == 0);
    char *hs = wycheproof_key(13);
    CHECK(import_rc(hs, JWK_ALG_UNSET) == 0);
    /* tcId 21's defect is only use:"enc"; with "sig" the same key imports. */
    char *enc = wycheproof_key(21);
    char *sig = replace(enc, "\"use\":\"enc\"", "\"use\":\"sig\"");
    CHECK(import_rc(sig, JWK_ALG_UNSET) == 0);
    /* tcId 23 (P-384 label on a P-256 point) and 24 (kty RSA) fixed back. */
    char *p384 = wycheproof_key(23);
    char *p256 = replace(p384, "P-384", "P-256");
    CHECK(import_rc(p256, JWK_ALG_UNSET) == 0);
    /* J29 kty mismatch: the valid EC key under an RSA or OKP alg. */
    CHECK(import_rc(p256, JWK_ALG_RS256) == -TE_INVAL);
    CHECK(import_rc(p256, JWK_ALG_EDDSA) == -TE_INVAL);
    char *as_rs = replace(p256, "\"alg\":\"ES256\"", "\"alg\":\"RS256\"");
    CHECK(import_rc(as_rs, JWK_ALG_UNSET) == -TE_INVAL);
    char *as_none = replace(p256, "\"alg\":\"ES256\"", "\"alg\":\"none\"");
    CHECK(import_rc(as_none, JWK_ALG_UNSET) == -TE_INVAL);
    char *as_es384 = replace(p256, "\"alg\":\"ES256\"", "\"alg\":\"ES384\"");
    CHECK(import_rc(as_es384, JWK_ALG_UNSET) == -TE_INVAL);
    char *no_alg = replace(p256, "\"alg\":\"ES256\",", "");
    CHECK(import_rc(no_alg, JWK_ALG_UNSET) == -TE_INVAL); /* one alg per key: none given */
    CHECK(import_rc(no_alg, JWK_ALG_ES256) == 0);
    char *dup = replace(p256, "{", "{\"crv\":\"P-256\",");
    CHECK(import_rc(dup, JWK_ALG_UNSET) == -TE_INVAL); /* duplicate member */
    char *ops_bad = replace(p256, "{", "{\"key_ops\":[\"encrypt\"],");
    char *ops_ok = replace(p256, "{", "{\"key_ops\":[\"verify\"],");
    CHECK(import_rc(ops_bad, JWK_ALG_UNSET) == -TE_INVAL);
    CHECK(import_rc(ops_ok, JWK_ALG_UNSET) == 0);
    char *kid_ctl = replace(p256, "\"kid\":\"kid-ec-sign\"", "\"kid\":\"a\\nb\"");
    CHECK(import_rc(kid_ctl, JWK_ALG_UNSET) == -TE_INVAL);
    char *kid_num = replace(p256, "\"kid\":\"kid-ec-sign\"", "\"kid\":7");
    CHECK(import_rc(kid_num, JWK_ALG_UNSET) == -TE_INVAL);
    char *all[] = { rsa,      hs,     enc, sig,     p384,   p256,    as_rs,  as_none,
                    as_es384, no_alg, dup, ops_bad, ops_ok, kid_ctl, kid_num };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        free(all[i]);
    }
}

static void test_j29_hmac_lengths(void)
{
    /* 31 bytes: 42 characters; 32 bytes: 43 characters (RFC 7518 §3.2). */
    const char *k31 =
        "{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg\"}";
    const char *k32 =
        "{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}";
    const char *k0 = "{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":\"\"}";
    const char *kpad = "{\"kty\":\"oct\",\"alg\":\"HS256\",\"k\":"
                       "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}";
    CHECK(import_rc(k31, JWK_ALG_UNSET) == -TE_INVAL);
    CHECK(import_rc(k32, JWK_ALG_UNSET) == 0);
    CHECK(import_rc(k0, JWK_ALG_UNSET) == -TE_INVAL);
    CHECK(import_rc(kpad, JWK_ALG_UNSET) == -TE_INVAL);
    CHECK(import_rc(k32, JWK_ALG_RS256) == -TE_INVAL);
    CHECK(import_rc("[]", JWK_ALG_HS256) == -TE_INVAL);
    CHECK(import_rc("{\"kty\":\"oct\"} x", JWK_ALG_HS256) == -TE_INVAL);
}

/* A private part that does not belong to its public part is refused (pairwise check). */
static void test_j29_mismatched_private(void)
{
    char *md = vectors_read("jose/rfc-vectors.md", NULL);
    const char *ed = vectors_md(md, "rfc8037.a1.jwk");
    char *ed_bad = replace(ed, "\"d\":\"nWGx", "\"d\":\"AWGx");
    CHECK(import_rc(ed, JWK_ALG_EDDSA) == 0);
    CHECK(import_rc(ed_bad, JWK_ALG_EDDSA) == -TE_INVAL);
    const char *ec = vectors_md(md, "rfc7515.a3.jwk");
    char *ec_bad = replace(ec, "\"d\":\"jpsQ", "\"d\":\"kpsQ");
    CHECK(import_rc(ec, JWK_ALG_ES256) == 0);
    CHECK(import_rc(ec_bad, JWK_ALG_ES256) == -TE_INVAL);
    const char *rsa = vectors_md(md, "rfc7515.a2.jwk");
    char *rsa_bad = replace(rsa, "\"d\":\"Eq5x", "\"d\":\"Fq5x");
    CHECK(import_rc(rsa, JWK_ALG_RS256) == 0);
    CHECK(import_rc(rsa, JWK_ALG_PS256) == 0); /* same RSA key, bound to PS256 instead */
    CHECK(import_rc(rsa_bad, JWK_ALG_RS256) == -TE_INVAL);
    char *rsa_e_even =
        replace(vectors_md(md, "rfc7515.a2.jwk-public"), "\"e\":\"AQAB\"", "\"e\":\"AQAC\"");
    CHECK(import_rc(rsa_e_even, JWK_ALG_RS256) == -TE_INVAL);
    free(ed_bad);
    free(ec_bad);
    free(rsa_bad);
    free(rsa_e_even);
    free(md);
}

static void test_generate(void)
{
    static const enum jwk_alg algs[] = { JWK_ALG_RS256, JWK_ALG_PS256, JWK_ALG_ES256, JWK_ALG_EDDSA,
                                         JWK_ALG_HS256 };
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        struct jwk_key *key = NULL;
        CHECK(jwk_generate(algs[i], 2048, &key) == 0 && key != NULL);
        CHECK(jwk_key_alg(key) == algs[i] && jwk_has_private(key));
        CHECK(strlen(jwk_kid(key)) == JWK_THUMBPRINT_LEN);
        char token[1024];
        char header[128];
        snprintf(header, sizeof(header), "{\"alg\":\"%s\"}", jwk_alg_name(algs[i]));
        int t = jws_sign(key, slice_make(header, strlen(header)), (const uint8_t *)"x", 1, token,
                         sizeof(token));
        uint8_t buf[JWS_TOKEN_MAX];
        struct jws_parsed parsed;
        CHECK(t > 0 && jws_verify(key, token, (size_t)t, buf, sizeof(buf), &parsed) == 0);
        jwk_free(key);
    }
    struct jwk_key *key = NULL;
    CHECK(jwk_generate(JWK_ALG_RS256, 1024, &key) == -TE_INVAL && key == NULL);
    CHECK(jwk_generate(JWK_ALG_UNSET, 0, &key) == -TE_INVAL);
}

static struct jwk_key *gen(enum jwk_alg alg)
{
    struct jwk_key *key = NULL;
    CHECK(jwk_generate(alg, 2048, &key) == 0);
    return key;
}

/* J31: a retired key verifies until its window ends, then is dropped; next verifies
 * (it is published); only the active key signs; kids unique; no HS/asymmetric mix. */
static void test_j31_lifecycle(void)
{
    struct keyset set;
    keyset_init(&set, 900);
    struct jwk_key *a = gen(JWK_ALG_ES256);
    struct jwk_key *b = gen(JWK_ALG_EDDSA);
    struct jwk_key *c = gen(JWK_ALG_ES256);
    struct jwk_key *h = gen(JWK_ALG_HS256);
    CHECK(keyset_add(&set, a, KEYSET_ACTIVE, 1000) == 0);
    CHECK(keyset_add(&set, b, KEYSET_NEXT, 1000) == 0);
    CHECK(keyset_add(&set, c, KEYSET_ACTIVE, 1000) == -TE_INVAL); /* one active */
    CHECK(keyset_add(&set, h, KEYSET_NEXT, 1000) == -TE_INVAL);   /* mixed set */
    CHECK(keyset_add(&set, a, KEYSET_NEXT, 1000) == -TE_INVAL);   /* duplicate kid */
    CHECK(keyset_signing_key(&set) == a);
    struct slice kid_a = slice_make(jwk_kid(a), strlen(jwk_kid(a)));
    struct slice kid_b = slice_make(jwk_kid(b), strlen(jwk_kid(b)));
    CHECK(keyset_find(&set, kid_b, 1000) == b); /* next: published, verifies */
    CHECK(keyset_find(&set, SLICE_LIT("../../../../dev/null"), 1000) == NULL);
    CHECK(keyset_rotate(&set, 2000) == 0);
    CHECK(keyset_signing_key(&set) == b);
    CHECK(keyset_find(&set, kid_a, 2899) == a); /* retired, within 900 s */
    CHECK(keyset_find(&set, kid_a, 2900) == NULL);
    char mem[4096];
    struct buf out;
    buf_init(&out, mem, sizeof(mem));
    CHECK(keyset_render_jwks(&set, 2000, &out) == 0 &&
          memmem(out.data, out.len, kid_a.ptr, kid_a.len) != NULL);
    buf_init(&out, mem, sizeof(mem));
    CHECK(keyset_render_jwks(&set, 2900, &out) == 0 &&
          memmem(out.data, out.len, kid_a.ptr, kid_a.len) == NULL);
    CHECK(keyset_prune(&set, 2899) == 0);
    CHECK(keyset_prune(&set, 2900) == 1 && set.n == 1);
    CHECK(keyset_rotate(&set, 3000) == -TE_INVAL); /* no next key */
    keyset_clear(&set);
    jwk_free(c);
    jwk_free(h);
}

/* Private JWK export -> seal -> open -> import: same key (thumbprint, signatures). */
static void round_trip_private(const struct jwk_key *key)
{
    static const struct seal_key master = { .key_id = 1, .bytes = { 7 } };
    const struct seal_key *keys[] = { &master };
    char mem[JWK_JSON_MAX];
    uint8_t blob[JWK_JSON_MAX + SEAL_OVERHEAD];
    char opened[JWK_JSON_MAX];
    struct buf out;
    buf_init(&out, mem, sizeof(mem));
    CHECK(jwk_export_private(key, &out) == 0);
    struct slice owner = SLICE_LIT("tenant-1");
    int n = seal(&master, owner, (const uint8_t *)out.data, out.len, blob, sizeof(blob));
    CHECK(n > 0);
    int m = seal_open(keys, 1, owner, blob, (size_t)n, (uint8_t *)opened, sizeof(opened));
    CHECK(m == (int)out.len && memcmp(opened, out.data, out.len) == 0);
    struct jwk_key *again = NULL;
    CHECK(jwk_import(opened, (size_t)m, JWK_ALG_UNSET, &again) == 0);
    CHECK(again != NULL && jwk_has_private(again) && jwk_key_alg(again) == jwk_key_alg(key));
    CHECK(strcmp(jwk_thumbprint(again), jwk_thumbprint(key)) == 0);
    CHECK(strcmp(jwk_kid(again), jwk_kid(key)) == 0);
    uint8_t sig[JWS_SIGNATURE_MAX];
    int s = again == NULL ? -1 : jws_sign_bytes(again, "m", 1, sig, sizeof(sig));
    CHECK(s > 0 && jws_verify_bytes(key, "m", 1, sig, (size_t)s) == 0);
    jwk_free(again);
    memset(mem, 0, sizeof(mem));
    memset(opened, 0, sizeof(opened));
}

static void test_private_export(void)
{
    static const enum jwk_alg algs[] = { JWK_ALG_RS256, JWK_ALG_PS256, JWK_ALG_ES256, JWK_ALG_EDDSA,
                                         JWK_ALG_HS256 };
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        struct jwk_key *key = NULL;
        CHECK(jwk_generate(algs[i], algs[i] == JWK_ALG_PS256 ? 3072 : 2048, &key) == 0);
        if (key != NULL) {
            round_trip_private(key);
        }
        jwk_free(key);
    }
    /* RFC 7515 A.2: after the round trip, PKCS#1 v1.5 signing is still byte-identical. */
    char *md = vectors_read("jose/rfc-vectors.md", NULL);
    const char *jwk = vectors_md(md, "rfc7515.a2.jwk");
    struct jwk_key *rsa = NULL;
    struct jwk_key *pub = NULL;
    CHECK(jwk_import(jwk, strlen(jwk), JWK_ALG_RS256, &rsa) == 0);
    round_trip_private(rsa);
    const char *pub_jwk = vectors_md(md, "rfc7515.a2.jwk-public");
    CHECK(jwk_import(pub_jwk, strlen(pub_jwk), JWK_ALG_RS256, &pub) == 0);
    char mem[JWK_JSON_MAX];
    struct buf out;
    buf_init(&out, mem, sizeof(mem));
    CHECK(jwk_export_private(pub, &out) == -TE_INVAL); /* nothing private to export */
    buf_init(&out, mem, 100);
    CHECK(jwk_export_private(rsa, &out) == -TE_NOMEM);
    jwk_free(rsa);
    jwk_free(pub);
    free(md);
}

int main(void)
{
    size_t len;
    char *text = vectors_read("wycheproof/json_web_key_test.json", &len);
    jwk_file = json_loadb(text, len, 0, NULL);
    free(text);
    CHECK(jwk_file != NULL);
    test_j29_wycheproof_keys();
    test_j29_hmac_lengths();
    test_j29_mismatched_private();
    test_generate();
    test_j31_lifecycle();
    test_private_export();
    json_decref(jwk_file);
    return check_report("test_jwk_import");
}
