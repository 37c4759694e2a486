/* tests/core/test_workers.c: proves that the worker pool (core/workers.c)
 *  - urgent jobs take WORKERS_URGENT_RESERVE places past a full ordinary queue and run
 *    ahead of every queued ordinary job, in their own submission order;
 *  - takes exactly WORKERS_JOBS_MAX jobs while its threads are held at a gate, then
 *    answers -TE_FULL without taking the job; once the gate opens every taken job
 *    runs once and its done runs exactly once, on the submitting thread, and the
 *    place a drained job held can be used again;
 *  - routes each completion to the submitting shard only (the other shard's eventfd
 *    stays silent) and writes the eventfd at most once per drain;
 *  - destroy lets a running job finish and drops the queued ones (run nor done);
 *  - hands completions back in completion order (one worker: submission order),
 *    across drains capped by max, waking the shard itself when it stops at max;
 *  - a job submitted with workers_submit_by whose time has passed when a worker takes it is
 *    not run, is marked expired, and its done still runs once; one whose time has not
 *    passed, and a plain one, run;
 *  - wakes a sleeping shard for each of 2 x 50,000 jobs submitted one at a time;
 *  - under 4 shard threads x 200,000 jobs, retrying on -TE_FULL while draining,
 *    loses and duplicates nothing;
 *  - jobs run at SCHED_IDLE (a shard that wakes takes its core back at once).
 * Shards wait for completions in poll() on their eventfd: a lost wake-up hangs them
 * until TEST_DEADLINE_S, which fails the test. No timing assertions. */
#include "core/workers.h"

#include "core/loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef TEST_DEADLINE_S
#define TEST_DEADLINE_S 120          /* a hang (lost wake-up) fails instead of blocking */
#endif
#define TEST_POLL_MS 1000            /* one poll() wait; the deadline bounds the total */
#define TEST_STRESS_SHARDS 4
#define TEST_STRESS_JOBS 200000u     /* per shard thread */
#define TEST_STRESS_THREADS 2        /* the machine has 2 cores */
#define TEST_DRAIN_MAX 64            /* completions per drain, as a shard loop would cap it */
#define TEST_ORDER_JOBS 100
#define TEST_SERIAL_JOBS 50000       /* per shard, one at a time */

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

/* Waits until the eventfd is written; adds its value to *writes. False at the
 * deadline (or after a failure elsewhere). */
static bool test_wait_eventfd(int fd, uint64_t *writes)
{
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int ready = poll(&pfd, 1, TEST_POLL_MS);
        if (ready == 1) {
            *writes += test_eventfd_take(fd);
            return true;
        }
        CHECK(ready == 0 || errno == EINTR);
        if (test_deadline_passed() || atomic_load(&test_failures) > 0) {
            fprintf(stderr, "stuck waiting for completions (lost wake-up?)\n");
            CHECK(false);
            return false;
        }
    }
}

struct test_job {
    struct worker_job job; /* first: done and run get it back by a cast */
    pthread_t submitter;
    uint64_t seq;
    uint64_t result;  /* written by run, read by done: the pool must order the two */
    atomic_int runs;
    int dones;        /* only the submitting thread touches it */
    uint64_t *order;  /* where done records seq, when set */
    size_t *order_len;
};

static uint64_t test_result(uint64_t seq)
{
    return seq * 0x9e3779b97f4a7c15ULL + 1;
}

static void test_job_run(struct worker_job *job)
{
    struct test_job *tj = (struct test_job *)job;
    atomic_fetch_add(&tj->runs, 1);
    tj->result = test_result(tj->seq);
}

static void test_job_done(struct worker_job *job)
{
    struct test_job *tj = (struct test_job *)job;
    CHECK(pthread_equal(tj->submitter, pthread_self()));
    CHECK(tj->result == (job->expired ? 0 : test_result(tj->seq))); /* expired: never run */
    tj->dones++;
    if (tj->order != NULL)
        tj->order[(*tj->order_len)++] = tj->seq;
}

static void test_job_init(struct test_job *tj, uint64_t seq)
{
    tj->job = (struct worker_job){ .run = test_job_run, .done = test_job_done };
    tj->submitter = pthread_self();
    tj->seq = seq;
    tj->result = 0;
    atomic_init(&tj->runs, 0);
    tj->dones = 0;
    tj->order = NULL;
    tj->order_len = NULL;
}

/* ---- the bound, with the workers held at a gate ---- */

static pthread_mutex_t test_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t test_gate_cond = PTHREAD_COND_INITIALIZER;
static bool test_gate_open;
static atomic_int test_gate_waiting; /* runs that reached the gate */

static void test_gated_run(struct worker_job *job)
{
    atomic_fetch_add(&test_gate_waiting, 1);
    pthread_mutex_lock(&test_gate_lock);
    while (!test_gate_open)
        pthread_cond_wait(&test_gate_cond, &test_gate_lock);
    pthread_mutex_unlock(&test_gate_lock);
    test_job_run(job);
}

/* Holds every gated run at the gate from now on. */
static void test_gate_close(void)
{
    pthread_mutex_lock(&test_gate_lock);
    test_gate_open = false;
    pthread_mutex_unlock(&test_gate_lock);
    atomic_store(&test_gate_waiting, 0);
}

/* Lets every gated run through. */
static void test_gate_release(void)
{
    pthread_mutex_lock(&test_gate_lock);
    test_gate_open = true;
    pthread_cond_broadcast(&test_gate_cond);
    pthread_mutex_unlock(&test_gate_lock);
}

/* Drains shard `shard` until `total` dones ran, waiting on the eventfd when idle. */
static void test_drain_until(struct workers *pool, unsigned shard, size_t total,
                             size_t *done, uint64_t *drains, uint64_t *writes)
{
    int efd = workers_eventfd(pool, shard);
    while (*done < total) {
        size_t n = workers_drain(pool, shard, TEST_DRAIN_MAX);
        (*drains)++;
        *done += n;
        if (n == 0 && !test_wait_eventfd(efd, writes))
            return;
    }
}

static void test_bound(void)
{
    enum { THREADS = 2, SHARDS = 2, SHARD = 1 };
    struct workers *pool = workers_create(THREADS, SHARDS);
    CHECK(pool != NULL);
    static struct test_job jobs[WORKERS_JOBS_MAX + 2];
    size_t accepted = 0;
    for (size_t i = 0; i < WORKERS_JOBS_MAX + 1; i++) {
        test_job_init(&jobs[i], i);
        jobs[i].job.run = test_gated_run;
        int rc = workers_submit(pool, SHARD, &jobs[i].job);
        if (rc == -TE_FULL)
            break;
        CHECK(rc == 0);
        accepted++;
    }
    CHECK(accepted == WORKERS_JOBS_MAX);
    while (atomic_load(&test_gate_waiting) < THREADS && !test_deadline_passed())
        sched_yield(); /* both workers hold a job: none can complete until the gate opens */
    CHECK(workers_drain(pool, SHARD, WORKERS_JOBS_MAX) == 0);
    test_gate_release();
    size_t done = 0;
    uint64_t drains = 0, writes = 0;
    test_drain_until(pool, SHARD, accepted, &done, &drains, &writes);
    CHECK(done == accepted);
    CHECK(workers_drain(pool, SHARD, WORKERS_JOBS_MAX) == 0); /* nothing extra */
    for (size_t i = 0; i < accepted; i++) {
        CHECK(atomic_load(&jobs[i].runs) == 1);
        CHECK(jobs[i].dones == 1);
    }
    struct test_job *refused = &jobs[WORKERS_JOBS_MAX];
    CHECK(atomic_load(&refused->runs) == 0); /* the refused job was not taken */
    CHECK(refused->dones == 0);
    /* Drained places are free again. */
    struct test_job *again = &jobs[WORKERS_JOBS_MAX + 1];
    test_job_init(again, WORKERS_JOBS_MAX + 1);
    CHECK(workers_submit(pool, SHARD, &again->job) == 0);
    done = 0;
    test_drain_until(pool, SHARD, 1, &done, &drains, &writes);
    CHECK(again->dones == 1);
    writes += test_eventfd_take(workers_eventfd(pool, SHARD));
    CHECK(writes <= drains + 1); /* each write sets the flag; only a drain clears it */
    CHECK(test_eventfd_take(workers_eventfd(pool, 0)) == 0); /* shard 0 submitted nothing */
    workers_destroy(pool);
}

/* ---- the urgent lane (SECURITY F15: a login flood must not stall key loads) ---- */

static void test_urgent(void)
{
    enum { URGENT_SEQ = 100000 };
    struct workers *pool = workers_create(1, 1); /* one worker: completion order is run order */
    CHECK(pool != NULL);
    static struct test_job ordinary[WORKERS_JOBS_MAX + 1], urgent[WORKERS_URGENT_RESERVE + 1];
    static uint64_t order[WORKERS_JOBS_MAX + WORKERS_URGENT_RESERVE];
    size_t order_len = 0;
    test_gate_close();
    for (size_t i = 0; i <= WORKERS_JOBS_MAX; i++) {
        test_job_init(&ordinary[i], i);
        ordinary[i].order = order;
        ordinary[i].order_len = &order_len;
        ordinary[i].job.run = i == 0 ? test_gated_run : test_job_run;
        CHECK(workers_submit(pool, 0, &ordinary[i].job) == (i < WORKERS_JOBS_MAX ? 0 : -TE_FULL));
        while (i == 0 && atomic_load(&test_gate_waiting) < 1 && !test_deadline_passed())
            sched_yield(); /* the worker holds job 0: every later job waits in the queues */
    }
    for (size_t i = 0; i <= WORKERS_URGENT_RESERVE; i++) {
        test_job_init(&urgent[i], URGENT_SEQ + i);
        urgent[i].order = order;
        urgent[i].order_len = &order_len;
        CHECK(workers_submit_urgent(pool, 0, &urgent[i].job) == (i < WORKERS_URGENT_RESERVE ? 0 : -TE_FULL));
    }
    CHECK(workers_submit(pool, 0, &ordinary[WORKERS_JOBS_MAX].job) == -TE_FULL);
    test_gate_release();
    size_t done = 0;
    uint64_t drains = 0, writes = 0;
    size_t total = WORKERS_JOBS_MAX + WORKERS_URGENT_RESERVE;
    test_drain_until(pool, 0, total, &done, &drains, &writes);
    CHECK(done == total && order_len == total);
    /* Job 0 was running; then every urgent job, in submission order, before any ordinary one. */
    CHECK(order[0] == 0);
    for (size_t i = 0; i < WORKERS_URGENT_RESERVE; i++)
        CHECK(order[1 + i] == URGENT_SEQ + i);
    for (size_t i = 1 + WORKERS_URGENT_RESERVE; i < total; i++)
        CHECK(order[i] == i - WORKERS_URGENT_RESERVE);
    workers_destroy(pool);
}

/* ---- a wait's end (workers_submit_by) ---- */

static void test_run_by(void)
{
    struct workers *pool = workers_create(1, 1);
    CHECK(pool != NULL);
    static struct test_job gate, late, timely, plain;
    test_gate_close();
    test_job_init(&gate, 1);
    gate.job.run = test_gated_run;
    CHECK(workers_submit(pool, 0, &gate.job) == 0);
    while (atomic_load(&test_gate_waiting) < 1 && !test_deadline_passed())
        sched_yield(); /* the worker holds the gate: the next three wait in the queue */
    test_job_init(&late, 2);
    test_job_init(&timely, 3);
    test_job_init(&plain, 4);
    uint64_t now = loop_now_us();
    CHECK(workers_submit_by(pool, 0, &late.job, now > 1 ? now - 1 : 1) == 0); /* already past */
    CHECK(workers_submit_by(pool, 0, &timely.job, now + 3600u * 1000000u) == 0);
    CHECK(workers_submit(pool, 0, &plain.job) == 0);
    test_gate_release();
    size_t done = 0;
    uint64_t drains = 0, writes = 0;
    test_drain_until(pool, 0, 4, &done, &drains, &writes);
    CHECK(done == 4);
    CHECK(late.job.expired && atomic_load(&late.runs) == 0 && late.dones == 1);
    CHECK(!timely.job.expired && atomic_load(&timely.runs) == 1 && timely.dones == 1);
    CHECK(!plain.job.expired && atomic_load(&plain.runs) == 1 && plain.dones == 1);
    workers_destroy(pool);
}

/* ---- completion order, strict waking ---- */

/* Drains only when the eventfd says so, never on speculation: a completion left
 * without a wake-up (by a worker, or by a drain that stopped at max) hangs it. */
static void test_drain_strict(struct workers *pool, unsigned shard, size_t total, size_t max,
                              size_t *done)
{
    int efd = workers_eventfd(pool, shard);
    uint64_t writes = 0;
    while (*done < total && test_wait_eventfd(efd, &writes))
        *done += workers_drain(pool, shard, max);
}

static void test_order(void)
{
    struct workers *pool = workers_create(1, 1); /* one worker runs jobs in queue order */
    CHECK(pool != NULL);
    static struct test_job jobs[TEST_ORDER_JOBS];
    uint64_t order[TEST_ORDER_JOBS];
    size_t order_len = 0;
    for (size_t i = 0; i < TEST_ORDER_JOBS; i++) {
        test_job_init(&jobs[i], i);
        jobs[i].order = order;
        jobs[i].order_len = &order_len;
        CHECK(workers_submit(pool, 0, &jobs[i].job) == 0);
    }
    /* Let them all finish first, so one drain takes them all and must stop at max. */
    while (atomic_load(&jobs[TEST_ORDER_JOBS - 1].runs) == 0 && !test_deadline_passed())
        sched_yield();
    size_t done = 0;
    test_drain_strict(pool, 0, TEST_ORDER_JOBS, 7, &done);
    CHECK(done == TEST_ORDER_JOBS);
    CHECK(order_len == TEST_ORDER_JOBS);
    for (size_t i = 0; i < order_len && i < TEST_ORDER_JOBS; i++)
        CHECK(order[i] == i);
    workers_destroy(pool);
}

/* Destroy lets the running job finish and drops the queued ones; dones are not called. */
static void *test_gate_opener(void *arg)
{
    (void)arg;
    struct timespec pause = { .tv_nsec = 200 * 1000 * 1000 }; /* orders the events, asserts nothing */
    nanosleep(&pause, NULL);
    test_gate_release();
    return NULL;
}

static void test_destroy_drops_queued(void)
{
    CHECK(workers_create(0, 1) == NULL);
    CHECK(workers_create(1, 0) == NULL);
    struct workers *pool = workers_create(1, 1);
    CHECK(pool != NULL);
    test_gate_close();
    static struct test_job jobs[TEST_ORDER_JOBS];
    for (size_t i = 0; i < TEST_ORDER_JOBS; i++) {
        test_job_init(&jobs[i], i);
        jobs[i].job.run = i == 0 ? test_gated_run : test_job_run;
        CHECK(workers_submit(pool, 0, &jobs[i].job) == 0);
        while (i == 0 && atomic_load(&test_gate_waiting) < 1 && !test_deadline_passed())
            sched_yield(); /* the worker holds job 0 at the gate; the others stay queued */
    }
    pthread_t opener;
    CHECK(pthread_create(&opener, NULL, test_gate_opener, NULL) == 0);
    workers_destroy(pool); /* drops 1..99 at once, then waits for job 0 */
    pthread_join(opener, NULL);
    CHECK(atomic_load(&jobs[0].runs) == 1);
    for (size_t i = 0; i < TEST_ORDER_JOBS; i++)
        CHECK(jobs[i].dones == 0);
    for (size_t i = 1; i < TEST_ORDER_JOBS; i++)
        CHECK(atomic_load(&jobs[i].runs) == 0);
}

/* ---- one job at a time: every completion finds its shard asleep ---- */

struct test_serial {
    struct workers *pool;
    unsigned id;
    size_t done;
};

/* Submits one job, sleeps until the eventfd says it completed, drains, repeats: a
 * lost wake-up hangs it until the deadline. */
static void *test_serial_main(void *arg)
{
    struct test_serial *me = arg;
    struct test_job tj;
    for (uint64_t i = 0; i < TEST_SERIAL_JOBS && atomic_load(&test_failures) == 0; i++) {
        test_job_init(&tj, i);
        int rc;
        while ((rc = workers_submit(me->pool, me->id, &tj.job)) == -TE_FULL)
            sched_yield(); /* the other shard holds the places: never, with one job each */
        CHECK(rc == 0);
        size_t done = 0;
        test_drain_strict(me->pool, me->id, 1, TEST_DRAIN_MAX, &done);
        CHECK(done == 1);
        CHECK(tj.dones == 1);
        me->done += done;
    }
    return NULL;
}

static void test_serial(void)
{
    struct workers *pool = workers_create(TEST_STRESS_THREADS, 2);
    CHECK(pool != NULL);
    struct test_serial serials[2] = { { .pool = pool, .id = 0 }, { .pool = pool, .id = 1 } };
    pthread_t threads[2];
    for (unsigned i = 0; i < 2; i++)
        CHECK(pthread_create(&threads[i], NULL, test_serial_main, &serials[i]) == 0);
    for (unsigned i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        CHECK(serials[i].done == TEST_SERIAL_JOBS);
    }
    workers_destroy(pool);
}

/* ---- stress: 4 shard threads ---- */

struct test_shard {
    struct workers *pool;
    unsigned id;
    pthread_t thread;
    struct test_job *jobs; /* [TEST_STRESS_JOBS] */
    size_t submitted;
    size_t done;
    uint64_t fulls;
};

/* Submits the next job; on -TE_FULL drains, and waits when it has nothing to drain
 * but jobs of its own in flight (otherwise the places are held by other shards:
 * it yields and retries). */
static bool test_shard_submit_next(struct test_shard *me, int efd, uint64_t *writes)
{
    struct test_job *tj = &me->jobs[me->submitted];
    test_job_init(tj, me->submitted);
    int rc = workers_submit(me->pool, me->id, &tj->job);
    if (rc == 0) {
        me->submitted++;
        return true;
    }
    CHECK(rc == -TE_FULL);
    me->fulls++;
    size_t n = workers_drain(me->pool, me->id, TEST_DRAIN_MAX);
    me->done += n;
    if (n > 0)
        return true;
    if (me->submitted > me->done)
        return test_wait_eventfd(efd, writes);
    sched_yield();
    return !test_deadline_passed() && atomic_load(&test_failures) == 0;
}

static void *test_shard_main(void *arg)
{
    struct test_shard *me = arg;
    int efd = workers_eventfd(me->pool, me->id);
    uint64_t writes = 0;
    while (me->submitted < TEST_STRESS_JOBS) {
        if (!test_shard_submit_next(me, efd, &writes))
            return NULL;
        if (me->submitted % TEST_DRAIN_MAX == 0) /* a shard drains as its loop turns */
            me->done += workers_drain(me->pool, me->id, TEST_DRAIN_MAX);
    }
    uint64_t drains = 0;
    test_drain_until(me->pool, me->id, TEST_STRESS_JOBS, &me->done, &drains, &writes);
    return NULL;
}

static void test_stress(void)
{
    struct workers *pool = workers_create(TEST_STRESS_THREADS, TEST_STRESS_SHARDS);
    CHECK(pool != NULL);
    struct test_shard shards[TEST_STRESS_SHARDS];
    for (unsigned i = 0; i < TEST_STRESS_SHARDS; i++) {
        shards[i] = (struct test_shard){ .pool = pool, .id = i };
        shards[i].jobs = calloc(TEST_STRESS_JOBS, sizeof(struct test_job));
        CHECK(shards[i].jobs != NULL);
        CHECK(pthread_create(&shards[i].thread, NULL, test_shard_main, &shards[i]) == 0);
    }
    for (unsigned i = 0; i < TEST_STRESS_SHARDS; i++)
        pthread_join(shards[i].thread, NULL);
    for (unsigned i = 0; i < TEST_STRESS_SHARDS; i++) {
        struct test_shard *me = &shards[i];
        CHECK(me->submitted == TEST_STRESS_JOBS);
        CHECK(me->done == TEST_STRESS_JOBS);
        size_t bad = 0;
        for (size_t j = 0; j < me->submitted; j++) {
            if (atomic_load(&me->jobs[j].runs) != 1 || me->jobs[j].dones != 1)
                bad++;
        }
        CHECK(bad == 0);
        printf("workers shard %u: %zu jobs done, %llu submits refused (TE_FULL)\n", i,
               me->done, (unsigned long long)me->fulls);
        free(me->jobs);
    }
    workers_destroy(pool);
}

/* ---- scheduling ---- */

static atomic_int test_policy_seen = -1;

static void test_policy_run(struct worker_job *job)
{
    atomic_store(&test_policy_seen, sched_getscheduler(0));
    test_job_run(job);
}

static void test_policy(void)
{
    struct workers *pool = workers_create(1, 1);
    CHECK(pool != NULL);
    static struct test_job tj;
    test_job_init(&tj, 1);
    tj.job.run = test_policy_run;
    CHECK(workers_submit(pool, 0, &tj.job) == 0);
    size_t done = 0;
    uint64_t drains = 0, writes = 0;
    test_drain_until(pool, 0, 1, &done, &drains, &writes);
    CHECK(done == 1);
    CHECK(atomic_load(&test_policy_seen) == SCHED_IDLE);
    CHECK(sched_getscheduler(0) == SCHED_OTHER); /* the submitting (shard) thread unchanged */
    workers_destroy(pool);
}

int main(void)
{
    test_start = time(NULL);
    test_bound();
    test_urgent();
    test_run_by();
    test_order();
    test_destroy_drops_queued();
    test_serial();
    test_stress();
    test_policy();
    int failures = atomic_load(&test_failures);
    printf("test_workers: %s (%d failed checks)\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
