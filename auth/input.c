/* auth/input.c: what the JSON endpoints under /api/v1 share to read their bodies: the media
 * type, string members bounded and free of NUL (SECURITY P08/P09), usernames and addresses;
 * and the one normalisation of usernames and passwords wherever they are set or compared
 * (SECURITY P06/P07, core/precis.h). */
#include "auth/auth_int.h"
#include "auth/pwlist.h"

#include <string.h>
#include <strings.h>

#include "core/precis.h"
#include "crypto/jscan.h"

_Static_assert(PASSWORD_INPUT_MAX <= PRECIS_INPUT_MAX, "every password can be normalised");
_Static_assert(AUTH_EMAIL_MAX <= PRECIS_INPUT_MAX, "every login name can be normalised");

bool auth_json_body(const struct http_ctx *ctx)
{
    const struct http1_header *h = http1_find_header(ctx->req, "Content-Type");
    static const char json[] = "application/json";
    if (h == NULL || h->value.len < sizeof(json) - 1 || strncasecmp(h->value.ptr, json, sizeof(json) - 1) != 0)
        return false;
    char after = h->value.len > sizeof(json) - 1 ? h->value.ptr[sizeof(json) - 1] : ';';
    return after == ';' || after == ' ';
}

const char *auth_json_string(const struct jscan_object *obj, const char *name, char *dst, size_t max, size_t *len,
                             bool *seen)
{
    const struct jscan_value *v = jscan_get(obj, name);
    *len = 0;
    dst[0] = '\0';
    bool present = v != NULL && v->type != JSCAN_NULL;
    if (seen != NULL)
        *seen = present;
    if (!present)
        return NULL;
    if (v->type != JSCAN_STRING || jscan_string_copy(v, dst, max, len) != 0)
        return "a member is not a string or is too long"; /* P08: before any hashing */
    if (strlen(dst) != *len)
        return "a member holds a NUL character"; /* P09: crypt_r would stop at it */
    return NULL;
}

bool auth_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

const char *auth_json_object(const struct http_ctx *ctx, struct jscan_object *obj)
{
    if (!auth_json_body(ctx))
        return "the body must be application/json";
    if (jscan_object(ctx->body.ptr, ctx->body.len, obj) != 0)
        return "the body is not a JSON object";
    return NULL;
}

const char *auth_username_normalise(char *name, size_t *len)
{
    char out[AUTH_USERNAME_MAX + 1];
    size_t out_len = 0;
    int rc = precis_username(name, *len, out, sizeof(out), &out_len);
    if (rc == -TE_NOMEM)
        return "username must be at most 128 bytes";
    if (rc != 0)
        return "username must be letters, digits or ASCII symbols, without spaces or control "
               "characters (RFC 8265 §3.3)";
    memcpy(name, out, out_len + 1);
    *len = out_len;
    return NULL;
}

bool auth_email_valid(const char *email, size_t len)
{
    const char *at = memchr(email, '@', len);
    return len <= AUTH_EMAIL_MAX && at != NULL && at != email && at != email + len - 1 &&
           !memchr(at + 1, '@', len - (size_t)(at - email) - 1) && !memchr(email, ' ', len) &&
           auth_printable(email, len);
}

void *auth_json_request(struct http_ctx *ctx, size_t bytes)
{
    if (!auth_slug_valid(ctx->params[0])) {
        http_respond_problem(ctx, 404, "no such tenant");
        return NULL;
    }
    if (!auth_json_body(ctx)) {
        http_respond_problem(ctx, 415, "the body must be application/json");
        return NULL;
    }
    return auth_park(ctx, ctx->route_arg, bytes);
}

const char *auth_new_password_refused(char *pw, size_t *len)
{
    char out[PASSWORD_INPUT_MAX + 1];
    size_t out_len = 0;
    int rc = precis_password(pw, *len, out, sizeof(out), &out_len);
    if (rc == 0)
        memcpy(pw, out, out_len + 1);
    explicit_bzero(out, sizeof(out));
    if (rc == -TE_NOMEM)
        return "password is too long";
    if (rc != 0)
        return "password must be valid UTF-8 without control characters (RFC 8265 §4.2)";
    *len = out_len;
    if (out_len < AUTH_PASSWORD_MIN)
        return "password must be at least 8 characters";
    if (pwlist_is_common(pw, out_len))
        return "password is too common; choose another"; /* NIST SP 800-63B §5.1.1.2 */
    return NULL;
}

/* An imported hash: crypt(3)'s bcrypt prefixes (crypto/password.h). */
static bool auth_password_is_bcrypt(const char *stored)
{
    return stored != NULL && strncmp(stored, "$2", 2) == 0;
}

int auth_password_verify(const struct password_policy *policy, const char *stored, const char *pw,
                         size_t len)
{
    if (auth_password_is_bcrypt(stored))
        return password_verify(policy, stored, pw, len); /* the raw bytes, nothing else */
    char norm[PASSWORD_INPUT_MAX + 1];
    size_t norm_len = 0;
    int rc;
    if (precis_password(pw, len, norm, sizeof(norm), &norm_len) != 0) {
        (void)password_verify(policy, NULL, pw, len); /* the same work as a wrong one (P01) */
        rc = -TE_INVAL;
    } else {
        rc = password_verify(policy, stored, norm, norm_len);
    }
    explicit_bzero(norm, sizeof(norm));
    return rc;
}

int auth_password_rehash(const struct password_policy *policy, const char *pw, size_t len,
                         char *out, size_t cap)
{
    char norm[PASSWORD_INPUT_MAX + 1];
    size_t norm_len = 0;
    int rc = precis_password(pw, len, norm, sizeof(norm), &norm_len);
    if (rc == 0)
        rc = password_hash(policy, norm, norm_len, out, cap);
    explicit_bzero(norm, sizeof(norm));
    return rc;
}
