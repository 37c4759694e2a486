/* tests/core/test_ring.c: proves that the ring and the mailbox (core/ring.c)
 *  - carry 10 million messages from one thread to another with none lost, none
 *    duplicated and order kept (sequence numbers and payload checked);
 *  - apply back-pressure: a ring holding RING_SLOTS messages refuses the next with
 *    -TE_FULL, and takes one more after one pop (nothing is dropped);
 *  - write a shard's eventfd once per drain at most (the counter read is 1 after a
 *    burst), wake a shard whose drain stopped at max, and drain round robin with
 *    per-sender order;
 *  - between 4 shard threads that each send 1 million messages to each other, lose
 *    no message and no wake-up (a receiver with nothing to do sleeps in poll() on its
 *    eventfd with no other way to wake: a lost wake-up hangs it until the deadline),
 *    keep per-sender order, and write each eventfd at most once per drain (+1);
 *  - wake a sleeping receiver for every one of 50,000 ping-pong round trips between
 *    two shards that drain only when their eventfd says so.
 * No timing assertions; every wait is bounded by TEST_DEADLINE_S. */
#include "core/ring.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef TEST_DEADLINE_S
#define TEST_DEADLINE_S 120             /* a hang (lost wake-up, deadlock) fails, not blocks */
#endif
#define TEST_SPSC_MESSAGES 10000000ULL  /* the brief: 10 million through one ring */
#define TEST_MAILBOX_SHARDS 4
#define TEST_MAILBOX_MESSAGES 1000000ULL /* per ordered pair of shards */
#define TEST_SEND_BATCH 64              /* sends to one peer before turning to the next */
#define TEST_DRAIN_MAX 256              /* messages per drain, as a shard loop would cap it */
#define TEST_POLL_MS 1000               /* one poll() wait; the deadline bounds the total */
#define TEST_PINGPONG_ROUNDS 50000 /* round trips, each through two sleeping receivers */
#define TEST_KIND 7u

static atomic_int test_failures;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            atomic_fetch_add(&test_failures, 1);                                \
        }                                                                       \
    } while (0)

static time_t test_start;

static bool test_deadline_passed(void)
{
    return time(NULL) - test_start > TEST_DEADLINE_S;
}

/* The payload words a message with sequence number seq carries. */
static uint64_t test_payload(uint64_t seq)
{
    return seq * 0x9e3779b97f4a7c15ULL ^ 0x5bd1e995ULL;
}

/* Reads an eventfd's counter without blocking: its value, or 0 when unset. */
static uint64_t test_eventfd_take(int fd)
{
    uint64_t value = 0;
    ssize_t n = read(fd, &value, sizeof(value));
    if (n < 0) {
        CHECK(errno == EAGAIN);
        return 0;
    }
    CHECK(n == (ssize_t)sizeof(value));
    return value;
}

/* ---- one ring, two threads ---- */

static void *test_spsc_producer(void *arg)
{
    struct ring *ring = arg;
    for (uint64_t seq = 0; seq < TEST_SPSC_MESSAGES;) {
        struct ring_msg msg = { .kind = TEST_KIND, .from = 1, .a = seq, .b = test_payload(seq),
                                .ptr = (void *)(uintptr_t)seq };
        int rc = ring_push(ring, &msg);
        if (rc == 0) {
            seq++;
            continue;
        }
        CHECK(rc == -TE_FULL);
        if (test_deadline_passed() || atomic_load(&test_failures) > 0)
            return NULL;
        sched_yield();
    }
    return NULL;
}

static void test_spsc(void)
{
    struct ring *ring = aligned_alloc(CACHE_LINE_BYTES, sizeof(*ring));
    CHECK(ring != NULL);
    ring_init(ring);
    pthread_t producer;
    CHECK(pthread_create(&producer, NULL, test_spsc_producer, ring) == 0);
    uint64_t expected = 0;
    while (expected < TEST_SPSC_MESSAGES) {
        struct ring_msg msg;
        int rc = ring_pop(ring, &msg);
        if (rc != 0) {
            CHECK(rc == -TE_EMPTY);
            if (test_deadline_passed() || atomic_load(&test_failures) > 0)
                break;
            sched_yield();
            continue;
        }
        if (msg.a != expected || msg.b != test_payload(expected) || msg.kind != TEST_KIND ||
            msg.ptr != (void *)(uintptr_t)expected) {
            fprintf(stderr, "spsc: got seq %llu, expected %llu\n", (unsigned long long)msg.a,
                    (unsigned long long)expected);
            CHECK(false);
            break;
        }
        expected++;
    }
    pthread_join(producer, NULL);
    CHECK(expected == TEST_SPSC_MESSAGES);
    struct ring_msg extra;
    CHECK(ring_pop(ring, &extra) == -TE_EMPTY); /* nothing duplicated at the end */
    CHECK(ring_count(ring) == 0);
    free(ring);
}

/* ---- back-pressure ---- */

static void test_full(void)
{
    struct ring *ring = aligned_alloc(CACHE_LINE_BYTES, sizeof(*ring));
    CHECK(ring != NULL);
    ring_init(ring);
    struct ring_msg msg = { .kind = TEST_KIND };
    for (uint64_t i = 0; i < RING_SLOTS; i++) {
        msg.a = i;
        CHECK(ring_push(ring, &msg) == 0);
    }
    CHECK(ring_count(ring) == RING_SLOTS);
    msg.a = RING_SLOTS;
    CHECK(ring_push(ring, &msg) == -TE_FULL);
    CHECK(ring_push(ring, &msg) == -TE_FULL); /* still full, still refused */
    struct ring_msg out;
    CHECK(ring_pop(ring, &out) == 0);
    CHECK(out.a == 0);
    CHECK(ring_push(ring, &msg) == 0); /* one pop makes room for exactly one */
    CHECK(ring_push(ring, &msg) == -TE_FULL);
    for (uint64_t i = 1; i <= RING_SLOTS; i++) { /* all kept, in order, the late one last */
        CHECK(ring_pop(ring, &out) == 0);
        CHECK(out.a == i);
    }
    CHECK(ring_pop(ring, &out) == -TE_EMPTY);
    free(ring);
}

/* ---- mailbox, one thread ---- */

struct test_collect {
    size_t count;
    uint64_t last_a[3];
    uint32_t order[16]; /* senders of the first 16 messages, in drain order */
};

static void test_collect_handle(void *arg, const struct ring_msg *msg)
{
    struct test_collect *collect = arg;
    if (collect->count < 16)
        collect->order[collect->count] = msg->from;
    CHECK(msg->from < 3);
    CHECK(msg->a == collect->last_a[msg->from]); /* per-sender order */
    collect->last_a[msg->from]++;
    collect->count++;
}

static void test_mailbox_wake_once(void)
{
    struct mailbox *mb = mailbox_create(3);
    CHECK(mb != NULL);
    int efd2 = mailbox_eventfd(mb, 2);
    int efd0 = mailbox_eventfd(mb, 0);
    CHECK(efd2 >= 0 && efd0 >= 0 && efd2 != efd0);
    CHECK(test_eventfd_take(efd2) == 0); /* nothing written at creation */
    struct ring_msg msg = { .kind = TEST_KIND, .from = 99 }; /* from is stamped by send */
    for (uint64_t i = 0; i < 100; i++) {
        msg.a = i;
        CHECK(mailbox_send(mb, 0, 2, &msg) == 0);
    }
    CHECK(test_eventfd_take(efd2) == 1); /* a burst of 100 cost one write */
    for (uint64_t i = 0; i < 100; i++) {
        msg.a = i;
        CHECK(mailbox_send(mb, 1, 2, &msg) == 0);
    }
    CHECK(test_eventfd_take(efd2) == 0); /* not drained since: still woken, no write */
    struct test_collect collect = { 0 };
    CHECK(mailbox_drain(mb, 2, test_collect_handle, &collect, 8) == 8);
    for (size_t i = 0; i < 8; i++)
        CHECK(collect.order[i] == i % 2); /* round robin: 0, 1, 0, 1, ... */
    CHECK(test_eventfd_take(efd2) == 1); /* stopped at max with more waiting: self-wake */
    CHECK(mailbox_drain(mb, 2, test_collect_handle, &collect, 1000) == 192);
    CHECK(collect.count == 200);
    CHECK(test_eventfd_take(efd2) == 0); /* drained dry: no self-wake */
    CHECK(mailbox_drain(mb, 2, test_collect_handle, &collect, 1000) == 0);
    CHECK(mailbox_drain(mb, 2, test_collect_handle, &collect, 0) == 0);
    CHECK(test_eventfd_take(efd2) == 0);
    msg.a = 100;
    CHECK(mailbox_send(mb, 0, 2, &msg) == 0);
    CHECK(test_eventfd_take(efd2) == 1); /* after a drain, the next send writes again */
    CHECK(test_eventfd_take(efd0) == 0); /* nobody sent to shard 0 */
    mailbox_destroy(mb);
}

static void test_mailbox_full(void)
{
    struct mailbox *mb = mailbox_create(2);
    CHECK(mb != NULL);
    struct ring_msg msg = { .kind = TEST_KIND };
    for (uint64_t i = 0; i < RING_SLOTS; i++) {
        msg.a = i;
        CHECK(mailbox_send(mb, 1, 0, &msg) == 0);
    }
    msg.a = RING_SLOTS;
    CHECK(mailbox_send(mb, 1, 0, &msg) == -TE_FULL);
    CHECK(mailbox_send(mb, 0, 1, &msg) == 0); /* the other direction is its own ring */
    struct test_collect collect = { 0 };
    CHECK(mailbox_drain(mb, 0, test_collect_handle, &collect, 1) == 1);
    CHECK(mailbox_send(mb, 1, 0, &msg) == 0); /* room for one: the refused one goes now */
    CHECK(mailbox_drain(mb, 0, test_collect_handle, &collect, RING_SLOTS + 1) == RING_SLOTS);
    CHECK(collect.last_a[1] == RING_SLOTS + 1);
    mailbox_destroy(mb);
    CHECK(mailbox_create(0) == NULL);
    CHECK(mailbox_create(100000) == NULL); /* past MAILBOX_SHARDS_MAX */
    struct mailbox *one = mailbox_create(1); /* a single shard has no rings */
    CHECK(one != NULL);
    CHECK(mailbox_drain(one, 0, test_collect_handle, &collect, 10) == 0);
    mailbox_destroy(one);
}

/* ---- mailbox, 4 shard threads ---- */

struct test_shard {
    unsigned id;
    struct mailbox *mb;
    pthread_t thread;
    uint64_t sent[TEST_MAILBOX_SHARDS];     /* next sequence number to each peer */
    uint64_t expected[TEST_MAILBOX_SHARDS]; /* next sequence number from each peer */
    uint64_t received;
    uint64_t drains;
    uint64_t eventfd_writes; /* the sum of the eventfd counter values read */
};

#define TEST_SHARD_TOTAL (TEST_MAILBOX_MESSAGES * (TEST_MAILBOX_SHARDS - 1))

static void test_shard_handle(void *arg, const struct ring_msg *msg)
{
    struct test_shard *me = arg;
    if (msg->from >= TEST_MAILBOX_SHARDS || msg->from == me->id || msg->kind != TEST_KIND) {
        CHECK(false);
        return;
    }
    if (msg->a != me->expected[msg->from] || msg->b != test_payload(msg->a)) {
        fprintf(stderr, "shard %u: from %u got %llu, expected %llu\n", me->id, msg->from,
                (unsigned long long)msg->a, (unsigned long long)me->expected[msg->from]);
        CHECK(false);
    }
    me->expected[msg->from] = msg->a + 1;
    me->received++;
}

/* Sends up to TEST_SEND_BATCH messages to each peer, stopping at -TE_FULL. */
static uint64_t test_shard_send(struct test_shard *me)
{
    uint64_t sent = 0;
    for (unsigned to = 0; to < TEST_MAILBOX_SHARDS; to++) {
        if (to == me->id)
            continue;
        for (unsigned i = 0; i < TEST_SEND_BATCH && me->sent[to] < TEST_MAILBOX_MESSAGES; i++) {
            uint64_t seq = me->sent[to];
            struct ring_msg msg = { .kind = TEST_KIND, .a = seq, .b = test_payload(seq) };
            int rc = mailbox_send(me->mb, me->id, to, &msg);
            if (rc == -TE_FULL)
                break; /* back-pressure: keep it, drain our own inbox, retry later */
            CHECK(rc == 0);
            me->sent[to]++;
            sent++;
        }
    }
    return sent;
}

/* Nothing to send or receive: sleep until the eventfd says messages wait. Only a
 * sender's write can end this; a lost wake-up runs into the deadline. */
static bool test_shard_sleep(struct test_shard *me, int efd)
{
    for (;;) {
        struct pollfd pfd = { .fd = efd, .events = POLLIN };
        int ready = poll(&pfd, 1, TEST_POLL_MS);
        if (ready == 1) {
            me->eventfd_writes += test_eventfd_take(efd);
            return true;
        }
        CHECK(ready == 0 || errno == EINTR);
        if (test_deadline_passed() || atomic_load(&test_failures) > 0) {
            fprintf(stderr, "shard %u: stuck with %llu of %llu received (lost wake-up?)\n",
                    me->id, (unsigned long long)me->received,
                    (unsigned long long)TEST_SHARD_TOTAL);
            CHECK(false);
            return false;
        }
    }
}

static void *test_shard_main(void *arg)
{
    struct test_shard *me = arg;
    int efd = mailbox_eventfd(me->mb, me->id);
    uint64_t sent = 0;
    while (sent < TEST_SHARD_TOTAL || me->received < TEST_SHARD_TOTAL) {
        uint64_t sent_now = test_shard_send(me);
        sent += sent_now;
        size_t drained = mailbox_drain(me->mb, me->id, test_shard_handle, me, TEST_DRAIN_MAX);
        me->drains++;
        if (sent_now > 0 || drained > 0)
            continue;
        if (sent < TEST_SHARD_TOTAL) { /* blocked on full rings: their readers are busy */
            if (test_deadline_passed() || atomic_load(&test_failures) > 0) {
                CHECK(false);
                break;
            }
            sched_yield();
            continue;
        }
        if (!test_shard_sleep(me, efd))
            break;
    }
    me->eventfd_writes += test_eventfd_take(efd);
    return NULL;
}

static void test_mailbox_threads(void)
{
    struct mailbox *mb = mailbox_create(TEST_MAILBOX_SHARDS);
    CHECK(mb != NULL);
    static struct test_shard shards[TEST_MAILBOX_SHARDS];
    for (unsigned i = 0; i < TEST_MAILBOX_SHARDS; i++) {
        shards[i] = (struct test_shard){ .id = i, .mb = mb };
        CHECK(pthread_create(&shards[i].thread, NULL, test_shard_main, &shards[i]) == 0);
    }
    for (unsigned i = 0; i < TEST_MAILBOX_SHARDS; i++)
        pthread_join(shards[i].thread, NULL);
    for (unsigned i = 0; i < TEST_MAILBOX_SHARDS; i++) {
        struct test_shard *me = &shards[i];
        CHECK(me->received == TEST_SHARD_TOTAL);
        for (unsigned from = 0; from < TEST_MAILBOX_SHARDS; from++) {
            if (from != i)
                CHECK(me->expected[from] == TEST_MAILBOX_MESSAGES);
        }
        /* Each write sets the flag 0 -> 1 and only a drain clears it. */
        CHECK(me->eventfd_writes <= me->drains + 1);
        printf("mailbox shard %u: %llu received, %llu drains, %llu eventfd writes\n", i,
               (unsigned long long)me->received, (unsigned long long)me->drains,
               (unsigned long long)me->eventfd_writes);
    }
    mailbox_destroy(mb);
}

/* ---- ping-pong: every message finds its receiver asleep ---- */

struct test_pong {
    struct mailbox *mb;
    unsigned id;
    uint64_t next; /* the round number expected next */
};

/* Answers from inside the handler, as a shard does: shard 1 echoes round r, shard 0
 * sends round r + 1 when round r comes back. */
static void test_pong_handle(void *arg, const struct ring_msg *msg)
{
    struct test_pong *me = arg;
    CHECK(msg->a == me->next);
    CHECK(msg->from == 1 - me->id);
    me->next++;
    uint64_t round = me->id == 0 ? msg->a + 1 : msg->a;
    if (round < TEST_PINGPONG_ROUNDS) {
        struct ring_msg reply = { .kind = TEST_KIND, .a = round };
        CHECK(mailbox_send(me->mb, me->id, 1 - me->id, &reply) == 0);
    }
}

/* Shard `id` of two; drains only when its eventfd says so. Each message goes to a
 * shard that is draining, about to sleep or asleep, which is where a lost wake-up
 * strands a message: here that hangs the pair until the deadline. */
static void *test_pong_main(void *arg)
{
    struct test_pong *me = arg;
    int efd = mailbox_eventfd(me->mb, me->id);
    if (me->id == 0) {
        struct ring_msg msg = { .kind = TEST_KIND, .a = 0 };
        CHECK(mailbox_send(me->mb, 0, 1, &msg) == 0);
    }
    while (me->next < TEST_PINGPONG_ROUNDS) {
        struct pollfd pfd = { .fd = efd, .events = POLLIN };
        int ready = poll(&pfd, 1, TEST_POLL_MS);
        if (ready == 1) {
            test_eventfd_take(efd);
            mailbox_drain(me->mb, me->id, test_pong_handle, me, TEST_DRAIN_MAX);
        } else if (test_deadline_passed() || atomic_load(&test_failures) > 0) {
            fprintf(stderr, "ping-pong shard %u: stuck at round %llu (lost wake-up?)\n",
                    me->id, (unsigned long long)me->next);
            CHECK(false);
            break;
        }
    }
    return NULL;
}

static void test_pingpong(void)
{
    struct mailbox *mb = mailbox_create(2);
    CHECK(mb != NULL);
    struct test_pong pongs[2] = { { .mb = mb, .id = 0 }, { .mb = mb, .id = 1 } };
    pthread_t threads[2];
    for (unsigned i = 0; i < 2; i++)
        CHECK(pthread_create(&threads[i], NULL, test_pong_main, &pongs[i]) == 0);
    for (unsigned i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    CHECK(pongs[0].next == TEST_PINGPONG_ROUNDS);
    CHECK(pongs[1].next == TEST_PINGPONG_ROUNDS);
    mailbox_destroy(mb);
}

int main(void)
{
    test_start = time(NULL);
    test_full();
    test_mailbox_wake_once();
    test_mailbox_full();
    test_spsc();
    test_mailbox_threads();
    test_pingpong();
    int failures = atomic_load(&test_failures);
    printf("test_ring: %s (%d failed checks)\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
