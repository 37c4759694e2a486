/* tests/crypto/test_jscan.c: the strict JSON reader that replaced jansson on the
 * verification path (crypto/jscan.h). Each case compares with what jansson and
 * JSON_REJECT_DUPLICATES decided before: grammar (RFC 8259), UTF-8 (RFC 3629),
 * duplicate names after unescaping at any depth (RFC 7515 §4, SECURITY J20), number
 * ranges; then lookups, unescaping, arrays, objects past the index, and the per-thread
 * signature contexts of jws.c used from several threads (freed at thread exit: the
 * sanitizer build's leak check fails this test otherwise). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "crypto/jscan.h"
#include "crypto/jwk.h"
#include "crypto/jws.h"
#include "tests/crypto/check.h"

#define THREADS 3
#define ROUNDS 20
#define BIG_DOC 16384

static struct jscan_object obj;

static int scan(const char *s)
{
    return jscan_object(s, strlen(s), &obj);
}

static void test_grammar(void)
{
    static const char *bad[] = {
        "", " ", "[]", "\"x\"", "null", "{}x", "{} {}", "{", "{\"a\"}", "{\"a\":}",
        "{\"a\":1,}", "{,\"a\":1}", "{'a':1}", "{a:1}", "\xef\xbb\xbf{}", "{/* c */}",
        "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":-}", "{\"a\":01}", "{\"a\":1.}",
        "{\"a\":.5}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":TRUE}", "{\"a\":nul}",
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":\"\t\"}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"\\u0000\"}", "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"a\":\"\xe0\x80\xaf\"}",     /* overlong, 3 bytes */
        "{\"a\":\"\xed\xa0\x80\"}",     /* encoded surrogate */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\xc3\"}",             /* truncated */
        "{\"a\":9223372036854775808}", "{\"a\":-9223372036854775809}", "{\"a\":1e999}",
        "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}", "{\"\\u00e9\":1,\"\xc3\xa9\":2}",
        "{\"o\":{\"k\":1,\"k\":2}}", "{\"o\":[{\"k\":1,\"k\":2}]}",
        "{\"a\":[[[[[[[[1]]]]]]]]}", /* nine levels: past JSCAN_DEPTH_MAX */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = scan(bad[i]);
        CHECK(rc == -TE_INVAL && obj.n == 0);
        if (rc == 0) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
        }
    }
    static const char *good[] = {
        "{}", " \t\r\n{ } \n", "{\"a\":\"\\ud83d\\ude00\"}", "{\"a\":\"\xf0\x9f\x98\x80\"}",
        "{\"a\":-0}", "{\"a\":9223372036854775807}", "{\"a\":-9223372036854775808}",
        "{\"a\":1.5e-400}", "{\"a\":[],\"b\":{},\"c\":[{}],\"d\":true,\"e\":false,\"f\":null}",
        "{\"o\":{\"k\":1},\"p\":{\"k\":1}}", "{\"a\":[[[[[[[1]]]]]]]}",
        "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK(scan(good[i]) == 0);
    }
}

static void test_lookups(void)
{
    char out[32];
    size_t n = 0;
    int64_t i = 0;
    double d = 0;
    CHECK(scan("{\"\\u0069ss\":\"a\\/b\\u00e9\",\"n\":-42,\"r\":1.5,\"aud\":[\"x\",2,\"y\"]}") ==
          0);
    CHECK(obj.n == 4 && jscan_get(&obj, "nope") == NULL);
    const struct jscan_value *iss = jscan_get(&obj, "iss"); /* found through the escape */
    CHECK(iss != NULL && iss->escaped && jscan_string_eq(iss, SLICE_LIT("a/b\xc3\xa9")));
    CHECK(!jscan_string_eq(iss, SLICE_LIT("a\\/b\xc3\xa9")) && !jscan_string_eq(iss, SLICE_LIT("a/b")));
    CHECK(jscan_string_copy(iss, out, sizeof(out) - 1, &n) == 0 && n == 5 &&
          strcmp(out, "a/b\xc3\xa9") == 0);
    CHECK(jscan_string_copy(iss, out, 4, &n) == -TE_INVAL); /* longer than max */
    CHECK(jscan_integer(jscan_get(&obj, "n"), &i) == 0 && i == -42);
    CHECK(jscan_real(jscan_get(&obj, "n"), &d) == -TE_INVAL); /* types stay distinct */
    CHECK(jscan_real(jscan_get(&obj, "r"), &d) == 0 && d == 1.5);
    CHECK(jscan_integer(jscan_get(&obj, "r"), &i) == -TE_INVAL);
    CHECK(jscan_string_copy(jscan_get(&obj, "n"), out, sizeof(out) - 1, &n) == -TE_INVAL);
    const struct jscan_value *aud = jscan_get(&obj, "aud");
    CHECK(aud != NULL && aud->type == JSCAN_ARRAY);
    const char *pos = NULL;
    struct jscan_value el;
    int count = 0;
    while (aud != NULL && jscan_array_next(aud, &pos, &el) == 1) {
        CHECK(count != 0 || jscan_string_eq(&el, SLICE_LIT("x")));
        CHECK(count != 1 || (el.type == JSCAN_INTEGER && jscan_integer(&el, &i) == 0 && i == 2));
        CHECK(count != 2 || jscan_string_eq(&el, SLICE_LIT("y")));
        count++;
    }
    CHECK(count == 3);
    CHECK(scan("{\"aud\":[ ]}") == 0);
    pos = NULL;
    CHECK(jscan_array_next(jscan_get(&obj, "aud"), &pos, &el) == 0);
}

/* More members than the index holds: accepted, found past the index, and a duplicate
 * anywhere among them is still refused (jansson checks the overflow). */
static void test_many_members(void)
{
    static char doc[BIG_DOC];
    size_t m = (size_t)snprintf(doc, sizeof(doc), "{\"first\":1");
    for (int k = 0; k < 700; k++) {
        m += (size_t)snprintf(doc + m, sizeof(doc) - m, ",\"%x\":%d", k, k);
    }
    size_t open = m;
    snprintf(doc + m, sizeof(doc) - m, ",\"last\":\"z\"}");
    int64_t v = 0;
    CHECK(scan(doc) == 0 && obj.overflow && obj.n == JSCAN_MEMBERS_MAX);
    CHECK(jscan_integer(jscan_get(&obj, "first"), &v) == 0 && v == 1);
    CHECK(jscan_integer(jscan_get(&obj, "2bb"), &v) == 0 && v == 0x2bb);
    CHECK(jscan_string_eq(jscan_get(&obj, "last"), SLICE_LIT("z")));
    CHECK(jscan_get(&obj, "absent") == NULL);
    snprintf(doc + open, sizeof(doc) - open, ",\"first\":2}"); /* the 702nd repeats the 1st */
    CHECK(scan(doc) == -TE_INVAL);
    snprintf(doc + open, sizeof(doc) - open, ",\"2b\\u0062\":2}"); /* repeats "2bb", escaped */
    CHECK(scan(doc) == -TE_INVAL);
}

static struct jwk_key *keys[3];

static void *thread_main(void *arg)
{
    (void)arg;
    static const char msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
    intptr_t failures = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            uint8_t sig[JWS_SIGNATURE_MAX];
            int n = jws_sign_bytes(keys[k], msg, sizeof(msg) - 1, sig, sizeof(sig));
            failures += n <= 0;
            failures += n > 0 && jws_verify_bytes(keys[k], msg, sizeof(msg) - 1, sig,
                                                  (size_t)n) != 0;
            sig[0] ^= 1; /* and a bad signature is still refused by the cached context */
            failures += n > 0 && jws_verify_bytes(keys[k], msg, sizeof(msg) - 1, sig,
                                                  (size_t)n) == 0;
        }
    }
    return (void *)failures;
}

static void test_threads(void)
{
    CHECK(jwk_generate(JWK_ALG_ES256, 0, &keys[0]) == 0);
    CHECK(jwk_generate(JWK_ALG_EDDSA, 0, &keys[1]) == 0);
    CHECK(jwk_generate(JWK_ALG_PS256, 2048, &keys[2]) == 0);
    if (keys[0] == NULL || keys[1] == NULL || keys[2] == NULL) {
        return;
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *failures = (void *)1;
        CHECK(pthread_join(t[i], &failures) == 0 && failures == NULL);
    }
    CHECK(thread_main(NULL) == NULL); /* the main thread too, then keys freed and remade */
    for (size_t k = 0; k < 3; k++) {
        jwk_free(keys[k]);
    }
    CHECK(jwk_generate(JWK_ALG_ES256, 0, &keys[0]) == 0);
    CHECK(jwk_generate(JWK_ALG_EDDSA, 0, &keys[1]) == 0);
    CHECK(jwk_generate(JWK_ALG_RS256, 2048, &keys[2]) == 0);
    CHECK(thread_main(NULL) == NULL);
    for (size_t k = 0; k < 3; k++) {
        jwk_free(keys[k]);
    }
}

int main(void)
{
    test_grammar();
    test_lookups();
    test_many_members();
    test_threads();
    return check_report("test_jscan");
}
