/* auth/vcache.c: each shard's cache of verified access tokens (DESIGN §1), so a gateway
 * asking about the same token again costs one digest and a compare instead of a signature
 * verification.
 *
 * Keyed by the XXH3-128 digest of the compact token under a random per-process secret (an
 * attacker who cannot read the secret cannot aim a forged token at a cached digest; the
 * length is compared too), AUTH_VCACHE_WAYS-way set associative and bounded (a full set
 * gives up the entry that expires first); an entry dies at the token's exp plus
 * the leeway jwt_verify grants, exactly when a fresh verification would refuse it. Each
 * entry names the tenant it was verified for, compared with the path's on every hit
 * (SECURITY T09): the same token at another tenant's endpoint is verified anew, and fails.
 * Claims too long for an entry are simply not cached. */
#include "auth/auth_int.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "crypto/ct.h"

struct vcache_entry {
    XXH128_hash_t digest;
    uint32_t token_len;
    bool used;
    char slug[AUTH_SLUG_MAX + 1];
    struct auth_vclaims claims;
};

struct auth_vcache {
    uint8_t secret[AUTH_VCACHE_SECRET_BYTES];
    struct vcache_entry entries[AUTH_VCACHE_SLOTS];
};

struct auth_vcache *auth_vcache_create(void)
{
    struct auth_vcache *cache = calloc(1, sizeof(*cache));
    if (cache != NULL && ct_random_bytes(cache->secret, sizeof(cache->secret)) != 0) {
        free(cache);
        return NULL;
    }
    return cache;
}

void auth_vcache_destroy(struct auth_vcache *cache)
{
    free(cache);
}

#define VCACHE_SETS (AUTH_VCACHE_SLOTS / AUTH_VCACHE_WAYS)
_Static_assert(AUTH_VCACHE_SLOTS % AUTH_VCACHE_WAYS == 0, "whole sets");

static struct vcache_entry *vcache_set(struct auth_vcache *cache, struct slice token, XXH128_hash_t *digest)
{
    *digest = XXH3_128bits_withSecret(token.ptr, token.len, cache->secret, sizeof(cache->secret));
    return &cache->entries[(digest->low64 % VCACHE_SETS) * AUTH_VCACHE_WAYS];
}

static bool vcache_holds(const struct vcache_entry *e, XXH128_hash_t digest, size_t token_len)
{
    return e->used && XXH128_isEqual(e->digest, digest) && e->token_len == token_len;
}

const struct auth_vclaims *auth_vcache_get(struct auth_vcache *cache, const char *slug, struct slice token,
                                           int64_t now)
{
    XXH128_hash_t digest;
    struct vcache_entry *set = vcache_set(cache, token, &digest);
    for (int way = 0; way < AUTH_VCACHE_WAYS; way++) {
        struct vcache_entry *e = &set[way];
        if (!vcache_holds(e, digest, token.len) || strcmp(e->slug, slug) != 0)
            continue;
        if (now >= e->claims.exp + JWT_LEEWAY_DEFAULT_S) {
            e->used = false; /* expired: the entry is free again */
            return NULL;
        }
        return &e->claims;
    }
    return NULL;
}

/* The entry to fill: the token's own (verified again, e.g. for another tenant), a free
 * one, else the one that expires first. */
static struct vcache_entry *vcache_victim(struct vcache_entry *set, XXH128_hash_t digest, size_t token_len)
{
    struct vcache_entry *victim = &set[0];
    for (int way = 0; way < AUTH_VCACHE_WAYS; way++) {
        struct vcache_entry *e = &set[way];
        if (!e->used || vcache_holds(e, digest, token_len))
            return e;
        if (e->claims.exp < victim->claims.exp)
            victim = e;
    }
    return victim;
}

void auth_vcache_put(struct auth_vcache *cache, const char *slug, struct slice token, const struct jwt_claims *c,
                     const uint64_t keys[AUTH_REVOKE_KEYS])
{
    XXH128_hash_t digest;
    struct vcache_entry *e = vcache_victim(vcache_set(cache, token, &digest), digest, token.len);
    struct auth_vclaims *v = &e->claims;
    e->used = false;
    if (!auth_text_copy(v->sub, sizeof(v->sub), c->sub) || !auth_text_copy(v->client_id, sizeof(v->client_id), c->client_id) ||
        !auth_text_copy(v->tid, sizeof(v->tid), c->tid) || !auth_text_copy(v->jti, sizeof(v->jti), c->jti) ||
        !auth_text_copy(v->sid, sizeof(v->sid), c->sid) ||
        !auth_text_copy(v->scope, sizeof(v->scope), c->scope) || !auth_text_copy(e->slug, sizeof(e->slug), slug))
        return;
    memcpy(v->revoke_keys, keys, sizeof(v->revoke_keys));
    v->exp = c->exp;
    v->iat = c->iat;
    v->nbf = c->nbf;
    e->digest = digest;
    e->token_len = (uint32_t)token.len;
    e->used = true;
}
