/* auth/authorize.c: the authorization endpoint (RFC 6749 §4.1.1, RFC 7636, OIDC Core §3.1.2),
 * the hosted login page it shows and the browser session (SSO) the login leaves (DESIGN §5:
 * /oauth2/authorize, POST /login), and the pages' helpers auth/logout.c shares.
 *
 *   GET or POST /t/{tenant}/oauth2/authorize (OIDC Core §3.1.2.1: both; a POST carries what a
 *   URL cannot, such as a 4 KiB state)
 *     → 400 an error page, never a redirect, while the client or its redirect_uri is in doubt
 *     → 303 to the redirect_uri with error, error_description, state and iss, for any other error
 *     → 303 with code, state and iss when the browser session (AUTH_SSO_COOKIE) is live, unless
 *       prompt=login
 *     → 200 the login page, once every parameter passed: the request is stored (authorizations)
 *       and the page's form carries only its id and the CSRF token
 *   POST /t/{tenant}/login (the page's form: authz, csrf, username, password; auth/login.c)
 *     → 303 to the redirect_uri with code, state and iss, and the browser session's cookie
 *     → 200 the page again for a refused login, 403 for a cross-site post, 400 for a spent request
 *   (the logout: auth/logout.c)
 *
 * The order of the checks is RFC 6749 §4.1.2.1's and RFC 9700 §4.11.2's: the client and its
 * redirect_uri first, compared byte for byte with a registered one (RFC 9700 §4.1.3; the one
 * exception is a loopback IP literal's port, RFC 8252 §7.3), and until both passed nothing
 * redirects, so the endpoint is no open redirector (SECURITY O07, O09, O30). Every redirect
 * carries iss (RFC 9207, O31). PKCE with S256 is required of every client (RFC 9700
 * §2.1.1, O01-O03). prompt=none is answered by the browser session or is login_required;
 * max_age asks for a login that recent (OIDC Core §3.1.2.1: older, the page is shown);
 * request objects are not supported (OIDC Core §6); there is no consent page: a tenant's
 * admin registers the clients its users may sign in to.
 *
 * The login form is protected against cross-site posts (RFC 9700 §4.7, O39) by a
 * double-submitted token: a random value in a SameSite=Lax, HttpOnly cookie and in the
 * form, compared in constant time, and by refusing an Origin other than the public URL's and
 * a Sec-Fetch-Site other than same-origin (a sibling host may set cookies for the domain).
 * Every answer forbids framing and referrers (O40). */
#include "auth/auth_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "crypto/secret.h"
#include "proto/http_auth.h"
#include "proto/url.h"

#define AUTHZ_STATE_MAX 4096       /* SECURITY O32: a 4 KiB state is echoed */
#define AUTHZ_SHORT_MAX 64         /* response_type, code_challenge_method, prompt */
#define AUTHZ_CHALLENGE_LEN 43     /* RFC 7636 §4.2: BASE64URL(SHA-256), no padding */
#define AUTHZ_MAX_AGE_DIGITS 9     /* max_age in seconds: under 32 years, an int */
/* client_id, scope, state, nonce and code_challenge of a parked request, and its address and
 * request id (for the browser session's audit row), packed: a 4 KiB state with the rest at
 * their usual sizes. A POST whose values need more is refused. */
#define AUTHZ_TEXT_MAX 4608
#define AUTHZ_REQUEST_TTL_S 600    /* the user has 10 minutes to log in */
#define AUTHZ_CSRF_COOKIE "tessera_csrf"
#define AUTHZ_OIDC_SCOPES "openid profile email" /* OIDC Core §5.4: always allowed here */
#define AUTHZ_PATH_MAX (CONFIG_URL_BYTES_MAX + 3 + AUTH_SLUG_MAX + 2)
#define AUTHZ_SENT_MAX(max) (3 * (max) + 1) /* a form field's buffer: max bytes, each maybe %XX */

/* Every page and redirect of the browser flow (SECURITY O40; RFC 9700 §4.16, §4.2). */
#define AUTHZ_CSP "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"

enum authz_param {
    AP_CLIENT_ID,
    AP_REDIRECT_URI,
    AP_RESPONSE_TYPE,
    AP_SCOPE,
    AP_STATE,
    AP_NONCE,
    AP_CHALLENGE,
    AP_METHOD,
    AP_PROMPT,
    AP_MAX_AGE,
    AP_REQUEST,     /* OIDC Core §6 request objects: refused */
    AP_REQUEST_URI,
    AP_COUNT,
};

static const struct {
    const char *name;
    size_t max;
} authz_params[AP_COUNT] = {
    [AP_CLIENT_ID] = { "client_id", AUTH_CLIENT_ID_MAX },
    [AP_REDIRECT_URI] = { "redirect_uri", AUTH_REDIRECT_URI_MAX },
    [AP_RESPONSE_TYPE] = { "response_type", AUTHZ_SHORT_MAX },
    [AP_SCOPE] = { "scope", JWT_SCOPE_MAX },
    [AP_STATE] = { "state", AUTHZ_STATE_MAX },
    [AP_NONCE] = { "nonce", AUTH_NONCE_MAX },
    [AP_CHALLENGE] = { "code_challenge", AUTHZ_CHALLENGE_LEN },
    [AP_METHOD] = { "code_challenge_method", AUTHZ_SHORT_MAX },
    [AP_PROMPT] = { "prompt", AUTHZ_SHORT_MAX },
    [AP_MAX_AGE] = { "max_age", AUTHZ_MAX_AGE_DIGITS },
    [AP_REQUEST] = { "request", AUTHZ_TEXT_MAX },
    [AP_REQUEST_URI] = { "request_uri", AUTH_REDIRECT_URI_MAX },
};

/* The request's parameters as read (in the handler's scratch arena). */
struct authz_input {
    const char *value[AP_COUNT]; /* decoded; NULL when absent (or sent empty, RFC 6749 §3.1) */
    size_t len[AP_COUNT];
    bool repeated[AP_COUNT];
    bool bad[AP_COUNT];          /* malformed or too long */
};

/* An error found before the client is known, sent once its redirect_uri is (or NULL). */
struct authz_error {
    const char *error, *description;
};

struct authz_wait {
    struct auth_wait w;
    struct authz_error early;  /* RFC 6749 §4.1.2.1's, before the client's grant is known */
    struct authz_error late;   /* after it, before the scope's */
    struct authz_error answer; /* the error redirected with */
    bool prompt_none;          /* OIDC Core §3.1.2.1: the last check */
    bool prompt_login;         /* ... the browser session is not enough: log in again */
    bool redirect_given;
    bool state_usable;         /* state may be echoed (present, single, within bounds) */
    char slug[AUTH_SLUG_MAX + 1];
    char tenant_id[CT_UUID_TEXT_LEN + 1];
    char id[CT_UUID_TEXT_LEN + 1];
    char csrf[SECRET_RANDOM_CHARS + 1];
    char ttl_text[16];
    char sso_idle_text[16];
    char code_ttl_text[16];
    char max_age[AUTHZ_MAX_AGE_DIGITS + 1];     /* OIDC Core §3.1.2.1, or "" */
    char sso_sid[CT_UUID_TEXT_LEN + 1];         /* the browser session's cookie, or "" */
    char sso_sha[2 * HASH_SHA256_BYTES + 1];
    char code[SECRET_RANDOM_CHARS + 1];         /* the code a live browser session gets */
    char code_sha[2 * HASH_SHA256_BYTES + 1];
    char redirect_uri[AUTH_REDIRECT_URI_MAX + 1]; /* as sent, then the one verified */
    /* packed into text, each NUL-terminated; NULL when absent */
    const char *client_id, *scope, *state, *nonce, *challenge, *ip, *request_id;
    size_t text_used;
    char text[AUTHZ_TEXT_MAX];
};

_Static_assert(sizeof(struct authz_wait) <= HTTP_PARK_STATE_MAX, "fits a parked request");

/* ---- Pages and redirects ------------------------------------------------------------------- */

void auth_page_headers(struct http_ctx *ctx)
{
    http_header_add(ctx, "Cache-Control", SLICE_LIT("no-store"));
    http_header_add(ctx, "Pragma", SLICE_LIT("no-cache"));
    http_header_add(ctx, "Content-Security-Policy", SLICE_LIT(AUTHZ_CSP));
    http_header_add(ctx, "X-Frame-Options", SLICE_LIT("DENY"));
    http_header_add(ctx, "Referrer-Policy", SLICE_LIT("no-referrer"));
    http_header_add(ctx, "X-Content-Type-Options", SLICE_LIT("nosniff"));
}

void auth_html_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_append_cstr(b, "&amp;"); break;
        case '<': buf_append_cstr(b, "&lt;"); break;
        case '>': buf_append_cstr(b, "&gt;"); break;
        case '"': buf_append_cstr(b, "&quot;"); break;
        case '\'': buf_append_cstr(b, "&#39;"); break;
        default: buf_append(b, s, 1);
        }
    }
}

static const char authz_page_head[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<title>Sign in</title><style>body{font-family:system-ui,sans-serif;max-width:22rem;"
    "margin:4rem auto;padding:0 1rem}label,input,button{display:block;width:100%;"
    "box-sizing:border-box}input{margin:.25rem 0 1rem;padding:.5rem}button{padding:.6rem}"
    ".error{color:#b00020}</style></head><body>";

struct buf auth_page_begin(struct http_ctx *ctx)
{
    struct buf b = http_scratch_buf(ctx);
    buf_append_cstr(&b, authz_page_head);
    return b;
}

void auth_page_end(struct http_ctx *ctx, int status, struct buf *b)
{
    buf_append_cstr(b, "</body></html>\n");
    http_scratch_commit(ctx, b);
    auth_page_headers(ctx);
    http_respond(ctx, status, "text/html; charset=utf-8", buf_slice(b));
}

void auth_page_error(struct http_ctx *ctx, int status, const char *message)
{
    struct buf b = auth_page_begin(ctx);
    buf_append_cstr(&b, "<h1>Something went wrong</h1><p class=\"error\" role=\"alert\">");
    auth_html_escape(&b, message);
    buf_append_cstr(&b, "</p>");
    auth_page_end(ctx, status, &b);
}

void auth_page_form(struct buf *b, const struct auth *auth, const char *slug, const char *page)
{
    /* The public URL's path: right behind a proxy that serves it under a path of its own. */
    buf_append_cstr(b, "<form method=\"post\" action=\"");
    char path[AUTHZ_PATH_MAX + 1];
    struct buf pb;
    buf_init(&pb, path, sizeof(path));
    auth_public_path(auth, slug, &pb);
    buf_append(&pb, "", 1);
    auth_html_escape(b, pb.overflow ? "" : path);
    buf_append_cstr(b, "/");
    buf_append_cstr(b, page);
    buf_append_cstr(b, "\">");
}

void auth_hidden_field(struct buf *b, const char *name, const char *value)
{
    if (value == NULL)
        return;
    buf_printf(b, "<input type=\"hidden\" name=\"%s\" value=\"", name);
    auth_html_escape(b, value);
    buf_append_cstr(b, "\">");
}

void auth_login_page(struct http_ctx *ctx, const struct auth *auth, const char *slug, int status,
                     const char *authz_id, const char *csrf, const char *message)
{
    struct buf b = auth_page_begin(ctx);
    buf_append_cstr(&b, "<h1>Sign in</h1>");
    if (message != NULL) {
        buf_append_cstr(&b, "<p class=\"error\" role=\"alert\">");
        auth_html_escape(&b, message);
        buf_append_cstr(&b, "</p>");
    }
    auth_page_form(&b, auth, slug, "login");
    auth_hidden_field(&b, "authz", authz_id);
    auth_hidden_field(&b, "csrf", csrf);
    buf_append_cstr(&b, "<label for=\"username\">Username</label>"
                        "<input id=\"username\" name=\"username\" autocomplete=\"username\" "
                        "required autofocus><label for=\"password\">Password</label>"
                        "<input id=\"password\" name=\"password\" type=\"password\" "
                        "autocomplete=\"current-password\" required>"
                        "<button type=\"submit\">Sign in</button></form>");
    auth_page_end(ctx, status, &b);
}

/* RFC 3986 §2.3: everything but the unreserved characters percent-encoded. */
static void authz_append_encoded(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                          c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            buf_append(b, s, 1);
        } else {
            char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
            buf_append(b, esc, 3);
        }
    }
}

void auth_page_redirect(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                        const char *redirect_uri, const char *const *pairs, size_t n)
{
    struct buf loc = http_scratch_buf(ctx);
    buf_append_cstr(&loc, redirect_uri);
    char sep = strchr(redirect_uri, '?') != NULL ? '&' : '?';
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (pairs[i + 1] == NULL)
            continue;
        buf_printf(&loc, "%c%s=", sep, pairs[i]);
        authz_append_encoded(&loc, pairs[i + 1]);
        sep = '&';
    }
    if (slug != NULL) {
        char issuer[AUTH_SESSION_ISSUER_MAX + 1];
        struct buf iss;
        buf_init(&iss, issuer, sizeof(issuer));
        auth_issuer(auth, slice_make(slug, strlen(slug)), &iss);
        buf_append(&iss, "", 1);
        buf_printf(&loc, "%ciss=", sep);
        authz_append_encoded(&loc, issuer);
    }
    if (loc.overflow) {
        http_respond_problem(ctx, 500, "internal error");
        return;
    }
    http_scratch_commit(ctx, &loc);
    http_header_add(ctx, "Location", buf_slice(&loc));
    auth_page_headers(ctx);
    http_respond(ctx, 303, "text/plain; charset=utf-8", SLICE_LIT(""));
}

void auth_set_cookie(struct http_ctx *ctx, const struct auth *auth, const char *slug, const char *name,
                     const char *value, long max_age_s)
{
    struct buf c = http_scratch_buf(ctx);
    buf_printf(&c, "%s=%s; Path=", name, value);
    auth_public_path(auth, slug, &c);
    /* Lax, not Strict: the authorize request is a cross-site navigation, which would not carry
     * a Strict cookie (a second tab would replace the first's CSRF token, and the browser
     * session would not be seen); a cross-site POST never carries a Lax one. */
    buf_append_cstr(&c, "/; HttpOnly; SameSite=Lax");
    if (max_age_s >= 0)
        buf_printf(&c, "; Max-Age=%ld", max_age_s);
    if (strncmp(auth->cfg->public_url, "https:", 6) == 0)
        buf_append_cstr(&c, "; Secure");
    http_scratch_commit(ctx, &c);
    http_header_add(ctx, "Set-Cookie", buf_slice(&c));
}

void auth_login_redirect_code(struct http_ctx *ctx, const struct auth *auth, const char *slug,
                              const char *redirect_uri, const char *state, const char *code,
                              const char *sso_token)
{
    if (sso_token != NULL)
        auth_set_cookie(ctx, auth, slug, AUTH_SSO_COOKIE, sso_token, AUTH_SSO_ABSOLUTE_S);
    const char *pairs[] = { "code", code, "state", state };
    auth_page_redirect(ctx, auth, slug, redirect_uri, pairs, 4);
}

static void authz_redirect_error(struct http_ctx *ctx, const struct authz_wait *aw, const struct authz_error *e)
{
    const char *pairs[] = { "error", e->error, "error_description", e->description,
                            "state", aw->state_usable ? aw->state : NULL };
    auth_page_redirect(ctx, aw->w.auth, aw->slug, aw->redirect_uri, pairs, 6);
}

/* ---- Parameters ---------------------------------------------------------------------------- */

bool auth_vschar(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    }
    return true;
}

/* Decodes one parameter's value into the arena; -TE_NOMEM, or whether it is usable. */
static int authz_take(struct http_ctx *ctx, struct slice value, size_t max, char **out, size_t *len)
{
    if (value.len > 3 * max)
        return 0; /* longer than any encoding of max bytes */
    char *dst = http_scratch_alloc(ctx, value.len + 1);
    if (dst == NULL)
        return -TE_NOMEM;
    int n = url_decode_form_component(value, dst);
    if (n < 0 || (size_t)n > max || !auth_vschar(dst, (size_t)n))
        return 0;
    dst[n] = '\0';
    *out = dst;
    *len = (size_t)n;
    return 1;
}

/* Reads the known parameters of in (unknown ones are ignored, RFC 6749 §3.1). */
static int authz_read(struct http_ctx *ctx, struct slice in, struct authz_input *p)
{
    memset(p, 0, sizeof(*p));
    size_t pos = 0;
    struct slice key, value;
    while (url_form_next(in, &pos, &key, &value)) {
        for (int i = 0; i < AP_COUNT; i++) {
            if (!slice_eq_cstr(key, authz_params[i].name) || value.len == 0)
                continue; /* RFC 6749 §3.1: a parameter without a value is omitted */
            if (p->value[i] != NULL || p->bad[i]) {
                p->repeated[i] = true;
                break;
            }
            char *dst = NULL;
            int rc = authz_take(ctx, value, authz_params[i].max, &dst, &p->len[i]);
            if (rc < 0)
                return rc;
            p->value[i] = dst;
            p->bad[i] = rc == 0;
            break;
        }
    }
    return 0;
}

static bool authz_base64url(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* The errors that need no store, split where the client's grant is checked. */
static void authz_check_params(const struct authz_input *p, struct authz_wait *aw)
{
    static const struct authz_error none = { NULL, NULL };
    aw->early = none;
    aw->late = none;
    for (int i = 0; i < AP_COUNT && aw->early.error == NULL; i++) {
        if (p->repeated[i])
            aw->early = (struct authz_error){ "invalid_request", "a parameter is repeated" };
    }
    const char *rt = p->value[AP_RESPONSE_TYPE];
    if (aw->early.error != NULL)
        ;
    else if (rt == NULL)
        aw->early = (struct authz_error){ "invalid_request", "response_type is missing" };
    else if (strcmp(rt, "code") != 0) /* RFC 9700 §2.1.2: no implicit or hybrid responses */
        aw->early = (struct authz_error){ "unsupported_response_type", "only response_type=code is supported" };
    else if (p->value[AP_REQUEST] != NULL || p->bad[AP_REQUEST]) /* OIDC Core §6.1 */
        aw->early = (struct authz_error){ "request_not_supported", "request objects are not supported" };
    else if (p->value[AP_REQUEST_URI] != NULL || p->bad[AP_REQUEST_URI])
        aw->early = (struct authz_error){ "request_uri_not_supported", "request_uri is not supported" };

    const char *method = p->value[AP_METHOD];
    if (p->value[AP_CHALLENGE] == NULL && !p->bad[AP_CHALLENGE])
        aw->late = (struct authz_error){ "invalid_request", "code_challenge is required (PKCE)" };
    else if (method == NULL || strcmp(method, "S256") != 0) /* absent means plain: §4.3 */
        aw->late = (struct authz_error){ "invalid_request", "code_challenge_method must be S256" };
    else if (p->bad[AP_CHALLENGE] || p->len[AP_CHALLENGE] != AUTHZ_CHALLENGE_LEN ||
             !authz_base64url(p->value[AP_CHALLENGE], p->len[AP_CHALLENGE]))
        aw->late = (struct authz_error){ "invalid_request", "code_challenge must be 43 base64url characters" };
    else if (p->bad[AP_SCOPE] || (p->value[AP_SCOPE] != NULL && !auth_scope_valid(p->value[AP_SCOPE])))
        aw->late = (struct authz_error){ "invalid_scope", "scope is malformed" };
    else if (p->bad[AP_STATE] || p->bad[AP_NONCE] || p->bad[AP_RESPONSE_TYPE] || p->bad[AP_METHOD] ||
             p->bad[AP_PROMPT] || p->bad[AP_MAX_AGE] ||
             (p->value[AP_MAX_AGE] != NULL && strspn(p->value[AP_MAX_AGE], "0123456789") != p->len[AP_MAX_AGE]))
        aw->late = (struct authz_error){ "invalid_request", "a parameter is malformed or too long" };
    /* OIDC Core §3.1.2.1: prompt is a list; none may not come with another value. */
    const char *prompt = p->value[AP_PROMPT];
    bool has_none = prompt != NULL && auth_words_subset("none", prompt);
    if (has_none && strcmp(prompt, "none") != 0 && aw->late.error == NULL)
        aw->late = (struct authz_error){ "invalid_request", "prompt=none may not come with another value" };
    aw->prompt_none = has_none;
    aw->prompt_login = prompt != NULL && auth_words_subset("login", prompt);
    if (p->value[AP_MAX_AGE] != NULL && p->len[AP_MAX_AGE] <= AUTHZ_MAX_AGE_DIGITS)
        memcpy(aw->max_age, p->value[AP_MAX_AGE], p->len[AP_MAX_AGE] + 1);
}

/* Copies an optional value into the packed text; false when it does not fit. */
static bool authz_keep(struct authz_wait *aw, const char *value, size_t len, const char **dst)
{
    *dst = NULL;
    if (value == NULL)
        return true;
    if (len + 1 > sizeof(aw->text) - aw->text_used)
        return false;
    char *at = aw->text + aw->text_used;
    memcpy(at, value, len + 1);
    aw->text_used += len + 1;
    *dst = at;
    return true;
}

/* ---- The client and its redirect_uri ------------------------------------------------------- */

/* RFC 8252 §7.3, §8.3: a loopback IP literal's port may vary ("localhost" has no such rule).
 * True when uri is registered with its port removed. */
static bool authz_loopback_match(const char *registered, size_t reg_len, const char *uri)
{
    static const char *const hosts[] = { "http://127.0.0.1", "http://[::1]" };
    for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]); h++) {
        size_t hl = strlen(hosts[h]);
        if (strncmp(uri, hosts[h], hl) != 0 || uri[hl] != ':' || reg_len < hl ||
            strncmp(registered, hosts[h], hl) != 0 || (reg_len > hl && registered[hl] != '/'))
            continue;
        const char *p = uri + hl + 1;
        size_t digits = 0;
        while (p[digits] >= '0' && p[digits] <= '9')
            digits++;
        if (digits == 0 || digits > 5)
            return false;
        const char *rest = p + digits;
        return strlen(rest) == reg_len - hl && memcmp(rest, registered + hl, reg_len - hl) == 0;
    }
    return false;
}

/* Picks the redirect_uri among the registered ones (newline-separated): the one sent, byte
 * for byte (RFC 9700 §4.1.3), or the only one when none was sent (OIDC Core §3.1.2.1 requires
 * it; RFC 6749 §3.1.2.3 allows omitting it for a single one). False: an error page. */
static bool authz_pick_redirect(struct authz_wait *aw, const char *registered)
{
    size_t count = 0;
    const char *only = NULL;
    size_t only_len = 0;
    for (const char *line = registered; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > 0) {
            count++;
            only = line, only_len = len;
            if (aw->redirect_given && ((strlen(aw->redirect_uri) == len && memcmp(aw->redirect_uri, line, len) == 0) ||
                                       authz_loopback_match(line, len, aw->redirect_uri)))
                return true;
        }
        line = end ? end + 1 : line + len;
    }
    if (aw->redirect_given || count != 1 || only_len > AUTH_REDIRECT_URI_MAX)
        return false;
    memcpy(aw->redirect_uri, only, only_len);
    aw->redirect_uri[only_len] = '\0';
    return true;
}

/* Every requested scope is the client's or an OIDC one. */
static bool authz_scope_allowed(const char *want, const char *have)
{
    char word[JWT_SCOPE_MAX + 1];
    for (const char *p = want; *p;) {
        size_t len = strcspn(p, " ");
        memcpy(word, p, len);
        word[len] = '\0';
        if (!auth_words_subset(word, have) && !auth_words_subset(word, AUTHZ_OIDC_SCOPES))
            return false;
        p += len;
        while (*p == ' ')
            p++;
    }
    return true;
}

static void authz_page_error(struct http_ctx *ctx, void *state)
{
    const struct authz_wait *aw = state;
    auth_page_error(ctx, aw->w.status, aw->w.detail);
}

static void authz_redirect_answer(struct http_ctx *ctx, void *state)
{
    const struct authz_wait *aw = state;
    authz_redirect_error(ctx, aw, &aw->answer);
}

/* Ends the request with an error page (from a stage after the handler). */
static void authz_fail_page(struct authz_wait *aw, int status, const char *text)
{
    aw->w.status = status;
    aw->w.detail = text;
    http_resume(aw, authz_page_error);
}

static void authz_store_failed(struct authz_wait *aw)
{
    if (aw->w.outcome == PG_UNAVAILABLE)
        authz_fail_page(aw, 503, "the sign-in service is unavailable; try again shortly");
    else
        authz_fail_page(aw, 500, "internal error");
}

static void authz_show_login(struct http_ctx *ctx, void *state)
{
    struct authz_wait *aw = state;
    explicit_bzero(aw->code, sizeof(aw->code)); /* made for a browser session that did not answer */
    auth_set_cookie(ctx, aw->w.auth, aw->slug, AUTHZ_CSRF_COOKIE, aw->csrf, -1);
    auth_login_page(ctx, aw->w.auth, aw->slug, 200, aw->id, aw->csrf, NULL);
}

/* The browser session answered the request: back to the client with the code. */
static void authz_answer_code(struct http_ctx *ctx, void *state)
{
    struct authz_wait *aw = state;
    auth_login_redirect_code(ctx, aw->w.auth, aw->slug, aw->redirect_uri, aw->state, aw->code, NULL);
    explicit_bzero(aw->code, sizeof(aw->code));
}

static void authz_created(struct auth_wait *w)
{
    struct authz_wait *aw = (struct authz_wait *)w;
    static const struct authz_error no_login = { "login_required", "the user must log in" }; /* §3.1.2.6 */
    if (w->outcome != PG_OK) {
        authz_store_failed(aw);
    } else if (pg_result_rows(w->result) != 1) {
        authz_fail_page(aw, 400, "the application is not known here (client_id)"); /* deleted */
    } else if (strcmp(pg_result_value(w->result, 0, 1), "t") == 0) {
        http_resume(aw, authz_answer_code);
    } else if (aw->prompt_none) {
        aw->answer = no_login;
        http_resume(aw, authz_redirect_answer);
    } else {
        http_resume(aw, authz_show_login);
    }
}

/* The request passed: stored, with a fresh id (and CSRF token unless the browser has one). */
static void authz_store(struct authz_wait *aw, const char *tenant_id)
{
    snprintf(aw->tenant_id, sizeof(aw->tenant_id), "%s", tenant_id);
    snprintf(aw->ttl_text, sizeof(aw->ttl_text), "%d", AUTHZ_REQUEST_TTL_S);
    uint8_t unused[HASH_SHA256_BYTES];
    bool fresh_csrf = aw->csrf[0] == '\0';
    if (ct_uuid7_now(aw->id) != 0 || (fresh_csrf && secret_client_new(aw->csrf, unused) != 0)) {
        authz_fail_page(aw, 500, "internal error");
        return;
    }
    bool sso = aw->sso_sid[0] != '\0';
    if (sso && secret_client_new(aw->code, unused) != 0) {
        authz_fail_page(aw, 500, "internal error");
        return;
    }
    if (sso)
        auth_sha256_hex(aw->code, aw->code_sha);
    snprintf(aw->sso_idle_text, sizeof(aw->sso_idle_text), "%d", AUTH_SSO_IDLE_S);
    snprintf(aw->code_ttl_text, sizeof(aw->code_ttl_text), "%d", AUTH_CODE_TTL_S);
    const char **q = aw->w.q.params;
    q[0] = aw->tenant_id, q[1] = aw->id, q[2] = aw->client_id, q[3] = aw->redirect_uri;
    q[4] = aw->redirect_given ? "t" : "f";
    q[5] = aw->scope; /* NULL: none asked, all the client's (the statement reads them) */
    q[6] = aw->state, q[7] = aw->nonce, q[8] = aw->challenge, q[9] = aw->ttl_text;
    q[10] = sso ? aw->sso_sid : NULL, q[11] = sso ? aw->sso_sha : NULL;
    q[12] = sso ? aw->code_sha : NULL, q[13] = aw->sso_idle_text, q[14] = aw->code_ttl_text;
    q[15] = aw->max_age[0] ? aw->max_age : NULL; /* a login older than it needs the page */
    q[16] = aw->ip, q[17] = aw->request_id;
    aw->w.q.params_count = 18;
    auth_send(NULL, &aw->w, STORE_AUTHZ_CREATE, NULL, authz_created);
}

/* The client's row (STORE_AUTHZ_CLIENT): the redirect_uri, then the rest in order. */
static void authz_client_read(struct auth_wait *w)
{
    struct authz_wait *aw = (struct authz_wait *)w;
    const struct pg_result *r = w->result;
    if (w->outcome != PG_OK) {
        authz_store_failed(aw);
        return;
    }
    if (pg_result_rows(r) != 1) {
        authz_fail_page(aw, 400, "the application is not known here (client_id)");
        return;
    }
    if (!authz_pick_redirect(aw, pg_result_value(r, 0, 3))) {
        authz_fail_page(aw, 400, aw->redirect_given ? "the redirect_uri is not registered for this application"
                                                    : "redirect_uri is required for this application");
        return;
    }
    /* From here on, errors go back to the client (RFC 6749 §4.1.2.1). */
    static const struct authz_error no_grant = { "unauthorized_client",
                                                 "the client may not use the authorization code grant" };
    static const struct authz_error bad_scope = { "invalid_scope", "a requested scope is not allowed for this client" };
    static const struct authz_error no_login = { "login_required", "the user must log in" }; /* §3.1.2.6 */
    const struct authz_error *e = NULL;
    if (aw->early.error != NULL)
        e = &aw->early;
    else if (!auth_words_subset("authorization_code", pg_result_value(r, 0, 1)))
        e = &no_grant;
    else if (aw->late.error != NULL)
        e = &aw->late;
    else if (aw->scope != NULL && !authz_scope_allowed(aw->scope, pg_result_value(r, 0, 2)))
        e = &bad_scope;
    else if (aw->prompt_none && aw->sso_sid[0] == '\0')
        e = &no_login; /* with a browser session, its answer decides (authz_created) */
    if (e != NULL) {
        aw->answer = *e;
        http_resume(aw, authz_redirect_answer);
        return;
    }
    authz_store(aw, pg_result_value(r, 0, 0));
}

static void authz_read_client(struct http_ctx *ctx, struct authz_wait *aw)
{
    aw->w.q.params[0] = aw->slug;
    aw->w.q.params[1] = aw->client_id;
    aw->w.q.params_count = 2;
    auth_send(ctx, &aw->w, STORE_AUTHZ_CLIENT, NULL, authz_client_read);
}

static void authz_rate_passed(struct auth_wait *w)
{
    authz_read_client(NULL, (struct authz_wait *)w);
}

/* ---- The endpoint --------------------------------------------------------------------------- */

struct slice auth_page_cookie(const struct http_ctx *ctx, const char *name)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Cookie");
    return h == NULL ? slice_make(NULL, 0) : http_cookie(h->value, name); /* twice: none */
}

bool auth_sso_cookie(const struct http_ctx *ctx, char *sid, char *sha)
{
    struct slice cookie = auth_page_cookie(ctx, AUTH_SSO_COOKIE);
    char token[AUTH_REFRESH_TOKEN_LEN + 1];
    sid[0] = sha[0] = '\0';
    if (cookie.len != AUTH_REFRESH_TOKEN_LEN)
        return false;
    memcpy(token, cookie.ptr, cookie.len);
    token[cookie.len] = '\0';
    bool ok = auth_refresh_parse(token, sid, sha) == 0; /* writes nothing when it refuses */
    explicit_bzero(token, sizeof(token));
    return ok;
}

/* The peer's address (none: NULL) and the request id, packed as the parameters. */
static bool authz_keep_request(const struct http_ctx *ctx, struct authz_wait *aw)
{
    char ip[AUTH_IP_MAX + 1], request_id[HTTP_REQUEST_ID_BYTES_MAX + 1];
    http_client_address(ctx, ip, sizeof(ip));
    auth_request_id(ctx, request_id, sizeof(request_id));
    return authz_keep(aw, ip[0] ? ip : NULL, strlen(ip), &aw->ip) &&
           authz_keep(aw, request_id, strlen(request_id), &aw->request_id);
}

static void authz_handle(struct http_ctx *ctx, struct slice in)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        auth_page_error(ctx, 404, "no such tenant");
        return;
    }
    struct authz_input *p = http_scratch_alloc(ctx, sizeof(*p));
    if (p == NULL || authz_read(ctx, in, p) != 0) {
        auth_page_error(ctx, 500, "internal error");
        return;
    }
    /* Until the client and its redirect_uri are verified, every error stays here (O30). */
    if (p->value[AP_CLIENT_ID] == NULL || p->repeated[AP_CLIENT_ID] || p->bad[AP_CLIENT_ID]) {
        auth_page_error(ctx, 400, "client_id is missing, repeated or malformed");
        return;
    }
    if (p->repeated[AP_REDIRECT_URI] || p->bad[AP_REDIRECT_URI]) {
        auth_page_error(ctx, 400, "redirect_uri is repeated, malformed or too long");
        return;
    }
    /* Each request that passes writes a row: the source address's bucket bounds a flood (no
     * client bucket: a stranger naming the client would spend the client's). */
    struct auth_rate_check limits;
    if (!auth_rate_admit(ctx, auth, "", NULL, &limits))
        return; /* answered 429 */
    struct authz_wait *aw = auth_park(ctx, auth, sizeof(*aw));
    if (aw == NULL)
        return;
    auth_slug_copy(ctx->params[0], aw->slug);
    aw->redirect_given = p->value[AP_REDIRECT_URI] != NULL;
    if (aw->redirect_given)
        memcpy(aw->redirect_uri, p->value[AP_REDIRECT_URI], p->len[AP_REDIRECT_URI] + 1);
    authz_check_params(p, aw);
    bool kept = authz_keep(aw, p->value[AP_CLIENT_ID], p->len[AP_CLIENT_ID], &aw->client_id) &&
                authz_keep(aw, p->value[AP_STATE], p->len[AP_STATE], &aw->state) &&
                authz_keep(aw, p->value[AP_SCOPE], p->len[AP_SCOPE], &aw->scope) &&
                authz_keep(aw, p->value[AP_NONCE], p->len[AP_NONCE], &aw->nonce) &&
                authz_keep(aw, p->value[AP_CHALLENGE], p->len[AP_CHALLENGE], &aw->challenge) &&
                authz_keep_request(ctx, aw);
    if (aw->client_id == NULL) {
        auth_answer_now(ctx, 500, "internal error"); /* a client_id always fits: cannot happen */
        return;
    }
    aw->state_usable = aw->state != NULL && !p->repeated[AP_STATE];
    if (!kept && aw->early.error == NULL)
        aw->early = (struct authz_error){ "invalid_request", "the request's parameters are too long" };
    /* A page loaded twice (two tabs) keeps the browser's token, so both forms work. */
    struct slice cookie = auth_page_cookie(ctx, AUTHZ_CSRF_COOKIE);
    if (cookie.len == SECRET_RANDOM_CHARS && authz_base64url(cookie.ptr, cookie.len))
        memcpy(aw->csrf, cookie.ptr, cookie.len);
    /* A live browser session answers without the login page, unless prompt=login. */
    if (!aw->prompt_login)
        auth_sso_cookie(ctx, aw->sso_sid, aw->sso_sha);
    aw->w.rate = limits;
    if (!auth_rate_pending(&limits))
        authz_read_client(ctx, aw);
    else if (auth_rate_continue(ctx, &aw->w, authz_rate_passed) != 0)
        auth_answer_now(ctx, 503, AUTH_BUSY_DETAIL);
}

bool auth_page_params(struct http_ctx *ctx, struct slice *params)
{
    if (ctx->req->method == HTTP1_METHOD_GET) {
        *params = ctx->req->query;
        return true;
    }
    if (!auth_form_body(ctx)) {
        auth_page_error(ctx, 415, "the body must be application/x-www-form-urlencoded");
        return false;
    }
    *params = ctx->body;
    return true;
}

static void authz_request(struct http_ctx *ctx)
{
    struct slice params;
    if (auth_page_params(ctx, &params))
        authz_handle(ctx, params);
}

/* ---- The login form's post ------------------------------------------------------------------ */

bool auth_same_origin(const struct http_ctx *ctx, const struct auth *auth)
{
    const struct http1_header *site = http1_find_header(ctx->req, "Sec-Fetch-Site");
    if (site != NULL && !slice_case_eq_cstr(site->value, "same-origin") && !slice_case_eq_cstr(site->value, "none"))
        return false; /* cross-site, or same-site: a sibling host */
    const struct http1_header *origin = http1_find_header(ctx->req, "Origin");
    if (origin == NULL)
        return true;
    /* Our pages say Referrer-Policy: no-referrer (SECURITY O40), so their own form posts carry
     * "Origin: null" (Fetch §3.1, "append a request Origin header"). Only Sec-Fetch-Site, which
     * no page can set, tells such a post from another site's sandboxed or no-referrer one. */
    if (slice_eq_cstr(origin->value, "null"))
        return site != NULL && slice_case_eq_cstr(site->value, "same-origin");
    const char *url = auth->cfg->public_url;
    const char *host = strstr(url, "://");
    size_t origin_len = host == NULL ? strlen(url) : (size_t)(host + 3 - url) + strcspn(host + 3, "/");
    return origin->value.len == origin_len && strncasecmp(origin->value.ptr, url, origin_len) == 0;
}

static void authz_login_post(struct http_ctx *ctx)
{
    struct auth *auth = ctx->route_arg;
    if (!auth_slug_valid(ctx->params[0])) {
        auth_page_error(ctx, 404, "no such tenant");
        return;
    }
    struct login_form {
        char authz[CT_UUID_TEXT_LEN + 2];
        char csrf[SECRET_RANDOM_CHARS + 2];
        char username[AUTHZ_SENT_MAX(AUTH_LOGIN_NAME_MAX)]; /* as sent: a browser encodes */
        char password[AUTHZ_SENT_MAX(PASSWORD_INPUT_MAX)];  /* non-ASCII as %XX */
    } *f = http_scratch_alloc(ctx, sizeof(*f));
    if (f == NULL) {
        auth_page_error(ctx, 500, "internal error");
        return;
    }
    memset(f, 0, sizeof(*f));
    struct auth_form_field fields[] = {
        { "authz", f->authz, sizeof(f->authz), false },
        { "csrf", f->csrf, sizeof(f->csrf), false },
        { "username", f->username, sizeof(f->username), false },
        { "password", f->password, sizeof(f->password), false },
    };
    if (auth_form_parse(ctx, fields, sizeof(fields) / sizeof(fields[0])) != NULL) {
        explicit_bzero(f, sizeof(*f));
        auth_page_error(ctx, 400, "the sign-in form could not be read; go back to the application and start again");
        return;
    }
    struct slice cookie = auth_page_cookie(ctx, AUTHZ_CSRF_COOKIE);
    size_t csrf_len = strlen(f->csrf);
    bool csrf_ok = csrf_len == SECRET_RANDOM_CHARS && cookie.len == csrf_len && ct_memeq(cookie.ptr, f->csrf, csrf_len);
    if (!csrf_ok || !auth_same_origin(ctx, auth)) {
        explicit_bzero(f, sizeof(*f));
        auth_page_error(ctx, 403, "this form was not sent from the sign-in page; go back to the application "
                                   "and start again");
        return;
    }
    if (!auth_uuid_text(f->authz)) {
        explicit_bzero(f, sizeof(*f));
        auth_page_error(ctx, 400, "this sign-in request is not known; go back to the application and start again");
        return;
    }
    size_t ulen = strlen(f->username), plen = strlen(f->password);
    if (ulen == 0 || plen == 0 || ulen > AUTH_LOGIN_NAME_MAX || plen > PASSWORD_INPUT_MAX) {
        explicit_bzero(f->password, sizeof(f->password)); /* P08: refused before any hashing */
        char slug[AUTH_SLUG_MAX + 1];
        auth_slug_copy(ctx->params[0], slug);
        auth_login_page(ctx, auth, slug, 400, f->authz, f->csrf,
                        ulen == 0 || plen == 0 ? "enter your username and password"
                                               : "the username or password is too long");
        return;
    }
    char sso_sid[CT_UUID_TEXT_LEN + 1], sso_sha[2 * HASH_SHA256_BYTES + 1];
    auth_sso_cookie(ctx, sso_sid, sso_sha); /* the session this login replaces, if any */
    struct auth_browser_login in = {
        .authz_id = f->authz, .csrf = f->csrf, .username = f->username, .password = f->password,
        .sso_sid = sso_sid, .sso_sha = sso_sha,
    };
    auth_login_browser(ctx, auth, &in);
    explicit_bzero(sso_sha, sizeof(sso_sha));
    explicit_bzero(f, sizeof(*f));
}

int auth_authorize_routes(struct auth *auth, struct http_server *http)
{
    int rc = http_route_add(http, HTTP1_METHOD_GET, "/t/{tenant}/oauth2/authorize", "authorize", authz_request, auth);
    if (rc == 0)
        rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/oauth2/authorize", "authorize", authz_request, auth);
    if (rc == 0)
        rc = http_route_add(http, HTTP1_METHOD_POST, "/t/{tenant}/login", "login_page", authz_login_post, auth);
    return rc;
}
