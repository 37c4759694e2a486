/* auth/client.c: what the OAuth endpoints share: their form bodies and client
 * authentication (RFC 6749 §2.3: client_secret_basic or client_secret_post, exactly one).
 *
 * A client is read by client_id within the path's tenant (SECURITY T02) and its secret's
 * SHA-256 compared in constant time (DESIGN §4: client secrets are high-entropy, so SHA-256,
 * not Argon2). For the endpoints a gateway calls on every request (introspection,
 * revocation) the result is cached per shard for AUTH_CLIENT_TTL_MS, so a repeated call
 * costs one SHA-256 of the presented secret and no query; a presented secret that does not
 * match the cached digest is checked against Postgres again (the secret may have changed).
 * While a shard reads a client's row, the requests that may take a cached answer and miss
 * wait for that read instead of each reading the row again (single flight: a gateway's many
 * connections all miss at once when the entry expires).
 * The token endpoint reads Postgres for every grant but refresh_token, whose rotation
 * statement reads the client's row anyway (auth/session.c). */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xxhash.h>

#include "proto/http_auth.h"
#include "proto/url.h"

/* ---- Forms ----------------------------------------------------------------------------------- */

static const char *auth_form_take(struct slice raw, struct auth_form_field *f)
{
    if (f->seen)
        return "a parameter is repeated"; /* RFC 6749 §3.2, §3.1 */
    f->seen = true;
    if (raw.len >= f->cap)
        return "a parameter is too long";
    int n = url_decode_form_component(raw, f->dst);
    if (n < 0 || memchr(f->dst, '\0', (size_t)n) != NULL)
        return "a parameter is malformed";
    f->dst[n] = '\0';
    return NULL;
}

bool auth_form_body(const struct http_ctx *ctx)
{
    static const char form[] = "application/x-www-form-urlencoded";
    const struct http1_header *h = http1_find_header(ctx->req, "Content-Type");
    return h != NULL && h->value.len >= sizeof(form) - 1 && strncasecmp(h->value.ptr, form, sizeof(form) - 1) == 0 &&
           (h->value.len == sizeof(form) - 1 || h->value.ptr[sizeof(form) - 1] == ';');
}

const char *auth_form_parse(const struct http_ctx *ctx, struct auth_form_field *fields, size_t n)
{
    if (!auth_form_body(ctx))
        return "the body must be application/x-www-form-urlencoded";
    return auth_form_read(ctx->body, fields, n);
}

const char *auth_form_read(struct slice in, struct auth_form_field *fields, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fields[i].seen = false;
        fields[i].dst[0] = '\0';
    }
    size_t pos = 0;
    struct slice key, value;
    while (url_form_next(in, &pos, &key, &value)) {
        for (size_t i = 0; i < n; i++) {
            if (!slice_eq_cstr(key, fields[i].name))
                continue;
            const char *why = auth_form_take(value, &fields[i]);
            if (why != NULL)
                return why;
        }
        /* anything else is ignored (RFC 6749 §3.2) */
    }
    return NULL;
}

/* ---- Credentials ------------------------------------------------------------------------------ */

int auth_client_credentials(const struct http_ctx *ctx, struct auth_client_creds *c, const char **why)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    if (h != NULL) {
        char id[AUTH_CLIENT_ID_MAX + 1];
        if (c->has_secret) {
            *why = "the client authenticated with more than one method";
            return 400;
        }
        if (http_auth_basic(h->value, id, sizeof(id), c->secret, sizeof(c->secret)) != 0) {
            *why = "the Authorization header is not valid Basic credentials";
            return 401;
        }
        if (c->has_id && strcmp(id, c->client_id) != 0) {
            *why = "client_id differs from the authenticated client";
            return 400;
        }
        memcpy(c->client_id, id, sizeof(id));
        c->has_id = c->has_secret = true;
    }
    if (!c->has_id || !c->has_secret || c->client_id[0] == '\0') {
        *why = "client authentication is required";
        return 401;
    }
    return 0;
}

/* ---- Authentication --------------------------------------------------------------------------- */

struct auth_client_slot {
    bool used;
    uint64_t loaded_ms;
    char slug[AUTH_SLUG_MAX + 1];
    uint8_t secret_sha256[HASH_SHA256_BYTES];
    struct auth_client client;
    /* The read of this slot's client in flight, if any (its slug and client_id), and the
     * requests that may take a cached answer waiting for it rather than reading the same row
     * again (a gateway's connections all missing at once when the entry expires). */
    char loading_slug[AUTH_SLUG_MAX + 1];
    char loading_id[AUTH_CLIENT_ID_MAX + 1];
    struct auth_wait *leader;  /* the request whose read it is; NULL: none in flight */
    struct auth_wait *waiters;
};

struct auth_client_cache {
    struct auth_client_slot slots[AUTH_CLIENT_SLOTS];
};

struct auth_client_cache *auth_client_cache_create(void)
{
    return calloc(1, sizeof(struct auth_client_cache));
}

void auth_client_cache_destroy(struct auth_client_cache *cache)
{
    free(cache);
}

static struct auth_client_slot *auth_client_slot(struct auth_client_cache *cache, const char *slug,
                                                 const char *client_id)
{
    /* The tenant's hash seeds the client's: a slot mixes both (entries are compared in
     * full on a hit, so this only spreads them). */
    uint64_t seed = XXH3_64bits(slug, strlen(slug));
    return &cache->slots[XXH3_64bits_withSeed(client_id, strlen(client_id), seed) % AUTH_CLIENT_SLOTS];
}

static bool auth_hex32(const char *hex, uint8_t out[HASH_SHA256_BYTES])
{
    if (strlen(hex) != 2 * HASH_SHA256_BYTES)
        return false; /* NULL secret: a public client, which cannot authenticate this way */
    for (size_t i = 0; i < HASH_SHA256_BYTES; i++) {
        unsigned v = 0;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = (uint8_t)v;
    }
    return true;
}

bool auth_text_copy(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);
    if (len >= cap)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

/* The client row into slot; false when it does not fit (then it is neither cached nor used). */
static bool auth_client_fill(struct auth_client_slot *slot, const struct pg_result *r, const char *slug)
{
    struct auth_client *c = &slot->client;
    slot->used = false;
    if (!auth_hex32(pg_result_value(r, 0, 2), slot->secret_sha256) ||
        !auth_text_copy(c->tenant_id, sizeof(c->tenant_id), pg_result_value(r, 0, 1)) ||
        !auth_text_copy(c->grants, sizeof(c->grants), pg_result_value(r, 0, 3)) ||
        !auth_text_copy(c->scopes, sizeof(c->scopes), pg_result_value(r, 0, 4)) ||
        !auth_text_copy(slot->slug, sizeof(slot->slug), slug))
        return false;
    c->lifetime_s = strtoll(pg_result_value(r, 0, 5), NULL, 10);
    c->can_introspect = strcmp(pg_result_value(r, 0, 6), "t") == 0;
    slot->used = true;
    return true;
}

/* The cached result for cw's credentials if younger than max_age_ms and the secret matches. */
static const struct auth_client *auth_client_lookup(const struct auth *auth, const struct loop *loop,
                                                    const struct auth_client_wait *cw, uint64_t max_age_ms)
{
    struct auth_client_slot *slot = auth_client_slot(auth->shards[loop_index(loop)]->clients, cw->slug,
                                                     cw->client_id);
    bool young = slot->used && loop_now_ms(loop) - slot->loaded_ms < max_age_ms &&
                 strcmp(slot->slug, cw->slug) == 0 && strcmp(slot->client.client_id, cw->client_id) == 0;
    return young && ct_memeq(slot->secret_sha256, cw->secret_sha256, HASH_SHA256_BYTES) ? &slot->client : NULL;
}

const struct auth_client *auth_client_cached(const struct auth *auth, const struct loop *loop,
                                             const struct auth_client_wait *cw)
{
    return auth_client_lookup(auth, loop, cw, AUTH_CLIENT_TTL_MS);
}

/* One request's answer once its client's row was read (or could not be): outcome is the
 * read's, known whether slot now holds the client. */
static void auth_client_decide(struct auth_wait *w, enum pg_outcome outcome, const struct auth_client_slot *slot,
                               bool known)
{
    struct auth_client_wait *cw = w->client_wait;
    if (outcome != PG_OK) {
        const struct auth_client *stale =
            cw->cached ? auth_client_lookup(w->auth, w->loop, cw, AUTH_CLIENT_STALE_MS) : NULL;
        if (stale != NULL) { /* stale if error: Postgres is away, the result is recent enough */
            cw->ready(w, stale);
            return;
        }
        unsigned retry = 0;
        w->status = pg_outcome_http_status(outcome, &retry);
        w->detail = "the database is unavailable; retry later";
        cw->ready(w, NULL);
        return;
    }
    if (!known || !ct_memeq(slot->secret_sha256, cw->secret_sha256, HASH_SHA256_BYTES)) {
        auth_audit_client_failed(w, cw->slug, cw->client_id);
        w->status = 401;
        w->detail = "client authentication failed";
        cw->ready(w, NULL);
        return;
    }
    cw->ready(w, &slot->client);
}

static void auth_client_row(struct auth_wait *w)
{
    struct auth_client_wait *cw = w->client_wait;
    struct auth_client_slot *slot = auth_client_slot(w->auth->shards[loop_index(w->loop)]->clients, cw->slug,
                                                     cw->client_id);
    bool known = false;
    if (w->outcome == PG_OK) {
        known = pg_result_rows(w->result) == 1 && auth_client_fill(slot, w->result, cw->slug);
        if (known) {
            memcpy(slot->client.client_id, cw->client_id, sizeof(slot->client.client_id));
            slot->loaded_ms = loop_now_ms(w->loop);
        }
    }
    struct auth_wait *waiters = NULL;
    if (slot->leader == w) { /* this request led the slot's read */
        waiters = slot->waiters;
        slot->waiters = NULL;
        slot->leader = NULL;
    }
    enum pg_outcome outcome = w->outcome;
    auth_client_decide(w, outcome, slot, known);
    while (waiters != NULL) { /* each decides on the row with its own secret */
        struct auth_wait *next = waiters->client_wait->next_waiter;
        auth_client_decide(waiters, outcome, slot, known);
        waiters = next;
    }
}

/* Whether the read in flight for slot is of cw's client. */
static bool auth_client_loading_for(const struct auth_client_slot *slot, const struct auth_client_wait *cw)
{
    return slot->leader != NULL && strcmp(slot->loading_slug, cw->slug) == 0 && strcmp(slot->loading_id, cw->client_id) == 0;
}

void auth_client_authenticate(struct http_ctx *ctx, struct auth_wait *w, struct auth_client_wait *cw, bool cached,
                              auth_client_ready_fn ready)
{
    const struct auth_client *hit = cached ? auth_client_cached(w->auth, w->loop, cw) : NULL;
    if (hit != NULL) {
        ready(w, hit);
        return;
    }
    cw->cached = cached;
    cw->ready = ready;
    cw->next_waiter = NULL;
    w->client_wait = cw;
    struct auth_shard *shard = w->auth->shards[loop_index(w->loop)];
    struct auth_client_slot *slot = auth_client_slot(shard->clients, cw->slug, cw->client_id);
    if (cached && auth_client_loading_for(slot, cw)) { /* a cached answer may wait for that read */
        cw->next_waiter = slot->waiters;
        slot->waiters = w;
        return;
    }
    if (slot->leader == NULL) { /* this read leads: requests for the same client may wait on it */
        memcpy(slot->loading_slug, cw->slug, sizeof(slot->loading_slug));
        memcpy(slot->loading_id, cw->client_id, sizeof(slot->loading_id));
        slot->leader = w;
        slot->waiters = NULL;
    }
    auth_stat_add(&shard->stats.client_loads, 1);
    w->q.params[0] = cw->client_id;
    w->q.params[1] = cw->slug;
    w->q.params_count = 2;
    auth_send(ctx, w, STORE_CLIENT_BY_ID, NULL, auth_client_row);
}

bool auth_words_subset(const char *want, const char *have)
{
    size_t have_len = strlen(have);
    for (const char *p = want; *p;) {
        size_t n = strcspn(p, " ");
        bool found = n == 0;
        for (const char *q = have; q < have + have_len && !found;) {
            size_t m = strcspn(q, " ");
            found = m == n && memcmp(p, q, n) == 0;
            q += m + (q[m] == ' ');
        }
        if (!found)
            return false;
        p += n + (p[n] == ' ');
    }
    return true;
}
