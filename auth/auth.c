/* auth/auth.c: the domain's state and what its handlers share: tenant slugs, parking a
 * request on a store statement, store failures as answers. See auth.h. */
#include "auth/auth_int.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "store/admin.h"

static int auth_replies_init(struct auth_replies *r, unsigned shards);

static void auth_on_event(void *arg, struct loop *loop, uint32_t kind, uint64_t value);

/* SECURITY F14: a master key file that is named but missing, of the wrong size or mode
 * stops the start (exit 2 by the caller); none named leaves token signing unavailable (503)
 * with one warning, so the HTTP stack and reads still serve. */
static int auth_load_master(struct auth *auth)
{
    const char *path = getenv(SEAL_MASTER_KEY_ENV);
    if (path == NULL || path[0] == '\0') {
        log_msg(LOG_WARN, "no master key: tokens cannot be signed", "variable", SEAL_MASTER_KEY_ENV, NULL);
        return 0;
    }
    if (seal_key_load_env(ADMIN_MASTER_KEY_ID, &auth->master) != 0) {
        fprintf(stderr, "tessera: cannot load the master key from %s (a file of 64 hex digits, mode 0600)\n",
                SEAL_MASTER_KEY_ENV);
        return -TE_INVAL;
    }
    auth->has_master = true;
    return 0;
}

/* Scheduled rotation (issue 4) and the purge of what expired: a thread of its own, off the
 * shards (it blocks on libpq and RSA generation), safe with several instances. Rotating needs
 * the master key to seal new keys; without it, or with rotation off, the thread only purges
 * (the tables would otherwise grow without bound). */
static int auth_start_upkeep(struct auth *auth)
{
    if (auth->cfg->pg_url[0] == '\0')
        return 0;
    struct keys_rotator_config rc = {
        .pg_url = auth->cfg->pg_url,
        .purge_only = !auth->has_master || auth->cfg->key_rotate_after_s == 0,
        .audit_retention_days = auth->cfg->audit_retention_days,
        .rotate_after_s = auth->cfg->key_rotate_after_s,
        .check_interval_s = auth->cfg->key_rotation_check_s,
        .default_alg = JWK_ALG_RS256, /* DESIGN §4's default */
    };
    if (keys_rotator_start(&rc, auth->has_master ? &auth->master : NULL, &auth->rotator) != 0) {
        log_msg(LOG_ERROR, "cannot start the key rotation and purge thread", NULL);
        return -TE_IO;
    }
    return 0;
}

/* The email outbox sender (auth/outbox.h): a thread of its own, off the shards (libpq and
 * libcurl block), when a relay is configured. */
static int auth_start_outbox(struct auth *auth)
{
    if (auth->cfg->smtp_url[0] == '\0' || auth->cfg->pg_url[0] == '\0')
        return 0;
    struct outbox_config oc = {
        .pg_url = auth->cfg->pg_url,
        .smtp_url = auth->cfg->smtp_url,
        .from = auth->cfg->smtp_from,
    };
    if (outbox_sender_start(&oc, &auth->outbox) != 0) {
        log_msg(LOG_ERROR, "cannot start the email outbox sender", NULL);
        return -TE_IO;
    }
    return 0;
}

struct auth *auth_create(const struct config *cfg, struct store *store, struct workers *workers)
{
    struct auth *auth = calloc(1, sizeof(*auth));
    if (auth == NULL)
        return NULL;
    auth->cfg = cfg;
    auth->store = store;
    auth->workers = workers;
    struct password_params params = { .m_kib = cfg->argon2_m_kib, .t = cfg->argon2_t, .p = cfg->argon2_p };
    if (password_policy_init(&auth->passwords, &params) != 0) {
        log_msg(LOG_ERROR, "the Argon2id parameters cannot be used", NULL);
        auth_destroy(auth);
        return NULL;
    }
    if (auth_load_master(auth) != 0) {
        auth_destroy(auth);
        return NULL;
    }
    store_on_event(store, auth_on_event, auth);
    if (auth_start_upkeep(auth) != 0 || auth_start_outbox(auth) != 0) {
        auth_destroy(auth);
        return NULL;
    }
    for (unsigned i = 0; i < cfg->shards; i++) {
        if ((auth->shards[i] = calloc(1, sizeof(struct auth_shard))) == NULL ||
            (auth->shards[i]->verified = auth_vcache_create()) == NULL ||
            (auth->shards[i]->api_keys = auth_key_cache_create()) == NULL ||
            (auth->shards[i]->key_uses = auth_key_uses_create(auth)) == NULL ||
            (auth->shards[i]->revoked = auth_revoked_create(auth)) == NULL ||
            (auth->shards[i]->rate = auth_rate_create()) == NULL ||
            (auth->shards[i]->sessions = auth_session_owner_create()) == NULL ||
            auth_replies_init(&auth->shards[i]->replies, cfg->shards) != 0 ||
            (auth->shards[i]->clients = auth_client_cache_create()) == NULL ||
            (auth->shards[i]->audit = auth_audit_batch_create(auth)) == NULL ||
            (auth->shards[i]->login_failures = auth_login_failures_create(auth)) == NULL) {
            auth_destroy(auth);
            return NULL;
        }
    }
    return auth;
}

void auth_destroy(struct auth *auth)
{
    if (auth == NULL)
        return;
    keys_rotator_stop(auth->rotator);
    outbox_sender_stop(auth->outbox); /* serve destroys the workers first: none wakes it now */
    for (unsigned i = 0; i < CONFIG_SHARDS_MAX; i++) {
        struct auth_shard *shard = auth->shards[i];
        for (size_t t = 0; shard != NULL && t < AUTH_TENANT_SLOTS; t++) {
            if (shard->tenants[t] != NULL) {
                keyset_clear(&shard->tenants[t]->keys);
                free(shard->tenants[t]);
            }
        }
        if (shard != NULL) {
            auth_revoked_destroy(shard->revoked);
            auth_rate_destroy(shard->rate);
            auth_session_owner_destroy(shard->sessions);
            free(shard->replies.pending);
            auth_vcache_destroy(shard->verified);
            auth_key_cache_destroy(shard->api_keys);
            auth_key_uses_destroy(shard->key_uses);
            auth_client_cache_destroy(shard->clients);
            auth_audit_batch_destroy(shard->audit);
            auth_login_failures_destroy(shard->login_failures);
        }
        free(shard);
    }
    seal_key_wipe(&auth->master);
    free(auth);
}

int auth_routes(struct auth *auth, struct http_server *http)
{
    int rc = auth_jwks_routes(auth, http);
    rc = rc != 0 ? rc : auth_register_routes(auth, http);
    rc = rc != 0 ? rc : auth_verify_routes(auth, http);
    rc = rc != 0 ? rc : auth_introspect_routes(auth, http);
    rc = rc != 0 ? rc : auth_revoke_routes(auth, http);
    rc = rc != 0 ? rc : auth_discovery_routes(auth, http);
    rc = rc != 0 ? rc : auth_login_routes(auth, http);
    rc = rc != 0 ? rc : auth_authorize_routes(auth, http);
    rc = rc != 0 ? rc : auth_browser_logout_routes(auth, http);
    rc = rc != 0 ? rc : auth_logout_routes(auth, http);
    rc = rc != 0 ? rc : auth_recovery_routes(auth, http);
    rc = rc != 0 ? rc : auth_reauth_routes(auth, http);
    rc = rc != 0 ? rc : auth_admin_routes(auth, http);
    rc = rc != 0 ? rc : auth_audit_routes(auth, http);
    return rc != 0 ? rc : auth_token_routes(auth, http);
}

/* Store events, on every shard of every instance. */
static void auth_on_event(void *arg, struct loop *loop, uint32_t kind, uint64_t value)
{
    struct auth *auth = arg;
    if (kind == AUTH_EVENT_REVOKED && value <= INT64_MAX)
        auth_revoked_heard(auth->shards[loop_index(loop)]->revoked, (int64_t)value);
}

void auth_shard_start(struct auth *auth, struct loop *loop)
{
    auth_revoked_start(auth->shards[loop_index(loop)]->revoked, loop);
    auth_audit_batch_start(auth->shards[loop_index(loop)]->audit, loop);
    auth_key_uses_start(auth->shards[loop_index(loop)]->key_uses, loop);
    auth_login_failures_start(auth->shards[loop_index(loop)]->login_failures, loop);
    auth->shards[loop_index(loop)]->replies.loop = loop;
}

void auth_shard_stop(struct auth *auth, struct loop *loop)
{
    auth_revoked_stop(auth->shards[loop_index(loop)]->revoked);
    auth_audit_batch_stop(auth->shards[loop_index(loop)]->audit);
    auth_key_uses_stop(auth->shards[loop_index(loop)]->key_uses);
    auth_login_failures_stop(auth->shards[loop_index(loop)]->login_failures);
    loop_timer_stop(loop, &auth->shards[loop_index(loop)]->replies.resend);
}

/* ---- Answers to other shards ---------------------------------------------------------------- */

static void auth_replies_resend(struct loop_timer *timer)
{
    struct auth_replies *r = (struct auth_replies *)((char *)timer - offsetof(struct auth_replies, resend));
    size_t kept = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (loop_send_message(r->loop, r->pending[i].to, &r->pending[i].msg) != 0)
            r->pending[kept++] = r->pending[i];
    }
    r->count = kept;
    if (kept > 0)
        loop_timer_start(r->loop, &r->resend, AUTH_REPLY_RETRY_MS);
}

static int auth_replies_init(struct auth_replies *r, unsigned shards)
{
    r->cap = (size_t)(AUTH_RATE_ASKS_MAX + AUTH_SESSION_ASKS_MAX) * shards;
    r->pending = calloc(r->cap, sizeof(*r->pending));
    r->resend.on_expire = auth_replies_resend;
    return r->pending != NULL ? 0 : -TE_NOMEM;
}

void auth_reply(struct auth_replies *r, unsigned to, const struct ring_msg *msg)
{
    if (loop_send_message(r->loop, to, msg) == 0)
        return;
    assert(r->count < r->cap); /* sized for every ask that can be out */
    r->pending[r->count++] = (struct auth_reply){ to, *msg };
    if (!loop_timer_active(&r->resend))
        loop_timer_start(r->loop, &r->resend, AUTH_REPLY_RETRY_MS);
}

bool auth_shard_ready(const struct auth *auth, const struct loop *loop)
{
    return auth_revoked_ready(auth->shards[loop_index(loop)]->revoked);
}

void auth_stat_add(uint64_t *counter, uint64_t n)
{
    /* Owner-only write; a relaxed store so a scrape's relaxed load is race-free. */
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

static const uint64_t auth_fanout_bounds_us[AUTH_FANOUT_BUCKETS] = AUTH_FANOUT_BOUNDS_US;

/* Another local shard's revocation: applied, and its ring hop counted. */
static void auth_fanout_heard(struct auth_shard *shard, const struct ring_msg *msg)
{
    uint64_t hop_us = 0;
    auth_revoked_add(shard->revoked, msg->a, auth_revoked_unpack(msg->b, &hop_us));
    size_t bucket = 0;
    while (bucket < AUTH_FANOUT_BUCKETS && hop_us > auth_fanout_bounds_us[bucket])
        bucket++;
    auth_stat_add(&shard->stats.fanout[bucket], 1);
    auth_stat_add(&shard->stats.fanout_sum_us, hop_us);
}

static void auth_not_before_heard(struct auth_shard *shard, const struct ring_msg *msg)
{
    int64_t nb, until;
    auth_revoked_unpack_not_before(msg->b, &nb, &until);
    auth_revoked_add_not_before(shard->revoked, msg->a, nb, until);
}

/* One counter of every shard, summed: the counter at byte offset `at` of the stats. */
static uint64_t auth_stat_sum(const struct auth *auth, size_t at)
{
    uint64_t total = 0;
    for (unsigned s = 0; s < auth->cfg->shards; s++) {
        const uint64_t *counter = (const uint64_t *)((const char *)&auth->shards[s]->stats + at);
        total += __atomic_load_n(counter, __ATOMIC_RELAXED);
    }
    return total;
}

/* One counter per shard, labelled with it. */
static void auth_render_per_shard(const struct auth *auth, struct buf *out, const char *name,
                                  const char *help, size_t at)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (unsigned s = 0; s < auth->cfg->shards; s++) {
        const uint64_t *counter = (const uint64_t *)((const char *)&auth->shards[s]->stats + at);
        buf_printf(out, "%s{shard=\"%u\"} %llu\n", name, s,
                   (unsigned long long)__atomic_load_n(counter, __ATOMIC_RELAXED));
    }
}

void auth_render_metrics(struct auth *auth, struct buf *out)
{
    auth_render_per_shard(auth, out, "tessera_session_rotations_total",
                          "Refresh-token rotations a shard ran as the owner of their session.",
                          offsetof(struct auth_shard_stats, session_rotations));
    auth_render_per_shard(auth, out, "tessera_session_forwarded_total",
                          "Refresh-token rotations a shard sent to their session's owner shard.",
                          offsetof(struct auth_shard_stats, session_forwarded));
    auth_render_per_shard(auth, out, "tessera_session_waits_total",
                          "Rotations that waited on their owner for another rotation of the same session.",
                          offsetof(struct auth_shard_stats, session_waits));
    buf_append_cstr(out, "# HELP tessera_revocation_fanout_seconds A revocation's ring hop from the "
                         "revoking shard to another shard of the instance, as the receiver timed it.\n"
                         "# TYPE tessera_revocation_fanout_seconds histogram\n");
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= AUTH_FANOUT_BUCKETS; b++) {
        size_t at = offsetof(struct auth_shard_stats, fanout) + b * sizeof(uint64_t);
        cumulative += auth_stat_sum(auth, at);
        if (b < AUTH_FANOUT_BUCKETS)
            buf_printf(out, "tessera_revocation_fanout_seconds_bucket{le=\"%g\"} %llu\n",
                       (double)auth_fanout_bounds_us[b] / 1e6, (unsigned long long)cumulative);
        else
            buf_printf(out, "tessera_revocation_fanout_seconds_bucket{le=\"+Inf\"} %llu\n",
                       (unsigned long long)cumulative);
    }
    uint64_t sum_us = auth_stat_sum(auth, offsetof(struct auth_shard_stats, fanout_sum_us));
    buf_printf(out, "tessera_revocation_fanout_seconds_sum %.6f\n"
                    "tessera_revocation_fanout_seconds_count %llu\n",
               (double)sum_us / 1e6, (unsigned long long)cumulative);
    buf_printf(out, "# HELP tessera_audit_events_total Audit events without a change of their own "
                    "(tokens issued, failed client authentications), by what became of them.\n"
                    "# TYPE tessera_audit_events_total counter\n"
                    "tessera_audit_events_total{outcome=\"written\"} %llu\n"
                    "tessera_audit_events_total{outcome=\"dropped\"} %llu\n"
                    "# HELP tessera_audit_batches_total The INSERTs that wrote them.\n"
                    "# TYPE tessera_audit_batches_total counter\ntessera_audit_batches_total %llu\n",
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, audit_written)),
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, audit_dropped)),
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, audit_batches)));
    size_t pending = 0;
    for (unsigned s = 0; s < auth->cfg->shards; s++)
        pending += auth_audit_batch_pending(auth->shards[s]->audit);
    buf_printf(out, "# HELP tessera_audit_pending Audit events queued or being written.\n"
                    "# TYPE tessera_audit_pending gauge\ntessera_audit_pending %zu\n", pending);
    buf_printf(out, "# HELP tessera_login_failures_total Refused logins' failure counts and audit rows "
                    "(committed after the refusal's answer), by what became of them.\n"
                    "# TYPE tessera_login_failures_total counter\n"
                    "tessera_login_failures_total{outcome=\"recorded\"} %llu\n"
                    "tessera_login_failures_total{outcome=\"lost\"} %llu\n",
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, login_failures_recorded)),
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, login_failures_lost)));
    pending = 0;
    for (unsigned s = 0; s < auth->cfg->shards; s++)
        pending += auth_login_failures_pending(auth->shards[s]->login_failures);
    buf_printf(out, "# HELP tessera_login_failures_pending Refused logins' statements in flight.\n"
                    "# TYPE tessera_login_failures_pending gauge\ntessera_login_failures_pending %zu\n",
               pending);
    buf_printf(out, "# HELP tessera_client_loads_total Reads of a client's row a shard started to "
                    "authenticate it (introspection's requests that came meanwhile waited on them).\n"
                    "# TYPE tessera_client_loads_total counter\ntessera_client_loads_total %llu\n",
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, client_loads)));
    buf_printf(out, "# HELP tessera_tenant_key_loads_total Reads of a tenant's signing keys a shard started "
                    "(the requests that came meanwhile waited on them).\n"
                    "# TYPE tessera_tenant_key_loads_total counter\ntessera_tenant_key_loads_total %llu\n",
               (unsigned long long)auth_stat_sum(auth, offsetof(struct auth_shard_stats, tenant_loads)));
}

bool auth_handle_message(struct auth *auth, struct loop *loop, const struct ring_msg *msg)
{
    struct auth_shard *shard = auth->shards[loop_index(loop)];
    if (msg->kind == AUTH_MSG_REVOKED)
        auth_fanout_heard(shard, msg);
    else if (msg->kind == AUTH_MSG_NOT_BEFORE)
        auth_not_before_heard(shard, msg);
    else if (msg->kind == AUTH_MSG_RATE_ASK) {
        struct ring_msg answer = auth_rate_on_ask(shard->rate, msg);
        auth_reply(&shard->replies, msg->from, &answer);
    } else if (msg->kind == AUTH_MSG_RATE_ANSWER)
        auth_rate_answered(msg->ptr, msg);
    else if (msg->kind == AUTH_MSG_SESSION_ASK)
        auth_session_on_ask(auth, loop, msg);
    else if (msg->kind == AUTH_MSG_SESSION_ANSWER)
        auth_session_answered(auth, loop, msg);
    else
        return false;
    return true;
}

struct store_shard *auth_store(const struct auth *auth, const struct loop *loop)
{
    return store_shard(auth->store, loop_index(loop));
}

bool auth_slug_valid(struct slice slug)
{
    if (slug.len == 0 || slug.len > AUTH_SLUG_MAX)
        return false;
    for (size_t i = 0; i < slug.len; i++) {
        char c = slug.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

void auth_slug_copy(struct slice slug, char *dst)
{
    assert(slug.len <= AUTH_SLUG_MAX);
    memcpy(dst, slug.ptr, slug.len);
    dst[slug.len] = '\0';
}

void auth_respond_store_failure(struct http_ctx *ctx, enum pg_outcome outcome)
{
    unsigned retry_after = 0;
    int status = pg_outcome_http_status(outcome, &retry_after);
    if (retry_after > 0) {
        char *text = http_scratch_alloc(ctx, 12);
        if (text != NULL) {
            int n = snprintf(text, 12, "%u", retry_after);
            http_header_add(ctx, "Retry-After", slice_make(text, (size_t)n));
        }
    }
    http_respond_problem(ctx, status, status == 409   ? "it exists already"
                                      : status == 503 ? "the database is unavailable; retry later"
                                                      : "internal error");
}

void *auth_park(struct http_ctx *ctx, struct auth *auth, size_t bytes)
{
    assert(bytes >= sizeof(struct auth_wait));
    struct auth_wait *w = http_park(ctx, bytes);
    if (w == NULL) {
        http_header_add(ctx, "Retry-After", SLICE_LIT("1"));
        http_respond_problem(ctx, 503, AUTH_BUSY_DETAIL);
        return NULL;
    }
    w->auth = auth;
    w->loop = ctx->loop;
    return w;
}

static void auth_wait_done(struct pg_query *q, const struct pg_result *r)
{
    struct auth_wait *w = (struct auth_wait *)q; /* q is the first member */
    w->outcome = pg_result_outcome(r);
    w->result = r;
    if (w->next != NULL) {
        void (*next)(struct auth_wait *) = w->next;
        w->next = NULL;
        next(w);
        return;
    }
    http_resume(w, w->respond);
    /* w is gone: http_resume freed the state */
}

void auth_respond_invalid_token(struct http_ctx *ctx, void *state)
{
    (void)state;
    http_header_add(ctx, "WWW-Authenticate", SLICE_LIT("Bearer error=\"invalid_token\""));
    http_respond_problem(ctx, 401, "the access token is missing, invalid, expired or revoked");
}

void auth_respond_no_content(struct http_ctx *ctx, void *state)
{
    (void)state;
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 204, NULL, slice_make(NULL, 0));
}

void auth_respond_user_list(struct http_ctx *ctx, const struct auth_wait *w, const char *member)
{
    if (w->outcome != PG_OK) {
        auth_respond_store_failure(ctx, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1) {
        http_respond_problem(ctx, 404, "no such user");
        return;
    }
    struct buf body = http_scratch_buf(ctx);
    buf_printf(&body, "{\"%s\":", member);
    buf_append_cstr(&body, pg_result_value(w->result, 0, 0));
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, "application/json", buf_slice(&body));
}

void auth_respond_api_keys(struct http_ctx *ctx, void *state)
{
    auth_respond_user_list(ctx, state, "api_keys");
}

void auth_answer_now(struct http_ctx *ctx, int status, const char *detail)
{
    if (status == 503)
        http_header_add(ctx, "Retry-After", SLICE_LIT("1"));
    http_respond_problem(ctx, status, detail);
}

static void auth_respond_answer(struct http_ctx *ctx, void *state)
{
    struct auth_wait *w = state;
    if (w->status == 503)
        http_header_add(ctx, "Retry-After", SLICE_LIT("1"));
    if (w->oauth_error != NULL)
        auth_oauth_error(ctx, w->status, w->oauth_error, w->detail);
    else
        http_respond_problem(ctx, w->status, w->detail);
}

void auth_json_member(struct buf *body, const char *name, struct slice value)
{
    buf_printf(body, ",\"%s\":", name);
    buf_append_json_string(body, value);
}

void auth_json_text(struct buf *body, const char *name, const char *value)
{
    auth_json_member(body, name, slice_make(value, strlen(value)));
}

void auth_token_respond(struct http_ctx *ctx, const struct auth_token_answer *a)
{
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"access_token\":");
    buf_append_json_string(&body, a->access);
    buf_printf(&body, ",\"token_type\":\"Bearer\",\"expires_in\":%" PRId64, a->lifetime_s);
    if (a->scope != NULL && a->scope[0])
        auth_json_text(&body, "scope", a->scope);
    if (a->refresh != NULL)
        auth_json_text(&body, "refresh_token", a->refresh);
    if (a->id_token.len > 0)
        auth_json_member(&body, "id_token", a->id_token);
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store")); /* RFC 6749 §5.1 */
    http_header_add(ctx, "Pragma", SLICE_LIT("no-cache"));
    http_respond(ctx, 200, "application/json", buf_slice(&body));
}

void auth_oauth_error(struct http_ctx *ctx, int status, const char *error, const char *description)
{
    struct buf body = http_scratch_buf(ctx);
    buf_append_cstr(&body, "{\"error\":");
    buf_append_json_string(&body, slice_make(error, strlen(error)));
    buf_append_cstr(&body, ",\"error_description\":");
    buf_append_json_string(&body, slice_make(description, strlen(description)));
    buf_append_cstr(&body, "}");
    http_scratch_commit(ctx, &body);
    if (status == 401) /* RFC 6749 §5.2 invalid_client; RFC 7617 §2 */
        http_header_add(ctx, "WWW-Authenticate", SLICE_LIT("Basic realm=\"tessera\", charset=\"UTF-8\""));
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_header_add(ctx, "Pragma", SLICE_LIT("no-cache"));
    http_respond(ctx, status, "application/json", buf_slice(&body));
}

void auth_oauth_fail(struct auth_wait *w, int status, const char *error, const char *description)
{
    w->oauth_error = error;
    auth_answer(w, status, description);
}

void auth_client_refused(struct auth_wait *w)
{
    if (w->status == 401)
        auth_oauth_fail(w, 401, "invalid_client", w->detail);
    else
        auth_answer(w, w->status, w->detail);
}

void auth_answer(struct auth_wait *w, int status, const char *detail)
{
    w->status = status;
    w->detail = detail;
    http_resume(w, auth_respond_answer);
}

static void auth_respond_failure(struct http_ctx *ctx, void *state)
{
    auth_respond_store_failure(ctx, ((struct auth_wait *)state)->outcome);
}

void auth_fail(struct auth_wait *w, enum pg_outcome outcome)
{
    w->outcome = outcome;
    http_resume(w, auth_respond_failure);
}

bool auth_send(struct http_ctx *ctx, struct auth_wait *w, enum store_stmt stmt,
               http_resume_fn respond, void (*next)(struct auth_wait *w))
{
    w->respond = respond;
    w->next = next;
    w->result = NULL;
    w->q.done = auth_wait_done;
    enum pg_outcome outcome = store_query(auth_store(w->auth, w->loop), stmt, &w->q);
    if (outcome == PG_OK)
        return true;
    if (ctx != NULL && next == NULL) {
        auth_respond_store_failure(ctx, outcome); /* answered now: the park is undone */
        return false;
    }
    /* A later stage hears of the refusal, even from the handler: it may answer from a stale
     * cache (SECURITY F01); an answer it gives now waits for the handler's return. */
    w->outcome = outcome;
    w->next = NULL;
    if (next != NULL)
        next(w);
    else
        auth_fail(w, outcome);
    return false;
}

void auth_request_id(const struct http_ctx *ctx, char *dst, size_t cap)
{
    size_t len = ctx->request_id.len < cap ? ctx->request_id.len : cap - 1;
    memcpy(dst, ctx->request_id.ptr, len);
    dst[len] = '\0';
}


bool auth_job_abandoned(const struct auth_wait *w, const struct worker_job *job)
{
    return job->expired || !http_parked_waiting(w);
}

void auth_answer_abandoned(struct auth_wait *w)
{
    http_resume_expired(w);
}

uint64_t auth_backstop_us(const struct auth_wait *w)
{
    return http_parked_since_us(w) + (uint64_t)w->auth->cfg->idle_timeout_ms * 1000u;
}

int auth_submit_hash(struct auth_wait *w, struct worker_job *job)
{
    /* Work still queued at the request's backstop has nobody to serve. */
    return workers_submit_by(w->auth->workers, loop_index(w->loop), job, auth_backstop_us(w));
}

int auth_sign_job(struct auth_wait *w, const struct auth_tenant *tenant, struct worker_job *job)
{
    const struct jwk_key *key = keyset_signing_key(&tenant->keys);
    enum jwk_alg alg = key != NULL ? jwk_key_alg(key) : JWK_ALG_UNSET;
    if (alg == JWK_ALG_EDDSA || alg == JWK_ALG_ES256) {
        job->expired = false;
        job->run(job);
        job->done(job);
        return 0;
    }
    return workers_submit_urgent(w->auth->workers, loop_index(w->loop), job);
}

void auth_issuer(const struct auth *auth, struct slice slug, struct buf *out)
{
    buf_append_cstr(out, auth->cfg->public_url);
    buf_append_cstr(out, "/t/");
    buf_append(out, slug.ptr, slug.len);
}

void auth_public_path(const struct auth *auth, const char *slug, struct buf *out)
{
    const char *url = auth->cfg->public_url;
    const char *host = strstr(url, "://");
    const char *path = host == NULL ? "" : host + 3 + strcspn(host + 3, "/");
    buf_append_cstr(out, path);
    buf_append_cstr(out, "/t/");
    buf_append_cstr(out, slug);
}
