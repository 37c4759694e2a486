/* auth/revoke.c: POST /t/{tenant}/oauth2/revoke (RFC 7009).
 *
 * The client authenticates (§2.1) and may revoke only tokens issued to it (a token of
 * another client is refused: 400 invalid_request, SECURITY O37). An access token is revoked by its
 * jti until its exp; a refresh token (auth/session.c) ends its session, and a 'sid'
 * revocation every access token of it (§2.1: "SHOULD also invalidate all access tokens
 * based on the same authorization grant"); only the session's own client may, and only
 * with the current token. A token that is unknown, invalid, expired or already revoked, or
 * of a kind not known yet, answers 200 as §2.2 says. A 200 for a live token means the row is
 * committed with its seq (SECURITY F02: Postgres down is 503, never 200); then the shard
 * applies it, hands it to every local shard over the rings and publishes the seq for the
 * other instances (DESIGN §1; auth/revoked.c). */
#include "auth/auth_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define REVOKE_HINT_MAX 64

struct revoke_wait {
    struct auth_wait w;
    struct auth_client_wait cw;
    int64_t exp;
    char tid[JWT_ID_MAX + 1];
    char jti[JWT_ID_MAX + 1];
    char exp_text[24];
    char sid[CT_UUID_TEXT_LEN + 1];
    char sha_hex[2 * HASH_SHA256_BYTES + 1];
    char slack_text[24];
    char ip[AUTH_IP_MAX + 1];
    size_t token_len;
    char token[AUTH_ACCESS_TOKEN_MAX];
};

_Static_assert(sizeof(struct revoke_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* A PUBLISH in flight: its own memory, freed when Redis answers (the request does not wait). */
struct revoke_publish {
    struct redis_cmd cmd;
    char text[STORE_EVENT_TEXT_MAX];
};

static void revoke_respond_ok(struct http_ctx *ctx, void *state)
{
    (void)state;
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, NULL, slice_make(NULL, 0));
}

static void revoke_published(struct redis_cmd *cmd, const struct redis_reply *reply)
{
    if (reply->kind != REDIS_KIND_INTEGER)
        log_msg(LOG_WARN, "revocation not published: other instances catch up by their poll", NULL);
    free(cmd);
}

static void revoke_publish(struct auth_wait *w, int64_t seq)
{
    struct redis_client *redis = store_redis(auth_store(w->auth, w->loop));
    struct revoke_publish *p = redis ? malloc(sizeof(*p)) : NULL;
    if (p == NULL)
        return; /* single instance, or no memory: the poll carries it */
    memset(&p->cmd, 0, sizeof(p->cmd));
    p->cmd.done = revoke_published;
    int n = snprintf(p->text, sizeof(p->text), "%u %" PRId64, AUTH_EVENT_REVOKED, seq);
    struct slice argv[3] = { SLICE_LIT("PUBLISH"), SLICE_LIT(STORE_EVENTS_CHANNEL), slice_make(p->text, (size_t)n) };
    if (redis_command(redis, &p->cmd, 3, argv) != 0)
        free(p);
}

/* Steps 2 and 3 of DESIGN §1's protocol, once this shard has applied the revocation. */
static void revoke_fan_out(struct auth_wait *w, const struct ring_msg *msg, int64_t seq)
{
    unsigned self = loop_index(w->loop);
    for (unsigned to = 0; to < w->auth->cfg->shards; to++) {
        if (to != self && loop_send_message(w->loop, to, msg) != 0)
            log_msg(LOG_WARN, "ring full: a shard learns of a revocation by its poll", NULL);
    }
    revoke_publish(w, seq);
}

void auth_revoke_spread(struct auth_wait *w, uint64_t key, int64_t exp, int64_t seq)
{
    auth_revoked_add(w->auth->shards[loop_index(w->loop)]->revoked, key, exp);
    struct ring_msg msg = { .kind = AUTH_MSG_REVOKED, .a = key, .b = auth_revoked_pack(exp) };
    revoke_fan_out(w, &msg, seq);
}

void auth_revoke_spread_not_before(struct auth_wait *w, uint64_t key, int64_t nb, int64_t until, int64_t seq)
{
    auth_revoked_add_not_before(w->auth->shards[loop_index(w->loop)]->revoked, key, nb, until);
    struct ring_msg msg = { .kind = AUTH_MSG_NOT_BEFORE, .a = key, .b = auth_revoked_pack_not_before(nb, until) };
    revoke_fan_out(w, &msg, seq);
}

/* Committed: apply here, on every local shard, then tell the other instances. */
static void revoke_committed(struct auth_wait *w)
{
    struct revoke_wait *rw = (struct revoke_wait *)w;
    if (w->outcome != PG_OK || pg_result_rows(w->result) != 1) {
        auth_fail(w, w->outcome == PG_OK ? PG_ERROR : w->outcome);
        return;
    }
    int64_t seq = strtoll(pg_result_value(w->result, 0, 0), NULL, 10);
    auth_revoke_spread(w, auth_revoked_key(rw->tid, "jti", rw->jti), rw->exp, seq);
    http_resume(rw, revoke_respond_ok);
}

/* The token is known: refuse another client's, else revoke it. */
static void revoke_check(struct auth_wait *w, const struct auth_tenant *tenant)
{
    struct revoke_wait *rw = (struct revoke_wait *)w;
    const struct jwt_claims *c = NULL;
    if (auth_access_check(w->auth, w->loop, rw->cw.slug, tenant, slice_make(rw->token, rw->token_len), &c) != 0) {
        http_resume(rw, revoke_respond_ok); /* invalid, expired or revoked: §2.2 */
        return;
    }
    if (strcmp(c->client_id, rw->cw.client_id) != 0) {
        /* RFC 7009 §2.1: refused, and the client told (§2.2.1: RFC 6749 §5.2's 400 errors);
         * SECURITY O37. */
        auth_oauth_fail(w, 400, "invalid_request", "the token was not issued to this client");
        return;
    }
    snprintf(rw->tid, sizeof(rw->tid), "%s", c->tid);
    snprintf(rw->jti, sizeof(rw->jti), "%s", c->jti);
    rw->exp = c->exp;
    snprintf(rw->exp_text, sizeof(rw->exp_text), "%" PRId64, c->exp);
    w->q.params[0] = rw->tid;
    w->q.params[1] = "jti";
    w->q.params[2] = rw->jti;
    w->q.params[3] = rw->exp_text;
    w->q.params_count = 4;
    auth_send(NULL, w, STORE_REVOKE, NULL, revoke_committed);
}

static void revoke_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    if (tenant == NULL) {
        if (w->status == 404)
            http_resume(w, revoke_respond_ok); /* no such issuer: an unknown token */
        else
            auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    revoke_check(w, tenant);
    auth_tenant_put(auth, loop, tenant);
}

/* A session's revocations committed (none when the token was not live): spread them. */
static void revoke_session_done(struct auth_wait *w)
{
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    auth_session_spread(w);
    http_resume(w, revoke_respond_ok);
}

/* A refresh token of this client: its session ends. */
static void revoke_refresh(struct revoke_wait *rw)
{
    struct auth_wait *w = &rw->w;
    snprintf(rw->slack_text, sizeof(rw->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    w->q.params[0] = rw->cw.slug;
    w->q.params[1] = rw->sid;
    w->q.params[2] = rw->sha_hex;
    w->q.params[3] = rw->cw.client_id;
    w->q.params[4] = rw->slack_text;
    w->q.params[5] = rw->ip[0] ? rw->ip : NULL;
    w->q.params[6] = NULL; /* no request id kept here */
    w->q.params_count = 7;
    auth_send(NULL, w, STORE_SESSION_REVOKE, NULL, revoke_session_done);
}

static bool revoke_looks_like_jwt(const struct revoke_wait *rw)
{
    size_t dots = 0;
    for (size_t i = 0; i < rw->token_len; i++)
        dots += rw->token[i] == '.';
    return dots == 2;
}

static void revoke_client_ready(struct auth_wait *w, const struct auth_client *client)
{
    struct revoke_wait *rw = (struct revoke_wait *)w;
    if (client == NULL) {
        auth_client_refused(w);
        return;
    }
    bool refresh = rw->token_len == AUTH_REFRESH_TOKEN_LEN &&
                   auth_refresh_parse(rw->token, rw->sid, rw->sha_hex) == 0;
    if (refresh)
        revoke_refresh(rw);
    else if (!revoke_looks_like_jwt(rw))
        http_resume(rw, revoke_respond_ok); /* not a token of ours: §2.2 */
    else if (auth_tenant_cached(w->auth, w->loop, rw->cw.slug) == NULL)
        auth_tenant_get(NULL, w, rw->cw.slug, revoke_keys_ready);
    else
        revoke_check(w, NULL);
}

static void revoke_rate_passed(struct auth_wait *w)
{
    struct revoke_wait *rw = (struct revoke_wait *)w;
    auth_client_authenticate(NULL, w, &rw->cw, false, revoke_client_ready);
}

struct revoke_form {
    char token[AUTH_ACCESS_TOKEN_MAX + 1];
    char hint[REVOKE_HINT_MAX + 1];
    struct auth_client_creds creds;
};

static void revoke_post(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return;
    }
    struct revoke_form *f = http_scratch_alloc(ctx, sizeof(*f));
    if (f == NULL) {
        http_respond_problem(ctx, 500, "internal error");
        return;
    }
    struct auth_form_field fields[] = {
        { "token", f->token, sizeof(f->token), false },
        { "token_type_hint", f->hint, sizeof(f->hint), false }, /* may be ignored: §2.1 */
        { "client_id", f->creds.client_id, sizeof(f->creds.client_id), false },
        { "client_secret", f->creds.secret, sizeof(f->creds.secret), false },
    };
    const char *why = auth_form_parse(ctx, fields, sizeof(fields) / sizeof(fields[0]));
    if (why != NULL || !fields[0].seen) {
        auth_oauth_error(ctx, 400, "invalid_request", why ? why : "token is missing");
        return;
    }
    f->creds.has_id = fields[2].seen;
    f->creds.has_secret = fields[3].seen;
    int status = auth_client_credentials(ctx, &f->creds, &why);
    struct auth_rate_check limits;
    uint8_t secret_sha256[HASH_SHA256_BYTES]; /* of a well-formed request's secret only */
    if (status != 0) {
        auth_oauth_error(ctx, status, status == 401 ? "invalid_client" : "invalid_request", why);
    } else {
        hash_sha256(f->creds.secret, strlen(f->creds.secret), secret_sha256);
        if (!auth_rate_admit(ctx, auth, f->creds.client_id, secret_sha256, &limits))
            status = 429; /* answered */
    }
    struct revoke_wait *rw = status == 0 ? auth_park(ctx, auth, sizeof(*rw)) : NULL;
    if (rw != NULL) {
        auth_slug_copy(ctx->params[0], rw->cw.slug);
        memcpy(rw->cw.client_id, f->creds.client_id, sizeof(rw->cw.client_id));
        memcpy(rw->cw.secret_sha256, secret_sha256, sizeof(secret_sha256));
        rw->token_len = strlen(f->token);
        memcpy(rw->token, f->token, rw->token_len);
        http_client_address(ctx, rw->ip, sizeof(rw->ip));
        rw->w.rate = limits;
        if (!auth_rate_pending(&limits))
            auth_client_authenticate(ctx, &rw->w, &rw->cw, false, revoke_client_ready);
        else if (auth_rate_continue(ctx, &rw->w, revoke_rate_passed) != 0)
            auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
    }
    explicit_bzero(f->creds.secret, sizeof(f->creds.secret));
}

int auth_revoke_routes(struct auth *auth, struct http_server *http)
{
    return http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/revoke", "revoke", revoke_post, auth);
}
