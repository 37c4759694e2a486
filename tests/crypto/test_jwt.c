/* tests/crypto/test_jwt.c: JWT validation rules of SECURITY.md, one function per row:
 * J06 J08 (kid), J11 J12 J13 (typ and token kind), J14 J15 J16 (time claims),
 * J17 J18 J19 (iss, aud, profile claims), J24 (size bounds), J30 (nested JWT, zip),
 * J31 (key lifecycle seen by a verifier). Each rejection has an accepted control. */
#include <stdlib.h>

#include <jansson.h>

#include "tests/crypto/jwt_fixture.h"

static char token[TOKEN_CAP];

static void test_control(void)
{
    CHECK(claims_accepted(fx_claims()));
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    uint8_t buf[TOKEN_CAP];
    struct jwt_claims c;
    size_t n = forge(fx_es, fx_header(fx_es), fx_claims(), token);
    CHECK(jwt_verify(&fx_keys, &e, token, n, buf, sizeof(buf), &c) == 0);
    CHECK(strcmp(c.sub, "user-1") == 0 && strcmp(c.client_id, "c-1") == 0 &&
          strcmp(c.scope, "read write") == 0 && strcmp(c.tid, "acme") == 0 && c.exp == NOW + 900 &&
          strcmp(c.kid, jwk_kid(fx_es)) == 0);
    /* jwt_sign + jwt_access_render produce what jwt_verify accepts. */
    char mem[1024];
    struct buf claims;
    buf_init(&claims, mem, sizeof(mem));
    struct jwt_access a = {
        .iss = SLICE_LIT(ISS),
        .sub = SLICE_LIT("u"),
        .aud = SLICE_LIT(AUD),
        .jti = SLICE_LIT("j"),
        .client_id = SLICE_LIT("c"),
        .scope = SLICE_LIT("s"),
        .sid = SLICE_LIT("sid"),
        .tid = SLICE_LIT("acme"),
        .iat = NOW,
        .lifetime_s = 900,
    };
    CHECK(jwt_access_render(&a, &claims) == 0);
    int t = jwt_sign(fx_es, "at+jwt", buf_slice(&claims), token, sizeof(token));
    CHECK(t > 0 && jwt_verify(&fx_keys, &e, token, (size_t)t, buf, sizeof(buf), &c) == 0);
    t = jwt_sign(fx_rs, "at+jwt", buf_slice(&claims), token, sizeof(token));
    CHECK(t > 0 && jwt_verify(&fx_keys, &e, token, (size_t)t, buf, sizeof(buf), &c) == 0);
}

static void test_j06_unknown_kid(void)
{
    forge(fx_es, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"no-such-key\"}", fx_claims(),
          token);
    CHECK(!accepted(token));
}

static void test_j08_kid_absent(void)
{
    forge(fx_es, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", fx_claims(), token);
    CHECK(!accepted(token));
}

static const char *header_with_typ(const char *typ_member)
{
    static char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",%s\"kid\":\"%s\"}", typ_member, jwk_kid(fx_es));
    return h;
}

/* J11: an ID token (typ JWT, aud = client_id, nonce, auth_time) is no access token. */
static void test_j11_id_token_as_access(void)
{
    char claims[512];
    snprintf(
        claims, sizeof(claims),
        "{\"iss\":\"%s\",\"sub\":\"user-1\",\"aud\":\"%s\",\"exp\":%lld,\"iat\":%lld,"
        "\"nonce\":\"n-1\",\"auth_time\":%lld,\"jti\":\"j\",\"client_id\":\"c\",\"tid\":\"acme\"}",
        ISS, AUD, NOW + 900, NOW, NOW);
    forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    CHECK(!accepted(token));
    struct jwt_expect id = fx_expect(JWT_KIND_ID);
    CHECK(fx_verify_in(&fx_keys, &id, token, strlen(token)) == 0); /* control: valid as ID */
}

/* J12: an access token (typ at+jwt) is refused where an ID token is expected. */
static void test_j12_access_as_id_token(void)
{
    struct jwt_expect id = fx_expect(JWT_KIND_ID);
    forge(fx_es, fx_header(fx_es), fx_claims(), token);
    CHECK(fx_verify_in(&fx_keys, &id, token, strlen(token)) == -TE_INVAL);
    forge(fx_es, header_with_typ("\"typ\":\"application/at+jwt\","), fx_claims(), token);
    CHECK(fx_verify_in(&fx_keys, &id, token, strlen(token)) == -TE_INVAL);
}

/* An ID token offered as id_token_hint (RP-Initiated Logout §2): an expired one is still a
 * hint; with no audience expected its single aud is the client; an access token, another
 * issuer or an aud array is no hint. */
static void test_id_token_hint(void)
{
    char claims[512];
    struct jwt_expect hint = fx_expect(JWT_KIND_ID_HINT);
    hint.audience = slice_make(NULL, 0);
    struct jwt_claims c;
    uint8_t buf[TOKEN_CAP];
    const char *fmt = "{\"iss\":\"%s\",\"sub\":\"user-1\",\"aud\":%s,\"exp\":%lld,\"iat\":%lld}";
    snprintf(claims, sizeof(claims), fmt, ISS, "\"web\"", NOW - 3600, NOW - 7200);
    size_t n = forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    CHECK(jwt_verify(&fx_keys, &hint, token, n, buf, sizeof(buf), &c) == 0 && strcmp(c.client_id, "web") == 0 &&
          strcmp(c.sub, "user-1") == 0);
    struct jwt_expect id = fx_expect(JWT_KIND_ID);
    id.audience = SLICE_LIT("web");
    CHECK(fx_verify_in(&fx_keys, &id, token, n) == -TE_INVAL); /* control: expired as an ID token */
    hint.audience = SLICE_LIT("other");
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL); /* the audience expected is checked */
    hint.audience = slice_make(NULL, 0);
    snprintf(claims, sizeof(claims), fmt, ISS, "[\"web\"]", NOW - 3600, NOW - 7200);
    n = forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL);
    snprintf(claims, sizeof(claims), fmt, "https://evil.example/t/acme", "\"web\"", NOW - 3600, NOW - 7200);
    n = forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL);
    snprintf(claims, sizeof(claims), fmt, ISS, "\"web\"", NOW + 900, NOW + 600); /* iat ahead */
    n = forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL);
    n = forge(fx_es, fx_header(fx_es), fx_claims(), token); /* an access token (at+jwt) */
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL);
    snprintf(claims, sizeof(claims), fmt, ISS, "\"web\"", NOW - 3600, NOW - 7200);
    n = forge(fx_es, header_with_typ("\"typ\":\"JWT\","), claims, token);
    token[n - 2] = token[n - 2] == 'A' ? 'B' : 'A'; /* the signature altered */
    CHECK(fx_verify_in(&fx_keys, &hint, token, n) == -TE_INVAL);
}

static void test_j13_typ(void)
{
    forge(fx_es, header_with_typ(""), fx_claims(), token);
    CHECK(!accepted(token));
    forge(fx_es, header_with_typ("\"typ\":\"JWT\","), fx_claims(), token);
    CHECK(!accepted(token));
    forge(fx_es, header_with_typ("\"typ\":\"jwt\","), fx_claims(), token);
    CHECK(!accepted(token));
    forge(fx_es, header_with_typ("\"typ\":\"at+jwt \","), fx_claims(), token);
    CHECK(!accepted(token));
    forge(fx_es, header_with_typ("\"typ\":7,"), fx_claims(), token);
    CHECK(!accepted(token));
    forge(fx_es, header_with_typ("\"typ\":\"application/at+jwt\","), fx_claims(), token);
    CHECK(accepted(token));
    forge(fx_es, header_with_typ("\"typ\":\"AT+JWT\","), fx_claims(), token);
    CHECK(accepted(token));
}

/* Claims with one member replaced: name absent when value is NULL. */
static const char *claims_with(const char *name, const char *value)
{
    static char out[TOKEN_CAP];
    json_t *obj = json_loads(fx_claims(), 0, NULL);
    if (value == NULL) {
        json_object_del(obj, name);
        char *s = json_dumps(obj, JSON_COMPACT);
        snprintf(out, sizeof(out), "%s", s);
        free(s);
    } else {
        json_object_del(obj, name);
        char *s = json_dumps(obj, JSON_COMPACT);
        s[strlen(s) - 1] = '\0'; /* drop '}' and append the raw member text */
        snprintf(out, sizeof(out), "%s,\"%s\":%s}", s, name, value);
        free(s);
    }
    json_decref(obj);
    return out;
}

static const char *num(long long v)
{
    static char slots[4][32];
    static int next;
    char *s = slots[next++ % 4];
    snprintf(s, 32, "%lld", v);
    return s;
}

static bool accepted_leeway(const char *claims, int64_t leeway)
{
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    e.leeway_s = leeway;
    forge(fx_es, fx_header(fx_es), claims, token);
    return fx_verify_in(&fx_keys, &e, token, strlen(token)) == 0;
}

static void test_j14_exp(void)
{
    CHECK(!accepted_leeway(claims_with("exp", num(NOW - 60 - 1)), 60));
    CHECK(!accepted_leeway(claims_with("exp", num(NOW)), 0)); /* "on or after" */
    CHECK(accepted_leeway(claims_with("exp", num(NOW - 60 + 1)), 60));
    CHECK(accepted_leeway(claims_with("exp", num(NOW + 1)), 0));
}

static void test_j15_nbf_iat(void)
{
    CHECK(!accepted_leeway(claims_with("nbf", num(NOW + 60 + 1)), 60));
    CHECK(accepted_leeway(claims_with("nbf", num(NOW + 60)), 60));
    CHECK(!accepted_leeway(claims_with("iat", num(NOW + 60 + 1)), 60));
    CHECK(accepted_leeway(claims_with("iat", num(NOW + 60)), 60));
    CHECK(!claims_accepted(claims_with("nbf", "\"0\"")));
}

static void test_j16_exp_types(void)
{
    static const char *bad[] = { NULL,
                                 "\"1900000000\"",
                                 "true",
                                 "null",
                                 "1e400",
                                 "-1",
                                 "9.3e18",
                                 "9300000000000000000",
                                 "99999999999999999999",
                                 "[1900000900]",
                                 "{}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!claims_accepted(claims_with("exp", bad[i])));
    }
    CHECK(claims_accepted(claims_with("exp", "1900000000.5"))); /* NumericDate may be fractional */
    CHECK(claims_accepted(claims_with("exp", "1.9000009e9")));
    CHECK(!claims_accepted(claims_with("iat", NULL))); /* RFC 9068 §2.2: iat required */
}

static void test_j17_iss(void)
{
    static const char *bad[] = {
        "\"https://auth.example.com/t/other\"",
        "\"https://auth.example.com/t/acme/\"",
        "\"https://auth.example.com/t/ACME\"",
        "\"http://auth.example.com/t/acme\"",
        "\"https://auth.example.com/t/%61cme\"",
        "[\"" ISS "\"]",
        NULL,
        "\"\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!claims_accepted(claims_with("iss", bad[i])));
    }
    CHECK(claims_accepted(claims_with("iss", "\"" ISS "\"")));
}

static void test_j18_aud(void)
{
    CHECK(!claims_accepted(claims_with("aud", NULL)));
    CHECK(!claims_accepted(claims_with("aud", "\"https://other.example.com\"")));
    CHECK(claims_accepted(claims_with("aud", "[\"x\",\"" AUD "\",\"y\"]")));
    CHECK(!claims_accepted(claims_with("aud", "[\"" AUD "\",7]")));
    CHECK(!claims_accepted(claims_with("aud", "[]")));
    CHECK(!claims_accepted(claims_with("aud", "{\"a\":\"" AUD "\"}")));
}

static void test_j19_profile_claims(void)
{
    CHECK(!claims_accepted(claims_with("scope", "[\"read\"]")));
    CHECK(!claims_accepted(claims_with("sub", "42")));
    CHECK(!claims_accepted(claims_with("sub", NULL)));
    CHECK(!claims_accepted(claims_with("client_id", NULL)));
    CHECK(!claims_accepted(claims_with("jti", NULL)));
    CHECK(!claims_accepted(claims_with("tid", "\"other\"")));
    CHECK(!claims_accepted(claims_with("tid", NULL)));
    CHECK(claims_accepted(claims_with("scope", NULL))); /* scope is optional */
}

static void test_j24_size(void)
{
    /* > 8 KiB: refused before decoding (the signature is even valid). */
    static char big[9000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    static char padval[sizeof(big) + 2];
    snprintf(padval, sizeof(padval), "\"%s\"", big);
    size_t n = forge(fx_es, fx_header(fx_es), claims_with("pad", padval), token);
    CHECK(n > JWS_TOKEN_MAX && !accepted(token));
    /* A 6 KiB header segment (padded header member) with a small payload. */
    char header[8192];
    snprintf(header, sizeof(header),
             "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",\"x\":\"%.4500s\"}",
             jwk_kid(fx_es), big);
    n = forge(fx_es, header, fx_claims(), token);
    CHECK(n < JWS_TOKEN_MAX && !accepted(token));
    /* ~700 short distinct claims within 8 KiB: parsed and accepted. */
    char many[TOKEN_CAP];
    size_t m = (size_t)snprintf(many, sizeof(many), "%s", fx_claims());
    m--; /* drop '}' */
    for (int i = 0; i < 700 && m < 5600; i++) {
        m += (size_t)snprintf(many + m, sizeof(many) - m, ",\"%x\":0", i);
    }
    snprintf(many + m, sizeof(many) - m, "}");
    n = forge(fx_es, fx_header(fx_es), many, token);
    CHECK(n <= JWS_TOKEN_MAX && accepted(token));
    /* A configured smaller bound applies. */
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    e.max_len = n - 1;
    CHECK(fx_verify_in(&fx_keys, &e, token, n) == -TE_INVAL);
}

static void test_j30_nested_and_zip(void)
{
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"cty\":\"JWT\",\"kid\":\"%s\"}",
             jwk_kid(fx_es));
    forge(fx_es, h, fx_claims(), token);
    CHECK(!accepted(token));
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"zip\":\"DEF\",\"kid\":\"%s\"}",
             jwk_kid(fx_es));
    forge(fx_es, h, fx_claims(), token);
    CHECK(!accepted(token));
}

/* J31: retired-but-unexpired accepted; removed rejected; next (published) accepted. */
static void test_j31_lifecycle(void)
{
    struct keyset set;
    struct jwk_key *a = NULL;
    struct jwk_key *b = NULL;
    keyset_init(&set, 900);
    CHECK(jwk_generate(JWK_ALG_EDDSA, 0, &a) == 0 && jwk_generate(JWK_ALG_EDDSA, 0, &b) == 0);
    CHECK(keyset_add(&set, a, KEYSET_ACTIVE, NOW - 1000) == 0);
    CHECK(keyset_add(&set, b, KEYSET_NEXT, NOW - 1000) == 0);
    struct jwt_expect e = fx_expect(JWT_KIND_ACCESS);
    char tok_a[1024];
    char tok_b[1024];
    forge(a, fx_header(a), fx_claims(), tok_a);
    forge(b, fx_header(b), fx_claims(), tok_b);
    CHECK(fx_verify_in(&set, &e, tok_b, strlen(tok_b)) == 0); /* next, published */
    CHECK(keyset_rotate(&set, NOW - 100) == 0);
    CHECK(fx_verify_in(&set, &e, tok_a, strlen(tok_a)) == 0); /* retired 100 s ago */
    e.now = NOW + 800;
    e.leeway_s = 0;
    CHECK(fx_verify_in(&set, &e, tok_a, strlen(tok_a)) == -TE_INVAL); /* window over */
    CHECK(keyset_prune(&set, NOW + 800) == 1);
    e = fx_expect(JWT_KIND_ACCESS);
    CHECK(fx_verify_in(&set, &e, tok_a, strlen(tok_a)) == -TE_INVAL); /* removed */
    CHECK(fx_verify_in(&set, &e, tok_b, strlen(tok_b)) == 0);
    keyset_clear(&set);
}

int main(void)
{
    fx_init();
    test_control();
    test_j06_unknown_kid();
    test_j08_kid_absent();
    test_j11_id_token_as_access();
    test_j12_access_as_id_token();
    test_id_token_hint();
    test_j13_typ();
    test_j14_exp();
    test_j15_nbf_iat();
    test_j16_exp_types();
    test_j17_iss();
    test_j18_aud();
    test_j19_profile_claims();
    test_j24_size();
    test_j30_nested_and_zip();
    test_j31_lifecycle();
    fx_free();
    return check_report("test_jwt");
}
