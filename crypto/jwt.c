/* crypto/jwt.c: see jwt.h. */
#include "crypto/jwt.h"

#include <assert.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "crypto/jscan.h"
#include "crypto/jwk_int.h"

/* Largest header jwt_sign builds: alg, typ (<= JWS_TYP_MAX) and kid (<= JWK_KID_MAX). */
#define JWT_HEADER_BUILD_MAX (JWS_TYP_MAX + JWK_KID_MAX + 64)

/* NumericDate (RFC 7519 §2): a JSON number, integer or not, in [0, JWT_NUMERICDATE_MAX].
 * Strings, booleans, null and out-of-range values are refused without overflow. */
static int jwt_numeric_date(const struct jscan_value *v, double *out)
{
    int64_t i;
    double d;
    if (jscan_integer(v, &i) == 0) {
        if (i < 0 || i > JWT_NUMERICDATE_MAX) {
            return -TE_INVAL;
        }
        d = (double)i;
    } else if (jscan_real(v, &d) == 0) {
        if (!isfinite(d) || d < 0 || d > (double)JWT_NUMERICDATE_MAX) {
            return -TE_INVAL;
        }
    } else {
        return -TE_INVAL;
    }
    *out = d;
    return 0;
}

/* exp required (RFC 9068 §2.2); reject at or after exp + leeway (RFC 7519 §4.1.4), but for
 * a hint; nbf optional, reject before nbf - leeway; iat required, not in the future beyond
 * the leeway (policy: a token from the future was minted by a wrong clock or a forger). */
static int jwt_check_times(const struct jscan_object *claims, const struct jwt_expect *e,
                           struct jwt_claims *out)
{
    double exp;
    double iat;
    double nbf = 0;
    double now = (double)e->now;
    double leeway = (double)e->leeway_s;
    if (jwt_numeric_date(jscan_get(claims, "exp"), &exp) < 0 ||
        jwt_numeric_date(jscan_get(claims, "iat"), &iat) < 0) {
        return -TE_INVAL;
    }
    const struct jscan_value *nbf_v = jscan_get(claims, "nbf");
    if (nbf_v != NULL && jwt_numeric_date(nbf_v, &nbf) < 0) {
        return -TE_INVAL;
    }
    bool expired = now >= exp + leeway && e->kind != JWT_KIND_ID_HINT;
    if (expired || now + leeway < nbf || iat > now + leeway) {
        return -TE_INVAL;
    }
    out->exp = (int64_t)exp;
    out->iat = (int64_t)iat;
    out->nbf = (int64_t)nbf;
    return 0;
}

/* A string claim copied into dst (max bytes). required: absent is an error. */
static int jwt_string_claim(const struct jscan_object *claims, const char *name, bool required,
                            char *dst, size_t max)
{
    const struct jscan_value *v = jscan_get(claims, name);
    size_t n;
    dst[0] = '\0';
    if (v == NULL) {
        return required ? -TE_INVAL : 0;
    }
    return jscan_string_copy(v, dst, max, &n); /* not a string, or too long: -TE_INVAL */
}

/* iss byte-exact; aud a string or an array of strings, one of them byte-exact; a hint with
 * no audience expected: one string, its client. */
static int jwt_check_iss_aud(const struct jscan_object *claims, const struct jwt_expect *e,
                             struct jwt_claims *out)
{
    if (!jscan_string_eq(jscan_get(claims, "iss"), e->issuer)) {
        return -TE_INVAL; /* absent, not a string, or another issuer */
    }
    const struct jscan_value *aud = jscan_get(claims, "aud");
    if (e->kind == JWT_KIND_ID_HINT && e->audience.len == 0) {
        size_t n;
        return aud != NULL && aud->type == JSCAN_STRING
                   ? jscan_string_copy(aud, out->client_id, JWT_ID_MAX, &n)
                   : -TE_INVAL;
    }
    if (aud != NULL && aud->type == JSCAN_STRING) {
        return jscan_string_eq(aud, e->audience) ? 0 : -TE_INVAL;
    }
    if (aud == NULL || aud->type != JSCAN_ARRAY) {
        return -TE_INVAL;
    }
    bool found = false;
    const char *pos = NULL;
    struct jscan_value a;
    while (jscan_array_next(aud, &pos, &a) == 1) {
        if (a.type != JSCAN_STRING) {
            return -TE_INVAL; /* SECURITY J18: a non-string member spoils the array */
        }
        found |= jscan_string_eq(&a, e->audience);
    }
    return found ? 0 : -TE_INVAL;
}

static int jwt_check_kind_claims(const struct jscan_object *claims, const struct jwt_expect *e,
                                 struct jwt_claims *out)
{
    bool access = e->kind == JWT_KIND_ACCESS;
    if (jwt_string_claim(claims, "sub", true, out->sub, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "client_id", access, out->client_id, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "jti", access, out->jti, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "sid", false, out->sid, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "tid", false, out->tid, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "nonce", false, out->nonce, JWT_ID_MAX) < 0 ||
        jwt_string_claim(claims, "scope", false, out->scope, JWT_SCOPE_MAX) < 0) {
        return -TE_INVAL; /* RFC 9068 §2.2: types are part of the profile (J19) */
    }
    if (access && e->tenant.len > 0 && !slice_eq_cstr(e->tenant, out->tid)) {
        return -TE_INVAL;
    }
    return 0;
}

/* typ (RFC 9068 §2.1, §4; RFC 7515 §4.1.9: media types compare case-insensitively and
 * "application/" may be omitted). An access token must say at+jwt; an ID token must not. */
static int jwt_check_typ(const struct jws_header *h, enum jwt_kind kind)
{
    struct slice typ = slice_make(h->typ, strlen(h->typ));
    bool at_jwt = h->has_typ && (slice_case_eq_cstr(typ, "at+jwt") ||
                                 slice_case_eq_cstr(typ, "application/at+jwt"));
    if (kind == JWT_KIND_ACCESS) {
        return at_jwt ? 0 : -TE_INVAL;
    }
    bool jwt =
        !h->has_typ || slice_case_eq_cstr(typ, "JWT") || slice_case_eq_cstr(typ, "application/jwt");
    return jwt ? 0 : -TE_INVAL;
}

static int jwt_check_claims(struct slice payload, const struct jwt_expect *e,
                            struct jwt_claims *out)
{
    struct jscan_object claims;
    if (jscan_object(payload.ptr, payload.len, &claims) < 0) {
        return -TE_INVAL; /* malformed, duplicates (J20, J21), not an object */
    }
    if (jwt_check_times(&claims, e, out) < 0 || jwt_check_kind_claims(&claims, e, out) < 0 ||
        jwt_check_iss_aud(&claims, e, out) < 0) {
        return -TE_INVAL;
    }
    return 0;
}

/* The last header this thread parsed, by its base64url text: a tenant's tokens share
 * one header ({"alg","typ","kid"}), so most calls skip the JSON parse (a pure function
 * of those bytes; the header is public, so an ordinary memcmp suffices). Per thread:
 * no locking, nothing shared. Headers longer than this are parsed every time. */
#define JWT_HEADER_CACHE_B64 256

struct jwt_header_cache {
    char b64[JWT_HEADER_CACHE_B64];
    size_t len; /* 0: empty */
    struct jws_header header;
};

static __thread struct jwt_header_cache jwt_header_cache;

static int jwt_header(const struct jws_parsed *parsed, struct jws_header *out)
{
    struct jwt_header_cache *c = &jwt_header_cache;
    const char *dot = memchr(parsed->signing_input.ptr, '.', parsed->signing_input.len);
    size_t len = (size_t)(dot - parsed->signing_input.ptr); /* jws_parse found this dot */
    assert(dot != NULL);
    if (len == c->len && memcmp(c->b64, parsed->signing_input.ptr, len) == 0) {
        *out = c->header;
        return 0;
    }
    int rc = jws_header_parse(parsed->header_json, out);
    if (rc == 0 && len <= sizeof(c->b64)) {
        memcpy(c->b64, parsed->signing_input.ptr, len);
        c->len = len;
        c->header = *out;
    }
    return rc;
}

int jwt_verify(const struct keyset *keys, const struct jwt_expect *expect, const char *token,
               size_t len, uint8_t *buf, size_t cap, struct jwt_claims *out)
{
    assert(keys != NULL && expect != NULL && token != NULL && out != NULL);
    assert(expect->leeway_s >= 0 && expect->now >= 0 && expect->now <= JWT_NUMERICDATE_MAX);
    struct jws_parsed parsed;
    struct jws_header header;
    /* Not zeroed (2.7 KiB per call): on success every field has been written, each
     * string NUL-terminated; bytes past a NUL are never read. */
    struct jwt_claims claims;
    size_t max_len = expect->max_len != 0 ? expect->max_len : JWS_TOKEN_MAX;
    int rc = jws_parse(token, len, max_len, buf, cap, &parsed);
    if (rc < 0) {
        return rc;
    }
    if (parsed.payload.len == 0 || jwt_header(&parsed, &header) < 0 ||
        header.has_cty || !header.has_kid) {
        return -TE_INVAL; /* J22 empty payload; J30 nested JWT (RFC 8725 §3.6); J08 */
    }
    const struct jwk_key *key =
        keyset_find(keys, slice_make(header.kid, strlen(header.kid)), expect->now);
    if (key == NULL || jws_verify_parsed(key, &parsed, &header) < 0) {
        return -TE_INVAL; /* J06: unknown kid costs nothing but this lookup */
    }
    if (jwt_check_typ(&header, expect->kind) < 0 ||
        jwt_check_claims(parsed.payload, expect, &claims) < 0) {
        return -TE_INVAL;
    }
    memcpy(claims.kid, header.kid, sizeof(claims.kid));
    *out = claims;
    return 0;
}

int jwt_sign(const struct jwk_key *key, const char *typ, struct slice payload_json, char *out,
             size_t cap)
{
    assert(key != NULL && typ != NULL && out != NULL);
    if (strlen(typ) > JWS_TYP_MAX) {
        return -TE_INVAL; /* what jws_header_parse would refuse on the verifying side */
    }
    char mem[JWT_HEADER_BUILD_MAX];
    struct buf header;
    buf_init(&header, mem, sizeof(mem));
    buf_append_cstr(&header, "{\"alg\":\"");
    buf_append_cstr(&header, jwk_alg_name(jwk_key_alg(key)));
    buf_append_cstr(&header, "\",\"typ\":");
    buf_append_json_string(&header, slice_make(typ, strlen(typ)));
    buf_append_cstr(&header, ",\"kid\":");
    buf_append_json_string(&header, slice_make(jwk_kid(key), strlen(jwk_kid(key))));
    buf_append_cstr(&header, "}");
    if (header.overflow) {
        return -TE_INVAL;
    }
    /* Built here from the key itself: jws_sign's check of the header would only repeat it. */
    return jws_sign_built(key, buf_slice(&header), (const uint8_t *)payload_json.ptr,
                          payload_json.len, out, cap);
}

static void jwt_append_string(struct buf *out, const char *name, struct slice value)
{
    buf_append_cstr(out, ",\"");
    buf_append_cstr(out, name);
    buf_append_cstr(out, "\":");
    buf_append_json_string(out, value);
}

int jwt_access_render(const struct jwt_access *c, struct buf *out)
{
    assert(c != NULL && out != NULL && c->lifetime_s > 0);
    buf_append_cstr(out, "{\"iss\":");
    buf_append_json_string(out, c->iss);
    jwt_append_string(out, "sub", c->sub);
    jwt_append_string(out, "aud", c->aud);
    buf_append_cstr(out, ",\"exp\":");
    buf_append_i64(out, c->iat + c->lifetime_s);
    buf_append_cstr(out, ",\"iat\":");
    buf_append_i64(out, c->iat);
    buf_append_cstr(out, ",\"nbf\":");
    buf_append_i64(out, c->iat);
    jwt_append_string(out, "jti", c->jti);
    jwt_append_string(out, "client_id", c->client_id);
    if (c->scope.len > 0) {
        jwt_append_string(out, "scope", c->scope);
    }
    if (c->sid.len > 0) {
        jwt_append_string(out, "sid", c->sid);
    }
    jwt_append_string(out, "tid", c->tid);
    buf_append_cstr(out, "}");
    return out->overflow ? -TE_NOMEM : 0;
}
