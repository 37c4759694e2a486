/* store/pg.c: a shard's Postgres connection on its io_uring loop (store/pg.h).
 *
 * State machine (sticky, STYLE §4): BACKOFF (timer) → CONNECTING (PQconnectPoll driven
 * by the loop watch, bounded by PG_CONNECT_TIMEOUT_MS) → READY (pipeline mode) → on
 * any failure everything pending gets PG_UNAVAILABLE and we go back to BACKOFF.
 *
 * Pipeline bookkeeping: every command sent (a query or a re-prepare) is followed by
 * its own PQpipelineSync and pushed on a FIFO; results come back in that order, each
 * command's result followed by a NULL and then PGRES_PIPELINE_SYNC, at which point
 * the head entry completes. One sync per command means an error aborts only its own
 * command (Postgres skips to the next Sync after an error, so a shared sync would turn
 * the batch's later queries into PGRES_PIPELINE_ABORTED to be re-sent). Measured
 * (2026-11-23, 2 cores, Postgres 15 on loopback, blocking libpq pipeline of prepared
 * `SELECT $1::int + 1`, 1,000 in flight): a sync per query 90k queries/s, per 10 333k,
 * per 100 496k; pgbench -S -c 1 -M prepared 22.7k tps. So batching syncs is worth ~5x
 * (libpq 15's PQpipelineSync also flushes, one send per query) and is the next step for
 * perf/store; one sync per query already meets issue 4's 1.5x-pgbench goal (this client
 * did 45k-68k/s per shard with two shards on the two cores, tests/store/test_pg_loop.c).
 *
 * A query whose budget passed is answered at once and its entry becomes a tombstone
 * (q == NULL) until its result is consumed and thrown away. Known limit: without a
 * non-blocking cancel (libpq 17's PQcancelStart) the timed-out query still runs on the
 * server and the queries behind it in the pipeline wait for it (head-of-line); the
 * server-side statement_timeout of pg_client_create_with bounds that, and cancels a
 * write that timed out so it does not commit later (store.c sets it to the budget).
 *
 * Contents: results, FIFO, sending, receiving, connection loss, connecting, API. */
#include "store/pg.h"

#include <assert.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "core/err.h"
#include "core/log.h"

#define PG_SQLSTATE_BYTES 6 /* five characters and the terminator */
#define PG_CONNECT_PARAMS 4 /* dbname (the URL, expanded), application_name, options, end */
#define PG_OPTIONS_BYTES 64 /* "-c statement_timeout=<ms>" */
/* Queries, plus room for every statement's re-prepare: those are never refused. */
#define PG_FIFO_SLOTS (PG_QUEUE_MAX + PG_PREPARED_MAX)
/* Doublings of PG_BACKOFF_MIN_MS counted before the cap applies: 50 ms << 7 is past
 * PG_BACKOFF_MAX_MS already, so the shift never overflows however long Postgres is down. */
#define PG_BACKOFF_SHIFT_MAX 7
#define PG_CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

_Static_assert(PG_QUEUE_MAX < LOOP_TIMERS_MAX, "every query in flight can hold a timer");
_Static_assert(PG_BACKOFF_MIN_MS < PG_BACKOFF_MAX_MS, "backoff grows");
_Static_assert(((uint64_t)PG_BACKOFF_MIN_MS << PG_BACKOFF_SHIFT_MAX) >= PG_BACKOFF_MAX_MS,
               "the shift cap never holds the backoff under its maximum");

enum pg_state { PG_STATE_BACKOFF, PG_STATE_CONNECTING, PG_STATE_READY };
enum pg_entry_kind { PG_ENTRY_QUERY, PG_ENTRY_PREPARE };

struct pg_entry {
    struct pg_query *q; /* NULL: a tombstone (timed out) or a prepare */
    PGresult *res;      /* the command's first result, kept until its sync */
    uint8_t kind;
};

struct pg_statement {
    char name[PG_NAME_MAX + 1];
    char *sql;
};

struct pg_result {
    enum pg_outcome outcome;
    const PGresult *res; /* NULL when no server result (timeout, connection lost) */
    char sqlstate[PG_SQLSTATE_BYTES];
};

struct pg_client {
    struct loop *loop;
    char *conninfo;
    char options[PG_OPTIONS_BYTES]; /* server settings for every session, or "" */
    PGconn *conn;
    enum pg_state state;
    bool broken;             /* a send failed: lose the connection outside the caller */
    struct loop_watch watch;
    unsigned watch_events;   /* what the watch is armed for, when armed */
    struct loop_timer timer; /* BACKOFF: the retry; CONNECTING: the deadline; READY: `broken` */
    unsigned attempts;       /* failed connections in a row, for the backoff */
    uint64_t rng;            /* xorshift state for the backoff jitter */
    struct pg_stats stats;
    struct pg_statement statements[PG_PREPARED_MAX];
    unsigned statements_count;
    uint32_t head;           /* FIFO of commands in flight, in pipeline order */
    uint32_t count;
    uint64_t progress_ms;    /* loop_now_ms when the FIFO last moved: a command completed, or
                              * one was sent to an idle connection */
    struct pg_entry fifo[PG_FIFO_SLOTS];
};

static void pg_connect_start(struct pg_client *client);
static void pg_lose(struct pg_client *client, const char *why);

/* ---- results ---------------------------------------------------------------------- */

static enum pg_outcome pg_outcome_of(const PGresult *res, char sqlstate[PG_SQLSTATE_BYTES])
{
    sqlstate[0] = '\0';
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return PG_OK;
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (code != NULL)
        snprintf(sqlstate, PG_SQLSTATE_BYTES, "%s", code);
    if (strcmp(sqlstate, "23505") == 0)
        return PG_UNIQUE_VIOLATION;
    /* 40001 serialization_failure, 40P01 deadlock_detected: the transaction may succeed
     * when simply run again (PostgreSQL docs §13.4, "Serialization Failure Handling"). */
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0)
        return PG_SERIALIZATION;
    /* 57014 query_canceled: the session's statement_timeout (the budget, server side)
     * stopped it; to the caller that is the budget passing. */
    if (strcmp(sqlstate, "57014") == 0)
        return PG_TIMEOUT;
    /* Class 57P (operator intervention: admin_shutdown, crash_shutdown, cannot_connect_now)
     * and class 08 (connection exception): the server is going away or not there. */
    if (strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "08", 2) == 0)
        return PG_UNAVAILABLE;
    /* Class 53 (insufficient resources: disk_full, out_of_memory, too_many_connections):
     * nothing of the statement happened and it may succeed once the server has room again,
     * without anyone restarting anything (SECURITY F11: a full disk is 503, not 500). */
    if (strncmp(sqlstate, "53", 2) == 0)
        return PG_UNAVAILABLE;
    return PG_ERROR;
}

enum pg_outcome pg_result_outcome(const struct pg_result *r) { return r->outcome; }
const char *pg_result_sqlstate(const struct pg_result *r) { return r->sqlstate; }

const char *pg_result_message(const struct pg_result *r)
{
    return r->res != NULL ? PQresultErrorMessage(r->res) : "";
}

int pg_result_rows(const struct pg_result *r)
{
    return r->outcome == PG_OK && r->res != NULL ? PQntuples(r->res) : 0;
}

int pg_result_cols(const struct pg_result *r)
{
    return r->outcome == PG_OK && r->res != NULL ? PQnfields(r->res) : 0;
}

const char *pg_result_value(const struct pg_result *r, int row, int col)
{
    assert(row >= 0 && row < pg_result_rows(r));
    assert(col >= 0 && col < pg_result_cols(r));
    return PQgetvalue(r->res, row, col);
}

int pg_result_length(const struct pg_result *r, int row, int col)
{
    assert(row >= 0 && row < pg_result_rows(r));
    assert(col >= 0 && col < pg_result_cols(r));
    return PQgetlength(r->res, row, col);
}

bool pg_result_is_null(const struct pg_result *r, int row, int col)
{
    assert(row >= 0 && row < pg_result_rows(r));
    assert(col >= 0 && col < pg_result_cols(r));
    return PQgetisnull(r->res, row, col) != 0;
}

uint64_t pg_result_affected(const struct pg_result *r)
{
    if (r->outcome != PG_OK || r->res == NULL)
        return 0;
    return strtoull(PQcmdTuples((PGresult *)r->res), NULL, 10);
}

int pg_outcome_http_status(enum pg_outcome outcome, unsigned *retry_after_s)
{
    *retry_after_s = 0;
    switch (outcome) {
    case PG_OK:
        return 200;
    case PG_UNIQUE_VIOLATION:
        return 409; /* RFC 9110 §15.5.10: conflicts with the current state */
    case PG_SERIALIZATION:
    case PG_UNAVAILABLE:
    case PG_TIMEOUT:
        /* RFC 9110 §15.6.4 and §10.2.3: transient, come back shortly. */
        *retry_after_s = PG_RETRY_AFTER_S;
        return 503;
    case PG_ERROR:
        break;
    }
    return 500;
}

const char *pg_outcome_name(enum pg_outcome outcome)
{
    static const char *const names[] = {
        [PG_OK] = "ok", [PG_UNIQUE_VIOLATION] = "unique_violation",
        [PG_SERIALIZATION] = "serialization", [PG_UNAVAILABLE] = "unavailable",
        [PG_TIMEOUT] = "timeout", [PG_ERROR] = "error",
    };
    return (unsigned)outcome < sizeof(names) / sizeof(names[0]) ? names[outcome] : "?";
}

/* Ends q with a result: exactly once (its timer is stopped, its slot forgotten). */
static void pg_finish(struct pg_client *client, struct pg_query *q, enum pg_outcome outcome,
                      const PGresult *res, const char *sqlstate)
{
    loop_timer_stop(client->loop, &q->timer);
    struct pg_result result = { .outcome = outcome, .res = res };
    snprintf(result.sqlstate, sizeof(result.sqlstate), "%s", sqlstate);
    client->stats.completed++;
    q->client = NULL;
    q->done(q, &result);
}

/* ---- FIFO ------------------------------------------------------------------------- */

static uint32_t pg_fifo_push(struct pg_client *client, struct pg_query *q, enum pg_entry_kind kind)
{
    assert(client->count < PG_FIFO_SLOTS);
    if (client->count == 0)
        client->progress_ms = loop_now_ms(client->loop);
    uint32_t slot = (client->head + client->count) % PG_FIFO_SLOTS;
    client->fifo[slot] = (struct pg_entry){ .q = q, .kind = (uint8_t)kind };
    client->count++;
    return slot;
}

static struct pg_entry pg_fifo_pop(struct pg_client *client)
{
    assert(client->count > 0);
    struct pg_entry entry = client->fifo[client->head];
    client->fifo[client->head] = (struct pg_entry){ 0 };
    client->head = (client->head + 1) % PG_FIFO_SLOTS;
    client->count--;
    client->progress_ms = loop_now_ms(client->loop);
    return entry;
}

/* ---- sending ---------------------------------------------------------------------- */

/* Watches the socket for results always, and for writability while libpq holds output
 * the kernel would not take (PQflush returned 1). */
static void pg_watch_update(struct pg_client *client, bool want_out)
{
    assert(client->state == PG_STATE_READY);
    unsigned events = POLLIN | (want_out ? POLLOUT : 0);
    if (loop_watch_armed(&client->watch)) {
        if (client->watch_events == events)
            return;
        loop_watch_cancel(client->loop, &client->watch);
    }
    client->watch_events = events;
    loop_watch_arm(client->loop, &client->watch, PQsocket(client->conn), events);
}

/* Pushes out what libpq buffered; a failure is handled outside the caller (`broken`). */
static void pg_flush(struct pg_client *client)
{
    int rc = PQflush(client->conn);
    if (rc < 0) {
        client->broken = true;
        loop_timer_start(client->loop, &client->timer, 0);
        return;
    }
    pg_watch_update(client, rc == 1);
}

/* Sends one command and its sync. 0, or -TE_CLOSED (the connection is failing). */
static int pg_send(struct pg_client *client, struct pg_query *q)
{
    PGconn *conn = client->conn;
    int ok = q->prepared != NULL
                 ? PQsendQueryPrepared(conn, q->prepared, (int)q->params_count, q->params, NULL,
                                       NULL, 0)
                 : PQsendQueryParams(conn, q->sql, (int)q->params_count, NULL, q->params, NULL,
                                     NULL, 0);
    if (ok && PQpipelineSync(conn))
        return 0;
    log_msg(LOG_WARN, "postgres send failed", "error", PQerrorMessage(conn), NULL);
    client->broken = true;
    loop_timer_start(client->loop, &client->timer, 0);
    return -TE_CLOSED;
}

static void pg_send_prepare(struct pg_client *client, const struct pg_statement *st)
{
    if (client->broken)
        return;
    if (PQsendPrepare(client->conn, st->name, st->sql, 0, NULL) && PQpipelineSync(client->conn)) {
        pg_fifo_push(client, NULL, PG_ENTRY_PREPARE);
        return;
    }
    log_msg(LOG_WARN, "postgres prepare send failed", "error", PQerrorMessage(client->conn), NULL);
    client->broken = true;
    loop_timer_start(client->loop, &client->timer, 0);
}

static void pg_query_on_timeout(struct loop_timer *timer)
{
    struct pg_query *q = PG_CONTAINER(timer, struct pg_query, timer);
    struct pg_client *client = q->client;
    assert(client != NULL);
    assert(client->fifo[q->slot].q == q);
    client->fifo[q->slot].q = NULL; /* tombstone: the late result is thrown away */
    client->stats.timeouts++;
    pg_finish(client, q, PG_TIMEOUT, NULL, "");
}

enum pg_outcome pg_query(struct pg_client *client, struct pg_query *q)
{
    assert(q->done != NULL);
    assert(q->params_count <= PG_PARAMS_MAX);
    assert((q->sql == NULL) != (q->prepared == NULL));
    if (!pg_client_accepts(client)) {
        client->stats.refused++;
        return PG_UNAVAILABLE; /* back-pressure: the caller answers 503 now */
    }
    q->client = client;
    q->retries = 0;
    q->timer = (struct loop_timer){ .on_expire = pg_query_on_timeout };
    uint32_t budget = q->budget_ms != 0 ? q->budget_ms : PG_QUERY_BUDGET_MS;
    if (loop_timer_start(client->loop, &q->timer, budget) != 0) {
        client->stats.refused++;
        return PG_UNAVAILABLE;
    }
    if (pg_send(client, q) != 0) {
        loop_timer_stop(client->loop, &q->timer);
        client->stats.refused++;
        return PG_UNAVAILABLE;
    }
    q->slot = pg_fifo_push(client, q, PG_ENTRY_QUERY);
    pg_flush(client);
    return PG_OK;
}

/* ---- receiving -------------------------------------------------------------------- */

/* The head command's sync arrived: answer its query (or retry it, or drop a tombstone). */
static void pg_complete_head(struct pg_client *client)
{
    struct pg_entry entry = pg_fifo_pop(client);
    char sqlstate[PG_SQLSTATE_BYTES] = "";
    enum pg_outcome outcome = entry.res != NULL ? pg_outcome_of(entry.res, sqlstate) : PG_ERROR;
    if (entry.kind == PG_ENTRY_PREPARE) {
        if (outcome != PG_OK) { /* a statement's text is wrong: Postgres says where */
            const char *why = entry.res != NULL ? PQresultErrorField(entry.res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
            log_msg(LOG_ERROR, "postgres prepare failed", "sqlstate", sqlstate, "error", why ? why : "", NULL);
        }
    } else if (entry.q == NULL) {
        client->stats.discarded++;
    } else if (outcome == PG_SERIALIZATION && entry.q->retries < PG_RETRIES_MAX &&
               !client->broken && pg_send(client, entry.q) == 0) {
        entry.q->retries++;
        client->stats.retries++;
        entry.q->slot = pg_fifo_push(client, entry.q, PG_ENTRY_QUERY);
    } else {
        pg_finish(client, entry.q, outcome, entry.res, sqlstate);
    }
    PQclear(entry.res);
}

/* Takes every result libpq can give without blocking. A command's results end with a
 * NULL; PGRES_PIPELINE_SYNC closes its entry. Two NULLs in a row: nothing is pending. */
static void pg_drain(struct pg_client *client)
{
    bool last_null = false;
    while (client->state == PG_STATE_READY && !PQisBusy(client->conn)) {
        PGresult *res = PQgetResult(client->conn);
        if (res == NULL) {
            if (last_null)
                return;
            last_null = true;
            continue;
        }
        last_null = false;
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (client->count == 0) {
                pg_lose(client, "postgres sync without a command");
                return;
            }
            pg_complete_head(client);
            continue;
        }
        if (client->count == 0) {
            PQclear(res);
            pg_lose(client, "postgres result without a command");
            return;
        }
        struct pg_entry *head = &client->fifo[client->head];
        if (head->res == NULL)
            head->res = res;
        else
            PQclear(res); /* only one statement per command: never more than one result */
    }
}

static void pg_on_ready_connected(struct pg_client *client, unsigned events)
{
    if (events & (POLLIN | POLLERR | POLLHUP)) {
        if (!PQconsumeInput(client->conn)) {
            pg_lose(client, PQerrorMessage(client->conn));
            return;
        }
    }
    pg_drain(client);
    if (client->state != PG_STATE_READY)
        return;
    if (client->broken || PQstatus(client->conn) == CONNECTION_BAD) {
        pg_lose(client, "postgres connection failed");
        return;
    }
    pg_flush(client);
}

/* ---- connection loss -------------------------------------------------------------- */

static uint64_t pg_backoff_ms(struct pg_client *client)
{
    unsigned shift = client->attempts < PG_BACKOFF_SHIFT_MAX ? client->attempts
                                                             : PG_BACKOFF_SHIFT_MAX;
    uint64_t base = (uint64_t)PG_BACKOFF_MIN_MS << shift;
    if (base > PG_BACKOFF_MAX_MS)
        base = PG_BACKOFF_MAX_MS;
    client->rng ^= client->rng << 13;
    client->rng ^= client->rng >> 7;
    client->rng ^= client->rng << 17;
    /* "Equal jitter": half fixed, half random, so shards restarting together spread out
     * over the window instead of reconnecting in one burst. */
    return base / 2 + client->rng % (base / 2 + 1);
}

/* Drops the connection, answers every pending query PG_UNAVAILABLE (never a hang), and
 * schedules the next attempt. Safe to call from the loop's callbacks only. */
static void pg_lose(struct pg_client *client, const char *why)
{
    log_msg(LOG_WARN, "postgres connection lost", "error", why, NULL);
    loop_watch_cancel(client->loop, &client->watch);
    loop_timer_stop(client->loop, &client->timer);
    PQfinish(client->conn);
    client->conn = NULL;
    client->state = PG_STATE_BACKOFF;
    client->broken = false;
    client->stats.losses++;
    while (client->count > 0) {
        struct pg_entry entry = pg_fifo_pop(client);
        PQclear(entry.res);
        if (entry.q != NULL)
            pg_finish(client, entry.q, PG_UNAVAILABLE, NULL, "");
    }
    uint64_t delay = pg_backoff_ms(client);
    client->attempts++;
    loop_timer_start(client->loop, &client->timer, delay);
}

/* ---- connecting ------------------------------------------------------------------- */

static void pg_on_connected(struct pg_client *client)
{
    loop_timer_stop(client->loop, &client->timer);
    if (PQsetnonblocking(client->conn, 1) != 0 || !PQenterPipelineMode(client->conn)) {
        pg_lose(client, PQerrorMessage(client->conn));
        return;
    }
    client->state = PG_STATE_READY;
    client->attempts = 0;
    client->stats.connects++;
    /* Statements first: the pipeline keeps order, so no query can overtake them. */
    for (unsigned i = 0; i < client->statements_count; i++)
        pg_send_prepare(client, &client->statements[i]);
    if (!client->broken)
        pg_flush(client);
}

static void pg_connect_poll(struct pg_client *client)
{
    switch (PQconnectPoll(client->conn)) {
    case PGRES_POLLING_READING:
        loop_watch_arm(client->loop, &client->watch, PQsocket(client->conn), POLLIN);
        return;
    case PGRES_POLLING_WRITING:
        loop_watch_arm(client->loop, &client->watch, PQsocket(client->conn), POLLOUT);
        return;
    case PGRES_POLLING_OK:
        pg_on_connected(client);
        return;
    default:
        pg_lose(client, PQerrorMessage(client->conn));
        return;
    }
}

static void pg_on_watch(struct loop_watch *watch, unsigned events)
{
    struct pg_client *client = PG_CONTAINER(watch, struct pg_client, watch);
    if (client->state == PG_STATE_CONNECTING)
        pg_connect_poll(client);
    else if (client->state == PG_STATE_READY)
        pg_on_ready_connected(client, events);
}

static void pg_on_timer(struct loop_timer *timer)
{
    struct pg_client *client = PG_CONTAINER(timer, struct pg_client, timer);
    if (client->state == PG_STATE_BACKOFF)
        pg_connect_start(client);
    else if (client->state == PG_STATE_CONNECTING)
        pg_lose(client, "postgres connect timed out");
    else if (client->broken)
        pg_lose(client, "postgres send failed");
}

static void pg_connect_start(struct pg_client *client)
{
    /* The URL is expanded in place of dbname; the keywords after it override its values. */
    const char *const keys[PG_CONNECT_PARAMS] = { "dbname", "application_name",
                                                  client->options[0] ? "options" : NULL, NULL };
    const char *const values[PG_CONNECT_PARAMS] = { client->conninfo, "tessera", client->options, NULL };
    client->conn = PQconnectStartParams(keys, values, 1);
    client->state = PG_STATE_CONNECTING;
    if (client->conn == NULL) { /* out of memory: try again later */
        client->state = PG_STATE_BACKOFF;
        client->attempts++;
        loop_timer_start(client->loop, &client->timer, PG_BACKOFF_MAX_MS);
        return;
    }
    if (PQstatus(client->conn) == CONNECTION_BAD) {
        pg_lose(client, PQerrorMessage(client->conn));
        return;
    }
    loop_timer_start(client->loop, &client->timer, PG_CONNECT_TIMEOUT_MS);
    /* PQconnectStart's contract: behave as if PQconnectPoll had said WRITING. */
    loop_watch_arm(client->loop, &client->watch, PQsocket(client->conn), POLLOUT);
}

/* ---- API -------------------------------------------------------------------------- */

struct pg_client *pg_client_create(struct loop *loop, const char *conninfo)
{
    return pg_client_create_with(loop, conninfo, 0);
}

struct pg_client *pg_client_create_with(struct loop *loop, const char *conninfo,
                                        uint32_t statement_timeout_ms)
{
    struct pg_client *client = calloc(1, sizeof(*client));
    if (client == NULL)
        return NULL;
    if (statement_timeout_ms > 0)
        snprintf(client->options, sizeof(client->options), "-c statement_timeout=%u",
                 (unsigned)statement_timeout_ms);
    client->conninfo = strdup(conninfo);
    if (client->conninfo == NULL) {
        free(client);
        return NULL;
    }
    client->loop = loop;
    client->watch.on_ready = pg_on_watch;
    client->timer.on_expire = pg_on_timer;
    /* Seeded per shard and per start, so shards and instances jitter differently; the
     * odd multiplier (Knuth's multiplicative hash) spreads close seeds; never zero. */
    client->rng = (loop_now_us() * UINT64_C(2654435761) + loop_index(loop)) | 1;
    pg_connect_start(client);
    return client;
}

void pg_client_destroy(struct pg_client *client)
{
    if (client == NULL)
        return;
    while (client->count > 0)
        PQclear(pg_fifo_pop(client).res);
    PQfinish(client->conn);
    for (unsigned i = 0; i < client->statements_count; i++)
        free(client->statements[i].sql);
    free(client->conninfo);
    free(client);
}

unsigned pg_client_in_flight(const struct pg_client *client)
{
    return client->count;
}

uint64_t pg_client_stalled_ms(const struct pg_client *client)
{
    return client->count == 0 ? 0 : loop_now_ms(client->loop) - client->progress_ms;
}

bool pg_client_accepts(const struct pg_client *client)
{
    return pg_client_ready(client) && client->count < PG_QUEUE_MAX;
}

bool pg_client_ready(const struct pg_client *client)
{
    return client->state == PG_STATE_READY && !client->broken;
}

const struct pg_stats *pg_client_stats(const struct pg_client *client) { return &client->stats; }

int pg_prepare(struct pg_client *client, const char *name, const char *sql)
{
    if (strlen(name) > PG_NAME_MAX)
        return -TE_INVAL;
    for (unsigned i = 0; i < client->statements_count; i++)
        if (strcmp(client->statements[i].name, name) == 0)
            return -TE_INVAL;
    if (client->statements_count == PG_PREPARED_MAX)
        return -TE_FULL;
    struct pg_statement *st = &client->statements[client->statements_count];
    st->sql = strdup(sql);
    if (st->sql == NULL)
        return -TE_NOMEM;
    snprintf(st->name, sizeof(st->name), "%s", name);
    client->statements_count++;
    if (client->state == PG_STATE_READY) {
        pg_send_prepare(client, st);
        if (!client->broken)
            pg_flush(client);
    }
    return 0;
}
