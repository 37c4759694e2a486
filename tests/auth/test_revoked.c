/* tests/auth/test_revoked.c: a shard's copy of the revocation set (auth/revoked.c).
 *
 * Proves:
 *  - a revoked key answers until its exp + the leeway and not from then on; an unknown key,
 *    and a key of another kind, tenant or value, never answers; a revocation whose token is
 *    already dead is not stored at all; applying one twice keeps one entry (F07);
 *  - a subject's not-before refuses exactly the tokens issued before it (iat < nb) while it
 *    lives, is a table of its own (a 'sub' key is not a revoked key, nor the other way), and a
 *    later not-before for the same subject replaces an earlier one, never the reverse;
 *  - the not-before message packs nb and until into one word and back; a span too long for
 *    it is cut, never lengthened;
 *  - the set grows past its first size keeping every live entry, and a rebuild drops the
 *    entries whose tokens are dead. */
#include "auth/revoked.c"

#include <assert.h>
#include <stdio.h>

#define TEST_TENANT "0b6d9a3e-3f1c-4a57-9b1e-2f8c1d7e5a90"
#define TEST_OTHER_TENANT "7f0e1c2d-3b4a-4c5d-8e6f-1a2b3c4d5e6f"
#define TEST_MANY 10000 /* past REVOKED_INITIAL_SLOTS / 2: at least two doublings */
#define TEST_CLOCK_SLACK_S 3 /* seconds the wall clock may move while a test runs */

static void test_set(int64_t now)
{
    struct auth_revoked *r = auth_revoked_create(NULL);
    assert(r != NULL);
    uint64_t jti = auth_revoked_key(TEST_TENANT, "jti", "token-1");
    assert(!auth_revoked_has(r, jti, now));
    auth_revoked_add(r, jti, now + 900);
    auth_revoked_add(r, jti, now + 900); /* F07: twice is harmless */
    assert(r->set.count == 1);
    assert(auth_revoked_has(r, jti, now));
    assert(auth_revoked_has(r, jti, now + 900 + JWT_LEEWAY_DEFAULT_S - 1));
    assert(!auth_revoked_has(r, jti, now + 900 + JWT_LEEWAY_DEFAULT_S));
    assert(!auth_revoked_has(r, auth_revoked_key(TEST_TENANT, "sid", "token-1"), now));
    assert(!auth_revoked_has(r, auth_revoked_key(TEST_OTHER_TENANT, "jti", "token-1"), now));
    assert(!auth_revoked_has(r, auth_revoked_key(TEST_TENANT, "jti", "token-2"), now));
    auth_revoked_add(r, auth_revoked_key(TEST_TENANT, "jti", "dead"), now - 2 * JWT_LEEWAY_DEFAULT_S);
    assert(r->set.count == 1); /* its token expired past the leeway: nothing to refuse */
    auth_revoked_destroy(r);
}

static void test_not_before(int64_t now)
{
    struct auth_revoked *r = auth_revoked_create(NULL);
    assert(r != NULL);
    uint64_t sub = auth_revoked_key(TEST_TENANT, "sub", "user-1");
    int64_t nb = now - 60;
    assert(!auth_revoked_before(r, sub, nb - 1, now));
    auth_revoked_add_not_before(r, sub, nb, now + 3600);
    assert(auth_revoked_before(r, sub, nb - 1, now));     /* issued before: refused */
    assert(!auth_revoked_before(r, sub, nb, now));        /* issued at nb: kept (iat < nb only) */
    assert(!auth_revoked_before(r, sub, now, now));
    assert(!auth_revoked_has(r, sub, now));               /* a not-before is not a revoked key */
    assert(!auth_revoked_before(r, auth_revoked_key(TEST_TENANT, "sub", "user-2"), nb - 1, now));
    assert(!auth_revoked_before(r, auth_revoked_key(TEST_OTHER_TENANT, "sub", "user-1"), nb - 1, now));
    assert(!auth_revoked_before(r, sub, nb - 1, now + 3600 + JWT_LEEWAY_DEFAULT_S)); /* outlived */
    auth_revoked_add(r, auth_revoked_key(TEST_TENANT, "jti", "x"), now + 900);
    assert(!auth_revoked_before(r, auth_revoked_key(TEST_TENANT, "jti", "x"), 0, now));

    auth_revoked_add_not_before(r, sub, nb + 100, now + 3600); /* a later logout-all */
    assert(auth_revoked_before(r, sub, nb + 99, now));
    auth_revoked_add_not_before(r, sub, nb - 500, now + 60); /* an older one, heard late */
    assert(auth_revoked_before(r, sub, nb + 99, now));
    assert(auth_revoked_before(r, sub, nb + 99, now + 3600 + JWT_LEEWAY_DEFAULT_S - 1));
    assert(r->not_before.count == 1);
    auth_revoked_destroy(r);
}

/* The stamps a cache of Postgres' answers compares (auth/apikey.c): a second not-before in the
 * same second has the first's value, and still moves the subject's stamp past an answer
 * cached in between; another subject's does not. */
static void test_stamps(int64_t now)
{
    struct auth_revoked *r = auth_revoked_create(NULL);
    assert(r != NULL);
    uint64_t sub = auth_revoked_key(TEST_TENANT, "sub", "user-1");
    uint64_t other = auth_revoked_key(TEST_TENANT, "sub", "user-2");
    assert(auth_revoked_not_before_stamp(r, sub, now) == 0 && auth_revoked_not_before_epoch(r) == 0);
    auth_revoked_add_not_before(r, sub, now - 60, now + 3600); /* a logout-all */
    uint64_t cached_at = auth_revoked_not_before_epoch(r);     /* an answer read after it */
    assert(auth_revoked_not_before_stamp(r, sub, now) <= cached_at);
    auth_revoked_add_not_before(r, other, now - 60, now + 3600);
    assert(auth_revoked_not_before_stamp(r, sub, now) <= cached_at);
    auth_revoked_add_not_before(r, sub, now - 60, now + 3600); /* a disable, the same second */
    assert(auth_revoked_not_before_stamp(r, sub, now) > cached_at);
    assert(auth_revoked_not_before_stamp(r, sub, now + 3600 + JWT_LEEWAY_DEFAULT_S) == 0); /* outlived */
    auth_revoked_destroy(r);
}

static void test_pack(int64_t now)
{
    int64_t nb, until;
    auth_revoked_unpack_not_before(auth_revoked_pack_not_before(now - 60, now + 4500), &nb, &until);
    assert(nb == now - 60 && until == now + 4500);
    int64_t too_long = (INT64_C(1) << REVOKED_SPAN_BITS) + 10;
    auth_revoked_unpack_not_before(auth_revoked_pack_not_before(now, now + too_long), &nb, &until);
    assert(nb == now && until == now + (INT64_C(1) << REVOKED_SPAN_BITS) - 1);
    auth_revoked_unpack_not_before(auth_revoked_pack_not_before(now, now - 5), &nb, &until);
    assert(nb == now && until == now);
}

static void test_growth(int64_t now)
{
    struct auth_revoked *r = auth_revoked_create(NULL);
    assert(r != NULL);
    char value[32];
    for (int i = 0; i < TEST_MANY; i++) {
        snprintf(value, sizeof(value), "jti-%d", i);
        /* Every other entry's token dies within the leeway of now: TEST_CLOCK_SLACK_S after
         * it, so that the clock auth_revoked_add reads (and its growth's rebuilds) may pass a
         * second or two beyond now meanwhile. */
        auth_revoked_add(r, auth_revoked_key(TEST_TENANT, "jti", value),
                         i % 2 ? now + 900 : now - JWT_LEEWAY_DEFAULT_S + TEST_CLOCK_SLACK_S);
    }
    assert(r->set.cap > REVOKED_INITIAL_SLOTS);
    for (int i = 0; i < TEST_MANY; i++) {
        snprintf(value, sizeof(value), "jti-%d", i);
        assert(auth_revoked_has(r, auth_revoked_key(TEST_TENANT, "jti", value), now));
    }
    assert(revoked_rebuild(&r->set, r->set.cap, now + TEST_CLOCK_SLACK_S, SIZE_MAX) == 0);
    assert(r->set.count == TEST_MANY / 2);
    for (int i = 0; i < TEST_MANY; i++) {
        snprintf(value, sizeof(value), "jti-%d", i);
        assert(auth_revoked_has(r, auth_revoked_key(TEST_TENANT, "jti", value), now + TEST_CLOCK_SLACK_S) ==
               (i % 2 == 1));
    }
    auth_revoked_destroy(r);
}

int main(void)
{
    int64_t now = (int64_t)time(NULL); /* auth_revoked_add reads the clock itself */
    test_set(now);
    test_not_before(now);
    test_stamps(now);
    test_pack(now);
    test_growth(now);
    printf("test_revoked: ok\n");
    return 0;
}
