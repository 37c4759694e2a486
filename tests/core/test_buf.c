/* tests/core/test_buf.c: the bounded appenders. Proves JSON string escaping per
 * RFC 8259 §7 (quote, backslash, every control byte; high bytes untouched), decimal
 * output at the integer limits, and that overflow is sticky and writes nothing past
 * the capacity. */
#include "core/buf.c"

#include <stdio.h>
#include <stdlib.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        checks++;                                                                   \
        if (!(cond)) {                                                              \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

static bool buf_is(const struct buf *b, const char *expected)
{
    return b->len == strlen(expected) && memcmp(b->data, expected, b->len) == 0;
}

static void test_json_escape(void)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        { "plain", 5, "\"plain\"" },
        { "a\"b", 3, "\"a\\\"b\"" },
        { "a\\b", 3, "\"a\\\\b\"" },
        { "\r\n\t", 3, "\"\\r\\n\\t\"" },
        { "\x00\x01\x1f\x7f", 4, "\"\\u0000\\u0001\\u001f\\u007f\"" },
        { "caf\xc3\xa9", 5, "\"caf\xc3\xa9\"" },
        { "", 0, "\"\"" },
        { "</script>", 9, "\"</script>\"" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char mem[64];
        struct buf b;
        buf_init(&b, mem, sizeof(mem));
        buf_append_json_string(&b, slice_make(cases[i].in, cases[i].len));
        CHECK(!b.overflow);
        CHECK(buf_is(&b, cases[i].out));
    }
}

static void test_numbers(void)
{
    char mem[64];
    struct buf b;
    buf_init(&b, mem, sizeof(mem));
    buf_append_u64(&b, 0);
    buf_append_cstr(&b, " ");
    buf_append_u64(&b, UINT64_MAX);
    buf_append_cstr(&b, " ");
    buf_append_i64(&b, INT64_MIN);
    CHECK(buf_is(&b, "0 18446744073709551615 -9223372036854775808"));
}

static void test_overflow_is_sticky(void)
{
    char mem[8 + 1];
    mem[8] = 'Z'; /* a canary just past the capacity */
    struct buf b;
    buf_init(&b, mem, 8);
    buf_append_cstr(&b, "12345");
    buf_append_cstr(&b, "6789"); /* does not fit: nothing of it is written */
    CHECK(b.overflow);
    CHECK(b.len == 5);
    buf_append_cstr(&b, "a"); /* would fit, but the buffer is already failed */
    CHECK(b.len == 5);
    buf_printf(&b, "%d", 1);
    CHECK(b.len == 5);
    CHECK(mem[8] == 'Z');

    buf_init(&b, mem, 8);
    buf_printf(&b, "%s", "123456789");
    CHECK(b.overflow);
    CHECK(b.len == 0);
    CHECK(mem[8] == 'Z');
}

int main(void)
{
    test_json_escape();
    test_numbers();
    test_overflow_is_sticky();
    printf("test_buf: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
