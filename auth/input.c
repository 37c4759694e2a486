/* auth/input.c: what the JSON endpoints under /api/v1 share to read their bodies: the media
 * type, string members bounded and free of NUL (SECURITY P08/P09), usernames and addresses. */
#include "auth/auth_int.h"
#include "auth/pwlist.h"

#include <string.h>
#include <strings.h>

#include "crypto/jscan.h"

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

static bool auth_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

bool auth_username_valid(const char *s, size_t len)
{
    return len > 0 && len <= AUTH_USERNAME_MAX && auth_printable(s, len) && s[0] != ' ' && s[len - 1] != ' ';
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

const char *auth_new_password_refused(const char *pw, size_t len)
{
    if (len < AUTH_PASSWORD_MIN)
        return "password must be at least 8 characters";
    if (pwlist_is_common(pw, len))
        return "password is too common; choose another"; /* NIST SP 800-63B §5.1.1.2 */
    return NULL;
}
