/* tests/core/test_loop_timer.c: one-off timers and fd watches on a running shard
 * loop. Proves: timers fire in deadline order, never before their deadline, exactly
 * once; a stopped timer never fires; a restarted timer fires once, at its new
 * deadline; a timer may restart itself from on_expire; the heap stays consistent
 * under random start/stop (checked against a simple model); a watch reports POLLIN
 * on the shard's thread when its pipe becomes readable; a cancelled watch never
 * reports, and the same watch re-armed reports the next readiness; a held loop keeps
 * running its timers after shutdown was asked for, its holder's timer is started when
 * shutdown begins (a second hold, whose timer has no on_expire, is left alone), and the loop
 * returns once both are released. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "tests/core/loop_fixture.h"

#define TEST_TIMERS 2000
#define TEST_TIMER_SPAN_MS 400
#define TEST_WAIT_MS_MAX 20000 /* the test gives up (and fails) past this: never hangs */

struct test_timer {
    struct loop_timer timer;
    uint64_t due_ms;
    bool stopped;
    int fired;
};

static struct loop *test_loop;
static pthread_t test_thread;
static struct test_timer test_timers[TEST_TIMERS];
static atomic_int test_fired, test_early, test_twice, test_stopped_fired, test_out_of_order;
static atomic_int test_wrong_thread, test_self_restarts;
static uint64_t test_last_due;
static struct loop_timer test_self_timer;
static int test_pipe[2];
static struct loop_watch test_watch;
static atomic_int test_watch_events, test_watch_stage;
#define TEST_HOLD_MS 200 /* how long after the shutdown request the hold is released */
static struct loop_timer test_hold_timer;
static struct loop_timer test_quiet_hold; /* a second hold with nothing to hurry: no on_expire */
static atomic_int test_quiet_started;     /* the shutdown started that hold's timer */
static atomic_bool test_released, test_woken;
static atomic_int test_woken_early;

static void test_on_timer(struct loop_timer *timer)
{
    struct test_timer *t = (struct test_timer *)timer;
    if (!pthread_equal(pthread_self(), test_thread))
        atomic_fetch_add(&test_wrong_thread, 1);
    if (loop_now_ms(test_loop) < t->due_ms)
        atomic_fetch_add(&test_early, 1);
    if (t->stopped)
        atomic_fetch_add(&test_stopped_fired, 1);
    if (t->fired++ > 0)
        atomic_fetch_add(&test_twice, 1);
    if (t->due_ms < test_last_due)
        atomic_fetch_add(&test_out_of_order, 1);
    test_last_due = t->due_ms;
    atomic_fetch_add(&test_fired, 1);
}

static void test_on_self(struct loop_timer *timer)
{
    if (atomic_fetch_add(&test_self_restarts, 1) < 4)
        loop_timer_start(test_loop, timer, 0); /* delay 0 from on_expire: next tick, not a spin */
}

static void test_on_watch(struct loop_watch *watch, unsigned events)
{
    char byte;
    if (!pthread_equal(pthread_self(), test_thread))
        atomic_fetch_add(&test_wrong_thread, 1);
    if (events & POLLIN)
        (void)!read(test_pipe[0], &byte, 1);
    atomic_fetch_add(&test_watch_events, 1);
    (void)watch;
}

/* The hold's wake: armed far ahead, it fires when shutdown begins; it then releases the
 * loop's hold TEST_HOLD_MS later (a timer that fires only if the loop still runs). */
static void test_on_hold_timer(struct loop_timer *timer)
{
    if (!atomic_load(&test_woken)) {
        atomic_store(&test_woken, true);
        if (!loop_stopping())
            atomic_fetch_add(&test_woken_early, 1);
        loop_timer_start(test_loop, timer, TEST_HOLD_MS);
        return;
    }
    atomic_store(&test_released, true);
    if (loop_timer_active(&test_quiet_hold))
        atomic_fetch_add(&test_quiet_started, 1);
    loop_release(test_loop, &test_quiet_hold);
    loop_release(test_loop, timer);
}

/* On the shard's thread: start every timer, stop a third, restart a third. */
static void test_on_start(struct loop *loop)
{
    uint64_t now = loop_now_ms(loop);
    unsigned seed = 12345;
    for (int i = 0; i < TEST_TIMERS; i++) {
        struct test_timer *t = &test_timers[i];
        t->timer.on_expire = test_on_timer;
        uint64_t delay = (uint64_t)(rand_r(&seed) % TEST_TIMER_SPAN_MS);
        loop_timer_start(loop, &t->timer, delay);
        t->due_ms = now + (delay > 0 ? delay : 1);
    }
    for (int i = 0; i < TEST_TIMERS; i += 3) {
        loop_timer_stop(loop, &test_timers[i].timer);
        test_timers[i].stopped = true;
    }
    for (int i = 1; i < TEST_TIMERS; i += 3) {
        uint64_t delay = (uint64_t)(rand_r(&seed) % TEST_TIMER_SPAN_MS);
        loop_timer_start(loop, &test_timers[i].timer, delay); /* restart moves the deadline */
        test_timers[i].due_ms = now + (delay > 0 ? delay : 1);
    }
    test_self_timer.on_expire = test_on_self;
    loop_timer_start(loop, &test_self_timer, 0);
    test_hold_timer.on_expire = test_on_hold_timer;
    loop_timer_start(loop, &test_hold_timer, TEST_WAIT_MS_MAX); /* woken by the shutdown */
    loop_hold(loop, &test_hold_timer);
    loop_hold(loop, &test_quiet_hold);

    /* Watch: armed then cancelled before the pipe is written: must never report. */
    test_watch.on_ready = test_on_watch;
    loop_watch_arm(loop, &test_watch, test_pipe[0], POLLIN);
    loop_watch_cancel(loop, &test_watch);
    if (loop_watch_armed(&test_watch))
        atomic_fetch_add(&test_watch_stage, 100);
    /* Re-armed at once on the same fd: this arm is the one that must report. */
    loop_watch_arm(loop, &test_watch, test_pipe[0], POLLIN);
    atomic_store(&test_watch_stage, 1);
}

static void test_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

int main(void)
{
    struct config cfg;
    if (loop_fixture_config(&cfg) != 0 || pipe(test_pipe) != 0)
        return 1;
    cfg.shards = 1;
    cfg.connections_max = 4;
    log_init(LOG_WARN, false);
    struct loop_shared shared = { .cfg = &cfg, .handler = &loop_fixture_handler, .on_start = test_on_start,
                                  .shards = 1 };
    test_loop = loop_create(&shared, 0);
    if (test_loop == NULL)
        return 1;
    pthread_create(&test_thread, NULL, loop_fixture_shard_main, test_loop);

    int expected = TEST_TIMERS - (TEST_TIMERS + 2) / 3;
    int waited = 0;
    while (atomic_load(&test_fired) < expected && waited < TEST_WAIT_MS_MAX) {
        test_sleep_ms(10);
        waited += 10;
    }
    test_sleep_ms(300); /* a stopped timer would have fired by now: all deadlines passed */
    while (atomic_load(&test_watch_stage) != 1 && waited < TEST_WAIT_MS_MAX) {
        test_sleep_ms(10);
        waited += 10;
    }
    (void)!write(test_pipe[1], "x", 1);
    while (atomic_load(&test_watch_events) < 1 && waited < TEST_WAIT_MS_MAX) {
        test_sleep_ms(10);
        waited += 10;
    }
    test_sleep_ms(300); /* the cancelled arm, had it reported, would have by now */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    loop_request_shutdown();
    pthread_join(test_thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long held_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    loop_destroy(test_loop);

    int failures = 0;
    failures += atomic_load(&test_fired) != expected;
    failures += atomic_load(&test_early) + atomic_load(&test_twice) + atomic_load(&test_stopped_fired) > 0;
    failures += atomic_load(&test_out_of_order) > 0;
    failures += atomic_load(&test_wrong_thread) > 0;
    failures += atomic_load(&test_self_restarts) != 5;
    failures += atomic_load(&test_watch_events) != 1;
    failures += atomic_load(&test_watch_stage) != 1;
    failures += !atomic_load(&test_released) || held_ms < TEST_HOLD_MS;
    failures += !atomic_load(&test_woken) || atomic_load(&test_woken_early) > 0 || held_ms >= TEST_WAIT_MS_MAX;
    failures += atomic_load(&test_quiet_started) > 0;
    printf("test_loop_timer: fired %d/%d, early %d, twice %d, stopped-but-fired %d, out of order %d, "
           "self restarts %d/5, watch reports %d/1, wrong thread %d\n",
           atomic_load(&test_fired), expected, atomic_load(&test_early), atomic_load(&test_twice),
           atomic_load(&test_stopped_fired), atomic_load(&test_out_of_order),
           atomic_load(&test_self_restarts), atomic_load(&test_watch_events),
           atomic_load(&test_wrong_thread));
    printf("test_loop_timer: hold woken by the shutdown %s (early %d), released %s, the loop returned "
           "%ld ms after the shutdown request (at least %d); quiet hold's timer started %d times (0)\n",
           atomic_load(&test_woken) ? "yes" : "no", atomic_load(&test_woken_early),
           atomic_load(&test_released) ? "yes" : "no", held_ms, TEST_HOLD_MS, atomic_load(&test_quiet_started));
    printf("test_loop_timer: %d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
