/* tests/proto/test_http_auth.c: proves proto/http_auth.c reads Basic credentials as RFC 7617
 * and RFC 6749 §2.3.1 say (base64 of "id:secret", each part form-urlencoded; the scheme
 * case-insensitive; the secret may hold ':'), refuses what is not strict base64 (no padding,
 * stray characters, non-canonical trailing bits, whitespace), credentials without ':', an
 * encoded NUL, and values longer than the caller's buffers; and that Bearer tokens follow
 * RFC 6750 §2.1's b64token syntax. Every input ends at a PROT_NONE guard page (STYLE §9). */
#include "proto/http_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int test_cases;
static int test_failures;
static char *guard_end;

static void guard_init(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + page, page, PROT_NONE) != 0) {
        perror("guard");
        exit(1);
    }
    guard_end = base + page;
}

static struct slice guarded(const char *s)
{
    size_t len = strlen(s);
    memcpy(guard_end - len, s, len);
    return slice_make(guard_end - len, len);
}

struct basic_case {
    const char *header;
    int rc;
    const char *id;
    const char *secret;
};

static const struct basic_case basic_cases[] = {
    /* RFC 7617 §2's example: Aladdin / open sesame */
    { "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", 0, "Aladdin", "open sesame" },
    { "basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", 0, "Aladdin", "open sesame" },     /* RFC 9110 §11.1 */
    { "BASIC QWxhZGRpbjpvcGVuIHNlc2FtZQ==", 0, "Aladdin", "open sesame" },
    { "Basic YTpiOmM=", 0, "a", "b:c" },                                       /* a:b:c: first ':' */
    { "Basic JTNBaWQlMjA6cyUyNnQrJTNE", 0, ":id ", "s&t =" },                  /* %3Aid%20:s%26t+%3D */
    { "Basic OnNlY3JldA==", 0, "", "secret" },                                 /* empty id: caller refuses */
    { "Basic aWQ6", 0, "id", "" },                                             /* "id:" */
    { "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ", -1, NULL, NULL },                    /* padding missing */
    { "Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==", -1, NULL, NULL },                  /* non-canonical bits */
    { "Basic QWxhZGRp bjpvcGVuIHNlc2FtZQ==", -1, NULL, NULL },                 /* space inside */
    { "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\t", -1, NULL, NULL },
    { "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=a", -1, NULL, NULL },                  /* '=' then data */
    { "Basic ====", -1, NULL, NULL },
    { "Basic QWxh-GRp", -1, NULL, NULL },                                      /* base64url char */
    { "Basic YWJj", -1, NULL, NULL },                                          /* "abc": no ':' */
    { "Basic aWQlMDA6cw==", -1, NULL, NULL },                                  /* id%00:s */
    { "Basic aWQ6cyUwMA==", -1, NULL, NULL },                                  /* id:s%00 */
    { "Basic aWQ6JXp6", -1, NULL, NULL },                                      /* id:%zz */
    { "Basic", -1, NULL, NULL },
    { "Basic ", -1, NULL, NULL },
    { "Basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ==", -1, NULL, NULL },                 /* two spaces */
    { "Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==", -1, NULL, NULL },
    { "Basicx QWxhZGRpbjpvcGVuIHNlc2FtZQ==", -1, NULL, NULL },
    { "", -1, NULL, NULL },
};

static void test_basic(void)
{
    for (size_t i = 0; i < sizeof(basic_cases) / sizeof(basic_cases[0]); i++) {
        const struct basic_case *c = &basic_cases[i];
        char id[64], secret[64];
        memset(id, 'X', sizeof(id));
        memset(secret, 'X', sizeof(secret));
        int rc = http_auth_basic(guarded(c->header), id, sizeof(id), secret, sizeof(secret));
        test_cases++;
        bool ok = rc == c->rc && (rc != 0 || (strcmp(id, c->id) == 0 && strcmp(secret, c->secret) == 0));
        if (!ok) {
            test_failures++;
            fprintf(stderr, "FAIL basic[%zu] \"%s\": rc %d\n", i, c->header, rc);
        }
    }
}

/* Values that do not fit the caller's buffers are refused, never cut. */
static void test_basic_bounds(void)
{
    char id[4], secret[4];
    const char *fits = "Basic YWJjOnh5eg=="; /* abc:xyz: 3 + NUL each */
    const char *too_long = "Basic YWJjZDp4";   /* abcd:x */
    const char *secret_long = "Basic YTp3eHl6"; /* a:wxyz */
    test_cases += 3;
    if (http_auth_basic(guarded(fits), id, sizeof(id), secret, sizeof(secret)) != 0 || strcmp(id, "abc") != 0) {
        test_failures++;
        fprintf(stderr, "FAIL bounds: abc:xyz should fit 4-byte buffers\n");
    }
    if (http_auth_basic(guarded(too_long), id, sizeof(id), secret, sizeof(secret)) != -1) {
        test_failures++;
        fprintf(stderr, "FAIL bounds: a 4-byte id into 4 bytes must be refused\n");
    }
    if (http_auth_basic(guarded(secret_long), id, sizeof(id), secret, sizeof(secret)) != -1) {
        test_failures++;
        fprintf(stderr, "FAIL bounds: a 4-byte secret into 4 bytes must be refused\n");
    }
    /* Longer than HTTP_AUTH_BASIC_MAX decoded: refused before decoding. */
    size_t n = (HTTP_AUTH_BASIC_MAX / 3 + 2) * 4;
    char *big = malloc(n + 7);
    memcpy(big, "Basic ", 6);
    memset(big + 6, 'Q', n);
    big[6 + n] = '\0';
    char large_id[2048], large_secret[2048];
    test_cases++;
    if (http_auth_basic(guarded(big), large_id, sizeof(large_id), large_secret, sizeof(large_secret)) != -1) {
        test_failures++;
        fprintf(stderr, "FAIL bounds: credentials over HTTP_AUTH_BASIC_MAX must be refused\n");
    }
    free(big);
}

static void test_bearer(void)
{
    static const struct {
        const char *header;
        const char *token; /* NULL: refused */
    } cases[] = {
        { "Bearer abc.DEF-123_~+/", "abc.DEF-123_~+/" },
        { "bearer abc", "abc" },
        { "Bearer abc==", "abc==" },
        { "Bearer abc=d", NULL },
        { "Bearer ab c", NULL },
        { "Bearer ", NULL },
        { "Bearer", NULL },
        { "Bearer =", NULL },
        { "Basic abc", NULL },
        { "Bearer abc\"", NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct slice t = http_auth_bearer(guarded(cases[i].header));
        bool ok = cases[i].token == NULL ? t.len == 0
                                         : t.len == strlen(cases[i].token) && memcmp(t.ptr, cases[i].token, t.len) == 0;
        test_cases++;
        if (!ok) {
            test_failures++;
            fprintf(stderr, "FAIL bearer[%zu] \"%s\"\n", i, cases[i].header);
        }
    }
}

int main(void)
{
    guard_init();
    test_basic();
    test_basic_bounds();
    test_bearer();
    printf("%d cases, %d failures\n", test_cases, test_failures);
    return test_failures ? 1 : 0;
}
