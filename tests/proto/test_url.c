/* tests/proto/test_url.c: proves proto/url.c decodes exactly once and refuses
 * what SECURITY.md H23 lists (%00, %zz, a trailing %, an encoded '/' in a path
 * segment; "%252e%252e" stays "%2e%2e"), and that the form iterator and lookup
 * follow url.h (empty pairs skipped, keys compared after decoding, first value,
 * bounded output). Inputs end at a PROT_NONE guard page (STYLE §9). */
#include "proto/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int test_cases;
static int test_failures;

#define TEST_FAIL(id, ...)                                   \
    do {                                                     \
        test_failures++;                                     \
        fprintf(stderr, "FAIL %s: ", (id));                  \
        fprintf(stderr, __VA_ARGS__);                        \
        fputc('\n', stderr);                                 \
    } while (0)

static char *guard_end;

/* One page of data followed by a PROT_NONE page; inputs are copied to its end. */
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

static struct slice guard_slice(const char *s, size_t len)
{
    memcpy(guard_end - len, s, len);
    return slice_make(guard_end - len, len);
}

enum decoder { PATH, FORM };

struct decode_case {
    const char *id;
    enum decoder decoder;
    const char *input;
    size_t len;
    int want_len;     /* -1: rejected */
    const char *want; /* decoded bytes */
};

#define DEC(id, d, in, wl, w) { id, d, in, sizeof(in) - 1, wl, w }

static const struct decode_case decode_cases[] = {
    DEC("path-plain", PATH, "jwks.json", 9, "jwks.json"),
    DEC("path-empty", PATH, "", 0, ""),
    DEC("path-space", PATH, "a%20b", 3, "a b"),
    DEC("path-plus-is-plus", PATH, "a+b", 3, "a+b"),
    DEC("path-utf8", PATH, "caf%C3%a9", 5, "caf\xc3\xa9"),
    DEC("H23-path-double-encoded-dots", PATH, "%252e%252e", 6, "%2e%2e"),
    DEC("H23-path-dots-decoded-once", PATH, "%2e%2E", 2, ".."),
    DEC("H23-path-nul", PATH, "a%00b", -1, ""),
    DEC("H23-path-zz", PATH, "%zz", -1, ""),
    DEC("H23-path-half-hex", PATH, "%4g", -1, ""),
    DEC("H23-path-trailing-percent", PATH, "abc%", -1, ""),
    DEC("H23-path-trailing-one-digit", PATH, "abc%4", -1, ""),
    DEC("H23-path-encoded-slash", PATH, "acme%2Fother", -1, ""),
    DEC("H23-path-encoded-slash-lower", PATH, "acme%2fother", -1, ""),
    DEC("H23-path-raw-slash", PATH, "a/b", -1, ""),
    DEC("H23-path-encoded-lf", PATH, "a%0Ab", -1, ""),
    DEC("H23-path-encoded-cr", PATH, "a%0db", -1, ""),
    DEC("H23-path-encoded-del", PATH, "a%7Fb", -1, ""),
    DEC("H23-path-raw-control", PATH, "a\x01" "b", -1, ""),
    DEC("form-plus", FORM, "a+b", 3, "a b"),
    DEC("form-encoded-plus", FORM, "a%2Bb", 3, "a+b"),
    DEC("form-encoded-slash", FORM, "https%3A%2F%2Fapp%2Fcb", 14, "https://app/cb"),
    DEC("form-newline-kept", FORM, "a%0Ab", 3, "a\nb"),
    DEC("form-double-encoded", FORM, "%252e", 3, "%2e"),
    DEC("form-nul", FORM, "a%00", -1, ""),
    DEC("form-zz", FORM, "%zz", -1, ""),
    DEC("form-trailing-percent", FORM, "a%", -1, ""),
};

static void run_decode_case(const struct decode_case *c)
{
    char out[64];
    test_cases++;
    struct slice in = guard_slice(c->input, c->len);
    memset(out, 0x5a, sizeof(out));
    int rc = c->decoder == PATH ? url_decode_path_segment(in, out) :
                                  url_decode_form_component(in, out);
    if (rc != c->want_len)
        TEST_FAIL(c->id, "returned %d, want %d", rc, c->want_len);
    else if (rc >= 0 && memcmp(out, c->want, (size_t)rc) != 0)
        TEST_FAIL(c->id, "decoded \"%.*s\", want \"%s\"", rc, out, c->want);
    else if (rc >= 0 && out[rc] != 0x5a && (size_t)rc < c->len)
        TEST_FAIL(c->id, "wrote past the decoded length");
}

/* url_form_next: pairs in order, empty pairs skipped, no '=' → empty value. */
static void test_form_next(void)
{
    static const char body[] = "a=1&&b=2&c&=d&e=x=y&";
    static const char *const want[][2] = { { "a", "1" }, { "b", "2" }, { "c", "" },
                                           { "", "d" }, { "e", "x=y" } };
    struct slice in = guard_slice(body, sizeof(body) - 1);
    struct slice key;
    struct slice value;
    size_t pos = 0;
    size_t n = 0;
    test_cases++;
    while (url_form_next(in, &pos, &key, &value)) {
        if (n >= 5 || !slice_eq_cstr(key, want[n][0]) || !slice_eq_cstr(value, want[n][1])) {
            TEST_FAIL("form-next", "pair %zu is \"%.*s\"=\"%.*s\"", n, (int)key.len, key.ptr,
                      (int)value.len, value.ptr);
            return;
        }
        n++;
    }
    if (n != 5 || pos != in.len)
        TEST_FAIL("form-next", "%zu pairs, pos %zu", n, pos);
    pos = 0;
    test_cases++;
    if (url_form_next(guard_slice("&&", 2), &pos, &key, &value))
        TEST_FAIL("form-next-only-empty", "found a pair in \"&&\"");
}

struct get_case {
    const char *id;
    const char *input;
    const char *key;
    size_t out_cap;
    int want_len; /* -1 absent, -2 malformed or too long */
    const char *want;
};

static const struct get_case get_cases[] = {
    { "get-simple", "grant_type=client_credentials&scope=a+b", "scope", 32, 3, "a b" },
    { "get-first-of-two", "scope=a&scope=b", "scope", 32, 1, "a" },
    { "get-absent", "a=1&b=2", "c", 32, -1, "" },
    { "get-prefix-not-match", "scopes=x", "scope", 32, -1, "" },
    { "get-key-decoded", "%73cope=x&redirect%5Furi=https%3A%2F%2Fa", "redirect_uri", 32, 9,
      "https://a" },
    { "get-key-plus", "a+b=c", "a b", 32, 1, "c" },
    { "get-empty-value", "state=&x=1", "state", 32, 0, "" },
    { "get-no-equals", "flag&x=1", "flag", 32, 0, "" },
    { "get-value-malformed", "code=%zz", "code", 32, -2, "" },
    { "get-value-nul", "code=a%00", "code", 32, -2, "" },
    { "get-key-malformed", "c%zz=1&code=2", "code", 32, -2, "" },
    { "get-too-long", "code=abcdef", "code", 5, -2, "" },
    { "get-exact-fit", "code=abcde", "code", 5, 5, "abcde" },
    { "get-double-encoded", "x=%252e", "x", 32, 3, "%2e" },
};

static void run_get_case(const struct get_case *c)
{
    char out[32];
    test_cases++;
    struct slice in = guard_slice(c->input, strlen(c->input));
    int rc = url_form_get(in, c->key, out, c->out_cap);
    if (rc != c->want_len)
        TEST_FAIL(c->id, "returned %d, want %d", rc, c->want_len);
    else if (rc >= 0 && memcmp(out, c->want, (size_t)rc) != 0)
        TEST_FAIL(c->id, "got \"%.*s\", want \"%s\"", rc, out, c->want);
}

int main(void)
{
    guard_init();
    for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++)
        run_decode_case(&decode_cases[i]);
    test_form_next();
    for (size_t i = 0; i < sizeof(get_cases) / sizeof(get_cases[0]); i++)
        run_get_case(&get_cases[i]);
    printf("test_url: %d cases, %d failed\n", test_cases, test_failures);
    return test_failures == 0 ? 0 : 1;
}
