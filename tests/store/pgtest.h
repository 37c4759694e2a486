/* tests/store/pgtest.h: a fresh Postgres database per test, so store tests run in parallel.
 * TESSERA_TEST_PG_URL (exported by tests/run) names a role that may create databases; a test
 * that needs Postgres exits 77 (skip) when it is unset. pgtest_create makes a database named
 * after the test and the process, pgtest_drop removes it (WITH (FORCE): a connection a failed
 * check left open does not keep it alive). Also the CHECK harness the store tests share. */
#ifndef TESSERA_TESTS_STORE_PGTEST_H
#define TESSERA_TESTS_STORE_PGTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "tests/crypto/check.h"

/* Connection URLs of the databases made here (the test URL plus a database name). */
#define PGTEST_URL_MAX 1024
#define PGTEST_DB_MAX 63 /* NAMEDATALEN - 1 */

struct pgtest_db {
    char name[PGTEST_DB_MAX + 1];
    char url[PGTEST_URL_MAX];
};

/* The server's URL from the environment, or NULL (the caller skips). */
static inline const char *pgtest_server_url(void)
{
    const char *url = getenv("TESSERA_TEST_PG_URL");
    return url != NULL && url[0] != '\0' ? url : NULL;
}

/* Drops the server's notices ("database ... does not exist, skipping"). */
static inline void pgtest_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Runs one statement on a new connection to url; 0 when it succeeded. */
static inline int pgtest_exec_url(const char *url, const char *sql)
{
    PGconn *conn = PQconnectdb(url);
    int rc = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, pgtest_quiet, NULL);
        PGresult *res = PQexec(conn, sql);
        rc = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK
                 ? 0
                 : -1;
        if (rc != 0)
            fprintf(stderr, "pgtest: %s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
    } else {
        fprintf(stderr, "pgtest: cannot connect: %s", PQerrorMessage(conn));
    }
    PQfinish(conn);
    return rc;
}

/* postgresql://user:pw@host:port/db[?query] with db replaced by name. */
static inline int pgtest_url_with_db(const char *server, const char *name, char *out, size_t cap)
{
    const char *scheme = strstr(server, "://");
    const char *slash = scheme != NULL ? strchr(scheme + 3, '/') : NULL;
    if (slash == NULL)
        return -1;
    const char *query = strchr(slash, '?');
    int n = snprintf(out, cap, "%.*s/%s%s", (int)(slash - server), server, name,
                     query != NULL ? query : "");
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* Creates database tessera_<tag>_<pid>; 0 or -1 (message printed). */
static inline int pgtest_create(struct pgtest_db *db, const char *tag)
{
    const char *server = pgtest_server_url();
    char sql[160];
    snprintf(db->name, sizeof(db->name), "tessera_%s_%ld", tag, (long)getpid());
    if (pgtest_url_with_db(server, db->name, db->url, sizeof(db->url)) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db->name);
    if (pgtest_exec_url(server, sql) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db->name);
    return pgtest_exec_url(server, sql);
}

static inline void pgtest_drop(const struct pgtest_db *db)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db->name);
    pgtest_exec_url(pgtest_server_url(), sql);
}

static inline PGconn *pgtest_connect(const struct pgtest_db *db)
{
    PGconn *conn = PQconnectdb(db->url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "pgtest: cannot connect to %s: %s", db->name, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* The first column of the first row of sql, copied into out ("" on any failure). */
static inline const char *pgtest_value(PGconn *conn, const char *sql, char *out, size_t cap)
{
    PGresult *res = PQexec(conn, sql);
    out[0] = '\0';
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) >= 1)
        snprintf(out, cap, "%s", PQgetvalue(res, 0, 0));
    else if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "pgtest: %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return out;
}

/* True when sql runs without error. */
static inline bool pgtest_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    return ok;
}

#endif
