/* tests/store/test_audit_batch_sql.c: store.c's STORE_AUDIT_BATCH, the INSERT of batched audit
 * events (auth/audit_batch.c), run as the server runs it (the same SQL text, the JSON array as
 * its one parameter) against a real Postgres.
 *
 * Proves: every event of an existing tenant becomes one row with its fields, its event_id and
 * the moment of its event (created_at = at_us to the microsecond), details NULL as '{}';
 * an event of a tenant that does not exist is skipped and does not refuse the others; the
 * same batch sent again (its first answer lost with the connection) adds no row, and a batch
 * holding both written and new events adds only the new ones (ON CONFLICT on event_id). */
#include "store/store.c"

#include "store/migrate.h"
#include "tests/store/pgtest.h"

#define TEST_ID_A "80000000-0000-8000-8000-000000000001"
#define TEST_ID_B "80000000-0000-8000-8000-000000000002"
#define TEST_ID_C "80000000-0000-8000-8000-000000000003"
#define TEST_ID_X "80000000-0000-8000-8000-0000000000ff"
#define TEST_AT_US "1795000000123456"

/* The batch statement with json as $1: its rows affected, or -1. */
static int test_batch(PGconn *conn, const char *json)
{
    const char *params[1] = { json };
    PGresult *res = PQexecParams(conn, store_stmts[STORE_AUDIT_BATCH].sql, 1, NULL, params, NULL, NULL, 0);
    int affected = PQresultStatus(res) == PGRES_COMMAND_OK ? atoi(PQcmdTuples(res)) : -1;
    if (affected < 0)
        fprintf(stderr, "test_audit_batch_sql: %s", PQerrorMessage(conn));
    PQclear(res);
    return affected;
}

static const char test_first[] =
    "[{\"slug\":\"acme\",\"event_id\":\"" TEST_ID_A "\",\"actor_kind\":\"client\",\"actor_id\":\"c\\\"1\","
    "\"action\":\"token_issued\",\"target_kind\":\"token\",\"target_id\":\"jti-1\",\"ip\":\"127.0.0.1\","
    "\"request_id\":\"r1\",\"details\":{\"grant_type\":\"client_credentials\"},\"at_us\":" TEST_AT_US "},"
    "{\"slug\":\"acme\",\"event_id\":\"" TEST_ID_B "\",\"actor_kind\":\"client\",\"actor_id\":null,"
    "\"action\":\"client_auth_failed\",\"target_kind\":null,\"target_id\":null,\"ip\":\"::1\","
    "\"request_id\":null,\"details\":null,\"at_us\":" TEST_AT_US "},"
    "{\"slug\":\"nosuch\",\"event_id\":\"" TEST_ID_X "\",\"actor_kind\":\"client\",\"actor_id\":\"x\","
    "\"action\":\"client_auth_failed\",\"target_kind\":null,\"target_id\":null,\"ip\":null,"
    "\"request_id\":null,\"details\":null,\"at_us\":" TEST_AT_US "}]";

static const char test_again[] =
    "[{\"slug\":\"acme\",\"event_id\":\"" TEST_ID_B "\",\"actor_kind\":\"client\",\"actor_id\":null,"
    "\"action\":\"client_auth_failed\",\"target_kind\":null,\"target_id\":null,\"ip\":\"::1\","
    "\"request_id\":null,\"details\":null,\"at_us\":" TEST_AT_US "},"
    "{\"slug\":\"acme\",\"event_id\":\"" TEST_ID_C "\",\"actor_kind\":\"client\",\"actor_id\":\"c3\","
    "\"action\":\"token_issued\",\"target_kind\":\"token\",\"target_id\":\"jti-3\",\"ip\":null,"
    "\"request_id\":null,\"details\":null,\"at_us\":" TEST_AT_US "}]";

static void test_rows(PGconn *conn)
{
    char out[512];
    CHECK(test_batch(conn, test_first) == 2);
    CHECK(strcmp(pgtest_value(conn, "SELECT count(*) FROM audit_log", out, sizeof(out)), "2") == 0);
    CHECK(strcmp(pgtest_value(conn,
                              "SELECT concat_ws('|', a.actor_kind, a.actor_id, a.action, a.target_kind, "
                              "a.target_id, host(a.ip), a.request_id, a.details::text, "
                              "(extract(epoch FROM a.created_at) * 1000000)::bigint, t.slug) "
                              "FROM audit_log a JOIN tenants t ON t.id = a.tenant_id "
                              "WHERE a.event_id = '" TEST_ID_A "'",
                              out, sizeof(out)),
                 "client|c\"1|token_issued|token|jti-1|127.0.0.1|r1|{\"grant_type\": \"client_credentials\"}|"
                 TEST_AT_US "|acme") == 0);
    CHECK(strcmp(pgtest_value(conn,
                              "SELECT concat_ws('|', coalesce(actor_id, 'NULL'), host(ip), details::text) "
                              "FROM audit_log WHERE event_id = '" TEST_ID_B "'",
                              out, sizeof(out)),
                 "NULL|::1|{}") == 0);
    /* The first batch again (its answer lost): nothing more. */
    CHECK(test_batch(conn, test_first) == 0);
    /* A batch of one written event and one new one: only the new. */
    CHECK(test_batch(conn, test_again) == 1);
    CHECK(strcmp(pgtest_value(conn, "SELECT count(*) || '/' || count(DISTINCT event_id) FROM audit_log", out,
                              sizeof(out)),
                 "3/3") == 0);
    /* Rows written with their change carry no event_id, and many may. */
    CHECK(pgtest_ok(conn, "INSERT INTO audit_log (tenant_id, actor_kind, action) SELECT id, 'system', 'x' "
                          "FROM tenants UNION ALL SELECT id, 'system', 'y' FROM tenants"));
}

int main(void)
{
    if (pgtest_server_url() == NULL) {
        printf("test_audit_batch_sql: TESSERA_TEST_PG_URL unset, skipping\n");
        return 77;
    }
    struct pgtest_db db;
    if (pgtest_create(&db, "auditsql") != 0)
        return 1;
    PGconn *conn = pgtest_connect(&db);
    int applied = 0;
    CHECK(conn != NULL && migrate_apply(conn, stderr, &applied) == 0);
    if (conn != NULL) {
        CHECK(pgtest_ok(conn, "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')"));
        test_rows(conn);
        PQfinish(conn);
    }
    pgtest_drop(&db);
    return check_report("test_audit_batch_sql");
}
