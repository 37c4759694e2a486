/* tests/core/test_log.c: JSON lines of core/log.c, read back from stderr through a pipe.
 * Every line written, cut or not, is one RFC 8259 object (checked with crypto/jscan). An
 * over-long line is cut after its last whole member and marked "truncated", never inside
 * a string that holds commas, quotes or escapes, nor inside a nested object; a line that
 * fits is written as given. */
#include "core/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "crypto/jscan.h"
#include "tests/crypto/check.h"

#define TEST_READ_BYTES 65536  /* more than any line; the pipe's default capacity */
#define TEST_LONG_BYTES 3000   /* a value past LOG_LINE_BYTES_MAX */

static int test_pipe[2];
static int test_stderr = -1; /* the real stderr, where CHECK reports */
static char test_out[TEST_READ_BYTES];

/* Until read_line, the log writes into the pipe. */
static void capture(void)
{
    dup2(test_pipe[1], STDERR_FILENO);
}

/* What the log wrote since capture: one line, its newline removed. Returns its length or
 * -1. stderr is the real one again. */
static int read_line(void)
{
    dup2(test_stderr, STDERR_FILENO);
    ssize_t n = read(test_pipe[0], test_out, sizeof(test_out) - 1);
    if (n <= 0 || test_out[n - 1] != '\n')
        return -1;
    test_out[--n] = '\0';
    return memchr(test_out, '\n', (size_t)n) == NULL ? (int)n : -1;
}

/* The line read is one JSON object, within the bound. */
static bool parses(int len, struct jscan_object *obj)
{
    return len > 0 && len < LOG_LINE_BYTES_MAX && jscan_object(test_out, (size_t)len, obj) == 0;
}

static void fill(char *value, size_t len, const char *pattern)
{
    size_t plen = strlen(pattern);
    for (size_t i = 0; i < len; i++)
        value[i] = pattern[i % plen];
    value[len] = '\0';
}

/* A line that fits is written whole. */
static void test_short_line(void)
{
    capture();
    log_msg(LOG_WARN, "short", "path", "/a,b", "peer", "192.0.2.1", NULL);
    int len = read_line();
    struct jscan_object obj = { 0 };
    CHECK(parses(len, &obj));
    CHECK(jscan_get(&obj, "truncated") == NULL);
    CHECK(jscan_get(&obj, "peer") != NULL && strstr(test_out, "\"path\":\"/a,b\"") != NULL);
}

/* A long value with commas (and, in the second case, escaped quotes and backslashes) in
 * it: the line stops inside the string, and the cut goes back before the member. */
static void test_cut_inside_string(const char *pattern)
{
    static char value[TEST_LONG_BYTES + 1];
    fill(value, TEST_LONG_BYTES, pattern);
    capture();
    log_msg(LOG_WARN, "long", "first", "kept", "long", value, "after", "gone", NULL);
    int len = read_line();
    struct jscan_object obj = { 0 };
    CHECK(parses(len, &obj));
    const struct jscan_value *t = jscan_get(&obj, "truncated");
    CHECK(t != NULL && t->type == JSCAN_TRUE);
    CHECK(jscan_get(&obj, "first") != NULL && jscan_get(&obj, "msg") != NULL);
    CHECK(jscan_get(&obj, "long") == NULL && jscan_get(&obj, "after") == NULL);
}

/* A nested object with commas of its own, then a member too long to fit: the nested
 * object stays whole. */
static void test_cut_after_nested(void)
{
    static char value[TEST_LONG_BYTES + 1];
    fill(value, TEST_LONG_BYTES, "x,{\"y\":[1,2]},");
    capture();
    struct buf *line = log_begin(LOG_INFO, "nested");
    CHECK(line != NULL);
    buf_append_cstr(line, ",\"forwarded\":{\"for\":\"a,b\",\"uri\":\"/c\"}");
    buf_append_cstr(line, ",\"long\":");
    buf_append_json_string(line, slice_make(value, strlen(value)));
    log_end(line);
    int len = read_line();
    struct jscan_object obj = { 0 };
    CHECK(parses(len, &obj));
    const struct jscan_value *f = jscan_get(&obj, "forwarded");
    CHECK(f != NULL && f->type == JSCAN_OBJECT);
    CHECK(jscan_get(&obj, "truncated") != NULL && jscan_get(&obj, "long") == NULL);
}

/* The line stops just after a member's comma and name: the cut drops the bare name. */
static void test_cut_at_member_start(void)
{
    capture();
    struct buf *line = log_begin(LOG_INFO, "edge");
    CHECK(line != NULL);
    for (int i = 0; line->len + 16 <= line->cap; i++)
        buf_printf(line, ",\"k%d\":1", i);
    buf_append_cstr(line, ",\"name\":");
    buf_append_cstr(line, "\"value that does not fit\"");
    log_end(line);
    int len = read_line();
    struct jscan_object obj = { 0 };
    CHECK(parses(len, &obj));
    CHECK(jscan_get(&obj, "truncated") != NULL);
}

int main(void)
{
    test_stderr = dup(STDERR_FILENO);
    if (pipe(test_pipe) != 0 || test_stderr < 0)
        return 1;
    log_init(LOG_INFO, true);
    log_thread_init(-1, false);
    test_short_line();
    test_cut_inside_string("a,b,");
    test_cut_inside_string("q\"x,\\,");
    test_cut_after_nested();
    test_cut_at_member_start();
    return check_report("test_log");
}
