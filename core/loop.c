/* core/loop.c: the shard runtime over io_uring.
 *
 * Contents
 *   1. Connection slots and completion tags
 *   2. Buffer blocks
 *   3. Submissions: accept, recv, send, tick, eventfd reads
 *   4. Connections: open, kick, close, reap
 *   5. Timers and shutdown
 *   6. Completions and the loop
 *   7. Creation, pinning, teardown
 *
 * Receives are single-shot with buffer selection from a provided buffer ring: a
 * connection holds no receive memory while idle, and re-arming only when there is
 * room for the answer is the back-pressure of RFC 9112 §9.3.2 for pipelining
 * clients that never read (H25). */
#include "core/loop.h"

#include <assert.h>
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define LOOP_LISTEN_BACKLOG 4096
#define LOOP_LINGER_MS 2000 /* after an error response: read and drop what the client still
                               sends, so our close does not reset the answer away (RFC 9112 §9.6) */
#define LOOP_BUF_GROUP 0
#define LOOP_BLOCK_CLASSES 8 /* distinct block sizes a shard hands out (output, stash, chunked
                              * body, parked request, and room to spare) */
#define LOOP_PEER_BYTES 64   /* "[ipv6]:port" */
#define LOOP_SHUTDOWN_GRACE_MS 1000 /* past the shutdown deadline, time for closes to complete */

_Static_assert((LOOP_RECV_BUF_COUNT & (LOOP_RECV_BUF_COUNT - 1)) == 0, "buffer ring size is a power of 2");
_Static_assert(LOOP_RECV_BUF_COUNT <= 32768, "io_uring buffer rings hold at most 32768 entries");

static atomic_bool loop_shutdown_requested;

/* ---- 1. Connection slots and completion tags --------------------------------------------- */

enum loop_op {
    OP_ACCEPT = 1,
    OP_RECV,
    OP_SEND,
    OP_TICK,
    OP_MAILBOX,
    OP_WORKERS,
    OP_CANCEL,
    OP_WATCH,
};

enum { TIMER_LINGER = CONN_TIMER_COUNT, TIMER_LISTS };

struct conn {
    struct loop *loop;
    int fd;
    uint32_t index;
    uint16_t gen;        /* bumped when the slot is freed: stale completions are recognised */
    uint8_t inflight;    /* operations the kernel holds: at most one recv and one send */
    bool alive;
    bool recv_armed;
    bool send_armed;
    bool recv_paused;
    bool close_after_send;
    bool lingering;
    bool closing;        /* queued for reaping */
    uint8_t timer;       /* CONN_TIMER_* or TIMER_LINGER, or CONN_TIMER_NONE */
    uint64_t deadline_ms;
    struct conn *timer_prev;
    struct conn *timer_next;
    struct conn *reap_next;
    struct conn *rearm_next;
    struct buf out;
    size_t out_sent;     /* bytes of out already written */
    size_t send_len;     /* bytes of out covered by the send in flight */
    char peer[LOOP_PEER_BYTES];
    alignas(16) unsigned char proto[LOOP_CONN_PROTO_BYTES];
};

struct timer_list {
    struct conn *head;
    struct conn *tail;
    uint64_t duration_ms; /* one duration per list, so appending keeps it sorted */
};

struct block_class {
    size_t bytes;
    size_t cached;
    char *free[LOOP_BLOCKS_CACHED_MAX];
};

/* Every block a loop has malloc'ed, cached or handed out, is on the loop's ring of blocks
 * until freed, so loop_destroy frees the ones still out: a parked request whose worker job
 * was dropped at shutdown never hears its answer, and nothing else would free its state. */
struct block_head {
    alignas(max_align_t) struct block_head *prev;
    struct block_head *next;
};

struct loop {
    struct loop_shared *shared;
    const struct config *cfg;
    unsigned index;
    int listen_fd;
    bool accept_armed;
    bool ring_ready;
    struct io_uring ring;
    struct io_uring_buf_ring *buf_ring;
    char *recv_bufs;
    unsigned bufs_to_return;
    struct conn *slots;
    uint32_t slots_used;  /* high-water mark: slots beyond it were never touched */
    uint32_t *free_slots;
    uint32_t free_count;
    struct conn *reap_head;
    struct conn *rearm_head; /* recv failed for want of buffers: retried next iteration */
    struct timer_list timers[TIMER_LISTS];
    struct block_class blocks[LOOP_BLOCK_CLASSES];
    struct block_head blocks_owned; /* the ring's sentinel */
    uint64_t now_ms;
    time_t date_sec;
    char date[32];
    bool shutting_down;
    uint64_t shutdown_deadline_ms;
    struct loop_timer *holds[LOOP_HOLDS_MAX]; /* loop_hold's wake timers: work that must end
                                               * before the loop returns */
    unsigned hold_count;
    struct __kernel_timespec tick_ts;
    uint64_t mailbox_value;
    uint64_t workers_value;
    struct loop_counters counters;
    struct loop_timer **timer_heap; /* 1-based min-heap by deadline, LOOP_TIMERS_MAX slots */
    uint32_t timer_count;
    void *app;
};

static uint64_t loop_tag(enum loop_op op, const struct conn *conn)
{
    if (conn == NULL)
        return (uint64_t)op << 56;
    return (uint64_t)op << 56 | (uint64_t)conn->gen << 32 | conn->index;
}

static enum loop_op loop_tag_op(uint64_t tag)
{
    return (enum loop_op)(tag >> 56);
}

/* The connection a completion belongs to, NULL when its slot was reused since. */
static struct conn *loop_tag_conn(struct loop *loop, uint64_t tag)
{
    uint32_t index = (uint32_t)tag;
    uint16_t gen = (uint16_t)(tag >> 32);
    assert(index < loop->slots_used);
    struct conn *conn = &loop->slots[index];
    return conn->gen == gen ? conn : NULL;
}

static void loop_counter_add(uint64_t *counter, uint64_t n)
{
    /* Owner-only write; relaxed store so a scrape's relaxed load is race-free. */
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

/* ---- 2. Buffer blocks --------------------------------------------------------------------- */

char *loop_block_get(struct loop *loop, size_t bytes)
{
    for (int i = 0; i < LOOP_BLOCK_CLASSES; i++) {
        struct block_class *bc = &loop->blocks[i];
        if (bc->bytes == bytes && bc->cached > 0)
            return bc->free[--bc->cached];
    }
    struct block_head *head = malloc(sizeof(*head) + bytes);
    if (head == NULL)
        return NULL;
    head->prev = &loop->blocks_owned;
    head->next = loop->blocks_owned.next;
    head->next->prev = head;
    loop->blocks_owned.next = head;
    return (char *)(head + 1);
}

static void loop_block_free(char *block)
{
    struct block_head *head = (struct block_head *)block - 1;
    head->prev->next = head->next;
    head->next->prev = head->prev;
    free(head);
}

void loop_block_put(struct loop *loop, char *block, size_t bytes)
{
    if (block == NULL)
        return;
    for (int i = 0; i < LOOP_BLOCK_CLASSES; i++) {
        struct block_class *bc = &loop->blocks[i];
        if (bc->bytes == 0)
            bc->bytes = bytes;
        if (bc->bytes != bytes)
            continue;
        if (bc->cached < LOOP_BLOCKS_CACHED_MAX) {
            bc->free[bc->cached++] = block;
            return;
        }
        break;
    }
    loop_block_free(block);
}

/* The cached blocks and those still out. */
static void loop_blocks_free(struct loop *loop)
{
    for (int i = 0; i < LOOP_BLOCK_CLASSES; i++)
        loop->blocks[i].cached = 0;
    while (loop->blocks_owned.next != &loop->blocks_owned)
        loop_block_free((char *)(loop->blocks_owned.next + 1));
}

/* ---- 3. Submissions ----------------------------------------------------------------------- */

static struct io_uring_sqe *loop_sqe(struct loop *loop)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
    if (sqe == NULL) {
        /* The submission queue is full: hand it to the kernel and take a fresh entry. */
        io_uring_submit(&loop->ring);
        sqe = io_uring_get_sqe(&loop->ring);
    }
    assert(sqe != NULL);
    return sqe;
}

static void loop_arm_accept(struct loop *loop)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_multishot_accept(sqe, loop->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, loop_tag(OP_ACCEPT, NULL));
    loop->accept_armed = true;
}

static void loop_arm_recv(struct conn *conn)
{
    assert(!conn->recv_armed);
    struct io_uring_sqe *sqe = loop_sqe(conn->loop);
    io_uring_prep_recv(sqe, conn->fd, NULL, LOOP_RECV_BUF_BYTES, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = LOOP_BUF_GROUP;
    io_uring_sqe_set_data64(sqe, loop_tag(OP_RECV, conn));
    conn->recv_armed = true;
    conn->inflight++;
}

void loop_submit(struct loop *loop)
{
    io_uring_submit(&loop->ring);
}

static void loop_arm_send(struct conn *conn)
{
    assert(!conn->send_armed);
    assert(conn->out.len > conn->out_sent);
    struct io_uring_sqe *sqe = loop_sqe(conn->loop);
    conn->send_len = conn->out.len - conn->out_sent;
    io_uring_prep_send(sqe, conn->fd, conn->out.data + conn->out_sent, conn->send_len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, loop_tag(OP_SEND, conn));
    conn->send_armed = true;
    conn->inflight++;
}

static void loop_arm_tick(struct loop *loop)
{
    loop->tick_ts.tv_sec = 0;
    loop->tick_ts.tv_nsec = (long long)LOOP_TIMER_TICK_MS * 1000000;
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_timeout(sqe, &loop->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, loop_tag(OP_TICK, NULL));
}

static void loop_arm_eventfd(struct loop *loop, enum loop_op op, int fd, uint64_t *value)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_read(sqe, fd, value, sizeof(*value), 0);
    io_uring_sqe_set_data64(sqe, loop_tag(op, NULL));
}

/* ---- 4. Connections ----------------------------------------------------------------------- */

struct loop *conn_loop(const struct conn *conn) { return conn->loop; }
void *conn_proto(struct conn *conn) { return conn->proto; }
const char *conn_peer(const struct conn *conn) { return conn->peer; }
bool conn_closing(const struct conn *conn) { return conn->closing || conn->close_after_send; }

size_t conn_out_pending(const struct conn *conn)
{
    return conn->out.len - conn->out_sent;
}

size_t conn_out_room(const struct conn *conn)
{
    return conn->out.data ? conn->out.cap - conn->out.len : LOOP_OUT_BUF_BYTES;
}

struct buf *conn_out(struct conn *conn)
{
    if (conn->out.data == NULL) {
        char *block = loop_block_get(conn->loop, LOOP_OUT_BUF_BYTES);
        if (block == NULL)
            return NULL;
        buf_init(&conn->out, block, LOOP_OUT_BUF_BYTES);
        conn->out_sent = 0;
    }
    return &conn->out;
}

static void conn_out_release(struct conn *conn)
{
    loop_block_put(conn->loop, conn->out.data, LOOP_OUT_BUF_BYTES);
    buf_init(&conn->out, NULL, 0);
    conn->out_sent = 0;
}

static void timer_unlink(struct conn *conn)
{
    if (conn->timer == CONN_TIMER_NONE)
        return;
    struct timer_list *list = &conn->loop->timers[conn->timer];
    if (conn->timer_prev)
        conn->timer_prev->timer_next = conn->timer_next;
    else
        list->head = conn->timer_next;
    if (conn->timer_next)
        conn->timer_next->timer_prev = conn->timer_prev;
    else
        list->tail = conn->timer_prev;
    conn->timer_prev = conn->timer_next = NULL;
    conn->timer = CONN_TIMER_NONE;
}

static void timer_append(struct conn *conn, unsigned timer)
{
    timer_unlink(conn);
    if (timer == CONN_TIMER_NONE)
        return;
    struct timer_list *list = &conn->loop->timers[timer];
    conn->timer = (uint8_t)timer;
    conn->deadline_ms = conn->loop->now_ms + list->duration_ms;
    conn->timer_prev = list->tail;
    conn->timer_next = NULL;
    if (list->tail)
        list->tail->timer_next = conn;
    else
        list->head = conn;
    list->tail = conn;
}

void conn_timer_set(struct conn *conn, enum conn_timer timer)
{
    assert(timer < CONN_TIMER_COUNT);
    if (conn->lingering || conn->closing)
        return; /* the linger deadline stands */
    timer_append(conn, timer);
}

static void conn_queue_reap(struct conn *conn)
{
    conn->closing = true;
    conn->reap_next = conn->loop->reap_head;
    conn->loop->reap_head = conn;
}

void conn_close(struct conn *conn, bool immediate)
{
    if (conn->closing)
        return;
    if (!immediate && conn_out_pending(conn) > 0) {
        conn->close_after_send = true; /* the send completion starts the lingering close */
        timer_append(conn, CONN_TIMER_IDLE); /* a client that stops reading is cut (H25) */
        return;
    }
    if (!immediate && !conn->lingering) {
        /* Half-close and read until the client closes or the linger deadline: a close with
         * unread input would reset the connection and could destroy our last answer. */
        conn->lingering = true;
        shutdown(conn->fd, SHUT_WR);
        timer_append(conn, TIMER_LINGER);
        if (!conn->recv_armed)
            loop_arm_recv(conn);
        return;
    }
    timer_unlink(conn);
    if (conn->inflight > 0)
        shutdown(conn->fd, SHUT_RDWR); /* completes the operations the kernel holds */
    conn_queue_reap(conn);
}

void conn_pause_recv(struct conn *conn, bool paused)
{
    conn->recv_paused = paused;
}

/* After any callback: start what the connection's state now calls for. */
static void conn_kick(struct conn *conn)
{
    if (conn->closing)
        return;
    if (conn_out_pending(conn) > 0 && !conn->send_armed)
        loop_arm_send(conn);
    else if (conn->out.data != NULL && !conn->send_armed && conn_out_pending(conn) == 0)
        conn_out_release(conn); /* an idle connection holds no output memory */
    bool want_recv = conn->lingering || (!conn->recv_paused && !conn->close_after_send);
    if (want_recv && !conn->recv_armed)
        loop_arm_recv(conn);
}

void conn_flush(struct conn *conn)
{
    conn_kick(conn);
}

static struct conn *conn_slot_take(struct loop *loop)
{
    if (loop->free_count > 0)
        return &loop->slots[loop->free_slots[--loop->free_count]];
    if (loop->slots_used < loop->cfg->connections_max) {
        struct conn *conn = &loop->slots[loop->slots_used];
        conn->index = loop->slots_used++;
        return conn;
    }
    return NULL;
}

static void conn_format_peer(struct conn *conn)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    conn->peer[0] = '\0';
    if (getpeername(conn->fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(conn->peer, sizeof(conn->peer), "%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", host, ntohs(a->sin6_port));
    }
}

static void conn_open(struct loop *loop, int fd)
{
    struct conn *conn = conn_slot_take(loop);
    if (conn == NULL) {
        loop_counter_add(&loop->counters.rejected_full, 1);
        close(fd);
        return;
    }
    uint32_t index = conn->index;
    uint16_t gen = conn->gen;
    memset(conn, 0, sizeof(*conn));
    conn->index = index;
    conn->gen = gen;
    conn->loop = loop;
    conn->fd = fd;
    conn->alive = true;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_format_peer(conn);
    loop_counter_add(&loop->counters.accepted, 1);
    loop_counter_add(&loop->counters.open, 1);
    /* A fresh connection gets the header deadline: a silent client is a slowloris. */
    timer_append(conn, CONN_TIMER_HEADER);
    loop->shared->handler->on_open(conn);
    conn_kick(conn);
}

static void conn_free(struct conn *conn)
{
    struct loop *loop = conn->loop;
    assert(conn->inflight == 0);
    timer_unlink(conn);
    loop->shared->handler->on_close(conn);
    close(conn->fd);
    conn_out_release(conn);
    conn->alive = false;
    conn->gen++;
    loop->free_slots[loop->free_count++] = conn->index;
    loop_counter_add(&loop->counters.open, (uint64_t)-1);
}

/* End of an iteration: free the closed connections the kernel no longer holds. */
static void loop_reap(struct loop *loop)
{
    struct conn **link = &loop->reap_head;
    while (*link) {
        struct conn *conn = *link;
        if (conn->inflight > 0) {
            link = &conn->reap_next;
            continue;
        }
        *link = conn->reap_next;
        conn_free(conn);
    }
}

/* ---- 5. Timers and shutdown --------------------------------------------------------------- */

uint64_t loop_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void loop_update_clock(struct loop *loop)
{
    loop->now_ms = loop_now_us() / 1000u;
    time_t now = time(NULL);
    if (now == loop->date_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(loop->date, sizeof(loop->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    loop->date_sec = now;
}

static void loop_expire_timers(struct loop *loop)
{
    for (unsigned t = CONN_TIMER_HEADER; t < TIMER_LISTS; t++) {
        struct timer_list *list = &loop->timers[t];
        while (list->head != NULL && list->head->deadline_ms <= loop->now_ms) {
            struct conn *conn = list->head;
            timer_unlink(conn);
            loop_counter_add(&loop->counters.timeouts, 1);
            if (t == TIMER_LINGER) {
                conn_close(conn, true);
                continue;
            }
            loop->shared->handler->on_timeout(conn, (enum conn_timer)t);
            conn_kick(conn);
        }
    }
}

void loop_request_shutdown(void)
{
    atomic_store(&loop_shutdown_requested, true);
}

void loop_hold(struct loop *loop, struct loop_timer *wake)
{
    assert(loop->hold_count < LOOP_HOLDS_MAX);
    loop->holds[loop->hold_count++] = wake;
}

void loop_release(struct loop *loop, struct loop_timer *wake)
{
    for (unsigned i = 0; i < loop->hold_count; i++) {
        if (loop->holds[i] == wake) {
            loop->holds[i] = loop->holds[--loop->hold_count];
            return;
        }
    }
    assert(!"loop_release of a timer that holds nothing");
}

bool loop_stopping(void)
{
    return atomic_load_explicit(&loop_shutdown_requested, memory_order_relaxed);
}

static void loop_begin_shutdown(struct loop *loop)
{
    loop->shutting_down = true;
    loop->shutdown_deadline_ms = loop->now_ms + loop->cfg->shutdown_timeout_ms;
    if (loop->accept_armed) {
        struct io_uring_sqe *sqe = loop_sqe(loop);
        io_uring_prep_cancel64(sqe, loop_tag(OP_ACCEPT, NULL), 0);
        io_uring_sqe_set_data64(sqe, loop_tag(OP_CANCEL, NULL));
    }
    /* Stop listening now, not at exit: connections the kernel would otherwise complete
     * into the backlog would wait unanswered until the process ends. shutdown resets
     * the backlog; the pending accept keeps its own reference until cancelled. */
    shutdown(loop->listen_fd, SHUT_RDWR);
    close(loop->listen_fd);
    loop->listen_fd = -1;
    for (uint32_t i = 0; i < loop->slots_used; i++) {
        struct conn *conn = &loop->slots[i];
        if (!conn->alive || conn->closing)
            continue;
        loop->shared->handler->on_shutdown(conn);
        conn_kick(conn);
    }
    for (unsigned i = 0; i < loop->hold_count; i++) {
        if (loop->holds[i]->on_expire != NULL) /* the holder finishes now, not on its schedule */
            loop_timer_start(loop, loop->holds[i], 0);
    }
}

/* True when the loop may return. Past the deadline every connection is cut. */
static bool loop_shutdown_step(struct loop *loop)
{
    if (!loop->shutting_down && atomic_load_explicit(&loop_shutdown_requested, memory_order_relaxed))
        loop_begin_shutdown(loop);
    if (!loop->shutting_down)
        return false;
    if (loop->counters.open == 0 && !loop->accept_armed && loop->hold_count == 0)
        return true;
    if (loop->now_ms >= loop->shutdown_deadline_ms) {
        for (uint32_t i = 0; i < loop->slots_used; i++) {
            if (loop->slots[i].alive)
                conn_close(&loop->slots[i], true);
        }
    }
    return loop->now_ms >= loop->shutdown_deadline_ms + LOOP_SHUTDOWN_GRACE_MS;
}

/* ---- 5b. Watches and one-off timers ------------------------------------------------------ */

/* A watch's completion tag: op (8 bits) | generation (8 bits) | pointer (48 bits). The
 * generation is bumped by every arm and cancel, so a cancelled poll that completes
 * late is recognised and ignored. */
#define LOOP_WATCH_PTR_MASK ((UINT64_C(1) << 48) - 1)

static uint64_t loop_watch_tag(const struct loop_watch *watch)
{
    uint64_t ptr = (uint64_t)(uintptr_t)watch;
    assert((ptr & ~LOOP_WATCH_PTR_MASK) == 0); /* user-space pointers fit 48 bits on x86-64 */
    return (uint64_t)OP_WATCH << 56 | (uint64_t)(watch->generation & 0xff) << 48 | ptr;
}

void loop_watch_arm(struct loop *loop, struct loop_watch *watch, int fd, unsigned events)
{
    assert(!watch->armed);
    assert(watch->on_ready != NULL);
    watch->generation++;
    watch->fd = fd;
    watch->events = events;
    watch->armed = true;
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_poll_add(sqe, fd, events);
    io_uring_sqe_set_data64(sqe, loop_watch_tag(watch));
}

void loop_watch_cancel(struct loop *loop, struct loop_watch *watch)
{
    if (!watch->armed)
        return;
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_poll_remove(sqe, loop_watch_tag(watch));
    io_uring_sqe_set_data64(sqe, loop_tag(OP_CANCEL, NULL));
    watch->generation++;
    watch->armed = false;
}

bool loop_watch_armed(const struct loop_watch *watch)
{
    return watch->armed;
}

static void loop_on_watch(uint64_t tag, int res)
{
    struct loop_watch *watch = (struct loop_watch *)(uintptr_t)(tag & LOOP_WATCH_PTR_MASK);
    if (!watch->armed || (uint8_t)(tag >> 48) != (uint8_t)watch->generation)
        return; /* cancelled, or an older arm */
    watch->armed = false;
    unsigned events = res < 0 ? (unsigned)POLLERR : (unsigned)res;
    watch->on_ready(watch, events);
}

static void timer_heap_place(struct loop *loop, uint32_t i, struct loop_timer *timer)
{
    loop->timer_heap[i] = timer;
    timer->heap_index = i;
}

static void timer_heap_up(struct loop *loop, uint32_t i)
{
    struct loop_timer *timer = loop->timer_heap[i];
    while (i > 1 && loop->timer_heap[i / 2]->deadline_ms > timer->deadline_ms) {
        timer_heap_place(loop, i, loop->timer_heap[i / 2]);
        i /= 2;
    }
    timer_heap_place(loop, i, timer);
}

static void timer_heap_down(struct loop *loop, uint32_t i)
{
    struct loop_timer *timer = loop->timer_heap[i];
    for (;;) {
        uint32_t child = 2 * i;
        if (child > loop->timer_count)
            break;
        if (child < loop->timer_count &&
            loop->timer_heap[child + 1]->deadline_ms < loop->timer_heap[child]->deadline_ms)
            child++;
        if (loop->timer_heap[child]->deadline_ms >= timer->deadline_ms)
            break;
        timer_heap_place(loop, i, loop->timer_heap[child]);
        i = child;
    }
    timer_heap_place(loop, i, timer);
}

void loop_timer_stop(struct loop *loop, struct loop_timer *timer)
{
    uint32_t i = timer->heap_index;
    if (i == 0)
        return;
    assert(i <= loop->timer_count && loop->timer_heap[i] == timer);
    struct loop_timer *last = loop->timer_heap[loop->timer_count--];
    timer->heap_index = 0;
    if (last == timer)
        return;
    timer_heap_place(loop, i, last);
    timer_heap_up(loop, i);
    timer_heap_down(loop, last->heap_index);
}

int loop_timer_start(struct loop *loop, struct loop_timer *timer, uint64_t delay_ms)
{
    assert(timer->on_expire != NULL);
    loop_timer_stop(loop, timer);
    if (loop->timer_count == LOOP_TIMERS_MAX)
        return -TE_FULL;
    /* At least 1 ms: a timer restarted from its own on_expire must not fire again in
     * the same pass (now_ms does not move during it). */
    timer->deadline_ms = loop->now_ms + (delay_ms > 0 ? delay_ms : 1);
    loop->timer_count++;
    timer_heap_place(loop, loop->timer_count, timer);
    timer_heap_up(loop, loop->timer_count);
    return 0;
}

bool loop_timer_active(const struct loop_timer *timer)
{
    return timer->heap_index != 0;
}

uint64_t loop_now_ms(const struct loop *loop)
{
    return loop->now_ms;
}

static void loop_expire_one_off_timers(struct loop *loop)
{
    while (loop->timer_count > 0 && loop->timer_heap[1]->deadline_ms <= loop->now_ms) {
        struct loop_timer *timer = loop->timer_heap[1];
        loop_timer_stop(loop, timer);
        timer->on_expire(timer); /* may start timers again: the heap is consistent here */
    }
}

/* ---- 6. Completions and the loop ---------------------------------------------------------- */

static void loop_on_accept(struct loop *loop, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        loop->accept_armed = false;
    if (cqe->res >= 0) {
        if (loop->shutting_down)
            close(cqe->res);
        else
            conn_open(loop, cqe->res);
    } else if (cqe->res != -ECANCELED) {
        log_msg(LOG_WARN, "accept failed", "error", strerror(-cqe->res), NULL);
    }
    if (!loop->accept_armed && !loop->shutting_down)
        loop_arm_accept(loop);
}

static void loop_return_buffer(struct loop *loop, unsigned bid)
{
    char *data = loop->recv_bufs + (size_t)bid * LOOP_RECV_BUF_BYTES;
    io_uring_buf_ring_add(loop->buf_ring, data, LOOP_RECV_BUF_BYTES, (unsigned short)bid,
                          io_uring_buf_ring_mask(LOOP_RECV_BUF_COUNT), (int)loop->bufs_to_return);
    loop->bufs_to_return++;
}

static void loop_on_recv(struct loop *loop, struct conn *conn, struct io_uring_cqe *cqe)
{
    conn->recv_armed = false;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0 && !conn->closing && !conn->lingering) {
            loop_counter_add(&loop->counters.recv_bytes, (uint64_t)cqe->res);
            const char *data = loop->recv_bufs + (size_t)bid * LOOP_RECV_BUF_BYTES;
            loop->shared->handler->on_data(conn, data, (size_t)cqe->res);
        }
        loop_return_buffer(loop, bid);
    }
    if (cqe->res == -ENOBUFS) {
        loop_counter_add(&loop->counters.recv_nobufs, 1);
        conn->rearm_next = loop->rearm_head;
        loop->rearm_head = conn;
        conn->recv_armed = true; /* held back until the buffers come home */
        conn->inflight++;
        return;
    }
    if (cqe->res == 0 || (cqe->res < 0 && cqe->res != -EINTR && cqe->res != -EAGAIN)) {
        conn_close(conn, true); /* the peer closed or the socket failed */
        return;
    }
    conn_kick(conn);
}

static void loop_on_send(struct loop *loop, struct conn *conn, struct io_uring_cqe *cqe)
{
    conn->send_armed = false;
    if (cqe->res < 0 && cqe->res != -EINTR && cqe->res != -EAGAIN) {
        conn_close(conn, true);
        return;
    }
    if (cqe->res > 0) {
        conn->out_sent += (size_t)cqe->res;
        loop_counter_add(&loop->counters.sent_bytes, (uint64_t)cqe->res);
    }
    if (conn_out_pending(conn) > 0) {
        conn_kick(conn);
        return;
    }
    conn_out_release(conn);
    if (conn->close_after_send) {
        conn->close_after_send = false;
        conn_close(conn, false);
        return;
    }
    if (!conn->closing)
        loop->shared->handler->on_sent(conn);
    conn_kick(conn);
}

static void loop_on_message(void *arg, const struct ring_msg *msg)
{
    struct loop *loop = arg;
    if (loop->shared->on_message)
        loop->shared->on_message(loop, msg);
}

static void loop_dispatch(struct loop *loop, struct io_uring_cqe *cqe)
{
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    enum loop_op op = loop_tag_op(tag);
    if (op == OP_RECV || op == OP_SEND) {
        struct conn *conn = loop_tag_conn(loop, tag);
        assert(conn != NULL); /* a slot is freed only once nothing is in flight */
        assert(conn->inflight > 0);
        conn->inflight--;
        if (op == OP_RECV)
            loop_on_recv(loop, conn, cqe);
        else
            loop_on_send(loop, conn, cqe);
        return;
    }
    switch (op) {
    case OP_ACCEPT:
        loop_on_accept(loop, cqe);
        break;
    case OP_TICK:
        loop_update_clock(loop);
        loop_expire_timers(loop);
        loop_expire_one_off_timers(loop);
        loop_arm_tick(loop);
        break;
    case OP_WATCH:
        loop_on_watch(tag, cqe->res);
        break;
    case OP_MAILBOX:
        mailbox_drain(loop->shared->mailbox, loop->index, loop_on_message, loop, LOOP_DRAIN_BATCH_MAX);
        loop_arm_eventfd(loop, OP_MAILBOX, mailbox_eventfd(loop->shared->mailbox, loop->index),
                         &loop->mailbox_value);
        break;
    case OP_WORKERS:
        workers_drain(loop->shared->workers, loop->index, LOOP_DRAIN_BATCH_MAX);
        loop_arm_eventfd(loop, OP_WORKERS, workers_eventfd(loop->shared->workers, loop->index),
                         &loop->workers_value);
        break;
    default:
        break; /* OP_CANCEL: nothing to do */
    }
}

/* Connections whose recv found no buffer: the buffers are back now, try again. */
static void loop_rearm_starved(struct loop *loop)
{
    while (loop->rearm_head) {
        struct conn *conn = loop->rearm_head;
        loop->rearm_head = conn->rearm_next;
        conn->rearm_next = NULL;
        conn->recv_armed = false;
        conn->inflight--;
        if (conn->closing)
            continue;
        conn_kick(conn);
    }
}

static void loop_iterate(struct loop *loop)
{
    io_uring_submit_and_wait(&loop->ring, 1);
    loop->now_ms = loop_now_us() / 1000u;
    unsigned head;
    unsigned seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&loop->ring, head, cqe) {
        loop_dispatch(loop, cqe);
        seen++;
    }
    io_uring_cq_advance(&loop->ring, seen);
    if (loop->bufs_to_return > 0) {
        io_uring_buf_ring_advance(loop->buf_ring, (int)loop->bufs_to_return);
        loop->bufs_to_return = 0;
    }
    loop_rearm_starved(loop);
    loop_reap(loop);
    log_flush();
}

/* ---- 7. Creation, pinning, teardown ------------------------------------------------------- */

/* sin_port and sin6_port lie at the same offset: one accessor serves both families. */
_Static_assert(offsetof(struct sockaddr_in, sin_port) == offsetof(struct sockaddr_in6, sin6_port),
               "port offsets agree");

static int sockaddr_port(const struct sockaddr_storage *ss)
{
    uint16_t port;
    memcpy(&port, (const char *)ss + offsetof(struct sockaddr_in, sin_port), sizeof(port));
    return ntohs(port);
}

static void sockaddr_set_port(struct sockaddr_storage *ss, int port)
{
    uint16_t net = htons((uint16_t)port);
    memcpy((char *)ss + offsetof(struct sockaddr_in, sin_port), &net, sizeof(net));
}

static int loop_listen(struct loop *loop)
{
    const struct config *cfg = loop->cfg;
    struct sockaddr_storage addr;
    memcpy(&addr, &cfg->listen_addr, sizeof(addr));
    int port0 = sockaddr_port(&addr) == 0;
    if (port0 && loop->shared->listen_port > 0)
        sockaddr_set_port(&addr, loop->shared->listen_port);
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -TE_IO;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* One listening socket per shard; the kernel spreads connections (DESIGN §1). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, cfg->listen_addr_len) != 0 ||
        listen(fd, LOOP_LISTEN_BACKLOG) != 0) {
        log_msg(LOG_ERROR, "cannot listen", "address", cfg->listen_text, "error", strerror(errno), NULL);
        close(fd);
        return -TE_IO;
    }
    if (loop->shared->listen_port == 0) {
        struct sockaddr_storage bound;
        socklen_t len = sizeof(bound);
        getsockname(fd, (struct sockaddr *)&bound, &len);
        loop->shared->listen_port = sockaddr_port(&bound);
    }
    loop->listen_fd = fd;
    return 0;
}

struct loop *loop_create(struct loop_shared *shared, unsigned index)
{
    struct loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->shared = shared;
    loop->cfg = shared->cfg;
    loop->index = index;
    loop->listen_fd = -1;
    loop->blocks_owned.prev = loop->blocks_owned.next = &loop->blocks_owned;
    /* The slab is reserved whole but touched slot by slot: idle capacity costs no RSS. */
    loop->slots = calloc(loop->cfg->connections_max, sizeof(struct conn));
    loop->free_slots = calloc(loop->cfg->connections_max, sizeof(uint32_t));
    loop->timer_heap = calloc((size_t)LOOP_TIMERS_MAX + 1, sizeof(*loop->timer_heap));
    uint32_t durations[TIMER_LISTS] = {
        [CONN_TIMER_HEADER] = loop->cfg->header_timeout_ms,
        [CONN_TIMER_BODY] = loop->cfg->body_timeout_ms,
        [CONN_TIMER_IDLE] = loop->cfg->idle_timeout_ms,
        [TIMER_LINGER] = LOOP_LINGER_MS,
    };
    for (int t = 0; t < TIMER_LISTS; t++)
        loop->timers[t].duration_ms = durations[t];
    if (loop->slots == NULL || loop->free_slots == NULL || loop->timer_heap == NULL ||
        loop_listen(loop) != 0) {
        loop_destroy(loop);
        return NULL;
    }
    loop_update_clock(loop);
    return loop;
}

/* io_uring set up on the shard's own thread: SINGLE_ISSUER binds the ring to it. */
static int loop_ring_init(struct loop *loop)
{
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    params.cq_entries = LOOP_SQ_ENTRIES * 2;
    int rc = io_uring_queue_init_params(LOOP_SQ_ENTRIES, &loop->ring, &params);
    if (rc == -EINVAL) { /* an older kernel: the same loop without the task-run hints */
        memset(&params, 0, sizeof(params));
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = LOOP_SQ_ENTRIES * 2;
        rc = io_uring_queue_init_params(LOOP_SQ_ENTRIES, &loop->ring, &params);
    }
    if (rc != 0) {
        log_msg(LOG_ERROR, "io_uring_queue_init failed", "error", strerror(-rc), NULL);
        return -TE_IO;
    }
    loop->ring_ready = true;
    size_t ring_bytes = LOOP_RECV_BUF_COUNT * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    loop->recv_bufs = malloc((size_t)LOOP_RECV_BUF_COUNT * LOOP_RECV_BUF_BYTES);
    if (mem == MAP_FAILED || loop->recv_bufs == NULL)
        return -TE_NOMEM;
    loop->buf_ring = mem;
    struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)mem,
                                    .ring_entries = LOOP_RECV_BUF_COUNT,
                                    .bgid = LOOP_BUF_GROUP };
    rc = io_uring_register_buf_ring(&loop->ring, &reg, 0);
    if (rc != 0) {
        log_msg(LOG_ERROR, "io_uring_register_buf_ring failed", "error", strerror(-rc), NULL);
        return -TE_IO;
    }
    io_uring_buf_ring_init(loop->buf_ring);
    for (unsigned bid = 0; bid < LOOP_RECV_BUF_COUNT; bid++)
        loop_return_buffer(loop, bid);
    io_uring_buf_ring_advance(loop->buf_ring, (int)loop->bufs_to_return);
    loop->bufs_to_return = 0;
    return 0;
}

static void loop_pin(struct loop *loop, int cpu)
{
    char name[16];
    snprintf(name, sizeof(name), "tessera-sh%u", loop->index);
    pthread_setname_np(pthread_self(), name);
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc != 0)
        log_msg(LOG_WARN, "cannot pin shard to its core", "error", strerror(rc), NULL);
}

int loop_run(struct loop *loop, int cpu)
{
    log_thread_init((int)loop->index, true);
    loop_pin(loop, cpu);
    if (loop_ring_init(loop) != 0) {
        log_flush();
        return -TE_IO;
    }
    loop_arm_accept(loop);
    loop_arm_tick(loop);
    if (loop->shared->mailbox)
        loop_arm_eventfd(loop, OP_MAILBOX, mailbox_eventfd(loop->shared->mailbox, loop->index),
                         &loop->mailbox_value);
    if (loop->shared->workers)
        loop_arm_eventfd(loop, OP_WORKERS, workers_eventfd(loop->shared->workers, loop->index),
                         &loop->workers_value);
    if (loop->shared->on_start)
        loop->shared->on_start(loop);
    while (!loop_shutdown_step(loop))
        loop_iterate(loop);
    if (loop->shared->on_stop)
        loop->shared->on_stop(loop);
    log_flush();
    return 0;
}

void loop_destroy(struct loop *loop)
{
    if (loop == NULL)
        return;
    if (loop->ring_ready)
        io_uring_queue_exit(&loop->ring);
    if (loop->listen_fd >= 0)
        close(loop->listen_fd);
    for (uint32_t i = 0; loop->slots && i < loop->slots_used; i++) {
        struct conn *conn = &loop->slots[i];
        if (conn->alive) {
            close(conn->fd);
            conn_out_release(conn);
        }
    }
    if (loop->buf_ring)
        munmap(loop->buf_ring, LOOP_RECV_BUF_COUNT * sizeof(struct io_uring_buf));
    loop_blocks_free(loop);
    free(loop->recv_bufs);
    free(loop->slots);
    free(loop->free_slots);
    free(loop->timer_heap);
    free(loop);
}

unsigned loop_index(const struct loop *loop) { return loop->index; }
struct loop_shared *loop_shared(const struct loop *loop) { return loop->shared; }
const struct loop_counters *loop_counters(const struct loop *loop) { return &loop->counters; }
void loop_set_app(struct loop *loop, void *app_shard) { loop->app = app_shard; }
void *loop_app(const struct loop *loop) { return loop->app; }

struct slice loop_http_date(const struct loop *loop)
{
    return slice_make(loop->date, strlen(loop->date));
}

int loop_send_message(struct loop *loop, unsigned to, const struct ring_msg *msg)
{
    return mailbox_send(loop->shared->mailbox, loop->index, to, msg);
}
