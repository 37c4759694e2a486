/* tests/store/test_redis_loop.c: the Redis client on a real shard loop against a real
 * redis-server this test starts (on a free loopback port, so it can stop and restart
 * it). Proves: 10,000 pipelined INCRs all answer, in order, on the shard's thread;
 * the pending bound answers -TE_FULL rather than queueing without end; a command
 * past its budget (DEBUG SLEEP) completes as TIMEOUT and the client reconnects by
 * itself; Redis killed with commands in flight: every one completes as UNAVAILABLE,
 * none hangs, and after Redis comes back the client reconnects, commands succeed and
 * the subscriber has resubscribed (a message published after the restart arrives).
 * Skips (77) when redis-server is not installed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "tests/core/loop_fixture.h"
#include "store/redis.h"

#define TEST_PIPELINED 10000
#define TEST_INFLIGHT_INCRS 100
#define TEST_STEP_MS 10          /* the shard polls the test's phase this often */
#define TEST_PHASE_WAIT_MS 20000 /* a phase not done by then fails the test: never hangs */

enum test_phase {
    PHASE_CONNECT, PHASE_PIPELINE, PHASE_BOUND, PHASE_TIMEOUT, PHASE_INFLIGHT, PHASE_KILLED,
    PHASE_RECOVER, PHASE_DONE,
};

struct test_cmd {
    struct redis_cmd cmd;
    long long expect;
};

static struct loop *test_loop;
static pthread_t test_thread;
static struct redis_client *test_client, *test_subscriber;
static struct loop_timer test_step;
static atomic_int test_phase, test_phase_done, test_failures;
static atomic_int test_replies, test_unavailable, test_timeouts, test_messages, test_wrong_thread;
static atomic_int test_wrong_kind; /* an INCR answered as anything but an integer or a failure */
static int test_in_order = 1;
static struct test_cmd test_cmds[TEST_PIPELINED];
static struct test_cmd test_probe, test_sleep_cmd;
static struct redis_cmd test_publish_cmd;
static atomic_int test_publish_replies;
static bool test_publish_in_flight;
static char test_port_text[16];
static pid_t test_redis_pid;

static void test_fail(const char *what)
{
    fprintf(stderr, "FAIL: %s\n", what);
    atomic_fetch_add(&test_failures, 1);
}

static void test_on_incr(struct redis_cmd *cmd, const struct redis_reply *reply)
{
    struct test_cmd *tc = (struct test_cmd *)cmd;
    if (!pthread_equal(pthread_self(), test_thread))
        atomic_fetch_add(&test_wrong_thread, 1);
    if (reply->kind == REDIS_KIND_UNAVAILABLE)
        atomic_fetch_add(&test_unavailable, 1);
    else if (reply->kind == REDIS_KIND_TIMEOUT)
        atomic_fetch_add(&test_timeouts, 1);
    else if (reply->kind != REDIS_KIND_INTEGER)
        atomic_fetch_add(&test_wrong_kind, 1);
    else if (tc->expect != 0 && reply->integer != tc->expect)
        test_in_order = 0;
    atomic_fetch_add(&test_replies, 1);
}

static void test_on_message(void *arg, struct slice channel, struct slice message)
{
    (void)arg;
    if (slice_eq_cstr(channel, "tessera:test") && slice_eq_cstr(message, "hello"))
        atomic_fetch_add(&test_messages, 1);
}

static int test_send(struct test_cmd *tc, long long expect, int argc, const struct slice *argv)
{
    tc->cmd.done = test_on_incr;
    tc->expect = expect;
    return redis_command(test_client, &tc->cmd, argc, argv);
}

static void test_on_publish(struct redis_cmd *cmd, const struct redis_reply *reply)
{
    (void)cmd;
    (void)reply;
    test_publish_in_flight = false;
    atomic_fetch_add(&test_publish_replies, 1);
}

/* Publishes unless a publish is in flight; counted apart from the other commands
 * because the recovery phase repeats it until the resubscribed subscriber hears it. */
static void test_publish(void)
{
    const struct slice argv[] = { SLICE_LIT("PUBLISH"), SLICE_LIT("tessera:test"), SLICE_LIT("hello") };
    if (test_publish_in_flight)
        return;
    test_publish_cmd.done = test_on_publish;
    test_publish_cmd.budget_ms = 3000; /* may queue behind the timeout phase's sleep */
    if (redis_command(test_client, &test_publish_cmd, 3, argv) == 0)
        test_publish_in_flight = true;
}

/* Runs one phase's action on the shard's thread, once. */
static void test_act(enum test_phase phase)
{
    const struct slice incr[] = { SLICE_LIT("INCR"), SLICE_LIT("tessera:test:counter") };
    if (phase == PHASE_PIPELINE) {
        const struct slice del[] = { SLICE_LIT("DEL"), SLICE_LIT("tessera:test:counter") };
        test_send(&test_probe, 0, 2, del);
    } else if (phase == PHASE_BOUND) {
        int sent = 0;
        int rc = 0;
        while (sent <= REDIS_PENDING_MAX && (rc = test_send(&test_cmds[sent % TEST_PIPELINED], 0, 2, incr)) == 0)
            sent++;
        if (rc != -TE_FULL || sent != REDIS_PENDING_MAX)
            test_fail("the pending bound did not answer -TE_FULL at REDIS_PENDING_MAX");
    } else if (phase == PHASE_TIMEOUT) {
        const struct slice sleep_cmd[] = { SLICE_LIT("DEBUG"), SLICE_LIT("SLEEP"), SLICE_LIT("0.6") };
        test_probe.cmd.budget_ms = 200;
        test_send(&test_probe, 0, 3, sleep_cmd);
        test_probe.cmd.budget_ms = 0;
    } else if (phase == PHASE_INFLIGHT) {
        /* The publish is answered first; then Redis sleeps with 100 INCRs queued behind
         * the sleep, and is killed while they wait: all 101 must come back UNAVAILABLE. */
        const struct slice sleep_cmd[] = { SLICE_LIT("DEBUG"), SLICE_LIT("SLEEP"), SLICE_LIT("5") };
        test_publish();
        test_sleep_cmd.cmd.budget_ms = 15000;
        test_send(&test_sleep_cmd, 0, 3, sleep_cmd);
        for (int i = 0; i < TEST_INFLIGHT_INCRS; i++) {
            test_cmds[i].cmd.budget_ms = 15000; /* queued behind the sleep: must not time out */
            test_send(&test_cmds[i], 0, 2, incr);
        }
    }
}

/* Keeps up to REDIS_PENDING_MAX INCRs in flight until TEST_PIPELINED were sent. */
static void test_pipeline_fill(void)
{
    static int sent;
    const struct slice incr[] = { SLICE_LIT("INCR"), SLICE_LIT("tessera:test:counter") };
    while (sent < TEST_PIPELINED) {
        int rc = test_send(&test_cmds[sent], sent + 1, 2, incr);
        if (rc == -TE_FULL)
            return; /* back-pressure: the rest goes out as answers come back */
        if (rc != 0) {
            test_fail("pipelined INCR refused");
            return;
        }
        sent++;
    }
}

static void test_on_step(struct loop_timer *timer)
{
    static int acted = -1;
    int phase = atomic_load(&test_phase);
    if (phase == PHASE_PIPELINE && acted == phase)
        test_pipeline_fill();
    if (phase != acted && redis_client_ready(test_client) && redis_client_ready(test_subscriber)) {
        acted = phase;
        test_act((enum test_phase)phase);
        atomic_store(&test_phase_done, phase);
    } else if (phase == PHASE_KILLED && acted != phase) {
        acted = phase; /* Redis is down: nothing to send, the client must not be ready */
        atomic_store(&test_phase_done, phase);
    }
    if (phase == PHASE_RECOVER && acted == phase && redis_client_ready(test_client) &&
        atomic_load(&test_messages) < 2)
        test_publish(); /* until the resubscribed subscriber hears one */
    if (phase == PHASE_DONE) {
        redis_client_stop(test_client);
        redis_client_stop(test_subscriber);
        return;
    }
    loop_timer_start(test_loop, timer, TEST_STEP_MS);
}

static void test_on_start(struct loop *loop)
{
    redis_client_start(test_client);
    redis_client_start(test_subscriber);
    test_step.on_expire = test_on_step;
    loop_timer_start(loop, &test_step, TEST_STEP_MS);
}

static int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t test_redis_start(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("redis-server", "redis-server", "--port", test_port_text, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
               "--loglevel", "warning", (char *)NULL);
        execlp("redis-server", "redis-server", "--port", test_port_text, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_redis_stop(void)
{
    kill(test_redis_pid, SIGKILL);
    waitpid(test_redis_pid, NULL, 0);
}

static void test_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* Moves to phase and waits until the shard acted on it and cond holds. */
static int test_phase_run(enum test_phase phase, int (*cond)(void))
{
    atomic_store(&test_phase, phase);
    for (int waited = 0; waited < TEST_PHASE_WAIT_MS; waited += 10) {
        if (atomic_load(&test_phase_done) == (int)phase && (cond == NULL || cond()))
            return 0;
        test_sleep_ms(10);
    }
    fprintf(stderr, "phase %d did not complete\n", phase);
    atomic_fetch_add(&test_failures, 1);
    return -1;
}

static int test_all_replied(void) { return atomic_load(&test_replies) >= TEST_PIPELINED + 1; }
static int test_bound_replied(void) { return atomic_load(&test_replies) >= TEST_PIPELINED + 1 + REDIS_PENDING_MAX; }
static int test_timed_out(void) { return atomic_load(&test_timeouts) >= 1 && redis_client_connects(test_client) >= 2; }
static int test_inflight_sent(void) { return atomic_load(&test_messages) >= 1; }
static int test_killed_settled(void)
{
    return !redis_client_ready(test_client) && atomic_load(&test_unavailable) >= TEST_INFLIGHT_INCRS + 1;
}
static int test_recovered(void) { return atomic_load(&test_messages) >= 2; }

int main(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("test_redis_loop: redis-server not installed, skipping\n");
        return 77;
    }
    snprintf(test_port_text, sizeof(test_port_text), "%d", test_free_port());
    test_redis_pid = test_redis_start();
    struct config cfg;
    if (loop_fixture_config(&cfg) != 0)
        return 1;
    cfg.shards = 1;
    cfg.connections_max = 4;
    log_init(LOG_ERROR, false);
    struct loop_shared shared = { .cfg = &cfg, .handler = &loop_fixture_handler, .on_start = test_on_start, .shards = 1 };
    test_loop = loop_create(&shared, 0);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%s", test_port_text);
    test_client = redis_client_create(test_loop, url);
    test_subscriber = redis_client_create(test_loop, url);
    if (!test_loop || !test_client || !test_subscriber ||
        redis_client_subscribe(test_subscriber, "tessera:test", test_on_message, NULL) != 0)
        return 1;
    pthread_create(&test_thread, NULL, loop_fixture_shard_main, test_loop);

    test_phase_run(PHASE_PIPELINE, test_all_replied);
    if (!test_in_order)
        test_fail("pipelined INCR answers out of order");
    test_phase_run(PHASE_BOUND, test_bound_replied);
    test_phase_run(PHASE_TIMEOUT, test_timed_out);
    int unavailable_before = atomic_load(&test_unavailable);
    test_phase_run(PHASE_INFLIGHT, test_inflight_sent);
    test_redis_stop();
    test_phase_run(PHASE_KILLED, test_killed_settled);
    int lost = atomic_load(&test_unavailable) - unavailable_before;
    if (lost != TEST_INFLIGHT_INCRS + 1)
        test_fail("commands in flight when Redis died did not all complete as UNAVAILABLE");
    test_redis_pid = test_redis_start();
    test_phase_run(PHASE_RECOVER, test_recovered);
    test_phase_run(PHASE_DONE, NULL);
    loop_request_shutdown();
    pthread_join(test_thread, NULL);
    test_redis_stop();

    int expected_replies = TEST_PIPELINED + 1 + REDIS_PENDING_MAX + 1 + 1 + TEST_INFLIGHT_INCRS;
    if (atomic_load(&test_replies) != expected_replies)
        test_fail("not every command completed exactly once");
    if (atomic_load(&test_wrong_kind) != 0)
        test_fail("INCR replies reported as another kind than REDIS_KIND_INTEGER");
    if (atomic_load(&test_wrong_thread) != 0)
        test_fail("a callback ran off the shard's thread");
    printf("test_redis_loop: replies %d/%d, in order %s, timeouts %d, unavailable after kill %d, "
           "connects %llu, messages %d/2\n",
           atomic_load(&test_replies), expected_replies, test_in_order ? "yes" : "no",
           atomic_load(&test_timeouts), lost, (unsigned long long)redis_client_connects(test_client),
           atomic_load(&test_messages));
    redis_client_destroy(test_client);
    redis_client_destroy(test_subscriber);
    loop_destroy(test_loop);
    printf("test_redis_loop: %d failed\n", atomic_load(&test_failures));
    return atomic_load(&test_failures) == 0 ? 0 : 1;
}
