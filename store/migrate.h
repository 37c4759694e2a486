/* store/migrate.h: the schema and `tessera migrate` (issue 4).
 *
 * The SQL files of store/migrations/NNNN_name.sql are embedded into the binary at build time
 * (store/embed_migrations.cmake) with their SHA-256. migrate_apply takes a session-level
 * advisory lock (MIGRATE_LOCK_KEY), so two instances migrating at once run one after the
 * other; the second finds nothing left to do. Each file is applied in its own transaction
 * together with its row in schema_migrations(version, name, applied_at, checksum). A file
 * already applied whose checksum differs from the embedded one is an error: the database
 * does not hold the schema this binary was built for. Blocking libpq: run outside the
 * shard loops (the CLI, or before `serve` starts them). */
#ifndef TESSERA_STORE_MIGRATE_H
#define TESSERA_STORE_MIGRATE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>

#include <libpq-fe.h>

/* pg_advisory_lock key: "tessera" and a 1 in ASCII, fixed so every instance and version of
 * Tessera serialises on the same lock. */
#define MIGRATE_LOCK_KEY 0x7465737365726131LL
/* SHA-256 in lowercase hex. */
#define MIGRATE_CHECKSUM_HEX_LEN 64

struct migrate_file {
    int version;           /* 1, 2, 3...: the NNNN of the file name */
    const char *name;      /* the part after NNNN_, without .sql */
    const char *sql;       /* NUL-terminated file contents */
    size_t sql_len;
    const char *checksum;  /* SHA-256 of the contents, lowercase hex */
};

/* Generated at build time, in version order, versions 1..count without gaps. */
extern const struct migrate_file migrate_files[];
extern const size_t migrate_files_count;

/* The schema version this binary needs (the last embedded file's). */
int migrate_required_version(void);

/* The highest version recorded in schema_migrations, 0 on an empty database (no table),
 * or -TE_IO if the query failed. */
int migrate_schema_version(PGconn *conn);

/* Brings the schema up to migrate_required_version() under the advisory lock. On return
 * *applied holds how many files this call applied (0 when already up to date). Failures
 * are described on err. 0, -TE_INVAL (an applied file's checksum changed), or -TE_IO (a
 * statement failed). A database already past this binary's version is left as it is (an
 * older instance in a rolling upgrade) and warned about on err. */
int migrate_apply(PGconn *conn, FILE *err, int *applied);

/* For `tessera serve`, before any shard starts (it blocks): connects to url and checks
 * that the schema is the version this binary needs, applying the migrations first when
 * auto_migrate. 0 when the schema is ready; -TE_INVAL when it is older and auto_migrate
 * is off (or a migration failed); -TE_IO when the database cannot be reached. Each
 * failure is described on err. No PGconn leaves store/. */
int migrate_check_at_start(const char *url, bool auto_migrate, FILE *err);

/* `tessera migrate [--status]`: TESSERA_PG_URL, JSON on stdout. Exit status 0, 1, 2. */
int migrate_main(int argc, char **argv);

#endif
