/* store/pg.h: the Postgres client of one shard, driven by the shard's io_uring loop
 * (DESIGN §1: each shard owns its libpq connection in non-blocking pipeline mode).
 * Nothing here ever blocks the shard: connecting goes through PQconnectPoll, queries
 * are sent with the PQsend* calls in pipeline mode, and results are read only when
 * the socket is readable and libpq says it will not block. No PGconn leaves store/.
 *
 * A query's life: the caller embeds a struct pg_query in its own request state, fills
 * in the SQL (or a prepared statement's name), the text parameters and the `done`
 * callback, and calls pg_query. If pg_query accepted it (PG_OK), `done` runs exactly
 * once, later, on the shard's thread, with the rows or an error outcome; never from
 * inside pg_query. The struct and the parameter strings it points to must stay valid
 * until then (a serialization failure re-sends them).
 *
 * Each query has a deadline (its budget): when it passes, `done` gets PG_TIMEOUT at
 * once and the caller may free its state; the result, when it comes, is discarded.
 * On connection loss every query accepted and not yet answered gets PG_UNAVAILABLE;
 * the client reconnects alone, with jittered exponential backoff, and re-prepares the
 * statements registered with pg_prepare before anything else is sent.
 *
 * The read replica (TESSERA_PG_REPLICA_URL) is a second client: store/store.h routes. */
#ifndef TESSERA_STORE_PG_H
#define TESSERA_STORE_PG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"

#define PG_PARAMS_MAX 20          /* the widest typed query binds fewer; a bound for the array */
#define PG_QUERY_BUDGET_MS 2000   /* issue 4: a request never waits longer than its budget */
#define PG_RETRIES_MAX 3          /* serialization failures / deadlocks retried before reporting */
#define PG_QUEUE_MAX 4096         /* queries in flight per shard (incl. timed-out ones): above it,
                                   * 503 at once rather than a queue whose wait exceeds budgets */
#define PG_BACKOFF_MIN_MS 50      /* first reconnect delay: a restart is often over this fast */
#define PG_BACKOFF_MAX_MS 5000    /* cap: retried at least every 5 s while Postgres is down */
#define PG_CONNECT_TIMEOUT_MS 5000 /* a connection attempt that is not ready by then is dropped */
#define PG_PREPARED_MAX 64        /* statements per client: the typed queries of store/ */
#define PG_NAME_MAX 63            /* NAMEDATALEN - 1: Postgres truncates longer names */
#define PG_RETRY_AFTER_S 1        /* Retry-After of a 503 for a transient store failure */

enum pg_outcome {
    PG_OK,
    PG_UNIQUE_VIOLATION, /* SQLSTATE 23505 */
    PG_SERIALIZATION,    /* 40001 / 40P01, still failing after PG_RETRIES_MAX retries */
    PG_UNAVAILABLE,      /* not connected, connection lost, the queue is full, or the server
                          * short of a resource (class 53: disk full, out of memory) */
    PG_TIMEOUT,          /* the query's budget passed */
    PG_ERROR,            /* anything else: see pg_result_sqlstate */
};

struct pg_client;
struct pg_result; /* valid only during the `done` callback */

struct pg_query {
    const char *sql;      /* SQL text with $1..$n, or NULL when `prepared` is set */
    const char *prepared; /* the name of a statement registered with pg_prepare */
    const char *params[PG_PARAMS_MAX]; /* text parameters; NULL is SQL NULL */
    unsigned params_count;
    uint32_t budget_ms;   /* 0: PG_QUERY_BUDGET_MS */
    void (*done)(struct pg_query *q, const struct pg_result *r);
    /* private */
    struct pg_client *client;
    struct loop_timer timer;
    uint32_t slot;        /* its entry in the client's in-flight FIFO */
    uint8_t retries;
};

/* Counters of one client, read on its shard (tests, metrics). */
struct pg_stats {
    uint64_t completed;  /* `done` calls, whatever the outcome */
    uint64_t refused;    /* pg_query answered PG_UNAVAILABLE at once */
    uint64_t timeouts;
    uint64_t discarded;  /* late results of timed-out queries thrown away */
    uint64_t retries;
    uint64_t connects;   /* connections established */
    uint64_t losses;     /* connections lost or failed */
};

/* Creates the client of a shard (on the shard's thread, e.g. in on_start) and starts
 * connecting to `conninfo` (a postgresql:// URL or key=value string, copied). NULL
 * when out of memory. The client lives as long as the loop. */
struct pg_client *pg_client_create(struct loop *loop, const char *conninfo);
/* The same, with a server-side statement_timeout for every session (0: the server's): a
 * statement that outlives its budget is cancelled by Postgres too, so a timed-out write
 * does not commit behind the caller's back and does not hold up the pipeline. */
struct pg_client *pg_client_create_with(struct loop *loop, const char *conninfo,
                                        uint32_t statement_timeout_ms);
/* Frees the client once its loop has stopped. Queries still pending are abandoned
 * without a callback: their owners went away with the loop. */
void pg_client_destroy(struct pg_client *client);
/* True while connected (for /health/ready). */
bool pg_client_ready(const struct pg_client *client);
/* Whether pg_query would accept a query now (ready, under PG_QUEUE_MAX in flight). */
bool pg_client_accepts(const struct pg_client *client);
/* Queries sent and not yet answered. */
unsigned pg_client_in_flight(const struct pg_client *client);
/* How long queries have been in flight with none answered (0 when none is in flight): the
 * head of the pipeline is waiting (a lock, a slow statement) and every query behind it too. */
uint64_t pg_client_stalled_ms(const struct pg_client *client);
const struct pg_stats *pg_client_stats(const struct pg_client *client);

/* Registers a prepared statement (name and sql copied): prepared now when connected,
 * and again after every reconnect before any query. 0, -TE_FULL (PG_PREPARED_MAX),
 * or -TE_INVAL (name too long or already registered). */
int pg_prepare(struct pg_client *client, const char *name, const char *sql);

/* Sends q. PG_OK: accepted, q->done will run once. PG_UNAVAILABLE: refused at once
 * (not connected, PG_QUEUE_MAX in flight, or no timer left); q->done will not run,
 * and the caller answers 503 (pg_outcome_http_status). */
enum pg_outcome pg_query(struct pg_client *client, struct pg_query *q);

/* The result given to `done`. */
enum pg_outcome pg_result_outcome(const struct pg_result *r);
const char *pg_result_sqlstate(const struct pg_result *r); /* "" when none */
const char *pg_result_message(const struct pg_result *r);  /* "" when none */
int pg_result_rows(const struct pg_result *r);             /* 0 on error */
int pg_result_cols(const struct pg_result *r);
/* The text value of a field ("" for NULL), valid during the callback. */
const char *pg_result_value(const struct pg_result *r, int row, int col);
int pg_result_length(const struct pg_result *r, int row, int col);
bool pg_result_is_null(const struct pg_result *r, int row, int col);
/* Rows affected by an INSERT/UPDATE/DELETE (0 when not applicable). */
uint64_t pg_result_affected(const struct pg_result *r);

/* The HTTP status an outcome maps to (the one place, STYLE §4): 200, 409, 503, 500.
 * *retry_after_s gets the Retry-After seconds for a 503, 0 otherwise. */
int pg_outcome_http_status(enum pg_outcome outcome, unsigned *retry_after_s);
const char *pg_outcome_name(enum pg_outcome outcome);

#endif
