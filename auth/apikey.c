/* auth/apikey.c: personal API keys (DESIGN §4: sk_<43 base64url characters>, only the
 * SHA-256 stored, shown once) — how a shard knows a presented key, and the statements of
 * /t/{tenant}/api/v1/me/api-keys, which auth/session.c routes with the user's access token.
 *
 * A user mints a key with an access token of theirs (GitHub's personal access tokens are the
 * model): the key then acts for that user (sub) through the client whose token minted it
 * (client_id), with a scope no wider than that token's, until it expires, is revoked, or its
 * user is disabled or deleted, or its client deleted. It is accepted where a gateway or a
 * resource server asks about a bearer credential (/verify, introspection), never by
 * Tessera's own /api/v1: a key cannot mint keys, change a password or list sessions.
 *
 * A shard caches what Postgres said of a key (STORE_APIKEY_LOOKUP), keyed by the key's
 * SHA-256 compared in constant time (SECURITY K01, K06), naming its tenant (T09), for at most
 * AUTH_APIKEY_TTL_S and never past the key's expiry. Every hit is checked against the
 * revocation set (DESIGN §1):
 *   - the key's 'key' revocation (DELETE /me/api-keys/{id}) or its client's refuses it;
 *   - a not-before of its user applied since Postgres answered makes the shard ask again,
 *     since only some of the events that write one end a key: a disabled or deleted user's
 *     keys are refused (K04), while a logout everywhere or a password change leaves them
 *     alive, as a sign-out leaves GitHub's tokens. Postgres says which.
 * An answer asked before a not-before arrived on the shard may predate it: it answers its
 * request but is not cached. Each live answer notes the key's use for last_used_at, once a
 * step per cached key (auth/apikey_uses.c). */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "core/log.h"
#include "crypto/jscan.h"

#define KEY_CACHE_WAYS 4
#define KEY_CACHE_SETS (AUTH_APIKEY_CACHE_SLOTS / KEY_CACHE_WAYS)
_Static_assert(AUTH_APIKEY_CACHE_SLOTS % KEY_CACHE_WAYS == 0, "whole sets");

struct key_entry {
    uint8_t digest[HASH_SHA256_BYTES];
    bool used;
    char slug[AUTH_SLUG_MAX + 1];
    int64_t until;      /* asked again from here on */
    uint64_t epoch;     /* auth_revoked_not_before_epoch when Postgres was asked (and answered) */
    int64_t use_noted;  /* when this shard last noted a use for last_used_at; 0: not yet */
    uint64_t key_rk, client_rk, sub_rk; /* auth_revoked_key of the key, its client, its user */
    struct auth_key_claims claims;
};

struct auth_key_cache {
    uint64_t seed; /* per process: nobody can aim keys at one set */
    struct key_entry entries[AUTH_APIKEY_CACHE_SLOTS];
};

struct auth_key_cache *auth_key_cache_create(void)
{
    struct auth_key_cache *cache = calloc(1, sizeof(*cache));
    if (cache != NULL && ct_random_bytes((uint8_t *)&cache->seed, sizeof(cache->seed)) != 0) {
        free(cache);
        return NULL;
    }
    return cache;
}

void auth_key_cache_destroy(struct auth_key_cache *cache)
{
    free(cache);
}

static struct key_entry *key_set(struct auth_key_cache *cache, const uint8_t digest[HASH_SHA256_BYTES])
{
    uint64_t h = XXH3_64bits_withSeed(digest, HASH_SHA256_BYTES, cache->seed);
    return &cache->entries[(h % KEY_CACHE_SETS) * KEY_CACHE_WAYS];
}

static struct key_entry *key_find(struct auth_key_cache *cache, const char *slug,
                                  const uint8_t digest[HASH_SHA256_BYTES])
{
    struct key_entry *set = key_set(cache, digest);
    for (int way = 0; way < KEY_CACHE_WAYS; way++) {
        struct key_entry *e = &set[way];
        if (e->used && secret_digest_eq(e->digest, digest) && strcmp(e->slug, slug) == 0)
            return e;
    }
    return NULL;
}

/* A free way of the digest's set, else the one asked again soonest. */
static struct key_entry *key_victim(struct auth_key_cache *cache, const uint8_t digest[HASH_SHA256_BYTES])
{
    struct key_entry *set = key_set(cache, digest), *victim = &set[0];
    for (int way = 0; way < KEY_CACHE_WAYS; way++) {
        if (!set[way].used)
            return &set[way];
        if (set[way].until < victim->until)
            victim = &set[way];
    }
    return victim;
}

static struct auth_key_cache *key_cache_of(const struct auth *auth, const struct loop *loop)
{
    return auth->cfg->verify_cache ? auth->shards[loop_index(loop)]->api_keys : NULL;
}

bool auth_key_prefixed(struct slice token)
{
    return token.len >= 3 && memcmp(token.ptr, "sk_", 3) == 0;
}

/* ---- The hot path ----------------------------------------------------------------------------- */

static struct auth_key_uses *key_uses_of(const struct auth *auth, const struct loop *loop)
{
    return auth->shards[loop_index(loop)]->key_uses;
}

/* A cached key's use, noted for last_used_at once a step (auth/apikey_uses.c). */
static void key_use(const struct auth *auth, const struct loop *loop, struct key_entry *e, int64_t now)
{
    if (now - e->use_noted >= AUTH_APIKEY_USE_STEP_S &&
        auth_key_use_note(key_uses_of(auth, loop), e->claims.tid, e->claims.id, now))
        e->use_noted = now;
}

enum auth_key_verdict auth_key_check(const struct auth *auth, const struct loop *loop, const char *slug,
                                     struct slice token, struct auth_key_lookup *lk,
                                     const struct auth_key_claims **out)
{
    if (secret_api_key_parse(token, lk->digest, lk->prefix) != 0)
        return AUTH_KEY_REFUSED; /* K02: shape, length, alphabet; no store query */
    const struct auth_revoked *revoked = auth->shards[loop_index(loop)]->revoked;
    lk->epoch = auth_revoked_not_before_epoch(revoked);
    struct auth_key_cache *cache = key_cache_of(auth, loop);
    struct key_entry *e = cache ? key_find(cache, slug, lk->digest) : NULL;
    if (e == NULL)
        return AUTH_KEY_ASK;
    int64_t now = (int64_t)time(NULL);
    if (e->claims.expires != 0 && now >= e->claims.expires)
        return AUTH_KEY_REFUSED; /* an expiry is final; the entry goes with its set's turn */
    if (now >= e->until) {
        e->used = false;
        return AUTH_KEY_ASK;
    }
    if (auth_revoked_has(revoked, e->key_rk, now) || auth_revoked_has(revoked, e->client_rk, now))
        return AUTH_KEY_REFUSED;
    if (auth_revoked_not_before_stamp(revoked, e->sub_rk, now) > e->epoch) {
        e->used = false; /* Postgres says how: a disabled user's keys die, logout-all's live */
        return AUTH_KEY_ASK;
    }
    key_use(auth, loop, e, now);
    *out = &e->claims;
    return AUTH_KEY_LIVE;
}

/* ---- Asking Postgres -------------------------------------------------------------------------- */

void auth_key_ask(struct http_ctx *ctx, struct auth_wait *w, struct auth_key_lookup *lk, const char *slug,
                  http_resume_fn respond)
{
    auth_hex(lk->digest, sizeof(lk->digest), lk->sha_hex);
    const char **p = w->q.params;
    p[0] = slug, p[1] = lk->sha_hex;
    w->q.params_count = 2;
    auth_send(ctx, w, STORE_APIKEY_LOOKUP, respond, NULL);
}

/* The row's claims; false when a value does not fit (a row written by hand). */
static bool key_claims_read(const struct pg_result *r, struct auth_key_claims *c)
{
    memset(c, 0, sizeof(*c));
    c->created = strtoll(pg_result_value(r, 0, 4), NULL, 10);
    c->expires = pg_result_is_null(r, 0, 5) ? 0 : strtoll(pg_result_value(r, 0, 5), NULL, 10);
    return auth_text_copy(c->id, sizeof(c->id), pg_result_value(r, 0, 0)) &&
           auth_text_copy(c->sub, sizeof(c->sub), pg_result_value(r, 0, 1)) &&
           auth_text_copy(c->client_id, sizeof(c->client_id), pg_result_value(r, 0, 2)) &&
           auth_text_copy(c->scope, sizeof(c->scope), pg_result_value(r, 0, 3)) &&
           auth_text_copy(c->tid, sizeof(c->tid), pg_result_value(r, 0, 6));
}

/* K07's audit row: who presented a key that is not live; the prefix only (K05). */
static void key_refused_note(struct auth_wait *w, const struct auth_key_lookup *lk, const char *slug)
{
    char details[64];
    snprintf(details, sizeof(details), "{\"prefix\":\"%s\"}", lk->prefix); /* base64url: no escaping */
    struct auth_audit_fields f = { .actor_kind = "address", .actor_id = http_parked_client(w), .action = "api_key_refused",
                                   .target_kind = "api_key", .target_id = NULL, .details = details };
    auth_audit_note(w, slug, &f);
}

static void key_remember(struct auth_wait *w, const struct auth_key_lookup *lk, const char *slug,
                         const struct auth_key_claims *c, int64_t now, bool use_noted)
{
    struct auth_key_cache *cache = key_cache_of(w->auth, w->loop);
    const struct auth_revoked *revoked = w->auth->shards[loop_index(w->loop)]->revoked;
    if (cache == NULL || auth_revoked_not_before_epoch(revoked) != lk->epoch)
        return; /* a not-before came while Postgres answered: the answer may predate it */
    struct key_entry *e = key_find(cache, slug, lk->digest);
    if (e == NULL)
        e = key_victim(cache, lk->digest);
    memcpy(e->digest, lk->digest, sizeof(e->digest));
    snprintf(e->slug, sizeof(e->slug), "%s", slug);
    e->claims = *c;
    e->until = now + AUTH_APIKEY_TTL_S;
    if (c->expires != 0 && c->expires < e->until)
        e->until = c->expires;
    e->key_rk = auth_revoked_key(c->tid, "key", c->id);
    e->client_rk = auth_revoked_key(c->tid, "client", c->client_id);
    e->sub_rk = auth_revoked_key(c->tid, "sub", c->sub);
    e->epoch = lk->epoch; /* the epoch now: a not-before applied after it is news */
    e->use_noted = use_noted ? now : 0;
    e->used = true;
}

const struct auth_key_claims *auth_key_answered(struct auth_wait *w, const struct auth_key_lookup *lk,
                                                const char *slug)
{
    static _Thread_local struct auth_key_claims claims;
    const struct pg_result *r = w->result;
    if (pg_result_rows(r) != 1) {
        key_refused_note(w, lk, slug);
        return NULL;
    }
    if (!key_claims_read(r, &claims)) {
        log_msg(LOG_WARN, "an API key's row does not fit its claims", "prefix", lk->prefix, NULL);
        return NULL;
    }
    int64_t now = (int64_t)time(NULL);
    bool noted = auth_key_use_note(key_uses_of(w->auth, w->loop), claims.tid, claims.id, now);
    key_remember(w, lk, slug, &claims, now, noted);
    return &claims;
}

/* ---- POST /me/api-keys ------------------------------------------------------------------------ */

static const char *key_lifetime_parse(const struct jscan_object *obj, struct auth_key_new *k)
{
    const struct jscan_value *v = jscan_get(obj, "expires_in");
    int64_t s = 0;
    k->lifetime[0] = '\0';
    if (v == NULL)
        return NULL; /* never expires */
    if (jscan_integer(v, &s) != 0 || s < 1 || s > AUTH_APIKEY_LIFETIME_MAX_S)
        return "expires_in must be a whole number of seconds, 1 to 315360000";
    snprintf(k->lifetime, sizeof(k->lifetime), "%lld", (long long)s);
    return NULL;
}

const char *auth_key_new_parse(const struct http_ctx *ctx, struct auth_key_new *k)
{
    struct jscan_object obj;
    const char *why = auth_json_object(ctx, &obj);
    if (why != NULL)
        return why;
    size_t name_len = 0, scope_len = 0;
    bool name_seen = false;
    why = auth_json_string(&obj, "name", k->name, AUTH_APIKEY_NAME_MAX, &name_len, &name_seen);
    if (why == NULL)
        why = auth_json_string(&obj, "scope", k->scope, AUTH_APIKEY_SCOPE_MAX, &scope_len, &k->scope_given);
    if (why == NULL)
        why = key_lifetime_parse(&obj, k);
    if (why != NULL)
        return why;
    if (!name_seen || name_len == 0 || !auth_printable(k->name, name_len))
        return "name is required: 1 to 100 bytes without control characters";
    if (k->scope_given && !auth_scope_valid(k->scope))
        return "scope must be scope tokens separated by single spaces";
    return NULL;
}

int auth_key_new_make(struct auth_key_new *k, struct auth_key_secret *s, const char *token_scope,
                      const char **why)
{
    *why = NULL;
    if (!k->scope_given) {
        *why = "the token's scope is too long for a key: name the scopes it needs";
        if (strlen(token_scope) > AUTH_APIKEY_SCOPE_MAX)
            return 400;
        snprintf(k->scope, sizeof(k->scope), "%s", token_scope);
    } else if (!auth_words_subset(k->scope, token_scope)) {
        *why = "scope exceeds the scope of the access token minting the key";
        return 400;
    }
    uint8_t digest[HASH_SHA256_BYTES];
    *why = "internal error";
    if (secret_api_key_new(s->key, digest, s->prefix) != 0)
        return 500;
    auth_hex(digest, sizeof(digest), s->sha_hex);
    *why = NULL;
    return 0;
}

void auth_key_create_send(struct auth_wait *w, const struct auth_key_new *k, const struct auth_key_secret *s,
                          const struct auth_key_owner *o, http_resume_fn respond)
{
    const char **p = w->q.params;
    p[0] = o->tid, p[1] = o->sub, p[2] = o->client_id, p[3] = k->name, p[4] = s->prefix, p[5] = s->sha_hex;
    p[6] = k->scope, p[7] = k->lifetime[0] ? k->lifetime : NULL, p[8] = o->ip, p[9] = o->request_id;
    w->q.params_count = 10;
    auth_send(NULL, w, STORE_APIKEY_CREATE, respond, NULL);
}

void auth_key_created_respond(struct http_ctx *ctx, struct auth_wait *w, const struct auth_key_new *k,
                              struct auth_key_secret *s, const char *client_id)
{
    const struct pg_result *r = w->result;
    bool made = w->outcome == PG_OK && pg_result_rows(r) == 1 && !pg_result_is_null(r, 0, 2);
    if (!made)
        explicit_bzero(s->key, sizeof(s->key));
    if (w->outcome == PG_UNIQUE_VIOLATION) {
        http_respond_problem(ctx, 409, "the user holds the most API keys allowed (100 live, 1,000 made a day)");
        return;
    }
    if (w->outcome != PG_OK || pg_result_rows(r) != 1) {
        auth_respond_store_failure(ctx, w->outcome == PG_OK ? PG_ERROR : w->outcome);
        return;
    }
    if (!made) {
        bool gone = pg_result_value(r, 0, 0)[0] != 't';
        http_respond_problem(ctx, gone ? 404 : 403,
                             gone ? "no such user" : "only an access token of a first-party client mints API keys");
        return;
    }
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"id\":");
    const char *id = pg_result_value(r, 0, 2);
    buf_append_json_string(&body, slice_make(id, strlen(id)));
    auth_json_text(&body, "key", s->key);
    explicit_bzero(s->key, sizeof(s->key)); /* shown once: this answer is its only copy */
    auth_json_text(&body, "prefix", s->prefix);
    auth_json_text(&body, "name", k->name);
    auth_json_text(&body, "scope", k->scope);
    auth_json_text(&body, "client_id", client_id);
    buf_printf(&body, ",\"created_at\":%s,\"expires_at\":%s}", pg_result_value(r, 0, 3),
               pg_result_is_null(r, 0, 4) ? "null" : pg_result_value(r, 0, 4));
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 201, "application/json", buf_slice(&body));
}

/* ---- DELETE /me/api-keys/{id} ----------------------------------------------------------------- */

void auth_key_revoke_committed(struct auth_wait *w)
{
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    if (auth_revocations_spread(w, "key") == 0) {
        auth_answer(w, 404, "no such API key");
        return;
    }
    http_resume(w, auth_respond_no_content);
}
