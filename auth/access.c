/* auth/access.c: is this access token valid at this tenant, and whose is it? The one check
 * behind /verify and introspection (DESIGN §1's hot path).
 *
 * First the shard's verified-token cache (auth/vcache.c); on a miss, the full RFC 9068 /
 * RFC 8725 validation by crypto/jwt against the shard's copy of the tenant's keys: typ
 * at+jwt, issuer and audience the tenant's issuer URL byte for byte, tid the tenant's id,
 * exp/nbf/iat with the default leeway (SECURITY J rows, T01). A valid token is cached.
 *
 * Revocation is checked on every call, cached or not: by jti (RFC 7009), by client (a
 * deleted client's tokens) and, for a user's token, by its session id (sid: a logout or a
 * refresh-token reuse, RFC 9700 §4.14.2, kills every access token of the session at once)
 * and by its subject's not-before (logout everywhere, a disabled or deleted user, a reset:
 * every token of the user issued before it). */
#include "auth/auth_int.h"

#include <assert.h>
#include <string.h>
#include <time.h>

#define ACCESS_ISSUER_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX)

/* Every cached field is NUL-terminated and shorter than its jwt_claims counterpart. */
static void access_copy(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);
    assert(len < cap);
    memcpy(dst, src, len + 1);
}

/* A cache entry as the claims a fresh verification would give. */
static void access_from_cache(const struct auth_vclaims *v, struct jwt_claims *out)
{
    memset(out, 0, sizeof(*out));
    access_copy(out->sub, sizeof(out->sub), v->sub);
    access_copy(out->client_id, sizeof(out->client_id), v->client_id);
    access_copy(out->tid, sizeof(out->tid), v->tid);
    access_copy(out->jti, sizeof(out->jti), v->jti);
    access_copy(out->sid, sizeof(out->sid), v->sid);
    access_copy(out->scope, sizeof(out->scope), v->scope);
    out->exp = v->exp;
    out->iat = v->iat;
    out->nbf = v->nbf;
}

void auth_revoke_keys(const struct jwt_claims *c, uint64_t keys[AUTH_REVOKE_KEYS])
{
    keys[0] = auth_revoked_key(c->tid, "jti", c->jti);
    keys[1] = auth_revoked_key(c->tid, "client", c->client_id); /* a deleted client's tokens */
    bool user = c->sid[0] != '\0'; /* a client's own token has no session and no user */
    keys[2] = user ? auth_revoked_key(c->tid, "sid", c->sid) : 0;
    keys[AUTH_REVOKE_KEY_SUB] = user ? auth_revoked_key(c->tid, "sub", c->sub) : 0;
}

/* True when one of the token's keys is in the revocation set, or it was issued before its
 * subject's not-before. */
static bool access_revoked(const struct auth_revoked *revoked, const uint64_t keys[AUTH_REVOKE_KEYS],
                           int64_t iat, int64_t now)
{
    for (int i = 0; i < AUTH_REVOKE_KEY_SUB; i++) {
        if (keys[i] != 0 && auth_revoked_has(revoked, keys[i], now))
            return true;
    }
    return keys[AUTH_REVOKE_KEY_SUB] != 0 && auth_revoked_before(revoked, keys[AUTH_REVOKE_KEY_SUB], iat, now);
}

int auth_access_check(const struct auth *auth, const struct loop *loop, const char *slug,
                      const struct auth_tenant *tenant, struct slice token, const struct jwt_claims **out)
{
    static _Thread_local struct jwt_claims claims;
    static _Thread_local uint8_t scratch[JWS_TOKEN_MAX];
    struct auth_vcache *cache = auth->shards[loop_index(loop)]->verified;
    int64_t now = (int64_t)time(NULL);
    if (token.len == 0 || token.len > AUTH_ACCESS_TOKEN_MAX)
        return -TE_INVAL;
    const struct auth_revoked *revoked = auth->shards[loop_index(loop)]->revoked;
    if (!auth->cfg->verify_cache)
        cache = NULL;
    const struct auth_vclaims *seen = cache ? auth_vcache_get(cache, slug, token, now) : NULL;
    if (seen != NULL) {
        if (access_revoked(revoked, seen->revoke_keys, seen->iat, now))
            return -TE_INVAL;
        access_from_cache(seen, &claims);
        *out = &claims;
        return 0;
    }
    if (tenant == NULL && (tenant = auth_tenant_cached(auth, loop, slug)) == NULL)
        return -TE_EMPTY;
    char issuer[ACCESS_ISSUER_MAX + 1];
    struct buf b;
    buf_init(&b, issuer, sizeof(issuer));
    auth_issuer(auth, slice_make(slug, strlen(slug)), &b);
    struct jwt_expect expect = {
        .kind = JWT_KIND_ACCESS,
        .issuer = buf_slice(&b),
        .audience = buf_slice(&b),
        .tenant = slice_make(tenant->id, strlen(tenant->id)),
        .now = now,
        .leeway_s = JWT_LEEWAY_DEFAULT_S,
        .max_len = AUTH_ACCESS_TOKEN_MAX,
    };
    if (b.overflow || jwt_verify(&tenant->keys, &expect, token.ptr, token.len, scratch, sizeof(scratch), &claims) != 0)
        return -TE_INVAL;
    uint64_t keys[AUTH_REVOKE_KEYS];
    auth_revoke_keys(&claims, keys);
    if (access_revoked(revoked, keys, claims.iat, now))
        return -TE_INVAL;
    if (cache != NULL)
        auth_vcache_put(cache, slug, token, &claims, keys);
    *out = &claims;
    return 0;
}
