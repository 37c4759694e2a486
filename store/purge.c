/* store/purge.c: see purge.h. Each DELETE takes at most STORE_PURGE_BATCH rows found by the
 * table's expiry index where it has one (authorizations_expiry, sessions_expiry,
 * revocations_expiry, one_time_tokens_expiry, api_keys_ended, audit_log_tenant_time), so a
 * pass never holds many locks at once. */
#include "store/purge.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/log.h"

#define PURGE_NUM_TEXT 16

/* $1: the age (STORE_PURGE_GRACE_S in seconds; audit_log: the retention in days), $2: the
 * batch. Each deletes by primary key what its subquery picks: the subquery's LIMIT bounds the
 * batch (DELETE has none). */
static const struct {
    const char *name;
    const char *sql;
    bool by_retention; /* $1 is the caller's audit retention, and 0 purges nothing */
} purge_tables[STORE_PURGE_TABLES] = {
    [STORE_PURGE_AUTHORIZATIONS] = {
        "authorizations",
        "DELETE FROM authorizations WHERE id IN (SELECT id FROM authorizations WHERE "
        "expires_at < now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    [STORE_PURGE_SESSIONS] = {
        "sessions",
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE "
        "least(expires_at, absolute_expires_at, coalesce(revoked_at, 'infinity')) "
        "< now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    [STORE_PURGE_REVOCATIONS] = {
        "revocations",
        "DELETE FROM revocations WHERE seq IN (SELECT seq FROM revocations WHERE "
        "expires_at < now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    [STORE_PURGE_ONE_TIME_TOKENS] = {
        "one_time_tokens",
        "DELETE FROM one_time_tokens WHERE id IN (SELECT id FROM one_time_tokens WHERE "
        "expires_at < now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    [STORE_PURGE_API_KEYS] = {
        "api_keys",
        "DELETE FROM api_keys WHERE id IN (SELECT id FROM api_keys WHERE "
        "least(coalesce(revoked_at, 'infinity'), coalesce(expires_at, 'infinity')) "
        "< now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    [STORE_PURGE_EMAIL_OUTBOX] = {
        "email_outbox",
        "DELETE FROM email_outbox WHERE id IN (SELECT id FROM email_outbox WHERE state = 'sent' "
        "AND sent_at < now() - make_interval(secs => $1::int) LIMIT $2::int)" },
    /* Tenant by tenant through audit_log_tenant_time (tenant_id, created_at): no index of
     * its own on created_at, which every batched insert would pay for. */
    [STORE_PURGE_AUDIT_LOG] = {
        "audit_log",
        "DELETE FROM audit_log WHERE seq IN (SELECT a.seq FROM tenants t CROSS JOIN LATERAL "
        "(SELECT seq FROM audit_log WHERE tenant_id = t.id AND created_at < now() - "
        "make_interval(days => $1::int) LIMIT $2::int) a LIMIT $2::int)", true },
};

const char *store_purge_table_name(enum store_purge_table table)
{
    return purge_tables[table].name;
}

/* Batches until one deletes fewer than a whole batch; the rows deleted, or -TE_IO. age is
 * the statement's $1. */
static long long purge_table(PGconn *conn, enum store_purge_table table, long long age)
{
    char age_text[PURGE_NUM_TEXT], batch[PURGE_NUM_TEXT];
    snprintf(age_text, sizeof(age_text), "%lld", age);
    snprintf(batch, sizeof(batch), "%d", STORE_PURGE_BATCH);
    const char *params[] = { age_text, batch };
    long long total = 0;
    for (int i = 0; i < STORE_PURGE_BATCHES_MAX; i++) {
        PGresult *res = PQexecParams(conn, purge_tables[table].sql, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            log_msg(LOG_WARN, "purging expired rows failed", "table", purge_tables[table].name, "error",
                    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), NULL);
            PQclear(res);
            return -TE_IO;
        }
        long long n = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        total += n;
        if (n < STORE_PURGE_BATCH)
            break;
    }
    return total;
}

int store_purge_expired(PGconn *conn, uint32_t audit_retention_days, long long deleted[STORE_PURGE_TABLES])
{
    for (int t = 0; t < STORE_PURGE_TABLES; t++) {
        long long age = purge_tables[t].by_retention ? audit_retention_days : STORE_PURGE_GRACE_S;
        long long n = age > 0 ? purge_table(conn, (enum store_purge_table)t, age) : 0;
        if (n < 0)
            return -TE_IO;
        deleted[t] = n;
    }
    return 0;
}
