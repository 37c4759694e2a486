/* tests/core/test_loop.c: the shard loops' wiring of the mailbox and the worker
 * pool. Proves, with real io_uring loops on their own threads: every message one
 * shard sends another arrives, once, in order per sender, on the receiving shard's
 * thread (woken through its eventfd read in io_uring); a full ring is back-pressure
 * (the sender retries, nothing is dropped); every worker job's completion runs on
 * the shard that submitted it. Then shutdown stops every loop. */
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "tests/core/loop_fixture.h"

#define TEST_SHARDS 3
#define TEST_MESSAGES_PER_PAIR 200000 /* > RING_SLOTS: the ring fills and must push back */
#define TEST_JOBS_PER_SHARD 300 /* all in flight before any loop drains: under WORKERS_JOBS_MAX */
_Static_assert(TEST_SHARDS * (TEST_JOBS_PER_SHARD + 1) < WORKERS_JOBS_MAX, "on_start never blocks");

struct test_job {
    struct worker_job job;
    unsigned shard;
    pthread_t submitter;
};

static struct loop *test_loops[TEST_SHARDS];
static pthread_t test_threads[TEST_SHARDS];
static uint64_t test_next_seq[TEST_SHARDS][TEST_SHARDS]; /* [to][from], touched by `to` only */
static atomic_long test_messages_ok, test_messages_bad, test_jobs_ok, test_jobs_bad, test_full;
static atomic_int test_senders_done;

static void test_job_run(struct worker_job *job) { (void)job; }

static void test_job_done(struct worker_job *job)
{
    struct test_job *tj = (struct test_job *)job;
    if (pthread_equal(tj->submitter, pthread_self()))
        atomic_fetch_add(&test_jobs_ok, 1);
    else
        atomic_fetch_add(&test_jobs_bad, 1);
    free(tj);
}

static void test_on_message(struct loop *loop, const struct ring_msg *msg)
{
    unsigned to = loop_index(loop);
    bool ok = msg->kind == 7 && msg->from < TEST_SHARDS && msg->from != to &&
              msg->a == test_next_seq[to][msg->from] &&
              pthread_equal(test_threads[to], pthread_self());
    test_next_seq[to][msg->from]++;
    atomic_fetch_add(ok ? &test_messages_ok : &test_messages_bad, 1);
}

/* Each shard sends cooperatively: a pump job's completion (on the shard's own
 * loop) sends until a ring is full, then resubmits itself, so no loop ever blocks
 * and a full ring is waited out by the loop turning, never by dropping. */
struct test_pump {
    struct worker_job job;
    struct loop *loop;
    uint64_t next[TEST_SHARDS];
};

static struct test_pump test_pumps[TEST_SHARDS];

static void test_pump_done(struct worker_job *job)
{
    struct test_pump *pump = (struct test_pump *)job;
    unsigned me = loop_index(pump->loop);
    bool remaining = false;
    for (unsigned to = 0; to < TEST_SHARDS; to++) {
        if (to == me)
            continue;
        while (pump->next[to] < TEST_MESSAGES_PER_PAIR) {
            struct ring_msg msg = { .kind = 7, .a = pump->next[to] };
            if (loop_send_message(pump->loop, to, &msg) == -TE_FULL) {
                atomic_fetch_add(&test_full, 1);
                remaining = true;
                break;
            }
            pump->next[to]++;
        }
    }
    if (!remaining) {
        atomic_fetch_add(&test_senders_done, 1);
        return;
    }
    while (workers_submit(loop_shared(pump->loop)->workers, me, &pump->job) == -TE_FULL)
        sched_yield();
}

static void test_on_start(struct loop *loop)
{
    unsigned me = loop_index(loop);
    struct loop_shared *shared = loop_shared(loop);
    for (int i = 0; i < TEST_JOBS_PER_SHARD; i++) {
        struct test_job *tj = calloc(1, sizeof(*tj));
        tj->job.run = test_job_run;
        tj->job.done = test_job_done;
        tj->submitter = pthread_self();
        while (workers_submit(shared->workers, me, &tj->job) == -TE_FULL)
            sched_yield();
    }
    struct test_pump *pump = &test_pumps[me];
    pump->loop = loop;
    pump->job.run = test_job_run;
    pump->job.done = test_pump_done;
    while (workers_submit(shared->workers, me, &pump->job) == -TE_FULL)
        sched_yield();
}

/* Blocks handed out and never given back (a parked request whose job was dropped at
 * shutdown): aligned for any type, and loop_destroy frees them. Failures counted. */
static int test_blocks_left_out(struct loop *loop)
{
    static const size_t sizes[] = { 100, 8192, 100, 65536, 8192 };
    int failures = 0;
    char *kept[sizeof(sizes) / sizeof(sizes[0])];
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        kept[i] = loop_block_get(loop, sizes[i]);
        failures += kept[i] == NULL || (uintptr_t)kept[i] % alignof(max_align_t) != 0;
        if (kept[i] != NULL)
            memset(kept[i], 0xA5, sizes[i]);
    }
    loop_block_put(loop, kept[1], sizes[1]); /* one cached, the others still out */
    char *again = loop_block_get(loop, sizes[1]);
    failures += again != kept[1]; /* the cache hands the same block back */
    printf("test_loop: %zu blocks left out for loop_destroy\n", sizeof(sizes) / sizeof(sizes[0]));
    return failures;
}

int main(void)
{
    struct config cfg;
    if (loop_fixture_config(&cfg) != 0)
        return 1;
    cfg.shards = TEST_SHARDS;
    cfg.connections_max = 16;
    log_init(LOG_WARN, false);
    struct loop_shared shared = {
        .cfg = &cfg, .handler = &loop_fixture_handler, .on_message = test_on_message,
        .on_start = test_on_start, .shards = TEST_SHARDS,
        .mailbox = mailbox_create(TEST_SHARDS), .workers = workers_create(2, TEST_SHARDS),
    };
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        test_loops[i] = loop_create(&shared, i);
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        pthread_create(&test_threads[i], NULL, loop_fixture_shard_main, test_loops[i]);

    long expected_messages = (long)TEST_SHARDS * (TEST_SHARDS - 1) * TEST_MESSAGES_PER_PAIR;
    long expected_jobs = (long)TEST_SHARDS * TEST_JOBS_PER_SHARD;
    for (int waited_ms = 0; waited_ms < 120000; waited_ms += 10) {
        if (atomic_load(&test_messages_ok) + atomic_load(&test_messages_bad) >= expected_messages &&
            atomic_load(&test_jobs_ok) + atomic_load(&test_jobs_bad) >= expected_jobs)
            break;
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
    loop_request_shutdown();
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        pthread_join(test_threads[i], NULL);

    int failures = 0;
    failures += atomic_load(&test_messages_ok) != expected_messages;
    failures += atomic_load(&test_messages_bad) != 0;
    failures += atomic_load(&test_jobs_ok) != expected_jobs;
    failures += atomic_load(&test_jobs_bad) != 0;
    failures += atomic_load(&test_senders_done) != TEST_SHARDS;
    printf("test_loop: messages %ld/%ld in order on the receiver (%ld out of order or misplaced), "
           "ring-full retries %ld, jobs %ld/%ld completed on their submitter (%ld elsewhere)\n",
           atomic_load(&test_messages_ok), expected_messages, atomic_load(&test_messages_bad),
           atomic_load(&test_full), atomic_load(&test_jobs_ok), expected_jobs, atomic_load(&test_jobs_bad));
    failures += test_blocks_left_out(test_loops[0]);
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        loop_destroy(test_loops[i]); /* LeakSanitizer fails the test if a block outlives it */
    workers_destroy(shared.workers);
    mailbox_destroy(shared.mailbox);
    printf("test_loop: %d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
