/* tests/crypto/test_jws_attacks.c: the JWS attacks of SECURITY.md, one function per
 * row: J01 J02 J03 (alg none and spellings), J04 (HS256 keyed with a public key),
 * J05 (alg other than the key's), J07 (hostile kid), J09 (jku/x5u/x5c/jwk headers),
 * J10 (crit, b64), J20 (duplicate members), J21 (malformed JSON), J22 (segments),
 * J23 (base64url), J25 (bit flips, truncation), J26 (ES256 DER and range), J27 (ECDSA
 * malleability accepted), J28 (Ed25519 S >= L). Every forged token carries a correct
 * signature unless the signature is the point, so each fails on its own rule. */
#include <stdlib.h>

#include <jansson.h>

#include "crypto/hash.h"
#include "tests/crypto/jwt_fixture.h"
#include "tests/crypto/vectors.h"

static char token[TOKEN_CAP];

static const char *hdr(const char *alg_json, const struct jwk_key *kid_of)
{
    static char h[512];
    snprintf(h, sizeof(h), "{\"alg\":%s,\"typ\":\"at+jwt\",\"kid\":\"%s\"}", alg_json,
             jwk_kid(kid_of));
    return h;
}

static void test_j01_alg_none(void)
{
    char *md = vectors_read("jose/rfc-vectors.md", NULL);
    const char *a5 = vectors_md(md, "rfc7515.a5.jws");
    CHECK(!accepted(a5));
    uint8_t buf[JWS_TOKEN_MAX];
    struct jws_parsed parsed;
    CHECK(jws_verify(fx_es, a5, strlen(a5), buf, sizeof(buf), &parsed) == -TE_INVAL);
    CHECK(jws_verify(fx_hs, a5, strlen(a5), buf, sizeof(buf), &parsed) == -TE_INVAL);
    forge_bytes(NULL, hdr("\"none\"", fx_es), strlen(hdr("\"none\"", fx_es)), fx_claims(),
                strlen(fx_claims()), NULL, 0, token);
    CHECK(!accepted(token));
    free(md);
}

static void test_j02_alg_spellings(void)
{
    static const char *algs[] = { "\"None\"",         "\"NONE\"",  "\"nOnE\"",   "\"none \"",
                                  "\"ES256\\u0000\"", "\"es256\"", "\"ES256 \"", "\" ES256\"",
                                  "[\"ES256\"]",      "null",      "256" };
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        forge(fx_es, hdr(algs[i], fx_es), fx_claims(), token); /* correct ES256 signature */
        CHECK(!accepted(token));
    }
    /* HS256\u0000 against the HS256 key, MACed correctly. */
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    forge(fx_hs, hdr("\"HS256\\u0000\"", fx_hs), fx_claims(), token);
    CHECK(fx_verify_in(&fx_hs_keys, &e, token, strlen(token)) == -TE_INVAL);
    forge(fx_hs, hdr("\"HS256\"", fx_hs), fx_claims(), token);
    CHECK(fx_verify_in(&fx_hs_keys, &e, token, strlen(token)) == 0); /* control */
    forge(fx_es, hdr("\"ES256\"", fx_es), fx_claims(), token);
    CHECK(accepted(token)); /* control */
}

static void test_j03_none_with_signature(void)
{
    static const uint8_t sig[64] = { 1, 2, 3 };
    const char *h = hdr("\"none\"", fx_es);
    forge_bytes(NULL, h, strlen(h), fx_claims(), strlen(fx_claims()), sig, sizeof(sig), token);
    CHECK(!accepted(token));
}

/* HS256 MAC whose secret is some public encoding of the tenant's key, computed the
 * way an attacker would (any length: no import rule protects this path). */
static void hs256_with_secret(const uint8_t *secret, size_t len, const struct jwk_key *kid_of)
{
    const char *h = hdr("\"HS256\"", kid_of);
    char input[TOKEN_CAP];
    forge_bytes(NULL, h, strlen(h), fx_claims(), strlen(fx_claims()), NULL, 0, input);
    size_t in_len = strlen(input) - 1; /* without the trailing '.' */
    uint8_t mac[HASH_SHA256_BYTES];
    CHECK(hash_hmac_sha256(secret, len, input, in_len, mac) == 0);
    forge_bytes(NULL, h, strlen(h), fx_claims(), strlen(fx_claims()), mac, sizeof(mac), token);
    CHECK(!accepted(token));
    CHECK(memcmp(token, input, in_len) == 0); /* same signing input, MAC attached */
}

static void test_j04_hs256_with_public_key(void)
{
    const struct jwk_key *keys[] = { fx_es, fx_rs };
    for (size_t i = 0; i < 2; i++) {
        char mem[2048];
        struct buf out;
        buf_init(&out, mem, sizeof(mem));
        CHECK(jwk_export_public(keys[i], &out) == 0);
        hs256_with_secret((const uint8_t *)out.data, out.len, keys[i]); /* JWK JSON */
        json_t *jwk = json_loadb(out.data, out.len, 0, NULL);
        const char *member = i == 0 ? "x" : "n";
        const char *v = json_string_value(json_object_get(jwk, member));
        uint8_t raw[512];
        int rn = b64url_decode(v, strlen(v), raw, sizeof(raw));
        hs256_with_secret(raw, (size_t)rn, keys[i]);               /* raw x / modulus */
        hs256_with_secret((const uint8_t *)v, strlen(v), keys[i]); /* its base64url text */
        json_decref(jwk);
    }
}

static void test_j05_alg_not_the_keys(void)
{
    /* PS256 signature made with the tenant's RS256 key material: valid PSS, wrong alg. */
    char *md = vectors_read("jose/rfc-vectors.md", NULL);
    const char *jwk = vectors_md(md, "rfc7515.a2.jwk");
    struct jwk_key *rs = NULL;
    struct jwk_key *ps = NULL;
    CHECK(jwk_import(jwk, strlen(jwk), JWK_ALG_RS256, &rs) == 0);
    CHECK(jwk_import(jwk, strlen(jwk), JWK_ALG_PS256, &ps) == 0);
    struct keyset set;
    keyset_init(&set, 0);
    CHECK(keyset_add(&set, rs, KEYSET_ACTIVE, NOW) == 0);
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    forge(ps, hdr("\"PS256\"", rs), fx_claims(), token);
    CHECK(fx_verify_in(&set, &e, token, strlen(token)) == -TE_INVAL);
    forge(rs, hdr("\"RS256\"", rs), fx_claims(), token);
    CHECK(fx_verify_in(&set, &e, token, strlen(token)) == 0); /* control */
    static const char *others[] = { "\"RS512\"", "\"ES384\"", "\"EdDSA\"", "\"HS256\"" };
    for (size_t i = 0; i < 4; i++) {
        forge(fx_es, hdr(others[i], fx_es), fx_claims(), token);
        CHECK(!accepted(token));
    }
    keyset_clear(&set);
    jwk_free(ps);
    free(md);
}

static void test_j07_hostile_kid(void)
{
    static char long_kid[10 * 1024 + 16];
    memset(long_kid, 'k', sizeof(long_kid));
    memcpy(long_kid, "\"", 1);
    memcpy(long_kid + sizeof(long_kid) - 2, "\"", 2);
    const char *kids[] = { "\"../../../../dev/null\"",
                           "\"' OR '1'='1\"",
                           long_kid,
                           "\"a\\u0000b\"",
                           "42",
                           "{\"k\":1}",
                           "\"\"",
                           "\"line\\nbreak\"" };
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    e.max_len = TOKEN_CAP; /* let the 10 KiB kid reach the kid check itself */
    for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
        char h[sizeof(long_kid) + 64];
        snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":%s}", kids[i]);
        size_t n = forge(fx_es, h, fx_claims(), token);
        CHECK(fx_verify_in(&fx_keys, &e, token, n) == -TE_INVAL);
    }
}

/* J09: jku/x5u/x5c/jwk naming the attacker's key; the attacker signs; rejected. */
static void test_j09_key_headers_ignored(void)
{
    char mem[2048];
    struct buf jwk;
    buf_init(&jwk, mem, sizeof(mem));
    CHECK(jwk_export_public(fx_evil, &jwk) == 0);
    char extra[4][2300];
    snprintf(extra[0], sizeof(extra[0]), "\"jku\":\"https://evil.example/jwks.json\"");
    snprintf(extra[1], sizeof(extra[1]), "\"x5u\":\"https://evil.example/cert.pem\"");
    snprintf(extra[2], sizeof(extra[2]), "\"x5c\":[\"MIIBszCCAVmgAwIBAgIJ\"]");
    snprintf(extra[3], sizeof(extra[3]), "\"jwk\":%.*s", (int)jwk.len, jwk.data);
    for (int i = 0; i < 4; i++) {
        const struct jwk_key *kids[] = { fx_evil, fx_es };
        for (int k = 0; k < 2; k++) {
            char h[2600];
            snprintf(h, sizeof(h),
                     "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%.128s\",%.2300s}",
                     jwk_kid(kids[k]), extra[i]);
            forge(fx_evil, h, fx_claims(), token);
            CHECK(!accepted(token));
            forge(fx_es, h, fx_claims(), token); /* tenant-signed: the member is ignored */
            CHECK(accepted(token) == (k == 1));
        }
    }
}

static void test_j10_crit_b64(void)
{
    static const char *members[] = { "\"crit\":[\"exp\"]",    "\"crit\":[\"foo\"],\"foo\":1",
                                     "\"crit\":[]",           "\"crit\":\"foo\"",
                                     "\"crit\":[\"absent\"]", "\"b64\":false",
                                     "\"b64\":true" };
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        char h[256];
        snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",%s}",
                 jwk_kid(fx_es), members[i]);
        forge(fx_es, h, fx_claims(), token);
        CHECK(!accepted(token));
    }
}

static void test_j20_duplicates(void)
{
    char h[256];
    snprintf(h, sizeof(h),
             "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",\"alg\":\"ES256\"}",
             jwk_kid(fx_es));
    forge(fx_es, h, fx_claims(), token);
    CHECK(!accepted(token));
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",\"kid\":\"%s\"}",
             jwk_kid(fx_es), jwk_kid(fx_es));
    forge(fx_es, h, fx_claims(), token);
    CHECK(!accepted(token));
    char claims[1024];
    snprintf(claims, sizeof(claims), "{\"exp\":1,%s", fx_claims() + 1); /* exp twice */
    forge(fx_es, fx_header(fx_es), claims, token);
    CHECK(!accepted(token));
}

static void test_j21_malformed_json(void)
{
    static const char *payloads[] = { "[]",
                                      "\"claims\"",
                                      "null",
                                      "{}x",
                                      "\xef\xbb\xbf{}",
                                      "{/* c */}",
                                      "{\"exp\":NaN}",
                                      "{\"sub\":\"\xff\"}",
                                      "{\"sub\":\"\\ud800\"}",
                                      "{} {}",
                                      "" };
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        forge(fx_es, fx_header(fx_es), payloads[i], token);
        CHECK(!accepted(token));
    }
    /* The same defects in the header. */
    static const char *headers[] = { "[\"ES256\"]", "\"ES256\"", "null", "{\"alg\":\"ES256\"}x",
                                     "\xef\xbb\xbf{\"alg\":\"ES256\"}" };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        forge(fx_es, headers[i], fx_claims(), token);
        CHECK(!accepted(token));
    }
    /* Trailing bytes after the valid claims object. */
    char claims[1024];
    snprintf(claims, sizeof(claims), "%s ]", fx_claims());
    forge(fx_es, fx_header(fx_es), claims, token);
    CHECK(!accepted(token));
    /* 5000-deep nesting (as deep as 8 KiB allows): refused, no stack exhaustion. */
    static char deep[10001];
    memset(deep, '[', 5000);
    memset(deep + 5000, ']', 5000);
    forge(fx_es, fx_header(fx_es), deep, token);
    CHECK(!accepted(token));
    char nested[12000];
    snprintf(nested, sizeof(nested), "{\"x\":%.4000s%.4000s,%s", deep, deep + 5000,
             fx_claims() + 1);
    size_t n = forge(fx_es, fx_header(fx_es), nested, token);
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    e.max_len = TOKEN_CAP;
    CHECK(fx_verify_in(&fx_keys, &e, token, n) == -TE_INVAL);
}

static void test_j22_segments(void)
{
    size_t n = forge(fx_es, fx_header(fx_es), fx_claims(), token);
    CHECK(accepted(token)); /* control */
    char t[TOKEN_CAP + 16];
    const char *dot1 = strchr(token, '.');
    const char *dot2 = strrchr(token, '.');
    snprintf(t, sizeof(t), "%.*s", (int)(dot2 - token), token); /* 2 segments */
    CHECK(!accepted(t));
    snprintf(t, sizeof(t), "%s.", token); /* 4 segments, last empty */
    CHECK(!accepted(t));
    snprintf(t, sizeof(t), "%s.AAAA", token);
    CHECK(!accepted(t));
    snprintf(t, sizeof(t), "%s.AAAA.AAAA", token); /* 5: JWE shape */
    CHECK(!accepted(t));
    snprintf(t, sizeof(t), "%s", dot1); /* empty header */
    CHECK(!accepted(t));
    forge(fx_es, fx_header(fx_es), "", t); /* empty payload, valid signature */
    CHECK(!accepted(t));
    snprintf(t, sizeof(t), "{\"payload\":\"%.*s\",\"protected\":\"%.*s\",\"signature\":\"%s\"}",
             (int)(dot2 - dot1 - 1), dot1 + 1, (int)(dot1 - token), token, dot2 + 1);
    CHECK(!accepted(t)); /* JWS JSON serialization */
    (void)n;
}

/* Inserts text at position pos of the valid token. */
static bool accepted_edit(const char *valid, size_t pos, size_t drop, const char *insert)
{
    char t[TOKEN_CAP];
    snprintf(t, sizeof(t), "%.*s%s%s", (int)pos, valid, insert, valid + pos + drop);
    return accepted(t);
}

static void test_j23_base64url(void)
{
    char valid[TOKEN_CAP];
    size_t n = forge(fx_es, fx_header(fx_es), fx_claims(), valid);
    size_t dot1 = (size_t)(strchr(valid, '.') - valid);
    size_t dot2 = (size_t)(strrchr(valid, '.') - valid);
    CHECK(accepted(valid));
    CHECK(!accepted_edit(valid, n, 0, "==")); /* padding on the signature */
    CHECK(!accepted_edit(valid, dot1, 0, "="));
    CHECK(!accepted_edit(valid, dot2, 0, "="));
    CHECK(!accepted_edit(valid, 5, 0, " "));
    CHECK(!accepted_edit(valid, dot1 + 5, 0, "\r"));
    CHECK(!accepted_edit(valid, dot2 + 5, 0, "\n"));
    CHECK(!accepted_edit(valid, dot1 + 3, 0, "A")); /* length ≡ 1 (mod 4) */
    /* '+' and '/' in place of '-' and '_' (and the reverse mapping of a char). */
    char t[TOKEN_CAP];
    memcpy(t, valid, n + 1);
    bool swapped = false;
    for (size_t i = dot2 + 1; i < n; i++) {
        if (t[i] == '-' || t[i] == '_') {
            t[i] = t[i] == '-' ? '+' : '/';
            swapped = true;
            break;
        }
    }
    CHECK(!swapped || !accepted(t));
    /* Non-canonical trailing bits: 64-byte sig = 86 chars, last char carries 4 unused bits. */
    memcpy(t, valid, n + 1);
    t[n - 1] = t[n - 1] == 'A' ? 'B' : (char)(t[n - 1] ^ 1);
    CHECK(!accepted(t));
}

/* J25: one bit flipped at every bit of every byte; truncated; extended. */
static void test_j25_bit_flips(void)
{
    char valid[TOKEN_CAP];
    char t[TOKEN_CAP];
    size_t n = forge(fx_es, fx_header(fx_es), fx_claims(), valid);
    int accepted_count = 0;
    int tried = 0;
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            memcpy(t, valid, n + 1);
            t[i] = (char)(t[i] ^ (1 << b));
            if (t[i] == '\0') {
                continue; /* strlen would change the length: covered by truncation */
            }
            struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
            accepted_count += fx_verify_in(&fx_keys, &e, t, n) == 0;
            tried++;
        }
    }
    printf("J25: %d single-bit variants tried, %d accepted\n", tried, accepted_count);
    CHECK(tried > 8 * (int)n - (int)n && accepted_count == 0);
    memcpy(t, valid, n + 1);
    t[n - 1] = '\0';
    CHECK(!accepted(t));
    CHECK(!accepted_edit(valid, n, 0, "A"));
    CHECK(!accepted_edit(valid, n, 0, "AA"));
    CHECK(!accepted_edit(valid, n, 0, "AAAA")); /* 3 more signature bytes */
}

/* P-256 group order n (SEC 2 §2.4.2). */
static const uint8_t p256_n[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
};

/* out = a - b over 32-byte big-endian numbers (a >= b). */
static void sub256(const uint8_t a[32], const uint8_t b[32], uint8_t out[32])
{
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = a[i] - b[i] - borrow;
        borrow = d < 0;
        out[i] = (uint8_t)(d + (borrow ? 256 : 0));
    }
}

/* Signs the usual token with fx_es; returns the signing input length and the r||s. */
static size_t es256_parts(char *input, uint8_t sig[64])
{
    size_t n = forge(fx_es, fx_header(fx_es), fx_claims(), input);
    const char *dot2 = strrchr(input, '.');
    CHECK(b64url_decode(dot2 + 1, n - (size_t)(dot2 + 1 - input), sig, 64) == 64);
    return (size_t)(dot2 - input);
}

static bool accepted_sig(const char *input, size_t input_len, const uint8_t *sig, size_t len)
{
    char t[TOKEN_CAP];
    memcpy(t, input, input_len);
    t[input_len] = '.';
    int e = b64url_encode(sig, len, t + input_len + 1, sizeof(t) - input_len - 2);
    t[input_len + 1 + (size_t)e] = '\0';
    return accepted(t);
}

static void test_j26_es256_der_and_range(void)
{
    char input[TOKEN_CAP];
    uint8_t sig[64];
    size_t in_len = es256_parts(input, sig);
    CHECK(accepted_sig(input, in_len, sig, 64)); /* control */
    /* DER form of the same signature (72 bytes with both 0x00 prefixes forced). */
    uint8_t der[72] = { 0x30, 70, 0x02, 33, 0x00 };
    memcpy(der + 5, sig, 32);
    der[37] = 0x02;
    der[38] = 33;
    der[39] = 0x00;
    memcpy(der + 40, sig + 32, 32);
    CHECK(!accepted_sig(input, in_len, der, 72));
    CHECK(!accepted_sig(input, in_len, der, 70));
    uint8_t bad[64];
    static const uint8_t zero[32];
    memcpy(bad, zero, 32);
    memcpy(bad + 32, sig + 32, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* r = 0 */
    memcpy(bad, sig, 32);
    memcpy(bad + 32, zero, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* s = 0 */
    memcpy(bad, zero, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* r = s = 0: CVE-2022-21449 */
    memcpy(bad, p256_n, 32);
    memcpy(bad + 32, sig + 32, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* r = n */
    memcpy(bad, sig, 32);
    memcpy(bad + 32, p256_n, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* s = n */
    memset(bad + 32, 0xff, 32);
    CHECK(!accepted_sig(input, in_len, bad, 64)); /* s > n */
}

/* J27: (r, n - s) is also a valid ECDSA signature: accepted, so nothing may key
 * replay or revocation on token bytes (they use jti / sid). */
static void test_j27_ecdsa_malleability(void)
{
    char input[TOKEN_CAP];
    uint8_t sig[64];
    size_t in_len = es256_parts(input, sig);
    uint8_t flipped[64];
    memcpy(flipped, sig, 32);
    sub256(p256_n, sig + 32, flipped + 32);
    CHECK(memcmp(flipped, sig, 64) != 0);
    CHECK(accepted_sig(input, in_len, flipped, 64));
}

/* J28: Ed25519 with S + L (the same point equation, non-canonical S) is refused. */
static void test_j28_ed25519_s_not_reduced(void)
{
    static const uint8_t l_le[32] = {
        /* L = 2^252 + 27742317777372353535851937790883648493 */
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
        0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    };
    struct jwk_key *ed = NULL;
    CHECK(jwk_generate(JWK_ALG_EDDSA, 0, &ed) == 0);
    const char *msg = "ed25519 message";
    uint8_t sig[64];
    CHECK(jws_sign_bytes(ed, msg, strlen(msg), sig, sizeof(sig)) == 64);
    CHECK(jws_verify_bytes(ed, msg, strlen(msg), sig, 64) == 0);
    int carry = 0;
    for (int i = 0; i < 32; i++) { /* S is little-endian in sig[32..64) */
        int v = sig[32 + i] + l_le[i] + carry;
        sig[32 + i] = (uint8_t)v;
        carry = v >> 8;
    }
    CHECK(carry == 0);
    CHECK(jws_verify_bytes(ed, msg, strlen(msg), sig, 64) == -TE_INVAL);
    jwk_free(ed);
}

int main(void)
{
    fx_init();
    test_j01_alg_none();
    test_j02_alg_spellings();
    test_j03_none_with_signature();
    test_j04_hs256_with_public_key();
    test_j05_alg_not_the_keys();
    test_j07_hostile_kid();
    test_j09_key_headers_ignored();
    test_j10_crit_b64();
    test_j20_duplicates();
    test_j21_malformed_json();
    test_j22_segments();
    test_j23_base64url();
    test_j25_bit_flips();
    test_j26_es256_der_and_range();
    test_j27_ecdsa_malleability();
    test_j28_ed25519_s_not_reduced();
    fx_free();
    return check_report("test_jws_attacks");
}
