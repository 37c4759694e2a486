/* store/migrate.c: applying the embedded migrations under an advisory lock (see migrate.h). */
#include "store/migrate.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

/* The table is created by migrate itself, before any migration file: it records them. Under
 * the lock, so no other instance creates it between the check and the CREATE. */
static const char migrate_table_sql[] =
    "CREATE TABLE schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " checksum text NOT NULL)";

int migrate_required_version(void)
{
    assert(migrate_files_count > 0);
    assert(migrate_files[migrate_files_count - 1].version == (int)migrate_files_count);
    return migrate_files[migrate_files_count - 1].version;
}

/* Runs one statement that returns no rows; 0 or -TE_IO with the server's message on err. */
static int migrate_exec(PGconn *conn, const char *sql, FILE *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : -TE_IO;
    if (rc != 0 && err != NULL)
        fprintf(err, "tessera migrate: %s", PQerrorMessage(conn));
    PQclear(res);
    return rc;
}

/* True when schema_migrations exists; false also when the query failed. */
static bool migrate_table_exists(PGconn *conn)
{
    /* to_regclass: NULL rather than an error when the table does not exist yet. */
    PGresult *res = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    bool exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                  strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return exists;
}

int migrate_schema_version(PGconn *conn)
{
    if (!migrate_table_exists(conn))
        return PQstatus(conn) == CONNECTION_OK ? 0 : -TE_IO;
    PGresult *res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    int version = -TE_IO;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return version;
}

/* The checksum recorded for version, copied into out; false when not applied. */
static bool migrate_recorded(PGresult *rows, int version, const char **checksum)
{
    for (int i = 0; i < PQntuples(rows); i++) {
        if (atoi(PQgetvalue(rows, i, 0)) == version) {
            *checksum = PQgetvalue(rows, i, 1);
            return true;
        }
    }
    return false;
}

/* One file in one transaction, recorded with its checksum. */
static int migrate_apply_file(PGconn *conn, const struct migrate_file *file, FILE *err)
{
    if (migrate_exec(conn, "BEGIN", err) != 0)
        return -TE_IO;
    int rc = migrate_exec(conn, file->sql, err);
    if (rc == 0) {
        char version[16];
        snprintf(version, sizeof(version), "%d", file->version);
        const char *params[3] = { version, file->name, file->checksum };
        PGresult *res = PQexecParams(conn,
                                     "INSERT INTO schema_migrations (version, name, checksum)"
                                     " VALUES ($1, $2, $3)",
                                     3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(err, "tessera migrate: %s", PQerrorMessage(conn));
            rc = -TE_IO;
        }
        PQclear(res);
    }
    if (rc != 0) {
        fprintf(err, "tessera migrate: %04d_%s failed; rolled back\n", file->version, file->name);
        migrate_exec(conn, "ROLLBACK", NULL);
        return rc;
    }
    return migrate_exec(conn, "COMMIT", err);
}

/* With the lock held: checks what is recorded, applies what is missing. */
static int migrate_apply_locked(PGconn *conn, FILE *err, int *applied)
{
    if (!migrate_table_exists(conn) && migrate_exec(conn, migrate_table_sql, err) != 0)
        return -TE_IO;
    PGresult *rows = PQexec(conn, "SELECT version, checksum FROM schema_migrations");
    if (PQresultStatus(rows) != PGRES_TUPLES_OK) {
        fprintf(err, "tessera migrate: %s", PQerrorMessage(conn));
        PQclear(rows);
        return -TE_IO;
    }
    int rc = 0;
    for (size_t i = 0; i < migrate_files_count && rc == 0; i++) {
        const struct migrate_file *file = &migrate_files[i];
        const char *recorded = NULL;
        if (!migrate_recorded(rows, file->version, &recorded)) {
            rc = migrate_apply_file(conn, file, err);
            *applied += rc == 0;
        } else if (strcmp(recorded, file->checksum) != 0) {
            fprintf(err,
                    "tessera migrate: migration %04d_%s was applied with checksum %s but this "
                    "binary has %s: the database schema is not the one this build expects\n",
                    file->version, file->name, recorded, file->checksum);
            rc = -TE_INVAL;
        }
    }
    PQclear(rows);
    return rc;
}

int migrate_apply(PGconn *conn, FILE *err, int *applied)
{
    char lock[96];
    *applied = 0;
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
    if (migrate_exec(conn, lock, err) != 0)
        return -TE_IO;
    int rc = migrate_apply_locked(conn, err, applied);
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_unlock(%lld)", MIGRATE_LOCK_KEY);
    int unlock_rc = migrate_exec(conn, lock, err);
    if (rc == 0) {
        int version = migrate_schema_version(conn);
        if (version > migrate_required_version())
            fprintf(err, "tessera migrate: the database is at version %d, newer than this "
                    "binary's %d; left as it is\n", version, migrate_required_version());
    }
    return rc != 0 ? rc : unlock_rc;
}

static void migrate_usage(FILE *out)
{
    fprintf(out,
            "usage: tessera migrate [--status]\n"
            "\n"
            "Applies the schema migrations built into this binary to the database named by\n"
            "TESSERA_PG_URL, under an advisory lock (safe to run from several instances at once).\n"
            "--status only reports the database's version and the one this binary needs.\n"
            "Prints one JSON object; exit 0 done, 1 failed, 2 bad usage or configuration.\n");
}

/* Connects to TESSERA_PG_URL; NULL (and a message) when unset or unreachable. */
static PGconn *migrate_connect(int *exit_code)
{
    const char *url = getenv("TESSERA_PG_URL");
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "tessera migrate: TESSERA_PG_URL is not set\n");
        *exit_code = 2;
        return NULL;
    }
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "tessera migrate: cannot connect to TESSERA_PG_URL: %s",
                PQerrorMessage(conn));
        PQfinish(conn);
        *exit_code = 1;
        return NULL;
    }
    return conn;
}

int migrate_check_at_start(const char *url, bool auto_migrate, FILE *err)
{
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(err, "tessera: cannot connect to TESSERA_PG_URL: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return -TE_IO;
    }
    int have = migrate_schema_version(conn);
    int need = migrate_required_version();
    int rc = 0;
    if (have < 0) {
        fprintf(err, "tessera: cannot read the schema version: %s", PQerrorMessage(conn));
        rc = -TE_IO;
    } else if (have < need && auto_migrate) {
        int applied = 0;
        rc = migrate_apply(conn, err, &applied) == 0 ? 0 : -TE_INVAL;
    } else if (have < need) {
        fprintf(err, "tessera: the database schema is version %d, this binary needs %d: run "
                     "`tessera migrate` (or set TESSERA_AUTO_MIGRATE=1)\n", have, need);
        rc = -TE_INVAL;
    }
    PQfinish(conn);
    return rc;
}

int migrate_main(int argc, char **argv)
{
    bool status_only = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            migrate_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--status") != 0) {
            fprintf(stderr, "tessera migrate: unexpected argument \"%s\"\n\n", argv[i]);
            migrate_usage(stderr);
            return 2;
        }
        status_only = true;
    }
    int exit_code = 0;
    PGconn *conn = migrate_connect(&exit_code);
    if (conn == NULL)
        return exit_code;
    int applied = 0;
    int rc = status_only ? 0 : migrate_apply(conn, stderr, &applied);
    int version = migrate_schema_version(conn);
    PQfinish(conn);
    if (rc != 0 || version < 0)
        return 1;
    printf("{\"schema_version\":%d,\"required_version\":%d,\"applied\":%d}\n", version,
           migrate_required_version(), applied);
    return 0;
}
