/* tests/crypto/test_secret.c: opaque secrets of DESIGN §4 and SECURITY K01 (lookup by
 * SHA-256 of the whole key, prefix never a shortcut), K02 (strict bounded shape
 * checks), K06 (constant-time digest compare); refresh tokens, client secrets and
 * PKCE S256 with the RFC 7636 Appendix B example. */
#include <string.h>

#include "core/err.h"
#include "crypto/secret.h"
#include "tests/crypto/check.h"

static void test_k01_api_key(void)
{
    char key[SECRET_API_KEY_LEN + 1];
    char prefix[SECRET_DISPLAY_PREFIX_LEN + 1];
    char prefix2[SECRET_DISPLAY_PREFIX_LEN + 1];
    uint8_t digest[HASH_SHA256_BYTES];
    uint8_t digest2[HASH_SHA256_BYTES];
    uint8_t whole[HASH_SHA256_BYTES];
    CHECK(secret_api_key_new(key, digest, prefix) == 0);
    CHECK(strlen(key) == 46 && strncmp(key, "sk_", 3) == 0 && strncmp(key + 3, prefix, 8) == 0);
    CHECK(hash_sha256(key, strlen(key), whole) == 0 && secret_digest_eq(digest, whole));
    CHECK(secret_api_key_parse(slice_make(key, strlen(key)), digest2, prefix2) == 0);
    CHECK(secret_digest_eq(digest, digest2) && strcmp(prefix, prefix2) == 0);
    /* Same display prefix, different remainder: a different digest (no prefix shortcut). */
    char other[SECRET_API_KEY_LEN + 1];
    memcpy(other, key, sizeof(other));
    other[40] = other[40] == 'A' ? 'B' : 'A';
    CHECK(secret_api_key_parse(slice_make(other, 46), digest2, prefix2) == 0);
    CHECK(strcmp(prefix, prefix2) == 0 && !secret_digest_eq(digest, digest2));
    char key2[SECRET_API_KEY_LEN + 1];
    CHECK(secret_api_key_new(key2, digest2, prefix2) == 0 && strcmp(key, key2) != 0);
}

static void test_k02_shapes(void)
{
    char key[SECRET_API_KEY_LEN + 1];
    char prefix[SECRET_DISPLAY_PREFIX_LEN + 1];
    uint8_t d[HASH_SHA256_BYTES];
    CHECK(secret_api_key_new(key, d, prefix) == 0);
    char bad[SECRET_API_KEY_LEN + 8];
    /* wrong length, '+', '/', '=', whitespace, missing sk_, other prefix, 10 KiB */
    CHECK(secret_api_key_parse(slice_make(key, 45), d, prefix) == -TE_INVAL);
    snprintf(bad, sizeof(bad), "%sA", key);
    CHECK(secret_api_key_parse(slice_make(bad, 47), d, prefix) == -TE_INVAL);
    static const char subst[] = { '+', '/', '=', ' ', '\n', '\0', '.' };
    for (size_t i = 0; i < sizeof(subst); i++) {
        memcpy(bad, key, 47);
        bad[10] = subst[i];
        CHECK(secret_api_key_parse(slice_make(bad, 46), d, prefix) == -TE_INVAL);
    }
    memcpy(bad, key, 47);
    bad[0] = 'p';
    CHECK(secret_api_key_parse(slice_make(bad, 46), d, prefix) == -TE_INVAL);
    CHECK(secret_api_key_parse(slice_make(key + 3, 43), d, prefix) == -TE_INVAL);
    static char huge[10240];
    memset(huge, 'A', sizeof(huge));
    memcpy(huge, "sk_", 3);
    CHECK(secret_api_key_parse(slice_make(huge, sizeof(huge)), d, prefix) == -TE_INVAL);
    /* Unused trailing bits: 43 chars carry 258 bits for 256; 'B' at the end sets one. */
    memcpy(bad, key, 47);
    bad[45] = 'B';
    CHECK(secret_api_key_parse(slice_make(bad, 46), d, prefix) == -TE_INVAL);
}

static void test_refresh(void)
{
    char token[SECRET_REFRESH_MAX + 1];
    char sid[SECRET_SESSION_ID_MAX + 1];
    uint8_t d[HASH_SHA256_BYTES];
    uint8_t d2[HASH_SHA256_BYTES];
    struct slice session = SLICE_LIT("0189abcd-ef01-7abc-8def-0123456789ab");
    int n = secret_refresh_new(session, token, d);
    CHECK(n == 3 + 36 + 1 + 43 && strncmp(token, "rt_0189abcd", 11) == 0);
    CHECK(secret_refresh_parse(slice_make(token, (size_t)n), sid, d2) == 0);
    CHECK(strcmp(sid, "0189abcd-ef01-7abc-8def-0123456789ab") == 0 && secret_digest_eq(d, d2));
    char bad[SECRET_REFRESH_MAX + 8];
    memcpy(bad, token, (size_t)n + 1);
    bad[3 + 36] = '_'; /* no separator */
    CHECK(secret_refresh_parse(slice_make(bad, (size_t)n), sid, d2) == -TE_INVAL);
    memcpy(bad, token, (size_t)n + 1);
    bad[5] = '/';
    CHECK(secret_refresh_parse(slice_make(bad, (size_t)n), sid, d2) == -TE_INVAL);
    CHECK(secret_refresh_parse(slice_make(token, (size_t)n - 1), sid, d2) == -TE_INVAL);
    CHECK(secret_refresh_parse(slice_make(token + 3, (size_t)n - 3), sid, d2) == -TE_INVAL);
    CHECK(secret_refresh_new(SLICE_LIT("a.b"), token, d) == -TE_INVAL);
    CHECK(secret_refresh_new(SLICE_LIT(""), token, d) == -TE_INVAL);
    static char long_id[SECRET_SESSION_ID_MAX + 1];
    memset(long_id, 'a', sizeof(long_id));
    CHECK(secret_refresh_new(slice_make(long_id, sizeof(long_id)), token, d) == -TE_INVAL);
    CHECK(secret_refresh_new(slice_make(long_id, SECRET_SESSION_ID_MAX), token, d) > 0);
    CHECK(secret_refresh_parse(slice_make(token, strlen(token)), sid, d2) == 0);
}

static void test_client_secret(void)
{
    char secret[SECRET_CLIENT_SECRET_LEN + 1];
    uint8_t d[HASH_SHA256_BYTES];
    uint8_t d2[HASH_SHA256_BYTES];
    CHECK(secret_client_new(secret, d) == 0 && strlen(secret) == 43);
    CHECK(secret_client_parse(slice_make(secret, 43), d2) == 0 && secret_digest_eq(d, d2));
    CHECK(secret_client_parse(slice_make(secret, 42), d2) == -TE_INVAL);
    secret[0] = '+';
    CHECK(secret_client_parse(slice_make(secret, 43), d2) == -TE_INVAL);
}

/* K06: digests compare in constant time; a difference in any byte is seen. */
static void test_k06_digest_eq(void)
{
    uint8_t a[HASH_SHA256_BYTES] = { 0 };
    uint8_t b[HASH_SHA256_BYTES] = { 0 };
    CHECK(secret_digest_eq(a, b));
    for (int i = 0; i < HASH_SHA256_BYTES; i++) {
        b[i] = 0x80;
        CHECK(!secret_digest_eq(a, b));
        b[i] = 0;
    }
}

static void test_pkce_rfc7636_b(void)
{
    struct slice verifier = SLICE_LIT("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    struct slice challenge = SLICE_LIT("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    CHECK(secret_pkce_s256_check(verifier, challenge));
    CHECK(!secret_pkce_s256_check(verifier,
                                  SLICE_LIT("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN")));
    CHECK(!secret_pkce_s256_check(SLICE_LIT("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"),
                                  challenge));
    CHECK(!secret_pkce_s256_check(SLICE_LIT("short"), challenge));
    CHECK(!secret_pkce_s256_check(SLICE_LIT("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk!"),
                                  challenge));
    CHECK(!secret_pkce_s256_check(verifier,
                                  SLICE_LIT("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=")));
}

int main(void)
{
    test_k01_api_key();
    test_k02_shapes();
    test_refresh();
    test_client_secret();
    test_k06_digest_eq();
    test_pkce_rfc7636_b();
    return check_report("test_secret");
}
