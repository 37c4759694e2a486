/* tests/proto/test_http1.c: proves proto/http1.c refuses every framing and limit
 * case of SECURITY.md H01-H22, H27 with the catalogued status, parses well-formed
 * heads into the expected fields, and gives the same outcome however the input is
 * split (H29): for every row, every prefix gives HTTP1_INCOMPLETE or the whole
 * input's outcome. Each input ends right at a PROT_NONE guard page, so reading
 * one byte past what the parser was given crashes the test (STYLE §9). The
 * chunked decoder table (H16-H19) is fed whole, split at every point, and one
 * byte at a time, in place. */
#include "proto/http1.h"

#include <assert.h>
#include <inttypes.h>
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

/* Guard pages --------------------------------------------------------------- */

struct guard {
    char *base;
    size_t map_bytes;
    char *end; /* first byte of the PROT_NONE page */
};

static struct guard guard_new(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data = (bytes + page - 1) / page * page;
    if (data == 0)
        data = page;
    struct guard g = { .map_bytes = data + page };
    g.base = mmap(NULL, g.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.base == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    g.end = g.base + data;
    if (mprotect(g.end, page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(1);
    }
    return g;
}

static void guard_free(struct guard *g)
{
    munmap(g->base, g->map_bytes);
}

/* Copies n bytes of input so that they end right at the guard page. */
static char *guard_place(struct guard *g, const char *input, size_t n)
{
    char *p = g->end - n;
    memcpy(p, input, n);
    return p;
}

/* Head table ---------------------------------------------------------------- */

enum limits_kind { LIMITS_DEFAULT, LIMITS_SMALL };

struct head_case {
    const char *id;
    const char *input;
    size_t len;
    int status;         /* 0: well-formed, the whole input is the head */
    const char *expect; /* well-formed: head_summary() of the result, NULL to skip */
    enum limits_kind limits;
};

#define OK(id, in, exp) { id, in, sizeof(in) - 1, 0, exp, LIMITS_DEFAULT }
#define BAD(id, in, st) { id, in, sizeof(in) - 1, st, NULL, LIMITS_DEFAULT }
#define BAD_SMALL(id, in, st) { id, in, sizeof(in) - 1, st, NULL, LIMITS_SMALL }

static const struct head_case head_cases[] = {
    /* Well-formed heads. */
    OK("ok-get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-browser", "GET /t/acme/oauth2/authorize?client_id=x&state=y HTTP/1.1\r\n"
       "Host: auth.example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n"
       "Accept-Encoding: gzip, br\r\nCookie: sid=abc; csrf=def\r\nX-Request-Id: r1\r\n\r\n",
       "GET /t/acme/oauth2/authorize ?client_id=x&state=y 1.1 host=auth.example.com body=N "
       "ka1 ec0 h6"),
    OK("ok-post-length", "POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
       "POST /oauth2/token ? 1.1 host=a body=L5 ka1 ec0 h2"),
    OK("ok-chunked", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
       "POST /x ? 1.1 host=a body=C ka1 ec0 h2"),
    OK("ok-chunked-case", "PUT /x HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n",
       "PUT /x ? 1.1 host=a body=C ka1 ec0 h2"),
    OK("ok-chunked-empty-element",
       "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n",
       "POST /x ? 1.1 host=a body=C ka1 ec0 h2"),
    OK("ok-http10-no-host", "GET / HTTP/1.0\r\n\r\n", "GET / ? 1.0 host= body=N ka0 ec0 h0"),
    OK("ok-http10-keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
       "GET / ? 1.0 host= body=N ka1 ec0 h1"),
    OK("ok-close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka0 ec0 h2"),
    OK("ok-close-in-list", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka0 ec0 h2"),
    OK("ok-expect",
       "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
       "POST / ? 1.1 host=a body=L3 ka1 ec1 h3"),
    OK("ok-expect-case", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n",
       "POST / ? 1.1 host=a body=N ka1 ec1 h2"),
    OK("ok-expect-http10-ignored", "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
       "POST / ? 1.0 host= body=N ka0 ec0 h1"),
    OK("ok-two-empty-lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-ows-trimmed", "GET / HTTP/1.1\r\nHost: \t a \t\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-empty-value", "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \t \r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h3"),
    OK("H11-obs-text-value-kept", "GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\xff\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h2"),
    OK("ok-htab-in-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\tb\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h2"),
    OK("ok-tchar-name", "GET / HTTP/1.1\r\nHost: a\r\nX!#$%&'*+-.^_`|~1: v\r\n\r\n",
       "GET / ? 1.1 host=a body=N ka1 ec0 h2"),
    OK("H22-absolute-form", "GET http://evil/t/x/jwks.json HTTP/1.1\r\nHost: good\r\n\r\n",
       "GET /t/x/jwks.json ? 1.1 host=good body=N ka1 ec0 h1"),
    OK("H22-absolute-form-empty-path", "GET http://evil HTTP/1.1\r\nHost: good\r\n\r\n",
       "GET / ? 1.1 host=good body=N ka1 ec0 h1"),
    OK("H22-absolute-form-query", "GET HTTPS://evil:8443?x=1 HTTP/1.1\r\nHost: good\r\n\r\n",
       "GET / ?x=1 1.1 host=good body=N ka1 ec0 h1"),
    OK("ok-host-port", "GET / HTTP/1.1\r\nHost: auth.example.com:8443\r\n\r\n",
       "GET / ? 1.1 host=auth.example.com:8443 body=N ka1 ec0 h1"),
    OK("ok-host-ipv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
       "GET / ? 1.1 host=[::1]:80 body=N ka1 ec0 h1"),
    OK("ok-host-pct", "GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n",
       "GET / ? 1.1 host=a%41b body=N ka1 ec0 h1"),
    OK("ok-cl-zero", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
       "POST / ? 1.1 host=a body=L0 ka1 ec0 h2"),
    OK("ok-cl-at-limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n",
       "POST / ? 1.1 host=a body=L65536 ka1 ec0 h2"),
    OK("ok-cl-leading-zeros", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\n",
       "POST / ? 1.1 host=a body=L5 ka1 ec0 h2"),
    OK("ok-head", "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD /h ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-patch", "PATCH /p HTTP/1.1\r\nHost: a\r\n\r\n",
       "PATCH /p ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-delete", "DELETE /d HTTP/1.1\r\nHost: a\r\n\r\n",
       "DELETE /d ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-options", "OPTIONS /o HTTP/1.1\r\nHost: a\r\n\r\n",
       "OPTIONS /o ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-empty-query", "GET /a? HTTP/1.1\r\nHost: a\r\n\r\n",
       "GET /a ? 1.1 host=a body=N ka1 ec0 h1"),
    OK("ok-target-encoded", "GET /a/%2F..;b?x=%00&y HTTP/1.1\r\nHost: a\r\n\r\n",
       "GET /a/%2F..;b ?x=%00&y 1.1 host=a body=N ka1 ec0 h1"),
    /* H01: Content-Length with Transfer-Encoding. */
    BAD("H01-cl-then-te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n", 400),
    BAD("H01-te-then-cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 5\r\n\r\n", 400),
    /* H02, H03: more than one length. */
    BAD("H02-two-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        "Content-Length: 6\r\n\r\n", 400),
    BAD("H02-length-list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
    BAD("H03-identical-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        "content-length: 5\r\n\r\n", 400),
    BAD("H03-identical-list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
    /* H04: Content-Length syntax. */
    BAD("H04-plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
    BAD("H04-minus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    BAD("H04-hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    BAD("H04-inner-space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400),
    BAD("H04-fullwidth", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xef\xbc\x95\r\n\r\n", 400),
    BAD("H04-25-digits", "POST / HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 1000000000000000000000000\r\n\r\n", 400),
    BAD("H04-20-digits", "POST / HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 18446744073709551616\r\n\r\n", 400),
    BAD("H04-empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
    /* H05: transfer codings. */
    BAD("H05-gzip-chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("H05-identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    BAD("H05-xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    BAD("H05-gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    BAD("H05-chunked-chunked", "POST / HTTP/1.1\r\nHost: a\r\n"
        "Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    BAD("H05-chunked-two-fields", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n", 400),
    BAD("H05-chunked-gzip",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    BAD("H05-gzip-then-chunked-fields", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\n\r\n", 501),
    BAD("H05-empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
    /* H06 */
    BAD("H06-te-http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    /* H07-H09: line structure. */
    BAD("H07-obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400),
    BAD("H07-obs-fold-tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    BAD("H08-space-before-colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    BAD("H08-tab-before-colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
    BAD("H09-bare-cr-value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
    BAD("H09-bare-cr-request-line", "GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n", 400),
    BAD("H09-bare-cr-target", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H09-bare-cr-end", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400),
    BAD("H09-bare-lf-everywhere", "GET / HTTP/1.1\nHost: a\n\n", 400),
    BAD("H09-bare-lf-field", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    BAD("H09-bare-lf-end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    BAD("H09-leading-bare-lf", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H09-space-before-first-field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    BAD("H09-three-empty-lines", "\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* H10: control bytes. */
    BAD("H10-nul-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 400),
    BAD("H10-soh-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n", 400),
    BAD("H10-vt-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x0b\r\n\r\n", 400),
    BAD("H10-ff-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x0c\r\n\r\n", 400),
    BAD("H10-esc-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \x1b[31m\r\n\r\n", 400),
    BAD("H10-del-value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7f\r\n\r\n", 400),
    BAD("H10-nul-target", "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H10-del-target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H10-tab-target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* H11: names and targets are ASCII tokens. */
    BAD("H11-name-at", "GET / HTTP/1.1\r\nHost: a\r\nX-A@: b\r\n\r\n", 400),
    BAD("H11-name-0x80", "GET / HTTP/1.1\r\nHost: a\r\nX-\x80: b\r\n\r\n", 400),
    BAD("H11-empty-name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    BAD("H11-target-utf8", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* H12: Host. */
    BAD("H12-no-host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    BAD("H12-two-hosts", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    BAD("H12-two-hosts-http10", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    BAD("H12-host-space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    BAD("H12-host-slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    BAD("H12-host-userinfo", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    BAD("H12-host-bad-port", "GET / HTTP/1.1\r\nHost: a:port\r\n\r\n", 400),
    BAD("H12-host-long-port", "GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", 400),
    BAD("H12-host-open-bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    BAD("H12-host-bad-pct", "GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 400),
    BAD("H12-host-utf8", "GET / HTTP/1.1\r\nHost: \xc3\xa9.example\r\n\r\n", 400),
    /* H13, H14 with small limits (target 16, fields 3, head 128); the default-limit
     * cases are generated in test_generated(). */
    BAD_SMALL("H13-target-small-limit", "GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    BAD_SMALL("H14-fields-small-limit", "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
              431),
    BAD_SMALL("H14-head-small-limit", "GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789012345678901"
              "234567890123456789012345678901234567890123456789012345678901234567890123456789"
              "\r\n\r\n", 431),
    /* H15, H27: body limit at head time. */
    BAD("H15-length-over-limit",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n", 413),
    BAD("H15-length-limit-plus-one", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n",
        413),
    BAD("H27-expect-over-limit", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        "Content-Length: 70000\r\n\r\n", 413),
    BAD("H27-expect-foo", "POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417),
    BAD("H27-expect-list", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n", 417),
    /* H20: versions. */
    BAD("H20-http-1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    BAD("H20-http-2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    BAD("H20-http-0.9", "GET / HTTP/0.9\r\n\r\n", 505),
    BAD("H20-http-1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    BAD("H20-lowercase", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H20-h2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    BAD("H20-short", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    BAD("H20-trailing-space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    BAD("H20-no-version", "GET /\r\nHost: a\r\n\r\n", 400),
    BAD("H20-version-before-method", "get / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    /* H21: methods. */
    BAD("H21-unknown", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    BAD("H21-lowercase-get", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    BAD("H21-connect", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501),
    BAD("H21-trace", "TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    BAD("H21-16-bytes", "ABCDEFGHIJKLMNOP / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    BAD("H21-not-token", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H21-empty-method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* H22: target forms. */
    BAD("H22-asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H22-authority-form", "GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H22-other-scheme", "GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H22-empty-authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    BAD("H22-empty-target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
};

static const char *body_kind_name(enum http1_body_kind kind)
{
    switch (kind) {
    case HTTP1_BODY_NONE:
        return "N";
    case HTTP1_BODY_LENGTH:
        return "L";
    default:
        return "C";
    }
}

/* One line holding every parsed field a row checks. */
static void head_summary(const struct http1_request *req, char *out, size_t cap)
{
    char length[24] = "";
    if (req->body_kind == HTTP1_BODY_LENGTH)
        snprintf(length, sizeof(length), "%" PRIu64, req->content_length);
    snprintf(out, cap, "%.*s %.*s ?%.*s 1.%d host=%.*s body=%s%s ka%d ec%d h%zu",
             (int)req->method_name.len, req->method_name.ptr, (int)req->path.len, req->path.ptr,
             (int)req->query.len, req->query.ptr, req->version_minor, (int)req->host.len,
             req->host.ptr ? req->host.ptr : "", body_kind_name(req->body_kind), length,
             req->keep_alive, req->expect_continue, req->header_count);
}

static void limits_for(enum limits_kind kind, struct http1_limits *limits)
{
    http1_limits_default(limits);
    if (kind == LIMITS_SMALL) {
        limits->head_bytes_max = 128;
        limits->target_bytes_max = 16;
        limits->header_fields_max = 3;
        limits->body_bytes_max = 100;
    }
}

/* Offset of a slice inside the buffer it was parsed from (-1 when static/none). */
static long slice_offset(struct slice s, const char *base, size_t len)
{
    if (s.ptr == NULL || s.ptr < base || s.ptr > base + len)
        return -1;
    return (long)(s.ptr - base);
}

/* Two parses of the same bytes at different addresses must give the same slices
 * at the same offsets. */
static bool same_slices(const struct http1_request *a, const char *abase,
                        const struct http1_request *b, const char *bbase, size_t len)
{
    const struct slice *sa[] = { &a->method_name, &a->target, &a->path, &a->query, &a->host };
    const struct slice *sb[] = { &b->method_name, &b->target, &b->path, &b->query, &b->host };
    for (size_t i = 0; i < sizeof(sa) / sizeof(sa[0]); i++) {
        if (sa[i]->len != sb[i]->len ||
            slice_offset(*sa[i], abase, len) != slice_offset(*sb[i], bbase, len))
            return false;
    }
    if (a->header_count != b->header_count)
        return false;
    for (size_t i = 0; i < a->header_count; i++) {
        if (slice_offset(a->headers[i].name, abase, len) !=
                slice_offset(b->headers[i].name, bbase, len) ||
            slice_offset(a->headers[i].value, abase, len) !=
                slice_offset(b->headers[i].value, bbase, len) ||
            a->headers[i].name.len != b->headers[i].name.len ||
            a->headers[i].value.len != b->headers[i].value.len)
            return false;
    }
    return true;
}

static bool outcome_matches(const struct head_case *c, int rc, const struct http1_request *req)
{
    if (c->status == 0)
        return rc == (int)c->len;
    return rc == HTTP1_ERROR && req->error_status == c->status && req->error_reason != NULL;
}

/* H29: every prefix is INCOMPLETE or the whole input's error. */
static void check_splits(const struct head_case *c, const struct http1_limits *limits,
                         struct guard *g)
{
    static struct http1_request req;
    for (size_t n = 0; n < c->len; n++) {
        const char *p = guard_place(g, c->input, n);
        int rc = http1_parse_head(p, n, limits, &req);
        if (rc == HTTP1_INCOMPLETE)
            continue;
        if (c->status != 0 && outcome_matches(c, rc, &req))
            continue;
        TEST_FAIL(c->id, "H29: prefix of %zu/%zu bytes gave %d (status %d)", n, c->len, rc,
                  req.error_status);
        return;
    }
}

/* Well-formed heads: the result does not depend on where the buffer lies, and
 * bytes after the head (a pipelined request) change nothing. */
static void check_position(const struct head_case *c, const struct http1_limits *limits,
                           const struct http1_request *whole, const char *whole_base)
{
    static const char next[] = "GET /next HTTP/1.1\r\nHost: b\r\n\r\n";
    static struct http1_request req;
    size_t len = c->len + sizeof(next) - 1;
    char *copy = malloc(len);
    assert(copy != NULL);
    memcpy(copy, c->input, c->len);
    memcpy(copy + c->len, next, sizeof(next) - 1);
    int rc = http1_parse_head(copy, len, limits, &req);
    if (rc != (int)c->len || !same_slices(whole, whole_base, &req, copy, c->len))
        TEST_FAIL(c->id, "with a pipelined request after it: %d, slices differ or moved", rc);
    free(copy);
}

static void run_head_case(const struct head_case *c)
{
    static struct http1_request req;
    struct http1_limits limits;
    limits_for(c->limits, &limits);
    test_cases++;
    struct guard g = guard_new(c->len);
    const char *p = guard_place(&g, c->input, c->len);
    int rc = http1_parse_head(p, c->len, &limits, &req);
    if (!outcome_matches(c, rc, &req)) {
        TEST_FAIL(c->id, "got %d status %d (%s), want %s %d", rc, req.error_status,
                  req.error_reason ? req.error_reason : "-", c->status ? "status" : "length",
                  c->status ? c->status : (int)c->len);
    } else if (c->status == 0) {
        char summary[512];
        head_summary(&req, summary, sizeof(summary));
        if (c->expect != NULL && strcmp(summary, c->expect) != 0)
            TEST_FAIL(c->id, "got \"%s\"\n     want \"%s\"", summary, c->expect);
        check_position(c, &limits, &req, p);
    }
    check_splits(c, &limits, &g);
    guard_free(&g);
}

/* H29 over a connection's byte stream ----------------------------------------- */

/* Four pipelined requests, with a Content-Length and a chunked body. */
static const char stream_input[] =
    "GET /a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    "POST /t/acme/oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nscope=a+b&c"
    "\r\nPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    "4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n"
    "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/* What a reader receiving the stream `segment` bytes per read records: each
 * head's summary and each body, one line per request. */
static void stream_replay(size_t segment, char *log, size_t log_cap)
{
    static char buf[sizeof(stream_input)];
    static struct http1_request req;
    struct http1_limits limits;
    http1_limits_default(&limits);
    size_t len = sizeof(stream_input) - 1;
    size_t filled = 0;
    size_t at = 0;
    size_t log_len = 0;
    log[0] = '\0';
    while (at < len) {
        int rc = http1_parse_head(buf + at, filled - at, &limits, &req);
        if (rc == HTTP1_INCOMPLETE) {
            assert(filled < len);
            size_t n = filled + segment <= len ? segment : len - filled;
            memcpy(buf + filled, stream_input + filled, n);
            filled += n;
            continue;
        }
        assert(rc > 0);
        char summary[256];
        head_summary(&req, summary, sizeof(summary));
        at += (size_t)rc;
        /* The body arrives in the same segments; bytes are taken as they come. */
        char body[64];
        size_t body_len = 0;
        if (req.body_kind == HTTP1_BODY_LENGTH) {
            while (filled - at < req.content_length) {
                assert(filled < len);
                size_t n = filled + segment <= len ? segment : len - filled;
                memcpy(buf + filled, stream_input + filled, n);
                filled += n;
            }
            memcpy(body, buf + at, (size_t)req.content_length);
            body_len = (size_t)req.content_length;
            at += body_len;
        } else if (req.body_kind == HTTP1_BODY_CHUNKED) {
            struct http1_chunked ch;
            http1_chunked_init(&ch, limits.body_bytes_max);
            enum http1_chunked_result r = HTTP1_CHUNKED_MORE;
            while (r == HTTP1_CHUNKED_MORE) {
                if (at == filled) {
                    assert(filled < len);
                    size_t n = filled + segment <= len ? segment : len - filled;
                    memcpy(buf + filled, stream_input + filled, n);
                    filled += n;
                }
                size_t consumed;
                size_t produced;
                r = http1_chunked_decode(&ch, buf + at, filled - at, body + body_len, &consumed,
                                         &produced);
                at += consumed;
                body_len += produced;
            }
            assert(r == HTTP1_CHUNKED_DONE);
        }
        log_len += (size_t)snprintf(log + log_len, log_cap - log_len, "%s [%.*s]\n", summary,
                                    (int)body_len, body);
        assert(log_len < log_cap);
    }
}

static void test_stream_splits(void)
{
    static char whole[2048];
    static char split[2048];
    static const char want[] =
        "GET /a ?x=1 1.1 host=a body=N ka1 ec0 h1 []\n"
        "POST /t/acme/oauth2/token ? 1.1 host=a body=L11 ka1 ec0 h2 [scope=a+b&c]\n"
        "POST /c ? 1.1 host=a body=C ka1 ec0 h2 [wikipedia]\n"
        "GET /last ? 1.1 host=a body=N ka0 ec0 h2 []\n";
    test_cases++;
    stream_replay(sizeof(stream_input) - 1, whole, sizeof(whole));
    if (strcmp(whole, want) != 0) {
        TEST_FAIL("H29-pipelined-stream", "unsplit:\n%s", whole);
        return;
    }
    for (size_t segment = 1; segment < sizeof(stream_input) - 1; segment++) {
        stream_replay(segment, split, sizeof(split));
        if (strcmp(split, whole) != 0) {
            TEST_FAIL("H29-pipelined-stream", "%zu-byte reads:\n%s", segment, split);
            return;
        }
    }
}

/* Generated rows (default limits) ---------------------------------------------- */

struct gen_buf {
    char bytes[HTTP1_HEAD_BYTES_MAX * 2];
    size_t len;
};

static void gen_add(struct gen_buf *b, const char *s)
{
    size_t n = strlen(s);
    assert(b->len + n <= sizeof(b->bytes));
    memcpy(b->bytes + b->len, s, n);
    b->len += n;
}

static void gen_repeat(struct gen_buf *b, char c, size_t n)
{
    assert(b->len + n <= sizeof(b->bytes));
    memset(b->bytes + b->len, c, n);
    b->len += n;
}

static void run_generated(const char *id, const struct gen_buf *b, int status)
{
    struct head_case c = { id, b->bytes, b->len, status, NULL, LIMITS_DEFAULT };
    run_head_case(&c);
}

static void test_generated(void)
{
    static struct gen_buf b;
    /* H13: a target of exactly the limit is served; one byte more is 414. */
    for (int extra = 0; extra <= 1; extra++) {
        b.len = 0;
        gen_add(&b, "GET /");
        gen_repeat(&b, 'a', HTTP1_TARGET_BYTES_MAX - 1 + (size_t)extra);
        gen_add(&b, " HTTP/1.1\r\nHost: a\r\n\r\n");
        run_generated(extra ? "H13-target-limit-plus-one" : "H13-target-at-limit", &b,
                      extra ? 414 : 0);
    }
    /* H13: 414 before the rest of the line arrives (no SP, no CRLF at all). */
    b.len = 0;
    gen_add(&b, "GET /");
    gen_repeat(&b, 'a', HTTP1_TARGET_BYTES_MAX);
    run_generated("H13-target-unterminated", &b, 414);
    /* H14: a head of exactly 8 KiB is served; 8 KiB + 1 is 431. */
    for (int extra = 0; extra <= 1; extra++) {
        b.len = 0;
        gen_add(&b, "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ");
        gen_repeat(&b, 'p', HTTP1_HEAD_BYTES_MAX - b.len - 4 + (size_t)extra);
        gen_add(&b, "\r\n\r\n");
        run_generated(extra ? "H14-head-limit-plus-one" : "H14-head-at-limit", &b,
                      extra ? 431 : 0);
    }
    /* H14: 431 with no terminator ever sent. */
    b.len = 0;
    gen_add(&b, "GET / HTTP/1.1\r\nX-Pad: ");
    gen_repeat(&b, 'p', HTTP1_HEAD_BYTES_MAX + 100);
    run_generated("H14-head-unterminated", &b, 431);
    /* H14: 64 fields are served, 65 and 100 are 431. */
    size_t counts[] = { HTTP1_HEADER_FIELDS_MAX, HTTP1_HEADER_FIELDS_MAX + 1, 100 };
    const char *ids[] = { "H14-fields-at-limit", "H14-fields-limit-plus-one", "H14-fields-100" };
    for (size_t i = 0; i < 3; i++) {
        b.len = 0;
        gen_add(&b, "GET / HTTP/1.1\r\nHost: a\r\n");
        for (size_t f = 1; f < counts[i]; f++)
            gen_add(&b, "X-F: v\r\n");
        gen_add(&b, "\r\n");
        run_generated(ids[i], &b, i == 0 ? 0 : 431);
    }
    /* H21: a 1 KiB method is 501, decided within its first HTTP1_METHOD_BYTES_MAX bytes. */
    b.len = 0;
    gen_repeat(&b, 'G', 1024);
    gen_add(&b, " / HTTP/1.1\r\nHost: a\r\n\r\n");
    run_generated("H21-1KiB-method", &b, 501);
}

/* A check of the API beside the table: lookups and error text. */
static void test_find_header(void)
{
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Req: one\r\nx-req: two\r\n\r\n";
    static struct http1_request req;
    struct http1_limits limits;
    http1_limits_default(&limits);
    test_cases++;
    int rc = http1_parse_head(in, sizeof(in) - 1, &limits, &req);
    const struct http1_header *h = http1_find_header(&req, "X-REQ");
    if (rc != (int)sizeof(in) - 1 || h == NULL || !slice_eq_cstr(h->value, "one") ||
        http1_find_header(&req, "absent") != NULL || req.method != HTTP1_METHOD_GET)
        TEST_FAIL("find-header", "rc %d", rc);
}

/* Chunked decoder --------------------------------------------------------------- */

struct chunked_case {
    const char *id;
    const char *input;
    size_t len;
    uint64_t body_max;
    enum http1_chunked_result result;
    const char *data;   /* decoded bytes expected (DONE and MORE) */
    size_t consumed;    /* DONE: where the body ends */
};

#define CH(id, in, max, res, data, used) { id, in, sizeof(in) - 1, max, res, data, used }
#define CH_DEFAULT HTTP1_BODY_BYTES_MAX

static const struct chunked_case chunked_cases[] = {
    CH("chunked-simple", "5\r\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_DONE, "hello", 15),
    CH("chunked-multi-hex", "3\r\nabc\r\na\r\n0123456789\r\nB\r\nABCDEFGHIJK\r\n0\r\n\r\n",
       CH_DEFAULT, HTTP1_CHUNKED_DONE, "abc0123456789ABCDEFGHIJK", 44),
    CH("chunked-extension", "5;name=val;x\r\nhello\r\n0;last\r\n\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_DONE, "hello", 31),
    CH("chunked-next-request-kept", "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_DONE, "hi", 12),
    CH("chunked-leading-zeros-16", "0000000000000002\r\nhi\r\n0\r\n\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_DONE, "hi", 27),
    CH("chunked-empty-body", "0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_DONE, "", 5),
    CH("chunked-incomplete", "5\r\nhel", CH_DEFAULT, HTTP1_CHUNKED_MORE, "hel", 0),
    CH("chunked-incomplete-trailer", "0\r\nX-A: b\r\n", CH_DEFAULT, HTTP1_CHUNKED_MORE, "", 0),
    /* H19: trailers are consumed and discarded; nothing reaches the output. */
    CH("H19-trailers-discarded", "1\r\nx\r\n0\r\nContent-Length: 5\r\nHost: evil\r\n"
       "Authorization: Bearer t\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_DONE, "x", 67),
    CH("H19-trailer-obs-fold", "0\r\nX-A: b\r\n c\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H19-trailer-space-colon", "0\r\nHost : x\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H19-trailer-no-colon", "0\r\nHost x\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H19-trailer-nul", "0\r\nX: a\0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H19-trailer-bare-lf", "0\r\nX: a\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    /* H17: chunk-size syntax. */
    CH("H17-17-hex-digits", "FFFFFFFFFFFFFFFFF\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-17-zero-digits", "00000000000000001\r\nx\r\n0\r\n\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-0x-prefix", "0x10\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-negative", "-1\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-leading-space", " 5\r\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-trailing-space", "5 \r\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-empty-size", "\r\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-empty-size-ext", ";x\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H17-16-hex-digits-too-large", "FFFFFFFFFFFFFFFF\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_TOO_LARGE, "", 0),
    /* H18: data and line framing. */
    CH("H18-data-longer", "3\r\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "hel", 0),
    CH("H18-data-shorter", "5\r\nhel\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "hel\r\n", 0),
    CH("H18-no-crlf-after-last", "0\r\n\r", CH_DEFAULT, HTTP1_CHUNKED_MORE, "", 0),
    CH("H18-bad-crlf-after-last", "0\r\n\rX", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H18-garbage-after-last", "0\r\nGET / HTTP/1.1\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "",
       0),
    CH("H18-bare-lf-size", "5\nhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H18-bare-lf-data", "5\r\nhello\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "hello", 0),
    CH("H18-bare-cr-size", "5\rhello\r\n0\r\n\r\n", CH_DEFAULT, HTTP1_CHUNKED_BAD, "", 0),
    CH("H18-control-in-extension", "5;a\x01\r\nhello\r\n0\r\n\r\n", CH_DEFAULT,
       HTTP1_CHUNKED_BAD, "", 0),
    /* H16: the decoded total against the limit. */
    CH("H16-at-limit", "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10, HTTP1_CHUNKED_DONE,
       "helloworld", 25),
    CH("H16-over-limit", "5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", 10, HTTP1_CHUNKED_TOO_LARGE,
       "hello", 0),
};

/* Decodes in steps of `step` bytes (0: whole), splitting once at `split` when
 * step is 0; in place in a private copy. */
static enum http1_chunked_result chunked_run(const char *input, size_t len, uint64_t body_max,
                                             size_t step, size_t split, char *data,
                                             size_t *data_len, size_t *consumed_total)
{
    char *buf = malloc(len + 1);
    assert(buf != NULL);
    memcpy(buf, input, len);
    struct http1_chunked ch;
    http1_chunked_init(&ch, body_max);
    size_t in = 0;
    size_t out = 0;
    enum http1_chunked_result r = HTTP1_CHUNKED_MORE;
    while (r == HTTP1_CHUNKED_MORE && in < len) {
        size_t n = step ? step : (in < split ? split - in : len - in);
        if (n > len - in)
            n = len - in;
        size_t consumed;
        size_t produced;
        r = http1_chunked_decode(&ch, buf + in, n, buf + out, &consumed, &produced);
        assert(consumed <= n);
        in += consumed;
        out += produced;
        if (r == HTTP1_CHUNKED_MORE)
            assert(consumed == n);
    }
    memcpy(data, buf, out);
    *data_len = out;
    *consumed_total = in;
    assert(out == ch.body_bytes);
    free(buf);
    return r;
}

static bool chunked_same(const struct chunked_case *c, enum http1_chunked_result r,
                         const char *data, size_t data_len, size_t consumed)
{
    if (r != c->result)
        return false;
    if ((r == HTTP1_CHUNKED_DONE || r == HTTP1_CHUNKED_MORE) &&
        (data_len != strlen(c->data) || memcmp(data, c->data, data_len) != 0))
        return false;
    return r != HTTP1_CHUNKED_DONE || consumed == c->consumed;
}

static void run_chunked_case(const struct chunked_case *c)
{
    static char data[1 << 17];
    size_t data_len;
    size_t consumed;
    test_cases++;
    /* Whole, then one byte at a time, then split once at every point. */
    enum http1_chunked_result r = chunked_run(c->input, c->len, c->body_max, 0, c->len, data,
                                              &data_len, &consumed);
    if (!chunked_same(c, r, data, data_len, consumed)) {
        TEST_FAIL(c->id, "whole: result %d, %zu data bytes, consumed %zu", r, data_len, consumed);
        return;
    }
    r = chunked_run(c->input, c->len, c->body_max, 1, 0, data, &data_len, &consumed);
    if (!chunked_same(c, r, data, data_len, consumed)) {
        TEST_FAIL(c->id, "byte by byte: result %d, consumed %zu", r, consumed);
        return;
    }
    for (size_t split = 1; split < c->len; split++) {
        r = chunked_run(c->input, c->len, c->body_max, 0, split, data, &data_len, &consumed);
        if (!chunked_same(c, r, data, data_len, consumed)) {
            TEST_FAIL(c->id, "split at %zu: result %d", split, r);
            return;
        }
    }
}

static void test_chunked_generated(void)
{
    static char in[HTTP1_BODY_BYTES_MAX * 2];
    static char data[HTTP1_BODY_BYTES_MAX * 2];
    size_t data_len;
    size_t consumed;
    size_t len = 0;
    /* H16: 17 chunks of 4 KiB pass 64 KiB at the 17th size line. */
    for (int i = 0; i < 17; i++) {
        len += (size_t)sprintf(in + len, "1000\r\n");
        memset(in + len, 'a', 4096);
        len += 4096;
        len += (size_t)sprintf(in + len, "\r\n");
    }
    len += (size_t)sprintf(in + len, "0\r\n\r\n");
    test_cases++;
    enum http1_chunked_result r = chunked_run(in, len, HTTP1_BODY_BYTES_MAX, 1, 0, data,
                                              &data_len, &consumed);
    if (r != HTTP1_CHUNKED_TOO_LARGE || data_len != HTTP1_BODY_BYTES_MAX)
        TEST_FAIL("H16-chunked-over-64KiB", "result %d after %zu bytes", r, data_len);
    /* H18: a 10 KiB extension. */
    len = (size_t)sprintf(in, "5;");
    memset(in + len, 'e', 10240);
    len += 10240;
    len += (size_t)sprintf(in + len, "\r\nhello\r\n0\r\n\r\n");
    test_cases++;
    r = chunked_run(in, len, HTTP1_BODY_BYTES_MAX, 1, 0, data, &data_len, &consumed);
    if (r != HTTP1_CHUNKED_BAD || consumed > HTTP1_CHUNK_EXT_BYTES_MAX + 8)
        TEST_FAIL("H18-10KiB-extension", "result %d consumed %zu", r, consumed);
    /* H19: a trailer section over HTTP1_TRAILER_BYTES_MAX. */
    len = (size_t)sprintf(in, "0\r\n");
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(in + len, "X-Trailer-%03d: value\r\n", i);
    len += (size_t)sprintf(in + len, "\r\n");
    test_cases++;
    r = chunked_run(in, len, HTTP1_BODY_BYTES_MAX, 0, len, data, &data_len, &consumed);
    if (r != HTTP1_CHUNKED_BAD)
        TEST_FAIL("H19-trailers-too-long", "result %d", r);
}

/* After DONE or an error the decoder is sticky: later bytes are never read. */
static void test_chunked_sticky(void)
{
    static const char body[] = "0\r\n\r\n";
    struct http1_chunked ch;
    char out[16];
    size_t consumed;
    size_t produced;
    test_cases++;
    http1_chunked_init(&ch, HTTP1_BODY_BYTES_MAX);
    if (http1_chunked_decode(&ch, body, 5, out, &consumed, &produced) != HTTP1_CHUNKED_DONE ||
        http1_chunked_decode(&ch, "5\r\nhello", 8, out, &consumed, &produced) !=
            HTTP1_CHUNKED_DONE || consumed != 0 || produced != 0)
        TEST_FAIL("chunked-sticky-done", "decoder went on after DONE");
    http1_chunked_init(&ch, HTTP1_BODY_BYTES_MAX);
    if (http1_chunked_decode(&ch, "x", 1, out, &consumed, &produced) != HTTP1_CHUNKED_BAD ||
        http1_chunked_decode(&ch, body, 5, out, &consumed, &produced) != HTTP1_CHUNKED_BAD ||
        consumed != 0)
        TEST_FAIL("chunked-sticky-bad", "decoder went on after BAD");
}

int main(void)
{
    for (size_t i = 0; i < sizeof(head_cases) / sizeof(head_cases[0]); i++)
        run_head_case(&head_cases[i]);
    test_generated();
    test_stream_splits();
    test_find_header();
    for (size_t i = 0; i < sizeof(chunked_cases) / sizeof(chunked_cases[0]); i++)
        run_chunked_case(&chunked_cases[i]);
    test_chunked_generated();
    test_chunked_sticky();
    printf("test_http1: %d cases, %d failed\n", test_cases, test_failures);
    return test_failures == 0 ? 0 : 1;
}
