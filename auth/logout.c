/* auth/logout.c: signing out of the browser (DESIGN §5), and OpenID Connect RP-Initiated
 * Logout 1.0: an application sends the browser here to end the user's session.
 *
 *   GET or POST /t/{tenant}/oauth2/logout (the end_session_endpoint; §2: both methods), and
 *   GET /t/{tenant}/logout: id_token_hint, client_id, post_logout_redirect_uri, state
 *     → 200 a page whose form posts the logout, carrying client_id, post_logout_redirect_uri
 *       and state (nothing changes: a link, an image or another site's form must not sign
 *       anyone out, so the user confirms, as §2 lets the OP ask)
 *     → 400 an error page for a hint that is not this tenant's ID token, a client_id other
 *       than the hint's audience, or a post_logout_redirect_uri that the client did not
 *       register byte for byte (§2: "MUST NOT perform post-logout redirection" then; a page
 *       that stays here is the safe answer, the endpoint is no open redirector)
 *   POST /t/{tenant}/logout (the page's form; a cross-site post is refused, RFC 9700 §4.7)
 *     → the browser session of the cookie ends, and with it every session its codes made
 *       (their access tokens by 'sid' revocations): signing out of the browser signs out of
 *       the applications it signed in to, as Keycloak's SSO logout does; the cookie is cleared
 *     → 303 to the post_logout_redirect_uri with state (§3), checked against the client
 *       again in the same statement (a tampered form ends nothing: 400), or 200 a page
 *
 * The hint is verified as an ID token of the tenant (its published keys, iss, typ), an
 * expired one included (§2: "the OP SHOULD accept ID Tokens when the RP identified by the
 * ID Token's aud claim ... has a current session or had a recent session"); it names the
 * client only. Whose session ends is the cookie's business: the user confirms on the page. */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "crypto/jwt.h"

/* Tessera's own ID tokens stay under 3.3 KiB (CODE_ID_TOKEN_PAYLOAD_MAX's 2 KiB payload in
 * base64url, a header and an RSA-2048 signature): a longer hint is none of ours. */
#define LOGOUT_HINT_MAX 3584
#define LOGOUT_STATE_MAX 1024 /* echoed to the application: a random value, an app's path */
#define LOGOUT_SENT_MAX(max) (3 * (max) + 1) /* a value as sent: each byte maybe %XX */

/* The parameters of a logout, decoded and checked: "" when absent. */
struct logout_params {
    char hint[LOGOUT_HINT_MAX + 1];
    char client_id[AUTH_CLIENT_ID_MAX + 1];
    char redirect[AUTH_REDIRECT_URI_MAX + 1];
    char state[LOGOUT_STATE_MAX + 1];
};

/* ... as read, in the request's scratch: a form encodes a URI's ':' and '/' as %XX. */
struct logout_sent {
    char hint[LOGOUT_HINT_MAX + 1]; /* base64url: nothing to encode */
    char client_id[LOGOUT_SENT_MAX(AUTH_CLIENT_ID_MAX)];
    char redirect[LOGOUT_SENT_MAX(AUTH_REDIRECT_URI_MAX)];
    char state[LOGOUT_SENT_MAX(LOGOUT_STATE_MAX)];
};

struct logout_wait {
    struct auth_wait w;
    char slug[AUTH_SLUG_MAX + 1];
    char sid[CT_UUID_TEXT_LEN + 1]; /* the browser session's, or "" */
    char sha[2 * HASH_SHA256_BYTES + 1];
    char hint_sid[CT_UUID_TEXT_LEN + 1]; /* the verified hint's session and user, or "" */
    char hint_sub[CT_UUID_TEXT_LEN + 1];
    char ip[AUTH_IP_MAX + 1];
    char request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
    char slack[16];
    bool confirm;        /* the confirmation page's lookups, not the logout */
    const char *refusal; /* the 400 page's text, or NULL */
    struct logout_params p;
};

_Static_assert(sizeof(struct logout_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* A value read into dst (max bytes): false when it is too long or not VSCHAR. */
static bool logout_keep(char *dst, const char *value, size_t max)
{
    size_t len = strlen(value);
    if (len > max || !auth_vschar(value, len))
        return false;
    memcpy(dst, value, len + 1);
    return true;
}

/* Reads the parameters from in (a query or a form body) into p: NULL, or why they are refused. */
static const char *logout_read(struct http_ctx *ctx, struct slice in, struct logout_params *p, bool with_hint)
{
    struct logout_sent *t = http_scratch_alloc(ctx, sizeof(*t));
    if (t == NULL)
        return "the request is too large";
    struct auth_form_field fields[] = {
        { "client_id", t->client_id, sizeof(t->client_id), false },
        { "post_logout_redirect_uri", t->redirect, sizeof(t->redirect), false },
        { "state", t->state, sizeof(t->state), false },
        { "id_token_hint", t->hint, sizeof(t->hint), false },
    };
    t->hint[0] = '\0';
    const char *why = auth_form_read(in, fields, with_hint ? 4 : 3);
    if (why != NULL)
        return why;
    if (!logout_keep(p->hint, t->hint, LOGOUT_HINT_MAX) || !logout_keep(p->client_id, t->client_id, AUTH_CLIENT_ID_MAX) ||
        !logout_keep(p->redirect, t->redirect, AUTH_REDIRECT_URI_MAX) ||
        !logout_keep(p->state, t->state, LOGOUT_STATE_MAX))
        return "a parameter is too long or holds a character it may not";
    if (p->redirect[0] != '\0' && p->client_id[0] == '\0' && p->hint[0] == '\0')
        return "post_logout_redirect_uri needs client_id or id_token_hint"; /* §2: whose? */
    return NULL;
}

/* The statement's failure as the page's status. */
static void logout_store_failed(struct auth_wait *w)
{
    w->status = w->outcome == PG_UNAVAILABLE ? 503 : 500;
    w->detail = "the sign-in service is unavailable; try again shortly";
}

/* ---- Answers ------------------------------------------------------------------------------- */

/* The confirmation page: its form posts the logout with what was asked, the verified hint
 * among it (the post verifies it again and ends its session). */
static void logout_page(struct http_ctx *ctx, const struct auth *auth, const char *slug, const struct logout_params *p)
{
    struct buf b = auth_page_begin(ctx);
    buf_append_cstr(&b, "<h1>Sign out</h1><p>Sign out of this browser, and of the applications you "
                        "signed in to with it?</p>");
    auth_page_form(&b, auth, slug, "logout");
    bool redirect = p->redirect[0] != '\0';
    auth_hidden_field(&b, "id_token_hint", p->hint[0] ? p->hint : NULL);
    auth_hidden_field(&b, "client_id", p->client_id[0] ? p->client_id : NULL);
    auth_hidden_field(&b, "post_logout_redirect_uri", redirect ? p->redirect : NULL);
    auth_hidden_field(&b, "state", redirect && p->state[0] ? p->state : NULL);
    buf_append_cstr(&b, "<button type=\"submit\">Sign out</button></form>");
    auth_page_end(ctx, 200, &b);
}

static void logout_signed_out(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                              const struct logout_params *p)
{
    auth_set_cookie(ctx, auth, slug, AUTH_SSO_COOKIE, "", 0); /* Max-Age=0: forgotten */
    if (p->redirect[0] != '\0') {
        const char *pairs[] = { "state", p->state[0] ? p->state : NULL };
        auth_page_redirect(ctx, auth, NULL, p->redirect, pairs, 2); /* §3: state, no more */
        return;
    }
    struct buf b = auth_page_begin(ctx);
    buf_append_cstr(&b, "<h1>Signed out</h1><p>You are signed out of this browser.</p>");
    auth_page_end(ctx, 200, &b);
}

/* A parked request's end: the failure (w->status: 404, 503, 500), the refusal, or what it
 * was for. A logout's success is "ended now, or already gone". */
static void logout_answer(struct http_ctx *ctx, void *state)
{
    struct logout_wait *lw = state;
    if (lw->w.status != 0)
        auth_page_error(ctx, lw->w.status, lw->w.detail);
    else if (lw->refusal != NULL)
        auth_page_error(ctx, 400, lw->refusal);
    else if (lw->confirm)
        logout_page(ctx, lw->w.auth, lw->slug, &lw->p);
    else
        logout_signed_out(ctx, lw->w.auth, lw->slug, &lw->p);
}

/* ---- The confirmation page's lookups ------------------------------------------------------- */

static void logout_client_read(struct auth_wait *w)
{
    struct logout_wait *lw = (struct logout_wait *)w;
    if (w->outcome != PG_OK) {
        logout_store_failed(w);
    } else if (pg_result_rows(w->result) != 1) {
        lw->refusal = "the application (client_id) is not known here";
    } else if (lw->p.redirect[0] != '\0' && strcmp(pg_result_value(w->result, 0, 0), "t") != 0) {
        lw->refusal = "post_logout_redirect_uri is not registered for this application";
    }
    http_resume(lw, logout_answer);
}

/* A client named (given, or the hint's) must be the tenant's, and its registration decides
 * the redirect. */
static void logout_check_client(struct http_ctx *ctx, struct logout_wait *lw)
{
    if (lw->p.client_id[0] == '\0') {
        http_resume(lw, logout_answer);
        return;
    }
    const char **q = lw->w.q.params;
    q[0] = lw->slug, q[1] = lw->p.client_id, q[2] = lw->p.redirect[0] ? lw->p.redirect : NULL;
    lw->w.q.params_count = 3;
    auth_send(ctx, &lw->w, STORE_LOGOUT_CLIENT, NULL, logout_client_read);
}

/* ---- The logout's statements --------------------------------------------------------------- */

/* The sweep's revocations spread too. A failed sweep leaves what the logout ended ended, and
 * the browser is told it is signed out: only a redemption racing the logout escaped. */
static void logout_swept(struct auth_wait *w)
{
    if (w->outcome == PG_OK)
        auth_session_spread(w);
    else
        log_msg(LOG_WARN, "the logout's sweep failed: a code redeemed during the logout may outlive it", NULL);
    http_resume(w, logout_answer);
}

/* Committed: the revocations of the applications' sessions reach every shard and instance
 * before the browser hears it is signed out; then the sweep (STORE_SSO_SWEEP) on a snapshot
 * taken after this commit. */
static void logout_committed(struct auth_wait *w)
{
    struct logout_wait *lw = (struct logout_wait *)w;
    if (w->outcome != PG_OK) {
        logout_store_failed(w);
    } else if (pg_result_rows(w->result) < 1 || strcmp(pg_result_value(w->result, 0, 5), "t") != 0) {
        lw->refusal = "post_logout_redirect_uri is not registered for this application";
    } else {
        auth_session_spread(w);
        if (lw->sid[0] != '\0') {
            const char **q = w->q.params;
            q[0] = lw->slug, q[1] = lw->sid, q[2] = lw->sha, q[3] = lw->slack;
            q[4] = lw->ip[0] ? lw->ip : NULL, q[5] = lw->request_id;
            w->q.params_count = 6;
            auth_send(NULL, w, STORE_SSO_SWEEP, NULL, logout_swept);
            return;
        }
    }
    http_resume(lw, logout_answer);
}

static void logout_send(struct http_ctx *ctx, struct logout_wait *lw)
{
    snprintf(lw->slack, sizeof(lw->slack), "%d", AUTH_SESSION_REVOKE_SLACK_S);
    bool sso = lw->sid[0] != '\0', redirect = lw->p.redirect[0] != '\0';
    const char **q = lw->w.q.params;
    q[0] = lw->slug, q[1] = sso ? lw->sid : NULL, q[2] = sso ? lw->sha : NULL;
    q[3] = lw->ip[0] ? lw->ip : NULL, q[4] = lw->request_id;
    q[5] = redirect ? lw->p.client_id : NULL, q[6] = redirect ? lw->p.redirect : NULL, q[7] = lw->slack;
    bool hinted = lw->hint_sid[0] != '\0';
    q[8] = hinted ? lw->hint_sid : NULL, q[9] = hinted ? lw->hint_sub : NULL, q[10] = hinted ? lw->p.client_id : NULL;
    lw->w.q.params_count = 11;
    auth_send(ctx, &lw->w, STORE_SSO_LOGOUT, NULL, logout_committed);
}

/* ---- The stages both share ------------------------------------------------------------------ */

/* After the hint (if any): the page's lookup of the client, or the logout. */
static void logout_next(struct http_ctx *ctx, struct logout_wait *lw)
{
    if (lw->confirm)
        logout_check_client(ctx, lw);
    else
        logout_send(ctx, lw);
}

/* The hint against the tenant's keys, on the shard (a verification, as /verify's; the
 * reference is given back): true with the hint's client in p.client_id (when none was given)
 * and its session and user kept, else lw->refusal says why. */
static bool logout_hint_valid(struct logout_wait *lw, struct auth_tenant *tenant)
{
    struct auth_wait *w = &lw->w;
    char issuer[AUTH_SESSION_ISSUER_MAX + 1];
    struct buf iss;
    buf_init(&iss, issuer, sizeof(issuer));
    auth_issuer(w->auth, slice_make(lw->slug, strlen(lw->slug)), &iss);
    struct jwt_expect expect = {
        .kind = JWT_KIND_ID_HINT,
        .issuer = buf_slice(&iss),
        .audience = slice_make(lw->p.client_id, strlen(lw->p.client_id)), /* empty: the hint's */
        .now = (int64_t)time(NULL),
        .leeway_s = JWT_LEEWAY_DEFAULT_S,
    };
    static _Thread_local uint8_t scratch[LOGOUT_HINT_MAX];
    static _Thread_local struct jwt_claims claims;
    int rc = iss.overflow ? -TE_INVAL
                          : jwt_verify(&tenant->keys, &expect, lw->p.hint, strlen(lw->p.hint), scratch,
                                       sizeof(scratch), &claims);
    auth_tenant_put(w->auth, w->loop, tenant);
    if (rc != 0) {
        lw->refusal = lw->p.client_id[0] ? "id_token_hint is not an ID token this server issued to client_id"
                                         : "id_token_hint is not an ID token this server issued";
        return false;
    }
    if (strlen(claims.client_id) > AUTH_CLIENT_ID_MAX) {
        lw->refusal = "id_token_hint names no client of this server";
        return false;
    }
    if (lw->p.client_id[0] == '\0')
        memcpy(lw->p.client_id, claims.client_id, strlen(claims.client_id) + 1);
    if (auth_uuid_text(claims.sid) && auth_uuid_text(claims.sub)) { /* Tessera's own: the session */
        memcpy(lw->hint_sid, claims.sid, sizeof(lw->hint_sid));
        memcpy(lw->hint_sub, claims.sub, sizeof(lw->hint_sub));
    }
    return true;
}

static void logout_hint_keys(struct auth_wait *w, struct auth_tenant *tenant)
{
    struct logout_wait *lw = (struct logout_wait *)w;
    if (tenant == NULL || !logout_hint_valid(lw, tenant))
        http_resume(lw, logout_answer); /* nothing ended */
    else
        logout_next(NULL, lw);
}

/* The hint first, if any: the page's and again the post's (the form came through the browser). */
static void logout_stage(struct http_ctx *ctx, struct logout_wait *lw)
{
    if (lw->p.hint[0] != '\0')
        auth_tenant_get(ctx, &lw->w, lw->slug, logout_hint_keys);
    else
        logout_next(ctx, lw);
}

static void logout_rate_passed(struct auth_wait *w)
{
    logout_stage(NULL, (struct logout_wait *)w);
}

/* Parks a request that reads or writes Postgres or checks a signature: the address's bucket
 * bounds them. NULL: answered (429, 503). */
static struct logout_wait *logout_park(struct http_ctx *ctx, struct auth *auth, const char *slug,
                                       const struct logout_params *p, bool confirm)
{
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, auth, "", NULL, &limits))
        return NULL;
    struct logout_wait *lw = auth_park(ctx, auth, sizeof(*lw));
    if (lw == NULL)
        return NULL;
    memcpy(lw->slug, slug, AUTH_SLUG_MAX + 1);
    lw->p = *p;
    lw->confirm = confirm;
    lw->w.rate = limits;
    return lw;
}

static void logout_start(struct http_ctx *ctx, struct logout_wait *lw)
{
    if (!auth_rate_pending(&lw->w.rate))
        logout_stage(ctx, lw);
    else if (auth_rate_continue(ctx, &lw->w, logout_rate_passed) != 0)
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
}

/* ---- The handlers --------------------------------------------------------------------------- */

static void logout_confirm(struct http_ctx *ctx, struct slice in)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        auth_page_error(ctx, 404, "no such tenant");
        return;
    }
    struct logout_params *p = http_scratch_alloc(ctx, sizeof(*p));
    const char *why = p == NULL ? "the request is too large" : logout_read(ctx, in, p, true);
    char slug[AUTH_SLUG_MAX + 1];
    auth_slug_copy(ctx->params[0], slug);
    if (why != NULL) {
        auth_page_error(ctx, 400, why);
        return;
    }
    if (p->hint[0] == '\0' && p->client_id[0] == '\0') {
        logout_page(ctx, auth, slug, p); /* nothing to look up (a redirect needs a client) */
        return;
    }
    struct logout_wait *lw = logout_park(ctx, auth, slug, p, true);
    if (lw != NULL)
        logout_start(ctx, lw);
}

/* An application's form may post here from its own site: the page it answers changes nothing. */
static void logout_confirm_request(struct http_ctx *ctx)
{
    struct slice params;
    if (auth_page_params(ctx, &params))
        logout_confirm(ctx, params);
}

/* POST /t/{tenant}/logout: the browser session of the cookie ends with its applications'
 * sessions (and a verified hint's session), and the cookie with it. Cross-site posts are
 * refused as the login's (a forced logout is a nuisance, RFC 9700 §4.7). */
static void logout_post(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        auth_page_error(ctx, 404, "no such tenant");
        return;
    }
    if (!auth_same_origin(ctx, auth)) {
        auth_page_error(ctx, 403, "this form was not sent from this site");
        return;
    }
    struct logout_params *p = http_scratch_alloc(ctx, sizeof(*p));
    if (p == NULL) {
        auth_page_error(ctx, 400, "the request is too large");
        return;
    }
    memset(p, 0, sizeof(*p));
    const char *why = ctx->body.len == 0 ? NULL
                      : !auth_form_body(ctx) ? "the body must be application/x-www-form-urlencoded"
                                             : logout_read(ctx, ctx->body, p, true);
    if (why != NULL) {
        auth_page_error(ctx, 400, why);
        return;
    }
    char slug[AUTH_SLUG_MAX + 1];
    auth_slug_copy(ctx->params[0], slug);
    char sid[CT_UUID_TEXT_LEN + 1], sha[2 * HASH_SHA256_BYTES + 1];
    bool sso = auth_sso_cookie(ctx, sid, sha);
    if (!sso && p->redirect[0] == '\0' && p->hint[0] == '\0') {
        logout_signed_out(ctx, auth, slug, p); /* nothing to end, nowhere to check */
        return;
    }
    struct logout_wait *lw = logout_park(ctx, auth, slug, p, false);
    if (lw != NULL) {
        memcpy(lw->sid, sid, sizeof(sid)); /* "" without a cookie */
        memcpy(lw->sha, sha, sizeof(sha));
        http_client_address(ctx, lw->ip, sizeof(lw->ip));
        auth_request_id(ctx, lw->request_id, sizeof(lw->request_id));
        logout_start(ctx, lw);
    }
    explicit_bzero(sha, sizeof(sha));
}

int auth_browser_logout_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/logout", "logout_page", logout_confirm_request, auth);
    if (rc == 0)
        rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/logout", "logout_page", logout_post, auth);
    if (rc == 0)
        rc = http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/oauth2/logout", "end_session", logout_confirm_request,
                            auth);
    if (rc == 0)
        rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/logout", "end_session", logout_confirm_request,
                            auth);
    return rc;
}
