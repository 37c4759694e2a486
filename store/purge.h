/* store/purge.h: deleting what has expired from the tables that grow with use, in bounded
 * batches over blocking libpq. The key rotator's hourly pass runs it on its own connection
 * (store/keys.c: one thread does the instance's upkeep), and so does `tessera admin expired
 * purge`. Safe with several instances at once (each batch is one DELETE; two passes delete
 * disjoint rows or nothing).
 *
 * A row is deleted STORE_PURGE_GRACE_S after it stopped mattering, never before:
 *   authorizations   a day past the request's expiry (its code expired within a minute of
 *                    the login, which came before that; a replay after a day is an unknown
 *                    code, refused as well)
 *   sessions         a day past the sliding expiry, the absolute cap or the revocation
 *   revocations      a day past the revoked token's exp (no token it names is valid then)
 *   one_time_tokens  a day past their expiry
 *   api_keys         a day past their revocation or expiry (0008's cap counts a day's keys)
 *   email_outbox     a day after a mail was sent (its body holds a one-time link)
 *   audit_log        older than the retention the caller gives (TESSERA_AUDIT_RETENTION_DAYS),
 *                    never when it gives 0 */
#ifndef TESSERA_STORE_PURGE_H
#define TESSERA_STORE_PURGE_H

#include <stdint.h>

#include <libpq-fe.h>

#define STORE_PURGE_GRACE_S 86400      /* kept a day past the moment it stopped mattering */
#define STORE_PURGE_BATCH 5000         /* rows per DELETE: short locks, a bounded WAL burst */
#define STORE_PURGE_BATCHES_MAX 200    /* per table per pass: a backlog spreads over passes */

enum store_purge_table {
    STORE_PURGE_AUTHORIZATIONS,
    STORE_PURGE_SESSIONS,
    STORE_PURGE_REVOCATIONS,
    STORE_PURGE_ONE_TIME_TOKENS,
    STORE_PURGE_API_KEYS,
    STORE_PURGE_EMAIL_OUTBOX,
    STORE_PURGE_AUDIT_LOG,
    STORE_PURGE_TABLES,
};

/* The table's name, as in the schema. */
const char *store_purge_table_name(enum store_purge_table table);

/* One pass over every table: rows deleted per table into deleted; audit rows older than
 * audit_retention_days (0: none). 0, or -TE_IO when a statement failed (what was deleted
 * before it stays deleted; the reason is logged). */
int store_purge_expired(PGconn *conn, uint32_t audit_retention_days, long long deleted[STORE_PURGE_TABLES]);

#endif
