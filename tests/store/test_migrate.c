/* tests/store/test_migrate.c: store/migrate.c against a real Postgres.
 *
 * Proves: the embedded files are the ones in store/migrations (checksums recomputed); an
 * empty database migrates to the required version with every table issue 4 names; a second
 * run applies nothing; four connections migrating at once (threads, each its own session)
 * end with one schema and each file applied once (the advisory lock); a changed checksum is
 * refused; a file that fails half-way leaves nothing behind (one transaction per file); a
 * connection killed by the server gives -TE_IO, not a crash (the fault twin); every
 * tenant-owned table has tenant_id NOT NULL REFERENCES tenants, created_at and
 * updated_at kept by the trigger; a row cannot point at another tenant's row (T08). */
#include "store/migrate.c"

#include <pthread.h>

#include "crypto/hash.h"
#include "tests/store/pgtest.h"

/* Sessions racing to migrate: enough to interleave on a 2-core machine. */
#define TEST_RACERS 4

static const char *const test_tables[] = {
    "tenants", "users", "user_identities", "sessions", "clients", "api_keys", "roles",
    "scopes", "role_scopes", "role_bindings", "signing_keys", "revocations", "audit_log",
    "one_time_tokens", "email_outbox", "kek_versions", "kek_blobs", "authz_tuples",
    "authorizations",
};

static void test_embedded(void)
{
    CHECK(migrate_files_count >= 1);
    CHECK(migrate_required_version() == (int)migrate_files_count);
    for (size_t i = 0; i < migrate_files_count; i++) {
        const struct migrate_file *f = &migrate_files[i];
        uint8_t digest[HASH_SHA256_BYTES];
        char hex[MIGRATE_CHECKSUM_HEX_LEN + 1];
        CHECK(f->version == (int)i + 1);
        CHECK(strlen(f->sql) == f->sql_len);
        CHECK(hash_sha256(f->sql, f->sql_len, digest) == 0);
        for (size_t k = 0; k < sizeof(digest); k++)
            snprintf(hex + 2 * k, 3, "%02x", digest[k]);
        CHECK(strcmp(hex, f->checksum) == 0);
    }
}

static void test_from_empty(PGconn *conn)
{
    char v[64], sql[256];
    int applied = -1;
    CHECK(migrate_schema_version(conn) == 0);
    CHECK(migrate_apply(conn, stderr, &applied) == 0);
    CHECK(applied == (int)migrate_files_count);
    CHECK(migrate_schema_version(conn) == migrate_required_version());
    for (size_t i = 0; i < sizeof(test_tables) / sizeof(test_tables[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT to_regclass('%s') IS NOT NULL", test_tables[i]);
        CHECK(strcmp(pgtest_value(conn, sql, v, sizeof(v)), "t") == 0);
    }
    /* idempotent: nothing left to apply, nothing recorded twice */
    CHECK(migrate_apply(conn, stderr, &applied) == 0);
    CHECK(applied == 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) = %zu FROM schema_migrations",
             migrate_files_count);
    CHECK(strcmp(pgtest_value(conn, sql, v, sizeof(v)), "t") == 0);
}

/* Every table but tenants and schema_migrations is tenant-owned. */
static void test_tenant_columns(PGconn *conn)
{
    char v[64];
    CHECK(strcmp(pgtest_value(conn,
                              "SELECT count(*) FROM information_schema.tables t WHERE "
                              "t.table_schema = current_schema() AND t.table_name NOT IN "
                              "('tenants', 'schema_migrations') AND NOT EXISTS (SELECT 1 FROM "
                              "information_schema.columns c WHERE c.table_name = t.table_name "
                              "AND c.table_schema = t.table_schema AND c.column_name = "
                              "'tenant_id' AND c.is_nullable = 'NO')",
                              v, sizeof(v)),
                 "0") == 0);
    CHECK(strcmp(pgtest_value(conn,
                              "SELECT count(*) FROM information_schema.tables t WHERE "
                              "t.table_schema = current_schema() AND t.table_name <> "
                              "'schema_migrations' AND (SELECT count(*) FROM "
                              "information_schema.columns c WHERE c.table_name = t.table_name "
                              "AND c.table_schema = t.table_schema AND c.column_name IN "
                              "('created_at', 'updated_at')) <> 2",
                              v, sizeof(v)),
                 "0") == 0);
    /* every tenant-owned table references tenants */
    char want[16];
    snprintf(want, sizeof(want), "%zu", sizeof(test_tables) / sizeof(test_tables[0]) - 1);
    CHECK(strcmp(pgtest_value(conn,
                              "SELECT count(DISTINCT conrelid) FROM pg_constraint WHERE contype "
                              "= 'f' AND confrelid = 'tenants'::regclass",
                              v, sizeof(v)),
                 want) == 0);
}

/* updated_at moves on UPDATE; a user cannot be linked from another tenant (T08). */
static void test_rows(PGconn *conn)
{
    char before[64], after[64], v[64];
    CHECK(pgtest_ok(conn, "INSERT INTO tenants (slug, name) VALUES ('a', 'A'), ('b', 'B')"));
    CHECK(!pgtest_ok(conn, "INSERT INTO tenants (slug, name) VALUES ('A', 'upper')"));
    CHECK(!pgtest_ok(conn, "INSERT INTO tenants (slug, name) VALUES ('a', 'again')"));
    pgtest_value(conn, "SELECT updated_at FROM tenants WHERE slug = 'a'", before, sizeof(before));
    CHECK(pgtest_ok(conn, "UPDATE tenants SET name = 'A2' WHERE slug = 'a'"));
    pgtest_value(conn, "SELECT updated_at FROM tenants WHERE slug = 'a'", after, sizeof(after));
    CHECK(before[0] != '\0' && strcmp(before, after) != 0);
    CHECK(pgtest_ok(conn, "INSERT INTO users (tenant_id, username) SELECT id, 'alice' FROM "
                          "tenants"));
    /* same name, other case, same tenant: refused by the lower() index */
    CHECK(!pgtest_ok(conn, "INSERT INTO users (tenant_id, username) SELECT id, 'ALICE' FROM "
                           "tenants WHERE slug = 'a'"));
    /* an identity in tenant b pointing at tenant a's user: refused by the (tenant_id, id) FK */
    CHECK(!pgtest_ok(conn, "INSERT INTO user_identities (tenant_id, user_id, provider, subject) "
                           "SELECT b.id, u.id, 'google', 'x' FROM tenants b, users u JOIN "
                           "tenants a ON a.id = u.tenant_id WHERE b.slug = 'b' AND a.slug = 'a'"));
    CHECK(!pgtest_ok(conn, "INSERT INTO users (tenant_id, username) VALUES "
                           "(gen_random_uuid(), 'orphan')"));
    CHECK(strcmp(pgtest_value(conn, "SELECT count(*) FROM users", v, sizeof(v)), "2") == 0);
}

/* A recorded checksum that differs from the binary's is refused, nothing applied. */
static void test_tamper(PGconn *conn)
{
    int applied = -1;
    CHECK(pgtest_ok(conn, "UPDATE schema_migrations SET checksum = repeat('0', 64) "
                          "WHERE version = 1"));
    CHECK(migrate_apply(conn, stderr, &applied) == -TE_INVAL);
    CHECK(applied == 0);
}

/* A file whose second statement fails: its first must be rolled back with it, and it must
 * not be recorded. */
static void test_half_applied(PGconn *conn)
{
    static const char half_sql[] = "CREATE TABLE test_half (x int); SELECT 1 / 0;";
    const struct migrate_file bad = {
        .version = 9999, .name = "half", .checksum = "00",
        .sql = half_sql, .sql_len = sizeof(half_sql) - 1,
    };
    char v[64];
    CHECK(migrate_apply_file(conn, &bad, stderr) == -TE_IO);
    CHECK(strcmp(pgtest_value(conn, "SELECT to_regclass('test_half') IS NULL", v, sizeof(v)),
                 "t") == 0);
    CHECK(strcmp(pgtest_value(conn, "SELECT count(*) FROM schema_migrations WHERE version = "
                              "9999", v, sizeof(v)), "0") == 0);
    /* the session is usable again: not left inside an aborted transaction */
    CHECK(pgtest_ok(conn, "SELECT 1"));
}

/* The server ends the session (as a restart would): migrate reports it and returns. */
static void test_connection_killed(const struct pgtest_db *db)
{
    PGconn *victim = pgtest_connect(db);
    PGconn *killer = pgtest_connect(db);
    CHECK(victim != NULL && killer != NULL);
    if (victim != NULL && killer != NULL) {
        char sql[96];
        int applied = -1;
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", PQbackendPID(victim));
        CHECK(pgtest_ok(killer, sql));
        CHECK(migrate_apply(victim, stderr, &applied) == -TE_IO);
        CHECK(applied == 0);
        CHECK(migrate_schema_version(victim) == -TE_IO);
    }
    PQfinish(victim);
    PQfinish(killer);
}

struct test_racer {
    const char *url;
    int rc, applied;
};

static void *test_race_one(void *arg)
{
    struct test_racer *r = arg;
    PGconn *conn = PQconnectdb(r->url);
    r->rc = PQstatus(conn) == CONNECTION_OK ? migrate_apply(conn, stderr, &r->applied) : -1;
    PQfinish(conn);
    return NULL;
}

static void test_concurrent(void)
{
    struct pgtest_db db;
    if (pgtest_create(&db, "migrace") != 0) {
        CHECK(!"create the race database");
        return;
    }
    pthread_t threads[TEST_RACERS];
    struct test_racer racers[TEST_RACERS];
    int total = 0;
    for (int i = 0; i < TEST_RACERS; i++) {
        racers[i] = (struct test_racer){ .url = db.url, .rc = -1, .applied = -1 };
        CHECK(pthread_create(&threads[i], NULL, test_race_one, &racers[i]) == 0);
    }
    for (int i = 0; i < TEST_RACERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(racers[i].rc == 0);
        total += racers[i].applied;
    }
    CHECK(total == (int)migrate_files_count); /* each file applied exactly once */
    PGconn *conn = pgtest_connect(&db);
    CHECK(conn != NULL);
    if (conn != NULL) {
        CHECK(migrate_schema_version(conn) == migrate_required_version());
        PQfinish(conn);
    }
    pgtest_drop(&db);
}

int main(void)
{
    test_embedded();
    if (pgtest_server_url() == NULL) {
        printf("test_migrate: TESSERA_TEST_PG_URL unset, skipping the Postgres part\n");
        return check_report("test_migrate") == 0 ? 77 : 1;
    }
    struct pgtest_db db;
    if (pgtest_create(&db, "migrate") != 0)
        return 1;
    PGconn *conn = pgtest_connect(&db);
    CHECK(conn != NULL);
    if (conn != NULL) {
        test_from_empty(conn);
        test_tenant_columns(conn);
        test_rows(conn);
        test_half_applied(conn);
        test_tamper(conn);
        PQfinish(conn);
    }
    test_connection_killed(&db);
    pgtest_drop(&db);
    test_concurrent();
    return check_report("test_migrate");
}
