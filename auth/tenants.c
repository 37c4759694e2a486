/* auth/tenants.c: each shard's cache of tenants' signing keys (DESIGN §1: shared nothing;
 * every shard holds its own copy and reloads it itself).
 *
 * A miss (or an entry older than AUTH_TENANT_TTL_MS) reads the tenant's published keys with
 * one statement, then opens the sealed private parts on the worker pool (AES-GCM, then the
 * private JWK imported into an EVP key: tens of microseconds to a millisecond for RSA, too
 * long for a shard) and installs the new set. The cache is direct-mapped by the xxh3 of the
 * slug: bounded, no allocation on a hit, a collision simply evicts. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "core/err.h"
#include "core/log.h"
#include "store/keys.h"

#define TENANT_SEALED_HEX_MAX (2 * KEYS_SEALED_MAX) /* encode(private_sealed, 'hex') */

struct tenant_row {
    char kid[JWK_KID_MAX + 1];
    enum jwk_alg alg;
    enum keys_state state;
    uint32_t master_id;
    int64_t activated_at_s;
    int64_t not_after_s;
    char *sealed_hex; /* malloc'd */
};

/* A load in flight: the rows copied out of the result, then opened on a worker. */
struct tenant_load {
    struct worker_job job;
    struct auth_wait *w;
    auth_tenant_ready_fn ready;
    struct auth_tenant *tenant; /* built by the worker, installed by the shard */
    int opened_rc;
    int rows;
    struct tenant_row row[KEYSET_KEYS_MAX];
};

static struct auth_shard *tenant_shard(const struct auth *auth, const struct loop *loop)
{
    return auth->shards[loop_index(loop)];
}

static size_t tenant_slot(const char *slug)
{
    return (size_t)(XXH3_64bits(slug, strlen(slug)) % AUTH_TENANT_SLOTS);
}

void auth_tenant_put(struct auth *auth, struct loop *loop, struct auth_tenant *tenant)
{
    (void)auth;
    (void)loop;
    if (tenant == NULL)
        return;
    assert(tenant->refs > 0);
    if (--tenant->refs == 0) {
        keyset_clear(&tenant->keys);
        free(tenant);
    }
}

static void tenant_fail(struct auth_wait *w, auth_tenant_ready_fn ready, int status, const char *detail)
{
    w->status = status;
    w->detail = detail;
    ready(w, NULL);
}

static void tenant_load_free(struct tenant_load *load)
{
    for (int i = 0; i < load->rows; i++)
        free(load->row[i].sealed_hex);
    if (load->tenant != NULL) {
        keyset_clear(&load->tenant->keys);
        free(load->tenant);
    }
    free(load);
}

/* ---- On a worker: open the sealed parts ------------------------------------------------ */

static int tenant_hex_decode(const char *hex, uint8_t *out, size_t cap)
{
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > cap)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[i + j];
            unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16;
            if (d > 15)
                return -1;
            v = v << 4 | d;
        }
        out[i / 2] = (uint8_t)v;
    }
    return (int)(len / 2);
}

/* One row into the set: the active and next keys sign or will; a retired key only verifies,
 * until not_after, when it drops out of the statement's result. */
static int tenant_open_row(struct auth *auth, struct auth_tenant *tenant, const struct tenant_row *row,
                           int64_t now)
{
    static _Thread_local uint8_t blob[KEYS_SEALED_MAX];
    int n = tenant_hex_decode(row->sealed_hex, blob, sizeof(blob));
    if (n < 0)
        return -TE_INVAL;
    const struct seal_key *masters[1] = { &auth->master };
    struct keys_loaded loaded = { .tenant_id = tenant->id, .kid = row->kid, .alg = row->alg,
                                  .state = row->state, .activated_at_s = row->activated_at_s,
                                  .not_after_s = row->not_after_s };
    keys_open(&loaded, row->master_id, blob, (size_t)n, masters, auth->has_master ? 1 : 0);
    if (loaded.open != KEYS_OPEN_OK) {
        log_msg(LOG_ERROR, "signing key does not open", "tenant_id", tenant->id, "kid", row->kid,
                "reason", keys_open_reason(loaded.open), NULL);
        return -TE_INVAL;
    }
    enum keyset_state state = row->state == KEYS_STATE_ACTIVE ? KEYSET_ACTIVE
                              : row->state == KEYS_STATE_NEXT ? KEYSET_NEXT
                                                              : KEYSET_PUBLISHED;
    int rc = keyset_add(&tenant->keys, loaded.key, state, now);
    if (rc != 0)
        jwk_free(loaded.key);
    return rc;
}

static void tenant_load_run(struct worker_job *job)
{
    struct tenant_load *load = (struct tenant_load *)job;
    int64_t now = (int64_t)time(NULL);
    load->opened_rc = 0;
    for (int i = 0; i < load->rows; i++) {
        int rc = tenant_open_row(load->w->auth, load->tenant, &load->row[i], now);
        if (rc != 0)
            load->opened_rc = rc; /* the others still load: a bad retired key must not stop signing */
    }
}

/* ---- Back on the shard: install ------------------------------------------------------------- */

static void tenant_install(struct auth_shard *shard, struct auth *auth, struct loop *loop,
                           struct auth_tenant *tenant)
{
    size_t slot = tenant_slot(tenant->slug);
    auth_tenant_put(auth, loop, shard->tenants[slot]);
    tenant->refs = 1; /* the cache's reference */
    tenant->loaded_ms = loop_now_ms(loop);
    shard->tenants[slot] = tenant;
}

static void tenant_load_done(struct worker_job *job)
{
    struct tenant_load *load = (struct tenant_load *)job;
    struct auth_wait *w = load->w;
    auth_tenant_ready_fn ready = load->ready;
    struct auth_tenant *tenant = load->tenant;
    load->tenant = NULL;
    tenant_install(tenant_shard(w->auth, w->loop), w->auth, w->loop, tenant);
    tenant_load_free(load);
    tenant->refs++; /* the caller's */
    ready(w, tenant);
}

/* Copies one result row; false when it cannot be used (logged). */
static bool tenant_row_copy(const struct pg_result *r, int i, struct tenant_row *row)
{
    const char *alg = pg_result_value(r, i, 2);
    const char *state = pg_result_value(r, i, 3);
    snprintf(row->kid, sizeof(row->kid), "%s", pg_result_value(r, i, 1));
    row->alg = jwk_alg_parse(slice_make(alg, strlen(alg)));
    row->state = strcmp(state, "active") == 0 ? KEYS_STATE_ACTIVE
                 : strcmp(state, "next") == 0 ? KEYS_STATE_NEXT
                                              : KEYS_STATE_RETIRED;
    row->master_id = (uint32_t)strtoul(pg_result_value(r, i, 5), NULL, 10);
    row->activated_at_s = strtoll(pg_result_value(r, i, 6), NULL, 10);
    row->not_after_s = strtoll(pg_result_value(r, i, 7), NULL, 10);
    row->sealed_hex = (size_t)pg_result_length(r, i, 4) <= TENANT_SEALED_HEX_MAX
                          ? strndup(pg_result_value(r, i, 4), (size_t)pg_result_length(r, i, 4))
                          : NULL;
    return row->sealed_hex != NULL;
}

static struct tenant_load *tenant_load_make(struct auth_wait *w, const char *slug)
{
    const struct pg_result *r = w->result;
    struct tenant_load *load = calloc(1, sizeof(*load));
    if (load == NULL || (load->tenant = calloc(1, sizeof(*load->tenant))) == NULL) {
        free(load);
        return NULL;
    }
    keyset_init(&load->tenant->keys, 0);
    snprintf(load->tenant->slug, sizeof(load->tenant->slug), "%s", slug);
    snprintf(load->tenant->id, sizeof(load->tenant->id), "%s", pg_result_value(r, 0, 0));
    auth_rate_policy_parse(pg_result_value(r, 0, 8), &load->tenant->rate);
    for (int i = 0; i < pg_result_rows(r) && i < KEYSET_KEYS_MAX; i++) {
        if (pg_result_is_null(r, i, 1))
            continue; /* the tenant has no key yet */
        if (!tenant_row_copy(r, i, &load->row[load->rows])) {
            free(load->row[load->rows].sealed_hex);
            tenant_load_free(load);
            return NULL;
        }
        load->rows++;
    }
    return load;
}

/* Stale if error: keys this shard already holds keep verifying and signing while they
 * cannot be refreshed (SECURITY F01: Postgres away, the stateless path stays up; F15: the
 * worker pool full). False when the shard holds none. */
static bool tenant_stale_ready(struct auth_wait *w, auth_tenant_ready_fn ready)
{
    struct auth_tenant *stale = tenant_shard(w->auth, w->loop)->tenants[tenant_slot(w->q.params[0])];
    if (stale == NULL || strcmp(stale->slug, w->q.params[0]) != 0)
        return false;
    stale->refs++;
    ready(w, stale);
    return true;
}

static void tenant_rows_arrived(struct auth_wait *w)
{
    auth_tenant_ready_fn ready = w->tenant_ready;
    if (w->outcome != PG_OK) {
        if (tenant_stale_ready(w, ready))
            return;
        unsigned retry = 0;
        tenant_fail(w, ready, pg_outcome_http_status(w->outcome, &retry), "the database is unavailable; retry later");
        return;
    }
    if (pg_result_rows(w->result) == 0) {
        tenant_fail(w, ready, 404, "no such tenant");
        return;
    }
    struct tenant_load *load = tenant_load_make(w, w->q.params[0]);
    if (load == NULL) {
        tenant_fail(w, ready, 503, "out of memory; retry later");
        return;
    }
    load->w = w;
    load->ready = ready;
    load->job.run = tenant_load_run;
    load->job.done = tenant_load_done;
    /* Urgent: /verify waits on it (SECURITY F15, a login flood must not stall it). */
    if (workers_submit_urgent(w->auth->workers, loop_index(w->loop), &load->job) != 0) {
        tenant_load_free(load);
        if (!tenant_stale_ready(w, ready))
            tenant_fail(w, ready, 503, AUTH_BUSY_DETAIL);
    }
}

static struct auth_tenant *tenant_fresh(const struct auth *auth, const struct loop *loop, const char *slug)
{
    struct auth_tenant *cached = tenant_shard(auth, loop)->tenants[tenant_slot(slug)];
    if (cached == NULL || strcmp(cached->slug, slug) != 0)
        return NULL;
    uint64_t ttl = keyset_signing_key(&cached->keys) == NULL ? AUTH_TENANT_KEYLESS_TTL_MS : AUTH_TENANT_TTL_MS;
    return loop_now_ms(loop) - cached->loaded_ms < ttl ? cached : NULL;
}

const struct auth_tenant *auth_tenant_cached(const struct auth *auth, const struct loop *loop, const char *slug)
{
    return tenant_fresh(auth, loop, slug);
}

/* ---- One load per tenant and shard ------------------------------------------------------- */

static struct auth_tenant_flight *tenant_flight_find(struct auth_shard *shard, const char *slug)
{
    for (size_t i = 0; i < AUTH_TENANT_FLIGHTS; i++) {
        if (strcmp(shard->flights[i].slug, slug) == 0)
            return &shard->flights[i];
    }
    return NULL;
}

/* A load's outcome, for its leader and then every request that waited on it: the set (each
 * taking a reference), or the leader's failure (a waiter with a stale set takes that, as
 * the leader would have, SECURITY F01). */
static void tenant_flight_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct auth_tenant_flight *flight = &tenant_shard(w->auth, w->loop)->flights[w->tenant_flight - 1];
    auth_tenant_ready_fn leader_ready = flight->leader_ready;
    struct auth_wait *waiters = flight->waiters;
    int status = w->status;
    const char *detail = w->detail;
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    memset(flight, 0, sizeof(*flight));
    w->tenant_flight = 0;
    if (tenant != NULL)
        tenant->refs++; /* held while the waiters are served: the leader may drop its own */
    leader_ready(w, tenant);
    while (waiters != NULL) {
        struct auth_wait *waiter = waiters;
        waiters = waiter->tenant_next;
        if (tenant != NULL) {
            tenant->refs++;
            waiter->tenant_ready(waiter, tenant);
        } else if (!tenant_stale_ready(waiter, waiter->tenant_ready)) {
            tenant_fail(waiter, waiter->tenant_ready, status, detail);
        }
    }
    auth_tenant_put(auth, loop, tenant);
}

bool auth_tenant_signs(struct auth_wait *w, struct auth_tenant *tenant)
{
    if (keyset_signing_key(&tenant->keys) != NULL)
        return true;
    log_msg(LOG_ERROR, "the tenant has no usable signing key", "tenant", tenant->slug, NULL);
    auth_tenant_put(w->auth, w->loop, tenant);
    w->status = 503;
    w->detail = "the tenant has no signing key; retry later";
    return false;
}

void auth_tenant_get(struct http_ctx *ctx, struct auth_wait *w, const char *slug, auth_tenant_ready_fn ready)
{
    struct auth_tenant *cached = tenant_fresh(w->auth, w->loop, slug);
    if (cached != NULL) {
        cached->refs++;
        ready(w, cached);
        return;
    }
    struct auth_shard *shard = tenant_shard(w->auth, w->loop);
    w->tenant_ready = ready;
    w->q.params[0] = slug;
    w->q.params_count = 1;
    struct auth_tenant_flight *flight = tenant_flight_find(shard, slug);
    if (flight != NULL) { /* loading already: the stale set meanwhile, else wait for it */
        if (tenant_stale_ready(w, ready))
            return;
        w->tenant_next = flight->waiters;
        flight->waiters = w;
        return;
    }
    if ((flight = tenant_flight_find(shard, "")) != NULL) { /* else (all taken) a load of its own */
        snprintf(flight->slug, sizeof(flight->slug), "%s", slug);
        flight->leader_ready = ready;
        flight->waiters = NULL;
        w->tenant_flight = (unsigned)(flight - shard->flights) + 1;
        w->tenant_ready = tenant_flight_ready;
    }
    auth_stat_add(&shard->stats.tenant_loads, 1);
    auth_send(ctx, w, STORE_TENANT_KEYS, NULL, tenant_rows_arrived);
}
