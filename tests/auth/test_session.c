/* tests/auth/test_session.c: refresh tokens as auth/session.c makes and reads them (DESIGN §4:
 * rt_<session id>.<32 random bytes, base64url>, only the SHA-256 stored).
 *
 * Proves:
 *  - a made token has the exact form, names its session, and its stored digest is the
 *    SHA-256 of the whole token text (hex), which parse gives back with the session id;
 *  - two tokens of one session differ (fresh randomness each time);
 *  - parse refuses every malformed token before any store lookup: another prefix, a length
 *    off by one, a session id that is not a lowercase RFC 9562 UUID, a missing dot, a secret
 *    part with characters outside base64url or with padding;
 *  - the verified-token cache keeps a token's sid (auth/access.c checks a cached token's
 *    session against the revocation set, SECURITY O15), and a token without one has "". */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define TEST_SID "0192f0e4-7b7c-7cc3-9a51-3c1f8e2d4b6a"

/* Entries cached without revocation keys: these tests are about the cache itself. */
static const uint64_t test_no_keys[AUTH_REVOKE_KEYS];

static void test_hex(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

static void test_make_parse(void)
{
    char token[AUTH_REFRESH_TOKEN_LEN + 1], sha[2 * HASH_SHA256_BYTES + 1];
    char again[AUTH_REFRESH_TOKEN_LEN + 1], sha2[2 * HASH_SHA256_BYTES + 1];
    assert(auth_refresh_make(TEST_SID, token, sha) == 0);
    assert(strlen(token) == AUTH_REFRESH_TOKEN_LEN);
    assert(strncmp(token, "rt_" TEST_SID ".", 4 + CT_UUID_TEXT_LEN) == 0);
    for (const char *p = token + 4 + CT_UUID_TEXT_LEN; *p; p++)
        assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p) != NULL);
    uint8_t digest[HASH_SHA256_BYTES];
    char expect[2 * HASH_SHA256_BYTES + 1];
    hash_sha256(token, strlen(token), digest);
    test_hex(digest, sizeof(digest), expect);
    assert(strcmp(sha, expect) == 0);
    char sid[CT_UUID_TEXT_LEN + 1], parsed[2 * HASH_SHA256_BYTES + 1];
    assert(auth_refresh_parse(token, sid, parsed) == 0);
    assert(strcmp(sid, TEST_SID) == 0 && strcmp(parsed, sha) == 0);
    assert(auth_refresh_make(TEST_SID, again, sha2) == 0);
    assert(strcmp(again, token) != 0 && strcmp(sha2, sha) != 0);
    assert(auth_refresh_make("not-a-session-id", again, sha2) != 0);
}

/* A copy of good with byte at changed to c (or cut to at when c is 0); parse must refuse. */
static void test_refused(const char *good, size_t at, char c)
{
    char bad[AUTH_REFRESH_TOKEN_LEN + 2];
    char sid[CT_UUID_TEXT_LEN + 1], sha[2 * HASH_SHA256_BYTES + 1];
    snprintf(bad, sizeof(bad), "%s", good);
    bad[at] = c;
    assert(auth_refresh_parse(bad, sid, sha) == -TE_INVAL);
}

static void test_malformed(void)
{
    char token[AUTH_REFRESH_TOKEN_LEN + 1], sha[2 * HASH_SHA256_BYTES + 1];
    char sid[CT_UUID_TEXT_LEN + 1];
    assert(auth_refresh_make(TEST_SID, token, sha) == 0);
    test_refused(token, 0, 'R');                              /* prefix */
    test_refused(token, 2, '-');
    test_refused(token, 3 + 8, 'x');                          /* a dash of the UUID */
    test_refused(token, 3, 'A');                              /* uppercase hex */
    test_refused(token, 3 + 1, 'g');                          /* not hex */
    test_refused(token, 3 + CT_UUID_TEXT_LEN, '_');           /* the dot */
    test_refused(token, AUTH_REFRESH_TOKEN_LEN - 1, '=');     /* padding */
    test_refused(token, AUTH_REFRESH_TOKEN_LEN - 5, '+');     /* base64, not base64url */
    test_refused(token, AUTH_REFRESH_TOKEN_LEN - 1, '\0');    /* one short */
    char longer[AUTH_REFRESH_TOKEN_LEN + 2];
    snprintf(longer, sizeof(longer), "%sA", token);
    assert(auth_refresh_parse(longer, sid, sha) == -TE_INVAL); /* one long */
    assert(auth_refresh_parse("", sid, sha) == -TE_INVAL);
    assert(auth_refresh_parse("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", sid, sha) == -TE_INVAL);
}

static void test_vcache_sid(void)
{
    struct auth_vcache *cache = auth_vcache_create();
    assert(cache != NULL);
    struct jwt_claims c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "user");
    snprintf(c.jti, sizeof(c.jti), "jti-1");
    snprintf(c.sid, sizeof(c.sid), "%s", TEST_SID);
    c.exp = 1800000900;
    struct slice tok = SLICE_LIT("eyJhbGciOiJSUzI1NiJ9.with-sid.signature");
    auth_vcache_put(cache, "acme", tok, &c, test_no_keys);
    const struct auth_vclaims *v = auth_vcache_get(cache, "acme", tok, 1800000000);
    assert(v != NULL && strcmp(v->sid, TEST_SID) == 0);
    c.sid[0] = '\0';
    struct slice other = SLICE_LIT("eyJhbGciOiJSUzI1NiJ9.without-sid.signature");
    auth_vcache_put(cache, "acme", other, &c, test_no_keys);
    v = auth_vcache_get(cache, "acme", other, 1800000000);
    assert(v != NULL && v->sid[0] == '\0');
    auth_vcache_destroy(cache);
}

int main(void)
{
    test_vcache_sid();
    test_make_parse();
    test_malformed();
    printf("test_session: ok\n");
    return 0;
}
