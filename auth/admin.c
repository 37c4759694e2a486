/* auth/admin.c: the tenant admin's bearer check, shared by every admin endpoint, and the users
 * endpoints of issue 6.
 *
 * Who is a tenant admin (Auth0 Management API's model): a client of the tenant, holding an
 * access token of its own (client_credentials: no `sid`) whose `scope` carries what the
 * endpoint needs. The token must be valid at the tenant of the path (auth_access_check: issuer,
 * audience, tid, keys, revocation); a missing, invalid or user's token is 401 with
 * `WWW-Authenticate: Bearer error="invalid_token"`, a token without the scope 403 with
 * `Bearer error="insufficient_scope", scope="…"` (RFC 6750 §3.1). Every statement is confined
 * to the token's tid, so a token of tenant A never reads or changes B's users, even by B's ids
 * (SECURITY T08). The token is checked before anything else of the request is answered.
 *
 * Under /t/{tenant}/api/v1:
 *   GET    /users?q=&limit=&cursor=   (users:read)  → {"users": [...], "next_cursor": id|null}:
 *          live users in id order (keyset: the next page starts after the cursor, the last id of
 *          the page; no OFFSET), q a case-insensitive substring of the username or the address,
 *          limit 1..100 (default 50); each user {id, username, email, email_verified, disabled,
 *          locked_until, failed_logins, created_at, last_login_at}, never the hash
 *   GET    /users/{id}                (users:read)  → the user; 404 when unknown or deleted
 *   POST   /users/{id}/disable        (users:write) → 204; every session revoked with its 'sid'
 *          revocation spread (DESIGN §1), so access tokens are refused at once and refresh
 *          tokens are invalid_grant (SECURITY O20)
 *   POST   /users/{id}/enable         (users:write) → 204
 *   POST   /users/{id}/unlock         (users:write) → 204; failed_logins 0, no lock (P04)
 *   DELETE /users/{id}                (users:write) → 204; soft delete, sessions as disable
 *   GET    /users/{id}/api-keys       (users:read)  → {"api_keys": [...]}: the user's live keys
 *          as GET /me/api-keys lists them (a disabled user's too); 404 for a user deleted
 *   DELETE /users/{id}/api-keys/{key} (users:write) → 204; the key's 'key' revocation spread
 *          (auth/apikey.c); 404 unless it is a live key of that user
 * Each change commits its audit row (actor_kind 'client', actor_id the client_id) in the
 * statement that makes it. A malformed id is 404, a malformed q, limit or cursor 400. */
#include "auth/auth_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "proto/http_auth.h"
#include "proto/url.h"

#define ADMIN_QUERY_MAX AUTH_EMAIL_MAX /* ?q=: a part of a username or an address, at most one */
#define ADMIN_USERS "/t/{tenant}/api/v1/users"
#define ADMIN_LIMIT_DIGITS 3           /* "100", AUTH_ADMIN_LIMIT_MAX, is the widest */

_Static_assert(AUTH_ADMIN_LIMIT_MAX < 1000, "the limit fits ADMIN_LIMIT_DIGITS");
_Static_assert(AUTH_ADMIN_LIMIT_DEFAULT <= AUTH_ADMIN_LIMIT_MAX, "the default is allowed");

/* ---- The admin's token -------------------------------------------------------------------- */

static void admin_unauthorized(struct http_ctx *ctx, void *state)
{
    (void)state;
    http_header_add(ctx, "WWW-Authenticate", SLICE_LIT("Bearer error=\"invalid_token\""));
    http_respond_problem(ctx, 401, "the access token is missing, invalid, expired or revoked, "
                                   "or not a client's own");
}

/* RFC 6750 §3.1: the scope the request needs, in the challenge. */
static void admin_forbidden(struct http_ctx *ctx, void *state)
{
    const struct auth_admin *admin = state;
    struct buf h = http_scratch_buf(ctx);
    buf_append_cstr(&h, "Bearer error=\"insufficient_scope\", scope=\"");
    buf_append_cstr(&h, admin->scope);
    buf_append_cstr(&h, "\"");
    http_scratch_commit(ctx, &h);
    http_header_add(ctx, "WWW-Authenticate", buf_slice(&h));
    http_respond_problem(ctx, 403, "the access token lacks the scope this endpoint needs");
}

/* 8-4-4-4-12 hex digits (either case: Postgres reads both). */
static bool admin_uuid(const char *s, size_t len)
{
    if (len != CT_UUID_TEXT_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return false;
    }
    return true;
}

static void admin_check_token(struct auth_admin *admin, const struct auth_tenant *tenant)
{
    struct auth_wait *w = &admin->w;
    const struct jwt_claims *c = NULL;
    struct slice token = slice_make(admin->token, admin->token_len);
    if (auth_access_check(w->auth, w->loop, admin->slug, tenant, token, &c) != 0) {
        http_resume(admin, admin_unauthorized);
        return;
    }
    /* A user's token (it names a session) is never an admin's, whatever its scope says. */
    size_t client_len = strlen(c->client_id);
    if (c->sid[0] != '\0' || !admin_uuid(c->tid, strlen(c->tid)) || client_len == 0 ||
        client_len > AUTH_CLIENT_ID_MAX) {
        http_resume(admin, admin_unauthorized);
        return;
    }
    if (!auth_words_subset(admin->scope, c->scope)) {
        http_resume(admin, admin_forbidden);
        return;
    }
    memcpy(admin->tid, c->tid, sizeof(admin->tid)); /* checked: 36 characters and a NUL */
    memcpy(admin->client_id, c->client_id, client_len + 1);
    if (admin->bad_request != NULL) {
        auth_answer(w, 400, admin->bad_request);
        return;
    }
    admin->ready(admin);
}

static void admin_keys_ready(struct auth_wait *w, struct auth_tenant *tenant)
{
    if (tenant == NULL) {
        auth_answer(w, w->status, w->detail);
        return;
    }
    struct auth *auth = w->auth;
    struct loop *loop = w->loop;
    admin_check_token((struct auth_admin *)w, tenant); /* w may be gone after this */
    auth_tenant_put(auth, loop, tenant);
}

void *auth_admin_start(struct http_ctx *ctx, size_t bytes, const char *scope)
{
    assert(bytes >= sizeof(struct auth_admin));
    assert(scope != NULL);
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return NULL;
    }
    const struct http1_header *h = http1_find_header(ctx->req, "Authorization");
    struct slice token = h ? http_auth_bearer(h->value) : slice_make(NULL, 0);
    if (token.len == 0 || token.len > AUTH_ACCESS_TOKEN_MAX) {
        admin_unauthorized(ctx, NULL);
        return NULL;
    }
    struct auth_admin *admin = auth_park(ctx, ctx->route_arg, bytes);
    if (admin == NULL)
        return NULL;
    admin->scope = scope;
    memcpy(admin->token, token.ptr, token.len);
    admin->token_len = token.len;
    auth_slug_copy(ctx->params[0], admin->slug);
    snprintf(admin->slack_text, sizeof(admin->slack_text), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    http_client_address(ctx, admin->ip, sizeof(admin->ip));
    auth_request_id(ctx, admin->request_id, sizeof(admin->request_id));
    return admin;
}

/* The tenant's keys, then the token; ctx is the handler's, or NULL after a rate-limit owner's
 * answer. */
static void admin_go(struct http_ctx *ctx, struct auth_admin *admin)
{
    if (auth_tenant_cached(admin->w.auth, admin->w.loop, admin->slug) == NULL)
        auth_tenant_get(ctx, &admin->w, admin->slug, admin_keys_ready);
    else
        admin_check_token(admin, NULL);
}

static void admin_rate_passed(struct auth_wait *w)
{
    admin_go(NULL, (struct auth_admin *)w);
}

/* The source address's bucket first, as every endpoint that reaches Postgres: a stolen or
 * guessed admin token cannot be used to flood the users and audit queries. */
void auth_admin_check(struct http_ctx *ctx, struct auth_admin *admin, auth_admin_ready_fn ready)
{
    assert(ready != NULL);
    admin->ready = ready;
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, admin->w.auth, "", NULL, &limits))
        return; /* answered 429: the park is undone */
    admin->w.rate = limits;
    if (!auth_rate_pending(&admin->w.rate))
        admin_go(ctx, admin);
    else if (auth_rate_continue(ctx, &admin->w, admin_rate_passed) != 0)
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
}

/* ---- Query parameters ------------------------------------------------------------------------ */

/* The length of the UTF-8 sequence at s (at most len bytes), 0 when invalid (RFC 3629 §4:
 * no overlong form, no surrogate, nothing above U+10FFFF). */
static size_t admin_utf8_len(const unsigned char *s, size_t len)
{
    size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || s[0] > 0xf4 || n > len)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* Text Postgres takes as a parameter: valid UTF-8 without control characters. */
static bool admin_text_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) {
            if (s[i] < 0x20 || s[i] == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t n = admin_utf8_len(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

const char *auth_admin_query(const struct http_ctx *ctx, const char *name, char *dst, size_t cap,
                             bool *seen)
{
    assert(cap > 1);
    int n = url_form_get(ctx->req->query, name, dst, cap - 1);
    dst[n > 0 ? n : 0] = '\0';
    *seen = n > 0; /* an empty value is no filter: "?cursor=" is the first page */
    if (n == -1)
        return NULL;
    if (n < 0)
        return "a query parameter is malformed or too long";
    if (!admin_text_valid(dst, (size_t)n))
        return "a query parameter holds a control character or is not UTF-8";
    return NULL;
}

const char *auth_admin_limit(const struct http_ctx *ctx, char *dst)
{
    bool seen = false;
    const char *why = auth_admin_query(ctx, "limit", dst, AUTH_ADMIN_NUM_TEXT, &seen);
    if (why != NULL)
        return why;
    if (!seen) {
        snprintf(dst, AUTH_ADMIN_NUM_TEXT, "%d", AUTH_ADMIN_LIMIT_DEFAULT);
        return NULL;
    }
    size_t len = strlen(dst);
    int value = 0;
    for (size_t i = 0; i < len; i++) {
        if (dst[i] < '0' || dst[i] > '9' || i >= ADMIN_LIMIT_DIGITS)
            return "limit must be a whole number from 1 to 100";
        value = value * 10 + (dst[i] - '0');
    }
    if (value < 1 || value > AUTH_ADMIN_LIMIT_MAX)
        return "limit must be a whole number from 1 to 100";
    snprintf(dst, AUTH_ADMIN_NUM_TEXT, "%d", value); /* "007" is sent as "7" */
    return NULL;
}

/* ---- The users endpoints ------------------------------------------------------------------- */

enum users_mode {
    USERS_LIST,   /* GET /users */
    USER_GET,     /* GET /users/{id} */
    USER_DISABLE, /* POST /users/{id}/disable */
    USER_ENABLE,  /* POST /users/{id}/enable */
    USER_UNLOCK,  /* POST /users/{id}/unlock */
    USER_DELETE,  /* DELETE /users/{id} */
    USER_KEYS,    /* GET /users/{id}/api-keys */
    USER_KEY_REVOKE, /* DELETE /users/{id}/api-keys/{key} */
};

struct users_wait {
    struct auth_admin admin;
    enum users_mode mode;
    bool target_valid; /* {id} (and {key}) are UUIDs: anything else is no user (404) */
    bool has_q, has_cursor;
    char target[CT_UUID_TEXT_LEN + 1];
    char key[CT_UUID_TEXT_LEN + 1];
    char cursor[CT_UUID_TEXT_LEN + 1];
    char limit[AUTH_ADMIN_NUM_TEXT];
    char q[ADMIN_QUERY_MAX + 1];
};

_Static_assert(sizeof(struct users_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

static void users_json_respond(struct http_ctx *ctx, void *state)
{
    const struct auth_wait *w = state;
    if (w->outcome != PG_OK) {
        auth_respond_store_failure(ctx, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) != 1 || pg_result_is_null(w->result, 0, 0)) {
        http_respond_problem(ctx, 404, "no such user");
        return;
    }
    const char *json = pg_result_value(w->result, 0, 0); /* Postgres made the JSON */
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_respond(ctx, 200, "application/json", slice_make(json, strlen(json)));
}

/* Enable, unlock: no row means no live user of this tenant by that id. */
static void users_changed_respond(struct http_ctx *ctx, void *state)
{
    const struct auth_wait *w = state;
    if (w->outcome != PG_OK)
        auth_respond_store_failure(ctx, w->outcome);
    else if (pg_result_rows(w->result) == 0)
        http_respond_problem(ctx, 404, "no such user");
    else
        auth_respond_no_content(ctx, state);
}

/* Disable, delete: committed with the sessions' 'sid' revocations, which spread now. */
static void users_revoked(struct auth_wait *w)
{
    if (w->outcome != PG_OK) {
        auth_fail(w, w->outcome);
        return;
    }
    if (pg_result_rows(w->result) == 0) {
        auth_answer(w, 404, "no such user");
        return;
    }
    auth_session_spread(w);
    http_resume(w, auth_respond_no_content);
}

static void users_send(struct auth_admin *admin)
{
    struct users_wait *uw = (struct users_wait *)admin;
    struct auth_wait *w = &admin->w;
    const char *ip = admin->ip[0] ? admin->ip : NULL;
    const char **p = w->q.params;
    if (uw->mode != USERS_LIST && !uw->target_valid) {
        auth_answer(w, 404, uw->mode == USER_KEY_REVOKE ? "no such API key" : "no such user");
        return;
    }
    p[0] = admin->tid;
    switch (uw->mode) {
    case USERS_LIST:
        p[1] = uw->has_cursor ? uw->cursor : NULL, p[2] = uw->has_q ? uw->q : NULL;
        p[3] = uw->limit;
        w->q.params_count = 4;
        auth_send(NULL, w, STORE_ADMIN_USERS_LIST, users_json_respond, NULL);
        return;
    case USER_GET:
    case USER_KEYS: {
        bool keys = uw->mode == USER_KEYS;
        p[1] = uw->target;
        w->q.params_count = 2;
        auth_send(NULL, w, keys ? STORE_APIKEYS_OF_USER : STORE_ADMIN_USER_GET,
                  keys ? auth_respond_api_keys : users_json_respond, NULL);
        return;
    }
    case USER_DISABLE:
        p[1] = uw->target, p[2] = admin->client_id, p[3] = admin->slack_text, p[4] = ip;
        p[5] = admin->request_id;
        w->q.params_count = 6;
        auth_send(NULL, w, STORE_ADMIN_USER_DISABLE, NULL, users_revoked);
        return;
    case USER_ENABLE:
    case USER_UNLOCK:
        p[1] = uw->target, p[2] = admin->client_id, p[3] = ip, p[4] = admin->request_id;
        w->q.params_count = 5;
        auth_send(NULL, w, uw->mode == USER_ENABLE ? STORE_ADMIN_USER_ENABLE
                                                   : STORE_ADMIN_USER_UNLOCK,
                  users_changed_respond, NULL);
        return;
    case USER_DELETE:
        p[1] = uw->target, p[2] = "client", p[3] = admin->client_id, p[4] = admin->slack_text;
        p[5] = ip, p[6] = admin->request_id;
        w->q.params_count = 7;
        auth_send(NULL, w, STORE_USER_DELETE, NULL, users_revoked);
        return;
    case USER_KEY_REVOKE:
        p[1] = uw->target, p[2] = uw->key, p[3] = admin->slack_text, p[4] = ip, p[5] = admin->request_id;
        p[6] = "client", p[7] = admin->client_id;
        w->q.params_count = 8;
        auth_send(NULL, w, STORE_APIKEY_REVOKE, NULL, auth_key_revoke_committed);
        return;
    }
}

/* GET /users's query: the reason it is refused, or NULL. */
static const char *users_list_parse(const struct http_ctx *ctx, struct users_wait *uw)
{
    const char *why = auth_admin_query(ctx, "q", uw->q, sizeof(uw->q), &uw->has_q);
    if (why == NULL)
        why = auth_admin_limit(ctx, uw->limit);
    if (why == NULL)
        why = auth_admin_query(ctx, "cursor", uw->cursor, sizeof(uw->cursor), &uw->has_cursor);
    if (why == NULL && uw->has_cursor && !admin_uuid(uw->cursor, strlen(uw->cursor)))
        why = "cursor is not one this endpoint gave";
    return why;
}

static void users_start(struct http_ctx *ctx, enum users_mode mode)
{
    bool read = mode == USERS_LIST || mode == USER_GET || mode == USER_KEYS;
    struct users_wait *uw = auth_admin_start(ctx, sizeof(*uw), read ? AUTH_SCOPE_USERS_READ
                                                                     : AUTH_SCOPE_USERS_WRITE);
    if (uw == NULL)
        return; /* answered */
    uw->mode = mode;
    if (mode == USERS_LIST) {
        uw->admin.bad_request = users_list_parse(ctx, uw);
    } else {
        struct slice id = ctx->params[1], key = mode == USER_KEY_REVOKE ? ctx->params[2] : SLICE_LIT("");
        uw->target_valid = admin_uuid(id.ptr, id.len) &&
                           (mode != USER_KEY_REVOKE || admin_uuid(key.ptr, key.len));
        if (uw->target_valid) {
            memcpy(uw->target, id.ptr, id.len);
            memcpy(uw->key, key.ptr, key.len);
        }
    }
    auth_admin_check(ctx, &uw->admin, users_send);
}

static void users_list_get(struct http_ctx *ctx)
{
    users_start(ctx, USERS_LIST);
}

static void user_get(struct http_ctx *ctx)
{
    users_start(ctx, USER_GET);
}

static void user_disable_post(struct http_ctx *ctx)
{
    users_start(ctx, USER_DISABLE);
}

static void user_enable_post(struct http_ctx *ctx)
{
    users_start(ctx, USER_ENABLE);
}

static void user_unlock_post(struct http_ctx *ctx)
{
    users_start(ctx, USER_UNLOCK);
}

static void user_delete(struct http_ctx *ctx)
{
    users_start(ctx, USER_DELETE);
}

static void user_keys_get(struct http_ctx *ctx)
{
    users_start(ctx, USER_KEYS);
}

static void user_key_delete(struct http_ctx *ctx)
{
    users_start(ctx, USER_KEY_REVOKE);
}

int auth_admin_routes(struct auth *auth, struct http_server *http)
{
    static const struct {
        enum http1_method method;
        const char *pattern, *name;
        http_handler_fn handler;
    } routes[] = {
        { HTTP1_METHOD_GET, ADMIN_USERS, "admin_users_list", users_list_get },
        { HTTP1_METHOD_GET, ADMIN_USERS "/{id}", "admin_user_get", user_get },
        { HTTP1_METHOD_POST, ADMIN_USERS "/{id}/disable", "admin_user_disable", user_disable_post },
        { HTTP1_METHOD_POST, ADMIN_USERS "/{id}/enable", "admin_user_enable", user_enable_post },
        { HTTP1_METHOD_POST, ADMIN_USERS "/{id}/unlock", "admin_user_unlock", user_unlock_post },
        { HTTP1_METHOD_DELETE, ADMIN_USERS "/{id}", "admin_user_delete", user_delete },
        { HTTP1_METHOD_GET, ADMIN_USERS "/{id}/api-keys", "admin_user_api_keys", user_keys_get },
        { HTTP1_METHOD_DELETE, ADMIN_USERS "/{id}/api-keys/{key}", "admin_user_api_key_revoke",
          user_key_delete },
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = http_route_add(http, routes[i].method, routes[i].pattern, routes[i].name,
                                routes[i].handler, auth);
        if (rc != 0)
            return rc;
    }
    return 0;
}
