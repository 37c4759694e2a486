/* tests/core/test_config.c: configuration from TESSERA_* variables. Proves the
 * defaults of DESIGN §6, that every bad value is refused with one message naming
 * the variable (and all bad values are reported, not just the first), and that the
 * listen address accepts IPv4, [IPv6] and port 0. */
#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        checks++;                                                                   \
        if (!(cond)) {                                                              \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

static const char *const config_vars[] = {
    "TESSERA_LISTEN", "TESSERA_PUBLIC_URL", "TESSERA_SHARDS", "TESSERA_WORKERS", "TESSERA_LOG_LEVEL",
    "TESSERA_ACCESS_LOG", "TESSERA_TLS_CERT_FILE", "TESSERA_TLS_KEY_FILE", "TESSERA_HEADER_TIMEOUT_MS",
    "TESSERA_BODY_TIMEOUT_MS", "TESSERA_IDLE_TIMEOUT_MS", "TESSERA_SHUTDOWN_TIMEOUT_MS",
    "TESSERA_MAX_HEAD_BYTES", "TESSERA_MAX_BODY_BYTES", "TESSERA_MAX_HEADER_FIELDS",
    "TESSERA_MAX_CONNECTIONS", "TESSERA_PG_URL", "TESSERA_REDIS_URL", "TESSERA_AUTO_MIGRATE",
};

static void config_env_clear(void)
{
    for (size_t i = 0; i < sizeof(config_vars) / sizeof(config_vars[0]); i++)
        unsetenv(config_vars[i]);
}

/* Loads with stderr captured into text; returns config_load's result. */
static int config_load_captured(struct config *cfg, char *text, size_t cap)
{
    FILE *err = fmemopen(text, cap, "w");
    int bad = config_load(cfg, err);
    fclose(err);
    return bad;
}

static void test_defaults(void)
{
    config_env_clear();
    struct config cfg;
    char text[1024] = "";
    CHECK(config_load_captured(&cfg, text, sizeof(text)) == 0);
    CHECK(strcmp(cfg.listen_text, "127.0.0.1:8080") == 0);
    CHECK(strcmp(cfg.public_url, "http://localhost:8080") == 0);
    CHECK(cfg.shards >= 1);
    CHECK(cfg.header_timeout_ms == 10000);
    CHECK(cfg.idle_timeout_ms == 60000);
    CHECK(cfg.head_bytes_max == 8192);
    CHECK(cfg.body_bytes_max == 65536);
    CHECK(cfg.connections_max == 65536);
    CHECK(cfg.access_log);
    CHECK(cfg.log_level == LOG_INFO);
    CHECK(cfg.tls_cert_file[0] == '\0');
    CHECK(cfg.pg_url[0] == '\0' && cfg.redis_url[0] == '\0' && !cfg.auto_migrate);
}

static void test_bad_values_each_named(void)
{
    static const struct {
        const char *name;
        const char *value;
    } bad[] = {
        { "TESSERA_LISTEN", "8080" },          { "TESSERA_LISTEN", "127.0.0.1:99999" },
        { "TESSERA_LISTEN", "nohost:80" },     { "TESSERA_SHARDS", "0" },
        { "TESSERA_SHARDS", "two" },           { "TESSERA_SHARDS", "-1" },
        { "TESSERA_SHARDS", "1e3" },           { "TESSERA_LOG_LEVEL", "loud" },
        { "TESSERA_ACCESS_LOG", "yes" },       { "TESSERA_MAX_BODY_BYTES", "99999999999" },
        { "TESSERA_MAX_HEAD_BYTES", "10" },    { "TESSERA_HEADER_TIMEOUT_MS", " 100" },
        { "TESSERA_PUBLIC_URL", "ftp://x" },   { "TESSERA_PUBLIC_URL", "http://x/" },
        { "TESSERA_TLS_CERT_FILE", "/nonexistent/cert.pem" },
        { "TESSERA_MAX_HEADER_FIELDS", "65" },
        { "TESSERA_PG_URL", "mysql://u:secretpw@h/db" },
        { "TESSERA_REDIS_URL", "http://h:6379" },
        { "TESSERA_AUTO_MIGRATE", "yes" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        config_env_clear();
        setenv(bad[i].name, bad[i].value, 1);
        struct config cfg;
        char text[1024] = "";
        int n = config_load_captured(&cfg, text, sizeof(text));
        CHECK(n >= 1);
        CHECK(strstr(text, bad[i].name) != NULL);
        CHECK(strstr(text, "secretpw") == NULL); /* a URL's password is never echoed */
        if (n < 1 || strstr(text, bad[i].name) == NULL)
            fprintf(stderr, "  case %s=%s: got %d, \"%s\"\n", bad[i].name, bad[i].value, n, text);
    }
    /* Every bad value is reported, not only the first. */
    config_env_clear();
    setenv("TESSERA_SHARDS", "x", 1);
    setenv("TESSERA_LOG_LEVEL", "x", 1);
    setenv("TESSERA_IDLE_TIMEOUT_MS", "x", 1);
    struct config cfg;
    char text[1024] = "";
    CHECK(config_load_captured(&cfg, text, sizeof(text)) == 3);
    CHECK(strstr(text, "TESSERA_SHARDS") && strstr(text, "TESSERA_LOG_LEVEL") &&
          strstr(text, "TESSERA_IDLE_TIMEOUT_MS"));
}

static void test_listen_forms(void)
{
    static const char *const good[] = { "127.0.0.1:0", "0.0.0.0:443", "[::1]:8080", "localhost:9000" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        config_env_clear();
        setenv("TESSERA_LISTEN", good[i], 1);
        struct config cfg;
        char text[256] = "";
        CHECK(config_load_captured(&cfg, text, sizeof(text)) == 0);
    }
}

int main(void)
{
    test_defaults();
    test_bad_values_each_named();
    test_listen_forms();
    config_env_clear();
    printf("test_config: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
