/* perf/store_bench.c: the Tessera side of perf/store. One shard loop (core/loop.h, made
 * with the same loop_create/loop_run the server uses) with one store client on it:
 *
 *   store_bench pg CONNINFO SECONDS WINDOW MAX_AID
 *       store/pg.c's pipelined client; WINDOW point lookups in flight, each
 *       `SELECT abalance FROM pgbench_accounts WHERE aid = $1` (prepared) with an aid
 *       drawn uniformly from 1..MAX_AID, the range `pgbench -S` draws from; every
 *       answer must be PG_OK with exactly one row and one column.
 *   store_bench redis URL SECONDS WINDOW KEYSPACE
 *       store/redis.c's client; WINDOW `GET key:%012d` in flight on keys drawn uniformly
 *       from 0..KEYSPACE-1 (redis-benchmark's __rand_int__ pattern, filled beforehand by
 *       perf/store); every answer must carry the value perf/store wrote.
 *
 * Everything runs in callbacks on the loop's thread: once the client is ready, WINDOW
 * requests are sent; each completion is counted and sends the next request at once
 * while SECONDS have not passed; when the last one in flight has answered the loop is
 * shut down. No sleeps and no polling in the hot path (only the wait for the first
 * connection polls, before the clock starts). Prints one line on stdout:
 *   "bench <pg|redis> ops=<n> secs=<wall s> rate=<n/wall s> errors=<n> window=<w>
 *    cpu_us_per_op=<user+sys µs of this process per op>"
 * and exits 1 if any request failed. Pinning to a CPU is the caller's job (taskset). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/config.h"
#include "core/log.h"
#include "core/loop.h"
#include "store/pg.h"
#include "store/redis.h"

/* The largest window: both clients refuse more than their queue bound in flight
 * (PG_QUEUE_MAX, REDIS_PENDING_MAX), and a benchmark must never be refused. */
#define BENCH_WINDOW_MAX (PG_QUEUE_MAX < REDIS_PENDING_MAX ? PG_QUEUE_MAX : REDIS_PENDING_MAX)
#define BENCH_SECONDS_MAX 600     /* the run stays bounded whatever the caller passes */
#define BENCH_READY_POLL_MS 20    /* how often the not-yet-connected client is checked */
#define BENCH_READY_WAIT_MS 10000 /* a loopback server that does not answer by then is down */
#define BENCH_PARAM_BYTES 24      /* an int4 aid or "key:" + 12 digits, and the terminator */
#define BENCH_KEY_DIGITS 12       /* redis-benchmark's __rand_int__ is 12 zero-padded digits */
#define BENCH_CONNECTIONS_MAX 4   /* nothing connects to this loop's listening socket */
#define BENCH_STATEMENT "bench_lookup"
#define BENCH_SQL "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
#define BENCH_REDIS_VALUE "xxx" /* perf/store's fill: redis-benchmark's default 3-byte value */

enum bench_mode { BENCH_PG, BENCH_REDIS };

/* One request slot of the window: its pg_query or redis_cmd, and its parameter text,
 * which must outlive the request. */
struct bench_op {
    struct pg_query q;
    struct redis_cmd cmd;
    char param[BENCH_PARAM_BYTES];
};

struct bench {
    enum bench_mode mode;
    const char *target;  /* conninfo or Redis URL */
    unsigned seconds;
    unsigned window;
    uint64_t range;      /* MAX_AID or KEYSPACE */
    struct loop *loop;
    struct pg_client *pg;
    struct redis_client *redis;
    struct loop_timer ready_poll;
    unsigned polls;
    uint64_t rng;        /* xorshift64 state: uniform ids, cheap next to a round trip */
    uint64_t start_us, deadline_us, end_us;
    uint64_t ops, errors;
    unsigned in_flight;
    bool sending;        /* false once time is up or a request was refused */
    bool never_ready;
    struct bench_op *ops_slots;
};

static struct bench bench;

static uint64_t bench_random(void)
{
    bench.rng ^= bench.rng << 13;
    bench.rng ^= bench.rng >> 7;
    bench.rng ^= bench.rng << 17;
    return bench.rng;
}

static void bench_stop(void)
{
    bench.end_us = loop_now_us();
    loop_request_shutdown();
}

/* A request finished (any outcome): send the next one while time remains. */
static void bench_send(struct bench_op *op);

static void bench_completed(struct bench_op *op, bool ok)
{
    assert(bench.in_flight > 0);
    bench.in_flight--;
    if (ok)
        bench.ops++;
    else
        bench.errors++;
    if (bench.sending && loop_now_us() >= bench.deadline_us)
        bench.sending = false;
    if (bench.sending)
        bench_send(op);
    if (bench.in_flight == 0)
        bench_stop();
}

static void bench_pg_done(struct pg_query *q, const struct pg_result *r)
{
    struct bench_op *op = (struct bench_op *)((char *)q - offsetof(struct bench_op, q));
    bool ok = pg_result_outcome(r) == PG_OK && pg_result_rows(r) == 1 && pg_result_cols(r) == 1;
    if (!ok && bench.errors == 0)
        fprintf(stderr, "store_bench: query failed: %s %s %s (rows %d)\n",
                pg_outcome_name(pg_result_outcome(r)), pg_result_sqlstate(r),
                pg_result_message(r), pg_result_rows(r));
    bench_completed(op, ok);
}

static void bench_redis_done(struct redis_cmd *cmd, const struct redis_reply *reply)
{
    struct bench_op *op = (struct bench_op *)((char *)cmd - offsetof(struct bench_op, cmd));
    /* A bulk string holding the value perf/store wrote under every key: a nil, an error
     * or a reply lost in transit cannot produce it. */
    bool ok = reply->kind == REDIS_KIND_STRING && reply->str.len == strlen(BENCH_REDIS_VALUE) &&
              memcmp(reply->str.ptr, BENCH_REDIS_VALUE, reply->str.len) == 0;
    if (!ok && bench.errors == 0)
        fprintf(stderr, "store_bench: GET %s answered kind %d, %zu bytes\n", op->param,
                (int)reply->kind, reply->str.len);
    bench_completed(op, ok);
}

static void bench_send(struct bench_op *op)
{
    uint64_t id = bench_random() % bench.range;
    bool accepted;
    if (bench.mode == BENCH_PG) {
        snprintf(op->param, sizeof(op->param), "%llu", (unsigned long long)(id + 1));
        op->q = (struct pg_query){ .prepared = BENCH_STATEMENT, .params_count = 1,
                                   .done = bench_pg_done };
        op->q.params[0] = op->param;
        accepted = pg_query(bench.pg, &op->q) == PG_OK;
    } else {
        int len = snprintf(op->param, sizeof(op->param), "key:%0*llu", BENCH_KEY_DIGITS,
                           (unsigned long long)id);
        op->cmd = (struct redis_cmd){ .done = bench_redis_done };
        const struct slice argv[2] = { SLICE_LIT("GET"), slice_make(op->param, (size_t)len) };
        accepted = redis_command(bench.redis, &op->cmd, 2, argv) == 0;
    }
    if (accepted) {
        bench.in_flight++;
        return;
    }
    fprintf(stderr, "store_bench: request refused by the client (window too large?)\n");
    bench.errors++;
    bench.sending = false;
}

static bool bench_client_ready(void)
{
    return bench.mode == BENCH_PG ? pg_client_ready(bench.pg) : redis_client_ready(bench.redis);
}

/* Waits (bounded) for the first connection, then starts the clock and fills the window. */
static void bench_on_ready_poll(struct loop_timer *timer)
{
    if (!bench_client_ready()) {
        if (++bench.polls * BENCH_READY_POLL_MS >= BENCH_READY_WAIT_MS) {
            fprintf(stderr, "store_bench: %s not ready after %d ms\n", bench.target,
                    BENCH_READY_WAIT_MS);
            bench.never_ready = true;
            bench_stop();
            return;
        }
        loop_timer_start(bench.loop, timer, BENCH_READY_POLL_MS);
        return;
    }
    bench.start_us = loop_now_us();
    bench.deadline_us = bench.start_us + (uint64_t)bench.seconds * 1000000u;
    bench.sending = true;
    for (unsigned i = 0; i < bench.window && bench.sending; i++)
        bench_send(&bench.ops_slots[i]);
    if (bench.in_flight == 0)
        bench_stop();
}

static void bench_on_start(struct loop *loop)
{
    if (bench.mode == BENCH_PG) {
        bench.pg = pg_client_create(loop, bench.target);
        if (bench.pg == NULL || pg_prepare(bench.pg, BENCH_STATEMENT, BENCH_SQL) != 0) {
            fprintf(stderr, "store_bench: cannot create the Postgres client\n");
            bench.never_ready = true;
            bench_stop();
            return;
        }
    } else {
        redis_client_start(bench.redis);
    }
    bench.ready_poll.on_expire = bench_on_ready_poll;
    loop_timer_start(loop, &bench.ready_poll, 0);
}

static void bench_on_stop(struct loop *loop)
{
    (void)loop;
    if (bench.redis != NULL)
        redis_client_stop(bench.redis); /* nothing is in flight: no callback runs */
}

/* Connections to the loop's own listening socket (nobody makes any) are closed. */
static void bench_conn_noop(struct conn *conn) { (void)conn; }
static void bench_conn_data(struct conn *conn, const char *data, size_t len)
{
    (void)data;
    (void)len;
    conn_close(conn, true);
}
static void bench_conn_timeout(struct conn *conn, enum conn_timer timer)
{
    (void)timer;
    conn_close(conn, true);
}

static const struct conn_handler bench_handler = {
    .on_open = bench_conn_noop, .on_data = bench_conn_data, .on_sent = bench_conn_noop,
    .on_timeout = bench_conn_timeout, .on_shutdown = bench_conn_noop, .on_close = bench_conn_noop,
};

static double bench_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int bench_usage(void)
{
    fprintf(stderr, "usage: store_bench pg CONNINFO SECONDS WINDOW MAX_AID\n"
                    "       store_bench redis URL SECONDS WINDOW KEYSPACE\n"
                    "(SECONDS 1..%d, WINDOW 1..%d, MAX_AID/KEYSPACE >= 1)\n",
            BENCH_SECONDS_MAX, BENCH_WINDOW_MAX);
    return 2;
}

static int bench_parse(int argc, char **argv)
{
    if (argc != 6)
        return -1;
    if (strcmp(argv[1], "pg") == 0)
        bench.mode = BENCH_PG;
    else if (strcmp(argv[1], "redis") == 0)
        bench.mode = BENCH_REDIS;
    else
        return -1;
    bench.target = argv[2];
    long seconds = strtol(argv[3], NULL, 10);
    long window = strtol(argv[4], NULL, 10);
    long long range = strtoll(argv[5], NULL, 10);
    if (seconds < 1 || seconds > BENCH_SECONDS_MAX || window < 1 || window > BENCH_WINDOW_MAX ||
        range < 1)
        return -1;
    bench.seconds = (unsigned)seconds;
    bench.window = (unsigned)window;
    bench.range = (uint64_t)range;
    bench.rng = (loop_now_us() * UINT64_C(2654435761)) | 1; /* never zero */
    return 0;
}

/* The shard as the server makes it: defaults from config_load, listening on an
 * ephemeral loopback port (nobody connects), one shard, run on this thread. */
static struct loop *bench_loop_create(struct config *cfg, struct loop_shared *shared)
{
    setenv("TESSERA_LISTEN", "127.0.0.1:0", 1);
    setenv("TESSERA_SHARDS", "1", 1);
    if (config_load(cfg, stderr) != 0)
        return NULL;
    cfg->connections_max = BENCH_CONNECTIONS_MAX;
    log_init(LOG_ERROR, false);
    *shared = (struct loop_shared){ .cfg = cfg, .handler = &bench_handler, .shards = 1,
                                    .on_start = bench_on_start, .on_stop = bench_on_stop };
    return loop_create(shared, 0);
}

int main(int argc, char **argv)
{
    if (bench_parse(argc, argv) != 0)
        return bench_usage();
    static struct config cfg;
    static struct loop_shared shared;
    bench.loop = bench_loop_create(&cfg, &shared);
    bench.ops_slots = calloc(bench.window, sizeof(*bench.ops_slots));
    if (bench.loop == NULL || bench.ops_slots == NULL)
        return 1;
    if (bench.mode == BENCH_REDIS) { /* resolves the host now, before the loop serves */
        bench.redis = redis_client_create(bench.loop, bench.target);
        if (bench.redis == NULL)
            return 1;
    }
    double cpu0 = bench_cpu_seconds();
    loop_run(bench.loop, -1);
    double cpu = bench_cpu_seconds() - cpu0;
    if (bench.never_ready)
        return 1; /* a client still connecting is not torn down: the process ends */
    pg_client_destroy(bench.pg);
    redis_client_destroy(bench.redis);
    loop_destroy(bench.loop);
    free(bench.ops_slots);
    double secs = (double)(bench.end_us - bench.start_us) / 1e6;
    printf("bench %s ops=%llu secs=%.3f rate=%.1f errors=%llu window=%u cpu_us_per_op=%.2f\n",
           argv[1], (unsigned long long)bench.ops, secs, secs > 0 ? (double)bench.ops / secs : 0.0,
           (unsigned long long)bench.errors, bench.window,
           bench.ops > 0 ? cpu * 1e6 / (double)bench.ops : 0.0);
    return bench.errors == 0 ? 0 : 1;
}
