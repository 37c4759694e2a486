/* core/log.c: JSON-lines logging, buffered per shard thread. */
#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_REQUEST_ID_BYTES_MAX 128

static enum log_level log_threshold = LOG_INFO;
static bool log_access_on = true;

struct log_thread {
    int shard;
    bool buffered;
    char request_id[LOG_REQUEST_ID_BYTES_MAX];
    size_t request_id_len;
    struct buf line;
    char line_mem[LOG_LINE_BYTES_MAX];
    size_t pending_len;
    char pending[LOG_BUFFER_BYTES];
    time_t time_cached_sec;
    char time_cached[24]; /* "2026-11-23T10:00:00." */
};

static _Thread_local struct log_thread log_self = { .shard = -1 };

static const char *const log_level_names[] = { "debug", "info", "warn", "error" };

void log_init(enum log_level threshold, bool access_log)
{
    log_threshold = threshold;
    log_access_on = access_log;
}

bool log_enabled(enum log_level level)
{
    return level >= log_threshold;
}

bool log_access_enabled(void)
{
    return log_access_on && log_enabled(LOG_INFO);
}

int log_level_parse(const char *text, enum log_level *level)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
        if (strcmp(text, log_level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_thread_init(int shard, bool buffered)
{
    log_self.shard = shard;
    log_self.buffered = buffered;
}

void log_set_request_id(struct slice request_id)
{
    size_t n = request_id.len < LOG_REQUEST_ID_BYTES_MAX ? request_id.len : LOG_REQUEST_ID_BYTES_MAX;
    if (n > 0)
        memcpy(log_self.request_id, request_id.ptr, n);
    log_self.request_id_len = n;
}

/* Lines a shard dropped rather than wait for the sink (SECURITY F12): any thread adds,
 * a scrape reads. Touched only when the sink is full, never per line. */
static _Atomic uint64_t log_dropped;

_Static_assert(LOG_LINE_BYTES_MAX <= PIPE_BUF, "a line goes to a pipe with room in one write");

uint64_t log_dropped_lines(void)
{
    return atomic_load_explicit(&log_dropped, memory_order_relaxed);
}

static void log_count_dropped(const char *data, size_t len)
{
    uint64_t lines = 0;
    for (const char *p = data; (p = memchr(p, '\n', (size_t)(data + len - p))) != NULL; p++)
        lines++;
    atomic_fetch_add_explicit(&log_dropped, lines, memory_order_relaxed);
}

/* Writes lines to stderr; what is not written (stderr gone, a full disk) is dropped and
 * counted. A shard never waits for the sink (SECURITY F12: a log shipper that stops reading
 * must not stop the event loop): it writes only what the sink has room for now. A pipe polled
 * writable has room for PIPE_BUF bytes, so whole lines up to that much go at a time
 * (LOG_LINE_BYTES_MAX is less: at least one line always fits). Other threads may wait. */
static void log_write(const char *data, size_t len, bool never_wait)
{
    while (len > 0) {
        size_t chunk = len;
        if (never_wait) {
            struct pollfd p = { .fd = STDERR_FILENO, .events = POLLOUT };
            if (poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0)
                break;
            const char *end = memrchr(data, '\n', len < PIPE_BUF ? len : PIPE_BUF);
            chunk = end != NULL ? (size_t)(end - data) + 1 : (len < PIPE_BUF ? len : PIPE_BUF);
        }
        ssize_t n = write(STDERR_FILENO, data, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        data += n;
        len -= (size_t)n;
    }
    if (len > 0)
        log_count_dropped(data, len);
}

void log_flush(void)
{
    if (log_self.pending_len == 0)
        return;
    log_write(log_self.pending, log_self.pending_len, true);
    log_self.pending_len = 0;
}

static void log_append_time(struct buf *line)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != log_self.time_cached_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        strftime(log_self.time_cached, sizeof(log_self.time_cached), "%Y-%m-%dT%H:%M:%S.", &tm);
        log_self.time_cached_sec = now.tv_sec;
    }
    buf_append_cstr(line, log_self.time_cached);
    long ms = now.tv_nsec / 1000000;
    char text[4] = { (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z' };
    buf_append(line, text, sizeof(text));
}

struct buf *log_begin(enum log_level level, const char *msg)
{
    if (!log_enabled(level))
        return NULL;
    struct buf *line = &log_self.line;
    buf_init(line, log_self.line_mem, sizeof(log_self.line_mem) - 32); /* room to close */
    buf_append_cstr(line, "{\"level\":\"");
    buf_append_cstr(line, log_level_names[level]);
    buf_append_cstr(line, "\",\"time\":\"");
    log_append_time(line);
    buf_append_cstr(line, "\",\"shard\":");
    buf_append_i64(line, log_self.shard);
    if (log_self.request_id_len > 0) {
        buf_append_cstr(line, ",\"request_id\":");
        buf_append_json_string(line, slice_make(log_self.request_id, log_self.request_id_len));
    }
    buf_append_cstr(line, ",\"msg\":");
    buf_append_json_string(line, slice_make(msg, strlen(msg)));
    return line;
}

/* Where the last complete top-level member of an over-long line ends: the last comma
 * outside strings at the line object's own depth. A string value is appended in runs, so
 * the line may stop inside one, and a comma in it (a path, a message) is no boundary;
 * nested objects ("forwarded") hold commas of their own. The line is a prefix of the JSON
 * log_begin and the callers write, so tracking strings, escapes and depth suffices. */
static size_t log_last_member_end(const char *data, size_t len)
{
    size_t end = 0;
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            end = i;
        }
    }
    return end;
}

void log_end(struct buf *line)
{
    if (line->overflow) {
        /* Cut at the last complete member; the reserved 32 bytes hold the marker. log_begin's
         * first members are short, so a line always has a comma at depth 1 to cut at. */
        line->overflow = false;
        line->cap = sizeof(log_self.line_mem);
        size_t end = log_last_member_end(line->data, line->len);
        line->len = end > 0 ? end : line->len;
        buf_append_cstr(line, ",\"truncated\":true");
    }
    line->cap = sizeof(log_self.line_mem);
    buf_append_cstr(line, "}\n");
    if (!log_self.buffered) {
        log_write(line->data, line->len, false);
        return;
    }
    if (line->len > sizeof(log_self.pending) - log_self.pending_len)
        log_flush();
    memcpy(log_self.pending + log_self.pending_len, line->data, line->len);
    log_self.pending_len += line->len;
}

void log_msg(enum log_level level, const char *msg, ...)
{
    struct buf *line = log_begin(level, msg);
    if (line == NULL)
        return;
    va_list ap;
    va_start(ap, msg);
    for (const char *key = va_arg(ap, const char *); key != NULL; key = va_arg(ap, const char *)) {
        const char *value = va_arg(ap, const char *);
        buf_append_cstr(line, ",");
        buf_append_json_string(line, slice_make(key, strlen(key)));
        buf_append_cstr(line, ":");
        buf_append_json_string(line, slice_make(value ? value : "", value ? strlen(value) : 0));
    }
    va_end(ap);
    log_end(line);
}
