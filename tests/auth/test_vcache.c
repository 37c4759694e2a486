/* tests/auth/test_vcache.c: the per-shard verified-token cache (auth/vcache.c).
 *
 * Proves:
 *  - a token put for tenant A is found for A with its claims, and not for tenant B (T09), nor
 *    for a token of another length or content;
 *  - an entry answers until exp + the verification leeway, and not from then on (and its
 *    place is free again);
 *  - claims too long for an entry are not cached at all;
 *  - putting the same token again replaces its entry instead of taking a second one;
 *  - a pool of 10,000 live tokens stays (almost) whole: the sets keep colliding tokens, where
 *    a direct-mapped cache of the same size loses about a quarter of them; more tokens than
 *    entries never makes a lookup answer another token's claims. */
#include "auth/vcache.c"

#include <assert.h>
#include <stdio.h>

#define TEST_NOW 1800000000        /* a fixed clock: the cache takes "now" from its caller */
#define TEST_POOL 10000            /* the pool of valid tokens */
#define TEST_POOL_HITS_MIN 9500    /* expected about 9,900; direct-mapped would keep ~7,400 */
#define TEST_OVERFLOW (AUTH_VCACHE_SLOTS * 2)

/* Entries cached without revocation keys: these tests are about the cache itself. */
static const uint64_t test_no_keys[AUTH_REVOKE_KEYS];

static void test_claims(struct jwt_claims *c, unsigned n, int64_t exp)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->sub, sizeof(c->sub), "sub-%u", n);
    snprintf(c->client_id, sizeof(c->client_id), "client-%u", n);
    snprintf(c->jti, sizeof(c->jti), "jti-%u", n);
    snprintf(c->tid, sizeof(c->tid), "tid-%u", n);
    snprintf(c->scope, sizeof(c->scope), "read write");
    c->exp = exp;
    c->iat = TEST_NOW - 10;
}

static struct slice test_token(char *buf, size_t cap, unsigned n)
{
    int len = snprintf(buf, cap, "eyJhbGciOiJSUzI1NiJ9.token-%u.signature", n);
    return slice_make(buf, (size_t)len);
}

static void test_hit_and_misses(struct auth_vcache *cache)
{
    char buf[96], other[96];
    struct jwt_claims c;
    test_claims(&c, 1, TEST_NOW + 900);
    struct slice tok = test_token(buf, sizeof(buf), 1);
    static const uint64_t keys[AUTH_REVOKE_KEYS] = { 11, 12, 0 };
    auth_vcache_put(cache, "alpha", tok, &c, keys);
    const struct auth_vclaims *v = auth_vcache_get(cache, "alpha", tok, TEST_NOW);
    assert(v != NULL && memcmp(v->revoke_keys, keys, sizeof(keys)) == 0); /* made once, at verification */
    assert(v != NULL && strcmp(v->sub, "sub-1") == 0 && strcmp(v->jti, "jti-1") == 0 && v->exp == c.exp);
    assert(auth_vcache_get(cache, "beta", tok, TEST_NOW) == NULL); /* T09 */
    assert(auth_vcache_get(cache, "alph", tok, TEST_NOW) == NULL);
    assert(auth_vcache_get(cache, "alpha", slice_make(tok.ptr, tok.len - 1), TEST_NOW) == NULL);
    memcpy(other, buf, tok.len);
    other[tok.len - 1] ^= 1;
    assert(auth_vcache_get(cache, "alpha", slice_make(other, tok.len), TEST_NOW) == NULL);
}

static void test_expiry(struct auth_vcache *cache)
{
    char buf[96];
    struct jwt_claims c;
    test_claims(&c, 2, TEST_NOW + 30);
    struct slice tok = test_token(buf, sizeof(buf), 2);
    auth_vcache_put(cache, "alpha", tok, &c, test_no_keys);
    int64_t last_good = c.exp + JWT_LEEWAY_DEFAULT_S - 1;
    assert(auth_vcache_get(cache, "alpha", tok, last_good) != NULL);
    assert(auth_vcache_get(cache, "alpha", tok, last_good + 1) == NULL);
    assert(auth_vcache_get(cache, "alpha", tok, TEST_NOW) == NULL); /* the entry was freed */
}

static void test_too_long(struct auth_vcache *cache)
{
    char buf[96];
    struct jwt_claims c;
    test_claims(&c, 3, TEST_NOW + 900);
    memset(c.scope, 's', sizeof(((struct auth_vclaims *)0)->scope)); /* one past what fits */
    c.scope[sizeof(((struct auth_vclaims *)0)->scope)] = '\0';
    struct slice tok = test_token(buf, sizeof(buf), 3);
    auth_vcache_put(cache, "alpha", tok, &c, test_no_keys);
    assert(auth_vcache_get(cache, "alpha", tok, TEST_NOW) == NULL);
}

static unsigned test_used_entries(const struct auth_vcache *cache)
{
    unsigned n = 0;
    for (size_t i = 0; i < AUTH_VCACHE_SLOTS; i++)
        n += cache->entries[i].used;
    return n;
}

static void test_replace(struct auth_vcache *cache)
{
    char buf[96];
    struct jwt_claims c;
    test_claims(&c, 4, TEST_NOW + 900);
    struct slice tok = test_token(buf, sizeof(buf), 4);
    auth_vcache_put(cache, "alpha", tok, &c, test_no_keys);
    unsigned before = test_used_entries(cache);
    c.exp = TEST_NOW + 1000;
    auth_vcache_put(cache, "alpha", tok, &c, test_no_keys);
    assert(test_used_entries(cache) == before);
    assert(auth_vcache_get(cache, "alpha", tok, TEST_NOW)->exp == TEST_NOW + 1000);
}

static unsigned test_pool_hits(struct auth_vcache *cache, unsigned first, unsigned count)
{
    char buf[96];
    struct jwt_claims c;
    for (unsigned n = first; n < first + count; n++) {
        test_claims(&c, n, TEST_NOW + 900 + n % 600);
        auth_vcache_put(cache, "alpha", test_token(buf, sizeof(buf), n), &c, test_no_keys);
    }
    unsigned hits = 0;
    for (unsigned n = first; n < first + count; n++) {
        const struct auth_vclaims *v = auth_vcache_get(cache, "alpha", test_token(buf, sizeof(buf), n), TEST_NOW);
        if (v == NULL)
            continue;
        char want[32];
        snprintf(want, sizeof(want), "sub-%u", n);
        assert(strcmp(v->sub, want) == 0); /* never another token's claims */
        hits++;
    }
    return hits;
}

int main(void)
{
    struct auth_vcache *cache = auth_vcache_create();
    assert(cache != NULL);
    test_hit_and_misses(cache);
    test_expiry(cache);
    test_too_long(cache);
    test_replace(cache);
    auth_vcache_destroy(cache);

    cache = auth_vcache_create();
    unsigned hits = test_pool_hits(cache, 100, TEST_POOL);
    printf("a pool of %u tokens: %u found\n", TEST_POOL, hits);
    fflush(stdout);
    assert(hits >= TEST_POOL_HITS_MIN);
    unsigned overflow_hits = test_pool_hits(cache, 100000, TEST_OVERFLOW);
    printf("%u tokens into %u entries: %u found\n", TEST_OVERFLOW, AUTH_VCACHE_SLOTS, overflow_hits);
    /* Bounded, and still doing its job: most entries hold one of the newest tokens. */
    assert(overflow_hits <= AUTH_VCACHE_SLOTS && overflow_hits > AUTH_VCACHE_SLOTS / 2);
    auth_vcache_destroy(cache);
    printf("test_vcache: ok\n");
    return 0;
}
