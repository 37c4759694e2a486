/* core/loop.h: the shard runtime. One thread per shard, pinned to a core, each
 * with its own io_uring, its own SO_REUSEPORT listening socket, its own slab of
 * connections, timers, buffer pools and mailbox (DESIGN §1). Nothing here knows
 * HTTP: a protocol is a table of callbacks (struct conn_handler) run on the
 * shard's thread.
 *
 * A connection's life: accepted (multishot accept) → on_open → receives through a
 * provided buffer ring (on_data with the bytes; the buffer is returned to the
 * kernel when on_data returns, so the handler copies what it keeps) → the handler
 * appends output to conn_out() and the loop sends it (partial writes resumed) →
 * on_sent when all output is gone → ... → conn_close → on_close → slot reused.
 * A connection is never freed inside its own callback: it is reaped at the end of
 * the loop iteration once no operation on it is in flight (STYLE §3).
 *
 * Contents: shards (loop_*), connections (conn_*), buffer blocks, timers. */
#ifndef TESSERA_CORE_LOOP_H
#define TESSERA_CORE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/ring.h"
#include "core/workers.h"

#define LOOP_RECV_BUF_BYTES 8192   /* one provided receive buffer: a typical request fits */
#define LOOP_RECV_BUF_COUNT 512    /* per shard: 4 MiB; exhausted → recv re-armed next iteration */
#define LOOP_OUT_BUF_BYTES 262144  /* a connection's output block while it has output */
#define LOOP_BLOCKS_CACHED_MAX 256 /* free blocks kept per size per shard; more are freed */
#define LOOP_SQ_ENTRIES 4096       /* submission queue; the CQ is twice that */
#define LOOP_TIMER_TICK_MS 100     /* granularity of connection deadlines and Date */
#define LOOP_CONN_PROTO_BYTES 128  /* per-connection protocol state kept in the slab slot */
#define LOOP_DRAIN_BATCH_MAX 1024  /* messages or completions handled per wake-up */

struct loop;
struct conn;

enum conn_timer {
    CONN_TIMER_NONE,
    CONN_TIMER_HEADER, /* from a request's first byte to the end of its head */
    CONN_TIMER_BODY,   /* from the end of the head to the end of the body */
    CONN_TIMER_IDLE,   /* keep-alive between requests; also a client that stops reading */
    CONN_TIMER_COUNT,
};

/* A protocol: callbacks on the shard's thread. */
struct conn_handler {
    void (*on_open)(struct conn *conn);
    /* Received bytes (plaintext as far as the loop knows). */
    void (*on_data)(struct conn *conn, const char *data, size_t len);
    /* All output appended so far has been written to the socket. */
    void (*on_sent)(struct conn *conn);
    /* The connection's deadline passed. */
    void (*on_timeout)(struct conn *conn, enum conn_timer timer);
    /* The server is shutting down: finish what is in flight, then close. */
    void (*on_shutdown)(struct conn *conn);
    /* The connection is going away: release protocol state (no output possible). */
    void (*on_close)(struct conn *conn);
};

/* Handler for inter-shard messages (mailbox), on the receiving shard's thread. */
typedef void (*loop_message_fn)(struct loop *loop, const struct ring_msg *msg);

struct loop_shared {
    const struct config *cfg;
    const struct conn_handler *handler;
    struct mailbox *mailbox;
    struct workers *workers;
    loop_message_fn on_message;
    void (*on_start)(struct loop *loop); /* on the shard's thread before it serves, optional */
    void (*on_stop)(struct loop *loop);  /* on the shard's thread after it served, optional */
    void *app;                 /* the application's process-wide state */
    struct loop **loops;       /* every shard, for scrape-time reads of counters */
    unsigned shards;
    int listen_port;           /* the port shard 0 bound, when TESSERA_LISTEN asked for port 0 */
};

/* Per-shard counters: written by the owning shard only, read by any shard at scrape
 * time with relaxed loads (no shared atomic read-modify-write anywhere). */
struct loop_counters {
    uint64_t accepted;
    uint64_t rejected_full; /* accepted and closed at once: the slab was full */
    uint64_t open;
    uint64_t recv_bytes;
    uint64_t sent_bytes;
    uint64_t timeouts;
    uint64_t recv_nobufs;   /* provided receive buffers ran out */
};

/* Creates the listening socket of shard `index` and its io_uring. Returns NULL
 * (after logging why) on failure. */
struct loop *loop_create(struct loop_shared *shared, unsigned index);
/* Runs the loop until shutdown completes. Pins the calling thread to `cpu` when
 * cpu >= 0. Returns 0. */
int loop_run(struct loop *loop, int cpu);
void loop_destroy(struct loop *loop);

/* Process-wide: asks every shard to stop accepting and drain (async-signal-safe). */
void loop_request_shutdown(void);
/* True once shutdown was asked for (readiness turns false). */
bool loop_stopping(void);
/* Work of the shard's own that must end before it stops (queued audit events being written):
 * while held, a stopping loop keeps running after its last connection closed, until every
 * hold is released or the shutdown deadline (TESSERA_SHUTDOWN_TIMEOUT_MS) has passed. The
 * holder's timer `wake` names the hold; when it has an on_expire it is started with no delay
 * when shutdown begins, so the holder finishes then rather than on its own schedule (a holder
 * with nothing to hurry, its work already in flight, leaves on_expire NULL). At most
 * LOOP_HOLDS_MAX at once; each released with the timer it was taken with; on the shard's
 * thread only. */
#define LOOP_HOLDS_MAX 8
struct loop_timer;
void loop_hold(struct loop *loop, struct loop_timer *wake);
void loop_release(struct loop *loop, struct loop_timer *wake);

/* Hands what the shard queued so far (answers among it) to the kernel now rather than at
 * the end of the iteration: for an answer that must leave before what the shard does next. */
void loop_submit(struct loop *loop);

unsigned loop_index(const struct loop *loop);
struct loop_shared *loop_shared(const struct loop *loop);
const struct loop_counters *loop_counters(const struct loop *loop);
/* Space for the application's per-shard state (set once at start). */
void loop_set_app(struct loop *loop, void *app_shard);
void *loop_app(const struct loop *loop);
/* Cached wall clock, refreshed every tick: an IMF-fixdate for the Date header
 * (RFC 9110 §5.6.7), 29 bytes. */
struct slice loop_http_date(const struct loop *loop);
/* Monotonic time in microseconds, read now. */
uint64_t loop_now_us(void);
/* Sends a message to another shard through the mailbox. -TE_FULL: retry later. */
int loop_send_message(struct loop *loop, unsigned to, const struct ring_msg *msg);

/* Connections. */
struct loop *conn_loop(const struct conn *conn);
void *conn_proto(struct conn *conn); /* LOOP_CONN_PROTO_BYTES, zeroed at open */
/* The output buffer (acquired on first use). NULL if no block can be had. */
struct buf *conn_out(struct conn *conn);
/* Room left for output, without acquiring a block (a fresh block's size when none). */
size_t conn_out_room(const struct conn *conn);
/* Output appended and not yet written to the socket. */
size_t conn_out_pending(const struct conn *conn);
/* Stops or resumes receiving (back-pressure, a parked request). */
void conn_pause_recv(struct conn *conn, bool paused);
/* Closes after the pending output is sent (or at once when immediate). */
void conn_close(struct conn *conn, bool immediate);
bool conn_closing(const struct conn *conn);
void conn_timer_set(struct conn *conn, enum conn_timer timer);
/* Starts sending and receiving as the connection's state now calls for; needed only
 * after changing a connection outside one of its own callbacks (a worker completion). */
void conn_flush(struct conn *conn);
/* Peer address as text, for logs ("" when unknown). */
const char *conn_peer(const struct conn *conn);

/* Watching a file descriptor the loop does not own (a Postgres or Redis socket) for
 * readiness, through a one-shot io_uring poll. on_ready runs once, on the shard's
 * thread, with the poll(2) bits that are ready (POLLIN, POLLOUT, POLLERR, POLLHUP);
 * arm again to keep watching. A watch belongs to one loop and must stay valid as
 * long as that loop runs (it lives in a process-lifetime object such as a shard's
 * database client): a cancelled poll still completes later, and is then ignored. */
struct loop_watch {
    void (*on_ready)(struct loop_watch *watch, unsigned events);
    /* private */
    int fd;
    unsigned events;
    bool armed;
    uint8_t generation; /* bumped by arm and cancel: a late completion is recognised */
};

/* Arms a watch for events (POLLIN and/or POLLOUT). At most one arm at a time. */
void loop_watch_arm(struct loop *loop, struct loop_watch *watch, int fd, unsigned events);
/* Stops a pending arm: on_ready is not called for it. Safe when not armed. */
void loop_watch_cancel(struct loop *loop, struct loop_watch *watch);
bool loop_watch_armed(const struct loop_watch *watch);

/* One-off timers for anything that is not a connection deadline (a query's budget,
 * a reconnect backoff). Expiry is checked every LOOP_TIMER_TICK_MS, so a timer fires
 * between delay and delay + one tick after it was started; on_expire runs on the
 * shard's thread. A started timer must stay valid until it fires or is stopped. */
#define LOOP_TIMERS_MAX 65536 /* per shard: one per query or request in flight */

struct loop_timer {
    void (*on_expire)(struct loop_timer *timer);
    /* private */
    uint64_t deadline_ms;
    uint32_t heap_index; /* 0: not started */
};

/* Starts (or restarts) the timer. Returns 0, or -TE_FULL when LOOP_TIMERS_MAX run. */
int loop_timer_start(struct loop *loop, struct loop_timer *timer, uint64_t delay_ms);
void loop_timer_stop(struct loop *loop, struct loop_timer *timer);
bool loop_timer_active(const struct loop_timer *timer);
/* The loop's cached monotonic time in milliseconds (refreshed every iteration). */
uint64_t loop_now_ms(const struct loop *loop);

/* Request-sized blocks from the shard's pool (cached); loop_destroy frees every block the
 * loop handed out, given back or not. */
char *loop_block_get(struct loop *loop, size_t bytes);
void loop_block_put(struct loop *loop, char *block, size_t bytes);

#endif
