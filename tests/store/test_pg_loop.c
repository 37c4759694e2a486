/* tests/store/test_pg_loop.c: the shard's Postgres client (store/pg.c) on real io_uring
 * loops against a real Postgres (TESSERA_TEST_PG_URL; skipped, exit 77, when unset).
 * Proves, every callback checked to run once on the thread of the shard that sent it:
 *   1. pipelining: from each of 2 shards, 10,000 queries `SELECT $1::int + 1` (half as
 *      text, half through a prepared statement), 1,000 in flight at a time, each answered
 *      with its own request's value plus one;
 *   2. a unique violation is PG_UNIQUE_VIOLATION (HTTP 409), and the queries pipelined
 *      behind it are not aborted (one sync per query); a serialization failure (40001) is
 *      retried by the client: one that passes on the third try answers PG_OK, one that
 *      always fails answers PG_SERIALIZATION after PG_RETRIES_MAX retries;
 *   3. a query past its budget (pg_sleep(3), budget 200 ms) gets PG_TIMEOUT before its
 *      result exists, the late result is discarded when it comes, and the next queries
 *      on the same connection succeed;
 *   4. the connection killed from another session (pg_terminate_backend) answers every
 *      query in flight PG_UNAVAILABLE, the client reconnects by itself (a new backend),
 *      re-prepares its statement and new queries succeed;
 *   5. past PG_QUEUE_MAX queries in flight pg_query refuses at once with PG_UNAVAILABLE
 *      and the refused queries' callbacks never run; the accepted ones all succeed;
 *      pg_client_accepts foretells each answer;
 *   6. a server that refuses connections: the client keeps retrying with backoff (several
 *      failed attempts counted), stays not ready, and refuses queries at once. */
#include "store/pg.c"
#include "tests/core/loop_fixture.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core/log.h"
#include "tests/store/pgtest.h"

#define TEST_SHARDS 2
#define TEST_PIPELINED 10000    /* per shard: issue 4's "10,000+ pipelined queries" */
#define TEST_WINDOW 1000        /* in flight per shard in step 1: well under PG_QUEUE_MAX */
#define TEST_OVERFLOW 100       /* queries past PG_QUEUE_MAX in step 5, all refused */
#define TEST_SLOW_BUDGET_MS 200 /* step 3: far below the 3 s the query sleeps */
#define TEST_LONG_BUDGET_MS 60000 /* queries that must not time out under a loaded sanitizer run */
#define TEST_SLEEPERS 3         /* step 4: queries in flight when the backend is killed */
#define TEST_POLL_MS 50         /* how often a shard checks pg_client_ready */
#define TEST_READY_POLLS_MAX 600 /* about a minute: connecting never takes that long */
#define TEST_WAIT_MS_MAX 180000 /* the main thread's bound on the whole run (ctest allows 300 s) */
#define TEST_VALUE_BYTES 32
#define TEST_FLAKY_FAILURES 2   /* step 2: serialization failures before the query passes */
#define TEST_DOWN_ATTEMPTS 3    /* step 6: failed connection attempts to wait for */
/* Port 1 on loopback: nothing listens there, so connecting is refused at once. */
#define TEST_DOWN_URL "postgresql://tessera_test@127.0.0.1:1/tessera_test"

_Static_assert(TEST_WINDOW < PG_QUEUE_MAX, "step 1 is never refused");
_Static_assert(TEST_FLAKY_FAILURES < PG_RETRIES_MAX, "step 2's flaky query passes when retried");

struct test_op {
    struct pg_query q;
    unsigned shard;
    int calls;
    bool wrong_thread;
    enum pg_outcome outcome;
    char value[TEST_VALUE_BYTES];
    char param[TEST_VALUE_BYTES];
};

struct test_shard {
    struct loop *loop;
    struct pg_client *pg;
    pthread_t self;
    struct loop_timer poll; /* waits for pg_client_ready */
    unsigned polls;
    void (*when_ready)(struct test_shard *s);
    void (*when_done)(struct test_shard *s); /* the phase's ops all answered */
    int pending;
    /* step 1 */
    int next, in_flight, adds_ok, adds_bad, adds_refused;
    uint64_t adds_start_us, adds_end_us; /* printed only: no timing assertions */
    /* step 3 */
    uint64_t discarded_at_timeout, discarded_after;
    /* step 4 */
    char old_pid[TEST_VALUE_BYTES];
    /* step 5 */
    uint32_t count_before_flood;
    int flood_refused, flood_accepted;
    int flood_foretold_wrong; /* pg_client_accepts said otherwise than pg_query did */
    bool failed_to_connect;
    /* step 2 */
    uint64_t retries_before, retries_after;
    /* step 6 */
    struct pg_client *down;
    struct loop_timer down_poll;
    unsigned down_polls;
    bool down_ready_seen;
    enum pg_outcome down_query;
    const int *down_op_calls;
};

static struct pgtest_db test_db;
static struct test_shard test_shards[TEST_SHARDS];
static pthread_t test_threads[TEST_SHARDS];
static struct test_op test_adds[TEST_SHARDS][TEST_PIPELINED];
static struct test_op test_unique[4], test_setup[3], test_serial[3], test_slow[3];
static struct test_op test_kill[1 + TEST_SLEEPERS], test_after[2];
static struct test_op test_flood[PG_QUEUE_MAX + TEST_OVERFLOW];
static atomic_int test_shards_finished;
static atomic_long test_kill_pid; /* set by shard 0 when its sleepers are in flight */

/* ---- helpers on the shard's thread ------------------------------------------------- */

static void test_finish(struct test_shard *s)
{
    atomic_fetch_add(&test_shards_finished, 1);
    (void)s;
}

static void test_op_done(struct pg_query *q, const struct pg_result *r)
{
    struct test_op *op = (struct test_op *)q;
    struct test_shard *s = &test_shards[op->shard];
    op->calls++;
    op->wrong_thread |= !pthread_equal(s->self, pthread_self());
    op->outcome = pg_result_outcome(r);
    if (pg_result_rows(r) >= 1)
        snprintf(op->value, sizeof(op->value), "%s", pg_result_value(r, 0, 0));
    if (--s->pending == 0)
        s->when_done(s);
}

/* Sends one op; false when refused (its callback will not run). */
static bool test_send(struct test_shard *s, struct test_op *op, const char *sql,
                      const char *prepared, const char *param, uint32_t budget_ms)
{
    *op = (struct test_op){ .shard = loop_index(s->loop), .outcome = PG_ERROR };
    op->q.sql = sql;
    op->q.prepared = prepared;
    op->q.budget_ms = budget_ms;
    op->q.done = test_op_done;
    if (param != NULL) {
        snprintf(op->param, sizeof(op->param), "%s", param);
        op->q.params[0] = op->param;
        op->q.params_count = 1;
    }
    if (pg_query(s->pg, &op->q) != PG_OK)
        return false;
    s->pending++;
    return true;
}

static void test_poll_ready(struct loop_timer *timer)
{
    struct test_shard *s = (struct test_shard *)((char *)timer - offsetof(struct test_shard, poll));
    if (pg_client_ready(s->pg)) {
        s->when_ready(s);
    } else if (++s->polls > TEST_READY_POLLS_MAX) {
        s->failed_to_connect = true;
        test_finish(s);
    } else {
        loop_timer_start(s->loop, &s->poll, TEST_POLL_MS);
    }
}

static void test_wait_ready(struct test_shard *s, void (*then)(struct test_shard *s))
{
    s->polls = 0;
    s->when_ready = then;
    s->poll.on_expire = test_poll_ready;
    loop_timer_start(s->loop, &s->poll, TEST_POLL_MS);
}

/* ---- step 5: the queue bound ---------------------------------------------------------- */

static void test_flood_start(struct test_shard *s)
{
    s->count_before_flood = s->pg->count;
    s->when_done = test_finish;
    for (int i = 0; i < PG_QUEUE_MAX + TEST_OVERFLOW; i++) {
        bool foretold = pg_client_accepts(s->pg);
        bool accepted = test_send(s, &test_flood[i], "SELECT 1", NULL, NULL, TEST_LONG_BUDGET_MS);
        s->flood_accepted += accepted;
        s->flood_refused += !accepted;
        s->flood_foretold_wrong += foretold != accepted;
    }
    if (s->pending == 0)
        test_finish(s);
}

/* ---- step 4: the backend killed ------------------------------------------------------- */

static void test_after_reconnect(struct test_shard *s)
{
    s->when_done = test_flood_start;
    test_send(s, &test_after[0], NULL, "add1", "99", TEST_LONG_BUDGET_MS);
    test_send(s, &test_after[1], "SELECT pg_backend_pid()", NULL, NULL, TEST_LONG_BUDGET_MS);
}

static void test_sleepers_answered(struct test_shard *s)
{
    test_wait_ready(s, test_after_reconnect);
}

static void test_pid_known(struct test_shard *s)
{
    snprintf(s->old_pid, sizeof(s->old_pid), "%s", test_kill[0].value);
    s->when_done = test_sleepers_answered;
    for (int i = 0; i < TEST_SLEEPERS; i++)
        test_send(s, &test_kill[1 + i], "SELECT pg_sleep(30)", NULL, NULL, TEST_LONG_BUDGET_MS);
    atomic_store(&test_kill_pid, atol(s->old_pid)); /* the main thread kills it now */
}

static void test_kill_start(struct test_shard *s)
{
    s->when_done = test_pid_known;
    test_send(s, &test_kill[0], "SELECT pg_backend_pid()", NULL, NULL, TEST_LONG_BUDGET_MS);
}

/* ---- step 3: a query past its budget -------------------------------------------------- */

static void test_slow_followers_done(struct test_shard *s)
{
    s->discarded_after = s->pg->stats.discarded;
    test_kill_start(s);
}

static void test_slow_timed_out(struct test_shard *s)
{
    s->discarded_at_timeout = s->pg->stats.discarded;
    s->when_done = test_slow_followers_done;
    test_send(s, &test_slow[1], "SELECT $1::int + 1", NULL, "41", TEST_LONG_BUDGET_MS);
    test_send(s, &test_slow[2], NULL, "add1", "1", TEST_LONG_BUDGET_MS);
}

static void test_slow_start(struct test_shard *s)
{
    s->when_done = test_slow_timed_out;
    test_send(s, &test_slow[0], "SELECT pg_sleep(3)", NULL, NULL, TEST_SLOW_BUDGET_MS);
}

/* ---- step 2: unique violation, serialization failures ------------------------------------ */

static void test_serial_done(struct test_shard *s)
{
    s->retries_after = s->pg->stats.retries;
    test_slow_start(s);
}

static void test_serial_start(struct test_shard *s)
{
    s->retries_before = s->pg->stats.retries;
    s->when_done = test_serial_done;
    test_send(s, &test_serial[0], "SELECT pg_temp.test_flaky()", NULL, NULL, TEST_LONG_BUDGET_MS);
    test_send(s, &test_serial[1], "SELECT pg_temp.test_always_fails()", NULL, NULL,
              TEST_LONG_BUDGET_MS);
    test_send(s, &test_serial[2], "SELECT 5", NULL, NULL, TEST_LONG_BUDGET_MS);
}

/* Functions raising 40001: test_flaky the first TEST_FLAKY_FAILURES times it runs (the
 * sequence is not rolled back with the failed statement), test_always_fails every time. */
static void test_serial_setup(struct test_shard *s)
{
    static char flaky[512];
    snprintf(flaky, sizeof(flaky),
             "CREATE FUNCTION pg_temp.test_flaky() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
             "IF nextval('test_flaky_seq') <= %d THEN RAISE EXCEPTION 'flaky' USING "
             "ERRCODE = '40001'; END IF; RETURN 7; END $$", TEST_FLAKY_FAILURES);
    s->when_done = test_serial_start;
    test_send(s, &test_setup[0], "CREATE TEMP SEQUENCE test_flaky_seq", NULL, NULL,
              TEST_LONG_BUDGET_MS);
    test_send(s, &test_setup[1], flaky, NULL, NULL, TEST_LONG_BUDGET_MS);
    test_send(s, &test_setup[2],
              "CREATE FUNCTION pg_temp.test_always_fails() RETURNS int LANGUAGE plpgsql AS $$ "
              "BEGIN RAISE EXCEPTION 'always' USING ERRCODE = '40001'; END $$",
              NULL, NULL, TEST_LONG_BUDGET_MS);
}

static void test_unique_start(struct test_shard *s)
{
    s->when_done = test_serial_setup;
    test_send(s, &test_unique[0], "CREATE TEMP TABLE test_u (k int PRIMARY KEY)", NULL, NULL,
              TEST_LONG_BUDGET_MS);
    test_send(s, &test_unique[1], "INSERT INTO test_u VALUES ($1)", NULL, "1", TEST_LONG_BUDGET_MS);
    test_send(s, &test_unique[2], "INSERT INTO test_u VALUES ($1)", NULL, "1", TEST_LONG_BUDGET_MS);
    test_send(s, &test_unique[3], "SELECT count(*) FROM test_u", NULL, NULL, TEST_LONG_BUDGET_MS);
}

/* ---- step 6: a server that refuses connections (shard 1) -------------------------------- */

static void test_down_poll(struct loop_timer *timer)
{
    struct test_shard *s =
        (struct test_shard *)((char *)timer - offsetof(struct test_shard, down_poll));
    s->down_ready_seen |= pg_client_ready(s->down);
    if (pg_client_stats(s->down)->losses >= TEST_DOWN_ATTEMPTS ||
        ++s->down_polls > TEST_READY_POLLS_MAX) {
        static struct test_op op; /* its callback must never run: checked by calls */
        op = (struct test_op){ .shard = 1, .q = { .sql = "SELECT 1", .done = test_op_done } };
        s->down_query = pg_query(s->down, &op.q);
        s->down_op_calls = &op.calls;
        test_finish(s);
        return;
    }
    loop_timer_start(s->loop, &s->down_poll, TEST_POLL_MS);
}

static void test_down_start(struct test_shard *s)
{
    s->down = pg_client_create(s->loop, TEST_DOWN_URL);
    assert(s->down != NULL);
    s->down_poll.on_expire = test_down_poll;
    loop_timer_start(s->loop, &s->down_poll, TEST_POLL_MS);
}

/* ---- step 1: pipelined queries -------------------------------------------------------- */

static void test_add_send(struct test_shard *s);

static void test_add_done(struct pg_query *q, const struct pg_result *r)
{
    struct test_op *op = (struct test_op *)q;
    struct test_shard *s = &test_shards[op->shard];
    int index = (int)(op - test_adds[op->shard]);
    char want[TEST_VALUE_BYTES];
    snprintf(want, sizeof(want), "%d", index * 7 + (int)op->shard + 1);
    op->calls++;
    bool ok = pthread_equal(s->self, pthread_self()) && op->calls == 1 &&
              pg_result_outcome(r) == PG_OK && pg_result_rows(r) == 1 &&
              strcmp(pg_result_value(r, 0, 0), want) == 0;
    if (ok)
        s->adds_ok++;
    else
        s->adds_bad++;
    s->in_flight--;
    test_add_send(s);
    if (s->adds_ok + s->adds_bad + s->adds_refused == TEST_PIPELINED) {
        s->adds_end_us = loop_now_us();
        if (op->shard == 0)
            test_unique_start(s);
        else
            test_down_start(s);
    }
}

static void test_add_send(struct test_shard *s)
{
    unsigned shard = loop_index(s->loop);
    while (s->next < TEST_PIPELINED && s->in_flight < TEST_WINDOW) {
        struct test_op *op = &test_adds[shard][s->next];
        *op = (struct test_op){ .shard = shard };
        snprintf(op->param, sizeof(op->param), "%d", s->next * 7 + (int)shard);
        if (s->next % 2 == 0)
            op->q.sql = "SELECT $1::int + 1";
        else
            op->q.prepared = "add1";
        op->q.params[0] = op->param;
        op->q.params_count = 1;
        op->q.budget_ms = TEST_LONG_BUDGET_MS;
        op->q.done = test_add_done;
        s->next++;
        if (pg_query(s->pg, &op->q) != PG_OK)
            s->adds_refused++;
        else
            s->in_flight++;
    }
}

static void test_adds_start(struct test_shard *s)
{
    s->adds_start_us = loop_now_us();
    test_add_send(s);
}

static void test_on_start(struct loop *loop)
{
    struct test_shard *s = &test_shards[loop_index(loop)];
    s->loop = loop;
    s->self = pthread_self();
    s->pg = pg_client_create(loop, test_db.url);
    assert(s->pg != NULL);
    int rc = pg_prepare(s->pg, "add1", "SELECT $1::int + 1");
    assert(rc == 0);
    assert(pg_prepare(s->pg, "add1", "SELECT 2") == -TE_INVAL);
    (void)rc;
    test_wait_ready(s, test_adds_start);
}

/* ---- the main thread -------------------------------------------------------------------- */

static void test_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* Kills shard 0's backend once its sleepers are in flight, from a blocking session. */
static void test_wait_and_kill(void)
{
    bool killed = false;
    for (long waited = 0; waited < TEST_WAIT_MS_MAX; waited += 10) {
        if (atomic_load(&test_shards_finished) == TEST_SHARDS)
            break;
        long pid = atomic_load(&test_kill_pid);
        if (pid != 0 && !killed) {
            PGconn *conn = pgtest_connect(&test_db);
            char sql[96];
            char out[TEST_VALUE_BYTES];
            snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%ld)", pid);
            CHECK(conn != NULL);
            if (conn != NULL) {
                CHECK(strcmp(pgtest_value(conn, sql, out, sizeof(out)), "t") == 0);
                PQfinish(conn);
            }
            killed = true;
        }
        test_sleep_ms(10);
    }
    CHECK(killed);
    CHECK(atomic_load(&test_shards_finished) == TEST_SHARDS);
}

static bool test_op_is(const struct test_op *op, enum pg_outcome outcome, const char *value)
{
    return op->calls == 1 && !op->wrong_thread && op->outcome == outcome &&
           (value == NULL || strcmp(op->value, value) == 0);
}

static void test_check_results(void)
{
    for (unsigned i = 0; i < TEST_SHARDS; i++) {
        struct test_shard *s = &test_shards[i];
        CHECK(!s->failed_to_connect);
        CHECK(s->adds_ok == TEST_PIPELINED);
        CHECK(s->adds_bad == 0);
        CHECK(s->adds_refused == 0);
        CHECK(pthread_equal(s->self, test_threads[i]));
        double seconds = (double)(s->adds_end_us - s->adds_start_us) / 1e6;
        printf("test_pg_loop: shard %u: %d/%d pipelined answers matched (%d wrong, %d refused), "
               "%.0f queries/s\n", i, s->adds_ok, TEST_PIPELINED, s->adds_bad, s->adds_refused,
               seconds > 0 ? TEST_PIPELINED / seconds : 0.0);
    }
    struct test_shard *s = &test_shards[0];
    unsigned retry_after;
    CHECK(test_op_is(&test_unique[0], PG_OK, NULL));
    CHECK(test_op_is(&test_unique[1], PG_OK, NULL));
    CHECK(test_op_is(&test_unique[2], PG_UNIQUE_VIOLATION, NULL));
    CHECK(pg_outcome_http_status(test_unique[2].outcome, &retry_after) == 409);
    CHECK(test_op_is(&test_unique[3], PG_OK, "1"));
    for (int i = 0; i < 3; i++)
        CHECK(test_op_is(&test_setup[i], PG_OK, NULL));
    CHECK(test_op_is(&test_serial[0], PG_OK, "7"));
    CHECK(test_op_is(&test_serial[1], PG_SERIALIZATION, NULL));
    CHECK(pg_outcome_http_status(PG_SERIALIZATION, &retry_after) == 503 && retry_after > 0);
    CHECK(test_op_is(&test_serial[2], PG_OK, "5"));
    CHECK(s->retries_after - s->retries_before == TEST_FLAKY_FAILURES + PG_RETRIES_MAX);
    CHECK(test_op_is(&test_slow[0], PG_TIMEOUT, NULL));
    CHECK(pg_outcome_http_status(PG_TIMEOUT, &retry_after) == 503 && retry_after > 0);
    CHECK(s->discarded_at_timeout == 0); /* answered before its result existed */
    CHECK(s->discarded_after == 1);      /* and its late result thrown away */
    CHECK(test_op_is(&test_slow[1], PG_OK, "42"));
    CHECK(test_op_is(&test_slow[2], PG_OK, "2"));
    CHECK(test_op_is(&test_kill[0], PG_OK, NULL));
    for (int i = 0; i < TEST_SLEEPERS; i++)
        CHECK(test_op_is(&test_kill[1 + i], PG_UNAVAILABLE, NULL));
    CHECK(test_op_is(&test_after[0], PG_OK, "100")); /* add1 was prepared again */
    CHECK(test_op_is(&test_after[1], PG_OK, NULL));
    CHECK(strcmp(test_after[1].value, s->old_pid) != 0);
    CHECK(s->pg->stats.connects == 2);
    CHECK(s->pg->stats.losses == 1);
    CHECK(s->count_before_flood == 0);
    CHECK(s->flood_accepted == PG_QUEUE_MAX);
    CHECK(s->flood_refused == TEST_OVERFLOW);
    CHECK(s->flood_foretold_wrong == 0);
    int flood_ok = 0, flood_bad = 0;
    for (int i = 0; i < PG_QUEUE_MAX + TEST_OVERFLOW; i++) {
        if (i < PG_QUEUE_MAX)
            flood_ok += test_op_is(&test_flood[i], PG_OK, "1");
        else
            flood_bad += test_flood[i].calls != 0;
    }
    CHECK(flood_ok == PG_QUEUE_MAX);
    CHECK(flood_bad == 0);
    printf("test_pg_loop: shard 0: timeouts %lu, discarded %lu, losses %lu, connects %lu, "
           "flood %d accepted (%d answered ok), %d refused\n",
           (unsigned long)s->pg->stats.timeouts, (unsigned long)s->pg->stats.discarded,
           (unsigned long)s->pg->stats.losses, (unsigned long)s->pg->stats.connects,
           s->flood_accepted, flood_ok, s->flood_refused);
    struct test_shard *s1 = &test_shards[1];
    CHECK(pg_client_stats(s1->down)->losses >= TEST_DOWN_ATTEMPTS);
    CHECK(pg_client_stats(s1->down)->connects == 0);
    CHECK(!s1->down_ready_seen);
    CHECK(s1->down_query == PG_UNAVAILABLE);
    CHECK(s1->down_op_calls != NULL && *s1->down_op_calls == 0);
    printf("test_pg_loop: shard 1: unreachable server: %lu failed attempts, query refused: %s\n",
           (unsigned long)pg_client_stats(s1->down)->losses, pg_outcome_name(s1->down_query));
}

int main(void)
{
    if (pgtest_server_url() == NULL) {
        printf("test_pg_loop: TESSERA_TEST_PG_URL unset, skipped\n");
        return 77;
    }
    if (pgtest_create(&test_db, "pg_loop") != 0)
        return 1;
    struct config cfg;
    if (loop_fixture_config(&cfg) != 0)
        return 1;
    cfg.shards = TEST_SHARDS;
    cfg.connections_max = 16;
    log_init(LOG_ERROR, false);
    struct loop_shared shared = {
        .cfg = &cfg, .handler = &loop_fixture_handler, .on_start = test_on_start, .shards = TEST_SHARDS,
        .mailbox = mailbox_create(TEST_SHARDS), .workers = workers_create(1, TEST_SHARDS),
    };
    struct loop *loops[TEST_SHARDS];
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        loops[i] = loop_create(&shared, i);
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        pthread_create(&test_threads[i], NULL, loop_fixture_shard_main, loops[i]);
    test_wait_and_kill();
    loop_request_shutdown();
    for (unsigned i = 0; i < TEST_SHARDS; i++)
        pthread_join(test_threads[i], NULL);
    test_check_results();
    for (unsigned i = 0; i < TEST_SHARDS; i++) {
        pg_client_destroy(test_shards[i].pg);
        pg_client_destroy(test_shards[i].down);
        loop_destroy(loops[i]);
    }
    workers_destroy(shared.workers);
    mailbox_destroy(shared.mailbox);
    pgtest_drop(&test_db);
    return check_report("test_pg_loop");
}
