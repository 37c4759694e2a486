/* core/log.h: structured JSON lines on stderr, one object per line:
 *   {"level":"info","time":"2026-11-23T10:00:00.123Z","shard":0,"request_id":"…","msg":"…",…}
 * A shard thread buffers its lines and flushes once per loop iteration (log_flush),
 * so the access log costs no system call per request; other threads write each
 * line at once. A shard never waits for the sink: lines it has no room for are dropped
 * whole and counted (log_dropped_lines, SECURITY F12). Secrets never go to the log: callers pass paths without their query
 * string and never a header value that may carry a credential. */
#ifndef TESSERA_CORE_LOG_H
#define TESSERA_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"

#define LOG_LINE_BYTES_MAX 2048 /* a longer line is cut and marked "truncated" (and fits in
                                 * PIPE_BUF, so a pipe that has room takes a line whole) */
#define LOG_BUFFER_BYTES 65536  /* a shard's pending lines; flushed when full or per iteration */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Process-wide settings, set once before any thread starts. */
void log_init(enum log_level threshold, bool access_log);
bool log_enabled(enum log_level level);
bool log_access_enabled(void);
/* Parses "debug", "info", "warn", "error". Returns 0 or -1. */
int log_level_parse(const char *text, enum log_level *level);

/* Per thread: its shard index (-1 for none) and whether it buffers (shards do). */
void log_thread_init(int shard, bool buffered);
/* The request the thread is working on now; an empty slice clears it. */
void log_set_request_id(struct slice request_id);
void log_flush(void);
/* Log lines dropped: a shard's that found no room in the sink, any thread's the sink refused
 * (any thread may read). */
uint64_t log_dropped_lines(void);

/* Starts a line with the common members; append ,"key":value members to the
 * returned buffer (buf_append_json_string for strings), then call log_end.
 * Returns NULL when the level is below the threshold. */
struct buf *log_begin(enum log_level level, const char *msg);
void log_end(struct buf *line);

/* A line with string members: log_msg(LOG_WARN, "bad value", "name", n, NULL). */
void log_msg(enum log_level level, const char *msg, ...) __attribute__((sentinel));

#endif
